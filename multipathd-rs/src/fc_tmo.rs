//! `fast_io_fail_tmo` and `dev_loss_tmo` on the Fibre Channel remote ports of every map's
//! paths, as multipath-tools sets them on every map it sets up.
//!
//! When a remote port goes away the FC transport blocks its SCSI devices: I/O waits until
//! `fast_io_fail_tmo` expires (then it fails, and dm-multipath switches paths) and the port is
//! removed with its devices when `dev_loss_tmo` expires. With `fast_io_fail_tmo` off, a failover
//! waits for `dev_loss_tmo`, often a minute or more. The rules, from multipath.conf(5) and the
//! kernel's `scsi_transport_fc` (behaviour only; no code of either is copied):
//!
//! * `fast_io_fail_tmo` is the configured value, 5 seconds by default; `off` switches it off.
//! * `dev_loss_tmo` is the configured value; unset keeps the driver's value. `infinity` is
//!   2^32-1 seconds, the largest the kernel takes.
//! * `no_path_retry N` queues I/O for N checker intervals: `dev_loss_tmo` is raised to at least
//!   `N * polling_interval`, or the paths (and the devices the queue waits for) would be
//!   removed first; `no_path_retry queue` raises it to infinity.
//! * The kernel refuses a `fast_io_fail_tmo` that is not below `dev_loss_tmo`; such a value
//!   is switched off (then dev_loss decides first anyway), as multipath-tools does.
//! * With `fast_io_fail_tmo` off the kernel refuses a `dev_loss_tmo` above 600 seconds
//!   (`SCSI_DEVICE_BLOCK_MAX_TIMEOUT`): it is capped there, and the cap is reported.
//! * The kernel refuses both writes (EBUSY) while the port is `Blocked`, `NotPresent` or
//!   `Deleted`; such a port is left alone and reported, and the next sync tries again.
//! * Values are written only where they differ from what the port has, in the order the
//!   kernel accepts: `dev_loss_tmo` first when the new `fast_io_fail_tmo` is not below the
//!   port's current `dev_loss_tmo`, `fast_io_fail_tmo` first otherwise.
//!
//! A remote port carries the paths of several maps; when their settings differ, the port
//! gets the shortest `fast_io_fail_tmo` and the longest `dev_loss_tmo` any of them asks for.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use lun_scan::rescan::SysfsWriter;
use serde::Serialize;

use crate::config::{EffectiveSettings, FastIoFail, NoPathRetry};

/// The largest `dev_loss_tmo` the kernel accepts while `fast_io_fail_tmo` is off.
pub const MAX_DEV_LOSS_WITHOUT_FAST_IO_FAIL: u32 = 600;

/// What the maps using one remote port ask of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Want {
    /// `fast_io_fail_tmo`.
    pub fast_io_fail: FastIoFail,
    /// The configured `dev_loss_tmo` in seconds; None keeps the port's value.
    pub dev_loss: Option<u32>,
    /// The least `dev_loss_tmo` `no_path_retry` needs, in seconds.
    pub dev_loss_floor: Option<u32>,
}

impl Want {
    /// What one map's settings ask for; `polling_interval` in seconds.
    pub fn of(s: &EffectiveSettings, polling_interval: u32) -> Want {
        let floor = match s.no_path_retry.value {
            NoPathRetry::Fail => None,
            NoPathRetry::Queue => Some(u32::MAX),
            NoPathRetry::Retries(n) => Some(n.saturating_mul(polling_interval.max(1))),
        };
        Want {
            fast_io_fail: s.fast_io_fail_tmo.value,
            dev_loss: s.dev_loss_tmo.as_ref().map(|r| r.value.seconds()),
            dev_loss_floor: floor,
        }
    }

    /// Two maps on one port: the shorter fast_io_fail, the longer dev_loss.
    fn combine(self, o: Want) -> Want {
        let fast_io_fail = match (self.fast_io_fail, o.fast_io_fail) {
            (FastIoFail::Seconds(a), FastIoFail::Seconds(b)) => FastIoFail::Seconds(a.min(b)),
            (FastIoFail::Seconds(a), FastIoFail::Off)
            | (FastIoFail::Off, FastIoFail::Seconds(a)) => FastIoFail::Seconds(a),
            (FastIoFail::Off, FastIoFail::Off) => FastIoFail::Off,
        };
        Want {
            fast_io_fail,
            dev_loss: self.dev_loss.max(o.dev_loss),
            dev_loss_floor: self.dev_loss_floor.max(o.dev_loss_floor),
        }
    }

