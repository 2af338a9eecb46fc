//! Parse and render 32,768 multipath tables of mixed shapes (2-8 paths, 1-4 groups, with and
//! without features / hardware handler), then the matching status lines. Writes
//! target/bench/dm-tables-parse-render.json (workspace target dir) and prints it.

use std::hint::black_box;
use std::time::Instant;

use dm_tables::{
    DevNo, Feature, GroupState, GroupStatus, MultipathStatus, MultipathTable, PathState,
    PathStatus, Selector, TableBuilder,
};

const N: usize = 32_768;

struct Lcg(u64);
impl Lcg {
    fn next(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

fn make(rng: &mut Lcg) -> (MultipathTable, MultipathStatus) {
    let npaths = 2 + rng.next(7) as u32; // 2..=8
    let ngroups = (1 + rng.next(4) as u32).min(npaths); // 1..=4
    let base = rng.next(200) as u32 * 16;
    let devs: Vec<DevNo> = (0..npaths)
        .map(|i| DevNo::new(8 + (base + i * 16) / 256, (base + i * 16) % 256))
        .collect();
    let mut b = TableBuilder::new(1 + rng.next(1 << 40));
    b = match rng.next(3) {
        0 => b.selector(Selector::ServiceTime, &[]),
        1 => b.selector(Selector::RoundRobin, &[]),
        _ => b.selector(Selector::QueueLength, &[]),
    };
    if rng.next(2) == 0 {
        b = b.feature(Feature::QueueIfNoPath);
    }
    if rng.next(3) == 0 {
        b = b.feature(Feature::PgInitRetries(50));
    }
    if rng.next(2) == 0 {
        b = b.hw_handler("alua", &[]);
    }
    let per = npaths.div_ceil(ngroups) as usize;
    for chunk in devs.chunks(per) {
        b = b.group(chunk);
    }
    let t = b.build();
    let groups = t
        .groups
        .iter()
        .enumerate()
        .map(|(i, g)| GroupStatus {
            state: if i == 0 {
                GroupState::Active
            } else {
                GroupState::Enabled
            },
            selector_status: dm_tables::Words::default(),
            paths: g
                .paths
                .iter()
                .map(|p| PathStatus {
                    devno: p.devno,
                    state: if rng.next(5) == 0 {
                        PathState::Failed
                    } else {
                        PathState::Active
                    },
                    fail_count: rng.next(10) as u32,
                    selector_info: dm_tables::words(&["0", "1"]),
                })
                .collect(),
        })
        .collect();
    let s = MultipathStatus {
        start: 0,
        length: t.length,
        queue_io: false,
        pg_init_count: 1,
        extra_features: dm_tables::Words::default(),
        hw_handler_status: dm_tables::Words::default(),
        current_group: 1,
        groups,
    };
    (t, s)
}

fn main() {
    let mut rng = Lcg(0x5eed);
    let (tables, statuses): (Vec<_>, Vec<_>) = (0..N).map(|_| make(&mut rng)).unzip();
    let lines: Vec<String> = tables.iter().map(ToString::to_string).collect();
    let slines: Vec<String> = statuses.iter().map(ToString::to_string).collect();
    let bytes: usize = lines.iter().map(String::len).sum();

    let t0 = Instant::now();
    let parsed: Vec<MultipathTable> = lines
        .iter()
        .map(|l| l.parse().expect("generated line parses"))
        .collect();
    let parse_s = t0.elapsed().as_secs_f64();
    let t1 = Instant::now();
    let rendered: Vec<String> = parsed.iter().map(ToString::to_string).collect();
    let render_s = t1.elapsed().as_secs_f64();
    assert_eq!(rendered, lines, "round trip");
    let t2 = Instant::now();
    let sparsed: Vec<MultipathStatus> = slines
        .iter()
        .map(|l| l.parse().expect("status parses"))
        .collect();
    let sparse_s = t2.elapsed().as_secs_f64();
    let t3 = Instant::now();
    let srendered: Vec<String> = sparsed.iter().map(ToString::to_string).collect();
    let srender_s = t3.elapsed().as_secs_f64();
    assert_eq!(srendered, slines);
    black_box((&parsed, &sparsed));

    let json = format!(
        concat!(
            "{{\n  \"benchmark\": \"dm-tables parse+render\",\n  \"tables\": {},\n  \"table_bytes\": {},\n",
            "  \"table_parse_s\": {:.6},\n  \"table_render_s\": {:.6},\n  \"table_parse_render_s\": {:.6},\n",
            "  \"table_parse_ns_per_line\": {:.0},\n  \"status_parse_s\": {:.6},\n  \"status_render_s\": {:.6},\n",
            "  \"profile\": \"{}\"\n}}\n"
        ),
        N,
        bytes,
        parse_s,
        render_s,
        parse_s + render_s,
        parse_s * 1e9 / N as f64,
        sparse_s,
        srender_s,
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        },
    );
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench");
    if let Err(e) = std::fs::create_dir_all(&dir)
        .and_then(|()| std::fs::write(dir.join("dm-tables-parse-render.json"), &json))
    {
        eprintln!("cannot write {}: {e}", dir.display());
    }
    print!("{json}");
}
