#![allow(clippy::unwrap_used)]
//! FC remote-port timeouts on a sysfs tree laid out as `scsi_transport_fc` writes it (the
//! generated fc-dual-hba topology: two HBAs, four remote ports, four NetApp LUNs): the engine
//! writes `fast_io_fail_tmo` / `dev_loss_tmo` on the remote ports of its maps' paths through the
//! SysfsWriter seam, in an order the kernel accepts, only where they differ, and never on a
//! port the kernel would refuse.

mod common;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use dm_tables::SimBackend;
use multipathd_rs::clock::ManualClock;
use multipathd_rs::config::Config;
use multipathd_rs::engine::{Engine, EngineOptions};

type Log = Arc<Mutex<Vec<(String, String, String)>>>;

struct Lab {
    _dir: tempfile::TempDir,
    root: PathBuf,
    conf: PathBuf,
    engine: Engine,
    log: Log,
}

fn rport_attr(root: &Path, rport: &str, attr: &str) -> String {
    std::fs::read_to_string(root.join("class/fc_remote_ports").join(rport).join(attr))
        .unwrap()
        .trim()
        .to_string()
}

const RPORTS: [&str; 4] = ["rport-0:0-0", "rport-0:0-1", "rport-1:0-0", "rport-1:0-1"];

impl Lab {
    fn new(config: &str) -> Lab {
        let dir = tempfile::tempdir().unwrap();
        let sim = common::dual_hba(dir.path());
        let root = sim.root.clone();
        for r in RPORTS {
            // As the generator (and qla2xxx) leave them.
            assert_eq!(rport_attr(&root, r, "dev_loss_tmo"), "30");
            assert_eq!(rport_attr(&root, r, "fast_io_fail_tmo"), "5");
        }
        let conf = dir.path().join("config.toml");
        std::fs::write(&conf, config).unwrap();
        let opts = EngineOptions {
            config_path: Some(conf.clone()),
            ..common::engine_options(dir.path(), &root)
        };
        let backend = SimBackend::open_file(dir.path().join("dm.json"), None).unwrap();
        let mut engine = Engine::new(
            Config::load(&conf).unwrap(),
            opts,
            Box::new(backend),
            Arc::new(ManualClock::new()),
        )
        .unwrap();
        let log: Log = Arc::default();
        let l2 = log.clone();
        let r2 = root.clone();
        // Records every write and applies it as the kernel would, refusing what
        // scsi_transport_fc refuses, so a wrong order shows up as an error.
        engine.set_sysfs_writer(Box::new(move |p: &Path, v: &str| {
            let rel = p.strip_prefix(&r2).unwrap();
            let attr = p.file_name().unwrap().to_str().unwrap().to_string();
            let rport = p.parent().unwrap().file_name().unwrap().to_str().unwrap();
            let dir = p.parent().unwrap();
            let read = |a: &str| {
                std::fs::read_to_string(dir.join(a))
                    .unwrap()
                    .trim()
                    .to_string()
            };
            let einval = || std::io::Error::from_raw_os_error(22);
            if !rel.starts_with("class/fc_remote_ports") {
                return Err(einval());
            }
            if matches!(
                read("port_state").as_str(),
                "Blocked" | "NotPresent" | "Deleted"
            ) {
                return Err(std::io::Error::from_raw_os_error(16));
            }
            match attr.as_str() {
                "fast_io_fail_tmo" if v != "off" => {
                    let n: u64 = v.parse().map_err(|_| einval())?;
                    let dl: u64 = read("dev_loss_tmo").parse().unwrap();
                    if n >= dl || n > 600 {
                        return Err(einval());
                    }
                }
                "dev_loss_tmo" => {
                    let n: u64 = v.parse().map_err(|_| einval())?;
                    if n > u64::from(u32::MAX) || (read("fast_io_fail_tmo") == "off" && n > 600) {
                        return Err(einval());
                    }
                }
                "fast_io_fail_tmo" => {}
                _ => return Err(einval()),
            }
            std::fs::write(p, format!("{v}\n"))?;
            l2.lock()
                .unwrap()
                .push((rport.to_string(), attr, v.to_string()));
            Ok(())
        }));
        Lab {
            _dir: dir,
            root,
            conf,
            engine,
            log,
        }
    }

    fn take_log(&self) -> Vec<(String, String, String)> {
        let mut l = self.log.lock().unwrap();
        let mut v: Vec<_> = l.drain(..).collect();
        v.sort();
        v
    }

    /// Every port got exactly these writes, in this order; clears the log.
    fn assert_each_port_got(&self, expected: &[(&str, &str)]) {
        let log = std::mem::take(&mut *self.log.lock().unwrap());
        for r in RPORTS {
            let mine: Vec<(&str, &str)> = log
                .iter()
                .filter(|(p, _, _)| p == r)
                .map(|(_, a, v)| (a.as_str(), v.as_str()))
                .collect();
            assert_eq!(mine, expected, "{r}: {log:?}");
        }
    }

    fn reconfigure(&mut self, config: &str) -> Vec<String> {
        std::fs::write(&self.conf, config).unwrap();
        self.engine.reconfigure().unwrap().errors
    }
}