    /// The values to have on a port whose `dev_loss_tmo` is `current_dev_loss`, with the
    /// reasons for every adjustment.
    pub fn target(&self, current_dev_loss: u32) -> (FastIoFail, u32, Vec<String>) {
        let mut notes = Vec::new();
        let mut dev_loss = self.dev_loss.unwrap_or(current_dev_loss);
        if let Some(floor) = self.dev_loss_floor
            && dev_loss < floor
        {
            notes.push(format!(
                "dev_loss_tmo raised from {dev_loss} to {} so the paths outlive no_path_retry's queueing",
                show_dev_loss(floor)
            ));
            dev_loss = floor;
        }
        let mut fast_io_fail = self.fast_io_fail;
        if let FastIoFail::Seconds(f) = fast_io_fail
            && f >= dev_loss
        {
            notes.push(format!(
                "fast_io_fail_tmo {f} is not below dev_loss_tmo {}; switched off (the kernel refuses it)",
                show_dev_loss(dev_loss)
            ));
            fast_io_fail = FastIoFail::Off;
        }
        if fast_io_fail == FastIoFail::Off && dev_loss > MAX_DEV_LOSS_WITHOUT_FAST_IO_FAIL {
            notes.push(format!(
                "dev_loss_tmo {} capped at {MAX_DEV_LOSS_WITHOUT_FAST_IO_FAIL}: the kernel takes no more while fast_io_fail_tmo is off{}",
                show_dev_loss(dev_loss),
                if self.dev_loss_floor.is_some_and(|f| f > MAX_DEV_LOSS_WITHOUT_FAST_IO_FAIL) {
                    "; no_path_retry queues longer than the paths live"
                } else {
                    ""
                }
            ));
            dev_loss = MAX_DEV_LOSS_WITHOUT_FAST_IO_FAIL;
        }
        (fast_io_fail, dev_loss, notes)
    }
}

fn show_dev_loss(v: u32) -> String {
    if v == u32::MAX {
        "infinity".into()
    } else {
        v.to_string()
    }
}

/// What happened on one remote port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PortOutcome {
    /// `rport-H:C-N`.
    pub rport: String,
    /// The maps whose paths run through it.
    pub maps: Vec<String>,
    /// `(attribute, value)` written, in order.
    pub written: Vec<(String, String)>,
    /// Adjustments to the configured values, and why.
    pub notes: Vec<String>,
    /// Why the port was not (fully) set, as a sentence.
    pub error: Option<String>,
}

/// The remote ports of a set of maps, with what their maps ask for.
#[derive(Debug, Default)]
pub struct Ports {
    ports: BTreeMap<String, (Want, Vec<String>)>,
}

impl Ports {
    /// Adds one map: its name, settings and the remote ports of its paths.
    pub fn add<'a>(&mut self, map: &str, want: Want, rports: impl IntoIterator<Item = &'a str>) {
        for r in rports {
            match self.ports.get_mut(r) {
                Some((w, maps)) => {
                    *w = w.combine(want);
                    // A map's paths come in one call: skipping a repeat of the last map is
                    // enough here; `apply` drops the rest. (Searching the whole list made a
                    // cold start O(maps^2): at 16384 maps over two ports, seconds.)
                    if maps.last().is_none_or(|m| m != map) {
                        maps.push(map.to_string());
                    }
                }
                None => {
                    self.ports
                        .insert(r.to_string(), (want, vec![map.to_string()]));
                }
            }
        }
    }

    /// Whether no port was added.
    pub fn is_empty(&self) -> bool {
        self.ports.is_empty()
    }

    /// Sets every port under the sysfs `root` through `writer`.
    pub fn apply(&self, root: &Path, writer: &mut dyn SysfsWriter) -> Vec<PortOutcome> {
        self.ports
            .iter()
            .map(|(rport, (want, maps))| {
                let mut out = PortOutcome {
                    rport: rport.clone(),
                    maps: {
                        let mut seen = std::collections::HashSet::new();
                        maps.iter()
                            .filter(|m| seen.insert(m.as_str()))
                            .cloned()
                            .collect()
                    },
                    written: Vec::new(),
                    notes: Vec::new(),
                    error: None,
                };
                if let Err(e) = set_port(root, rport, want, writer, &mut out) {
                    out.error = Some(e);
                }
                out
            })
            .collect()
    }
}

fn port_dir(root: &Path, rport: &str) -> PathBuf {
    root.join("class/fc_remote_ports").join(rport)
}

fn read_attr(dir: &Path, name: &str) -> Result<String, String> {
    let p = dir.join(name);
    std::fs::read_to_string(&p)
        .map(|s| s.trim().to_string())
        .map_err(|e| format!("cannot read {}: {e}", p.display()))
}

