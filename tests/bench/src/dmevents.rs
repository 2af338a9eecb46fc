//! multipathd-rs `dm_events_idle` (issue 18, "dm events by waiting"): dm ioctls per second
//! of an idle daemon with 4096 maps, before (every map listed every 200 ms) and after (a
//! thread waits on arm-poll). Its row in BENCHMARKS.md, from the JSON the benchmark writes
//! (target/bench/multipathd-rs-dm-events-idle.json).

use crate::micro::num;

/// The benchmark's name in the micro list.
pub const BENCH: &str = "dm_events_idle";

/// The one-line figure for the micro-benchmark table.
pub fn figure(j: &serde_json::Value) -> (String, String) {
    let rate = |k: &str| num(j, k).map_or_else(|| "?".into(), |v| format!("{v:.0}"));
    (
        format!(
            "idle daemon, {} maps: dm ioctls/s for events {} before (listing every map every 200 ms), {} after (waiting on arm-poll); other dm ioctls/s {} / {}; CPU {:.3} / {:.3} s/s",
            num(j, "maps").unwrap_or(0.0),
            rate("before.event_ioctls_per_s"),
            rate("after.event_ioctls_per_s"),
            rate("before.other_ioctls_per_s"),
            rate("after.other_ioctls_per_s"),
            num(j, "before.cpu_s_per_s").unwrap_or(f64::NAN),
            num(j, "after.cpu_s_per_s").unwrap_or(f64::NAN),
        ),
        "0 event ioctls/s when idle".into(),
    )
}