fn writes(attr_values: &[(&str, &str)]) -> Vec<(String, String, String)> {
    let mut v: Vec<_> = RPORTS
        .iter()
        .flat_map(|r| {
            attr_values
                .iter()
                .map(move |(a, val)| (r.to_string(), a.to_string(), val.to_string()))
        })
        .collect();
    v.sort();
    v
}

#[test]
fn no_path_retry_raises_dev_loss_and_writes_happen_once() {
    // no_path_retry 12 at polling_interval 5 queues for 60 s: the remote ports' dev_loss_tmo
    // of 30 s would remove the paths first, so it is raised to 60. fast_io_fail_tmo is already
    // multipath-tools' default 5: not written.
    let mut lab = Lab::new("[defaults]\npolling_interval = 5\n[overrides]\nno_path_retry = 12\n");
    let r = lab.engine.sync().unwrap();
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert_eq!(lab.engine.map_names().len(), 4);
    assert_eq!(lab.take_log(), writes(&[("dev_loss_tmo", "60")]));
    for r in RPORTS {
        assert_eq!(rport_attr(&lab.root, r, "dev_loss_tmo"), "60");
    }
    // Nothing differs any more: a second sync writes nothing.
    lab.engine.sync().unwrap();
    assert_eq!(lab.take_log(), vec![]);

    // `queue` (here: the built-in NetApp entry once overrides are gone) means infinity.
    let errors = lab.reconfigure("[defaults]\npolling_interval = 5\n");
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(lab.take_log(), writes(&[("dev_loss_tmo", "4294967295")]));
}

#[test]
fn configured_values_are_written_in_an_order_the_kernel_accepts() {
    // fast_io_fail 40 is not below the ports' current dev_loss 30: dev_loss 120 goes first.
    let mut lab = Lab::new(
        "[overrides]\nno_path_retry = \"fail\"\nfast_io_fail_tmo = 40\ndev_loss_tmo = 120\n",
    );
    let r = lab.engine.sync().unwrap();
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    lab.assert_each_port_got(&[("dev_loss_tmo", "120"), ("fast_io_fail_tmo", "40")]);

    // fast_io_fail off with dev_loss 900: the kernel takes at most 600 then; off goes first.
    let errors = lab.reconfigure(
        "[overrides]\nno_path_retry = \"fail\"\nfast_io_fail_tmo = \"off\"\ndev_loss_tmo = 900\n",
    );
    assert!(errors.is_empty(), "{errors:?}");
    lab.assert_each_port_got(&[("fast_io_fail_tmo", "off"), ("dev_loss_tmo", "600")]);

    // Back to fast_io_fail 5 and dev_loss infinity: fast_io_fail first (5 < 600).
    let errors = lab.reconfigure(
        "[overrides]\nno_path_retry = \"fail\"\nfast_io_fail_tmo = 5\ndev_loss_tmo = \"infinity\"\n",
    );
    assert!(errors.is_empty(), "{errors:?}");
    let log = lab.take_log();
    assert_eq!(
        log,
        writes(&[("dev_loss_tmo", "4294967295"), ("fast_io_fail_tmo", "5")])
    );
}

#[test]
fn a_blocked_port_is_left_alone_and_reported() {
    let mut lab = Lab::new("[overrides]\nno_path_retry = \"fail\"\ndev_loss_tmo = 90\n");
    std::fs::write(
        lab.root
            .join("class/fc_remote_ports/rport-1:0-1/port_state"),
        "Blocked\n",
    )
    .unwrap();
    let r = lab.engine.sync().unwrap();
    let log = lab.take_log();
    assert_eq!(log.len(), 3, "{log:?}");
    assert!(
        log.iter()
            .all(|(p, a, v)| p != "rport-1:0-1" && a == "dev_loss_tmo" && v == "90")
    );
    assert_eq!(r.errors.len(), 1, "{:?}", r.errors);
    assert!(
        r.errors[0].contains("rport-1:0-1") && r.errors[0].contains("Blocked"),
        "{}",
        r.errors[0]
    );
    // Back online: the next sync sets it.
    std::fs::write(
        lab.root
            .join("class/fc_remote_ports/rport-1:0-1/port_state"),
        "Online\n",
    )
    .unwrap();
    let r = lab.engine.sync().unwrap();
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert_eq!(
        lab.take_log(),
        vec![(
            "rport-1:0-1".to_string(),
            "dev_loss_tmo".to_string(),
            "90".to_string()
        )]
    );
}

#[test]
fn show_config_lists_the_timeouts() {
    let cfg = Config::parse_str(
        "[defaults]\nfast_io_fail_tmo = \"off\"\ndev_loss_tmo = \"infinity\"\n",
        Path::new("c.toml"),
    )
    .unwrap();
    let text = cfg.view().to_string();
    assert!(text.contains("fast_io_fail_tmo"), "{text}");
    assert!(text.contains("off"), "{text}");
    assert!(text.contains("infinity"), "{text}");
    let builtin = Config::builtin().view().to_string();
    assert!(builtin.contains("dev_loss_tmo"), "{builtin}");
    let bad = Config::parse_str(
        "[defaults]\ndev_loss_tmo = \"forever\"\n",
        Path::new("c.toml"),
    )
    .unwrap_err()
    .to_string();
    assert!(bad.contains("infinity"), "{bad}");
}