fn set_port(
    root: &Path,
    rport: &str,
    want: &Want,
    writer: &mut dyn SysfsWriter,
    out: &mut PortOutcome,
) -> Result<(), String> {
    let dir = port_dir(root, rport);
    let state = read_attr(&dir, "port_state")?;
    if matches!(state.as_str(), "Blocked" | "NotPresent" | "Deleted") {
        return Err(format!(
            "remote port {rport} is {state}; the kernel refuses timeout changes until it is back, so the next sync sets them"
        ));
    }
    let cur_dl_text = read_attr(&dir, "dev_loss_tmo")?;
    let cur_dl: u32 = cur_dl_text.parse().map_err(|_| {
        format!(
            "{} holds {cur_dl_text:?}, not a number of seconds",
            dir.join("dev_loss_tmo").display()
        )
    })?;
    let cur_fio_text = read_attr(&dir, "fast_io_fail_tmo")?;
    let cur_fio = FastIoFail::parse(&cur_fio_text).ok_or_else(|| {
        format!(
            "{} holds {cur_fio_text:?}, not \"off\" or a number of seconds",
            dir.join("fast_io_fail_tmo").display()
        )
    })?;
    let (fio, dl, notes) = want.target(cur_dl);
    out.notes = notes;
    let mut writes: Vec<(&str, String)> = Vec::new();
    let fio_write = (fio != cur_fio).then(|| ("fast_io_fail_tmo", fio.to_string()));
    let dl_write = (dl != cur_dl).then(|| ("dev_loss_tmo", dl.to_string()));
    let dev_loss_first = matches!(fio, FastIoFail::Seconds(f) if f >= cur_dl);
    if dev_loss_first {
        writes.extend(dl_write);
        writes.extend(fio_write);
    } else {
        writes.extend(fio_write);
        writes.extend(dl_write);
    }
    for (attr, value) in writes {
        let path = dir.join(attr);
        writer
            .write(&path, &value)
            .map_err(|e| format!("writing {value} to {} failed: {e}", path.display()))?;
        tracing::info!(rport, attr, value = %value, "set FC remote port timeout");
        out.written.push((attr.to_string(), value));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn want(fio: FastIoFail, dl: Option<u32>, floor: Option<u32>) -> Want {
        Want {
            fast_io_fail: fio,
            dev_loss: dl,
            dev_loss_floor: floor,
        }
    }

    #[test]
    fn a_port_lists_each_of_its_maps_once_in_first_seen_order() {
        let w = want(FastIoFail::Seconds(5), None, None);
        let mut ports = Ports::default();
        ports.add("mpatha", w, ["rport-0:0-1", "rport-0:0-1"]);
        ports.add("mpathb", w, ["rport-0:0-1"]);
        ports.add("mpatha", w, ["rport-0:0-1"]);
        // Nothing exists under this root: every write fails, the outcome still names the maps.
        let root = std::env::temp_dir().join(format!("fc-tmo-none-{}", std::process::id()));
        let out = ports.apply(&root, &mut lun_scan::rescan::KernelWriter);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].maps, ["mpatha", "mpathb"]);
    }

    #[test]
    fn target_rules() {
        use FastIoFail::{Off, Seconds};
        // Defaults: fast_io_fail 5, the port's dev_loss kept.
        assert_eq!(want(Seconds(5), None, None).target(30).0, Seconds(5));
        assert_eq!(want(Seconds(5), None, None).target(30).1, 30);
        // no_path_retry 12 * 5 s raises dev_loss 30 to 60, never lowers a larger one.
        let (_, dl, notes) = want(Seconds(5), None, Some(60)).target(30);
        assert_eq!(dl, 60);
        assert_eq!(notes.len(), 1);
        assert_eq!(want(Seconds(5), None, Some(60)).target(120).1, 120);
        // queue: infinity.
        assert_eq!(
            want(Seconds(5), None, Some(u32::MAX)).target(30).1,
            u32::MAX
        );
        // fast_io_fail not below dev_loss: off; then dev_loss <= 600.
        let (f, dl, n) = want(Seconds(30), Some(20), None).target(60);
        assert_eq!((f, dl), (Off, 20));
        assert!(n[0].contains("switched off"), "{n:?}");
        // off with dev_loss above 600: capped, and queueing past it is reported.
        let (f, dl, n) = want(Off, Some(900), Some(u32::MAX)).target(30);
        assert_eq!((f, dl), (Off, 600));
        assert!(n.iter().any(|m| m.contains("queues longer")), "{n:?}");
        // infinity with fast_io_fail on is fine.
        assert_eq!(
            want(Seconds(5), Some(u32::MAX), None).target(30),
            (Seconds(5), u32::MAX, vec![])
        );
    }

    #[test]
    fn combine_takes_shortest_fast_io_fail_and_longest_dev_loss() {
        use FastIoFail::{Off, Seconds};
        let a = want(Seconds(5), Some(30), None);
        let b = want(Off, Some(60), Some(100));
        assert_eq!(a.combine(b), want(Seconds(5), Some(60), Some(100)));
        assert_eq!(b.combine(b).fast_io_fail, Off);
    }
}
