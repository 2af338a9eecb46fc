//! Human-readable renderings: aligned tables, the `/proc/scsi/scsi` format, rescan diffs.

use std::fmt::Write as _;

use crate::model::{Scan, ScsiPath};
use crate::rescan::Diff;

/// Renders rows as left-aligned columns separated by two spaces.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut w: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if i < w.len() {
                w[i] = w[i].max(c.chars().count());
            }
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<String>| {
        let mut l = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                l.push_str(c);
            } else {
                let _ = write!(l, "{:<width$}  ", c, width = w[i]);
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(header.iter().map(|s| s.to_string()).collect());
    for r in rows {
        line(r.clone());
    }
    out
}

/// "8.0M", "20G", "1.5T" (binary units); "-" when unknown.
pub fn human_size(b: Option<u64>) -> String {
    let Some(b) = b else { return "-".into() };
    let units = ["B", "K", "M", "G", "T", "P"];
    let mut v = b as f64;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < units.len() {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{b}B")
    } else if (v - v.round()).abs() < 0.05 && v >= 10.0 {
        format!("{:.0}{}", v, units[i])
    } else {
        format!("{:.1}{}", v, units[i])
    }
}

fn opt<S: AsRef<str>>(s: &Option<S>) -> String {
    s.as_ref()
        .map_or_else(|| "-".into(), |v| v.as_ref().to_string())
}

/// The `list` table.
pub fn paths_table(paths: &[ScsiPath]) -> String {
    let rows: Vec<Vec<String>> = paths
        .iter()
        .map(|p| {
            vec![
                p.hctl.to_string(),
                p.dev.clone(),
                p.devno.map_or("-".into(), |d| d.to_string()),
                p.state.to_string(),
                human_size(p.size_bytes),
                p.transport.to_string(),
                p.host.to_string(),
                opt(&p.target_wwpn.clone().or_else(|| p.target_node_name.clone())),
                opt(&p.access_state),
                format!("{} {}", p.vendor, p.model),
                opt(&p.wwid),
            ]
        })
        .collect();
    table(
        &[
            "HCTL",
            "DEV",
            "DEVNO",
            "STATE",
            "SIZE",
            "TRANSPORT",
            "HOST",
            "TARGET",
            "ACCESS",
            "VENDOR/MODEL",
            "WWID",
        ],
        &rows,
    )
}

/// The kernel's names of SCSI peripheral device types, padded as `/proc/scsi/scsi` prints
/// them.
fn device_type(t: Option<u8>) -> &'static str {
    match t {
        Some(0x00) => "Direct-Access    ",
        Some(0x01) => "Sequential-Access",
        Some(0x02) => "Printer          ",
        Some(0x03) => "Processor        ",
        Some(0x04) => "WORM             ",
        Some(0x05) => "CD-ROM           ",
        Some(0x06) => "Scanner          ",
        Some(0x07) => "Optical Device   ",
        Some(0x08) => "Medium Changer   ",
        Some(0x09) => "Communications   ",
        Some(0x0a | 0x0b) => "ASC IT8          ",
        Some(0x0c) => "RAID             ",
        Some(0x0d) => "Enclosure        ",
        Some(0x0e) => "Direct-Access-RBC",
        Some(0x0f) => "Optical card     ",
        Some(0x10) => "Bridge controller",
        Some(0x11) => "Object storage   ",
        Some(0x12) => "Automation/Drive ",
        Some(0x13) => "Security Manager ",
        Some(0x14) => "Direct-Access-ZBC",
        Some(0x1e) => "Well-known LUN   ",
        Some(0x1f) => "No Device        ",
        _ => "Unknown          ",
    }
}

/// `/proc/scsi/scsi` as older kernels printed it.
pub fn proc_scsi(paths: &[ScsiPath]) -> String {
    let mut out = String::from("Attached devices:\n");
    for p in paths {
        let pad = |s: &str, n: usize| {
            let mut v: String = s.chars().take(n).collect();
            while v.chars().count() < n {
                v.push(' ');
            }
            v
        };
        let level = p.scsi_level.unwrap_or(0);
        let _ = writeln!(
            out,
            "Host: scsi{} Channel: {:02} Id: {:02} Lun: {:02}",
            p.hctl.host, p.hctl.channel, p.hctl.target, p.hctl.lun
        );
        let _ = writeln!(
            out,
            "  Vendor: {} Model: {} Rev: {}",
            pad(&p.vendor, 8),
            pad(&p.model, 16),
            pad(&p.rev, 4)
        );
        let _ = write!(
            out,
            "  Type:   {}                ANSI  SCSI revision: {:02x}",
            device_type(p.scsi_type),
            if level > 1 { level - 1 } else { 1 }
        );
        out.push_str(if level == 2 { " CCS\n" } else { "\n" });
    }
    out
}

/// The `hosts` report: hosts, then FC remote ports, iSCSI sessions, SAS end devices.
pub fn hosts_text(scan: &Scan) -> String {
    let rows: Vec<Vec<String>> = scan
        .hosts
        .iter()
        .map(|h| {
            let (id, pstate, speed) = if let Some(f) = &h.fc {
                (opt(&f.port_name), opt(&f.port_state), opt(&f.speed))
            } else if let Some(i) = &h.iscsi {
                (opt(&i.initiatorname), opt(&i.ipaddress), "-".into())
            } else if let Some(s) = &h.sas {
                (
                    s.phy_addresses
                        .first()
                        .cloned()
                        .unwrap_or_else(|| "-".into()),
                    "-".into(),
                    "-".into(),
                )
            } else {
                ("-".into(), "-".into(), "-".into())
            };
            vec![
                h.name.clone(),
                opt(&h.proc_name),
                opt(&h.state),
                h.transport.to_string(),
                id,
                pstate,
                speed,
            ]
        })
        .collect();
    let mut out = table(
        &[
            "HOST",
            "DRIVER",
            "STATE",
            "TRANSPORT",
            "PORT/INITIATOR",
            "PORT_STATE",
            "SPEED",
        ],
        &rows,
    );
    if !scan.rports.is_empty() {
        let rows: Vec<Vec<String>> = scan
            .rports
            .iter()
            .map(|r| {
                vec![
                    r.name.clone(),
                    opt(&r.port_name),
                    opt(&r.node_name),
                    opt(&r.port_id),
                    opt(&r.port_state),
                    opt(&r.roles),
                    r.scsi_target_id.map_or("-".into(), |t| t.to_string()),
                    opt(&r.dev_loss_tmo),
                    opt(&r.fast_io_fail_tmo),
                ]
            })
            .collect();
        out.push('\n');
        out.push_str(&table(
            &[
                "RPORT",
                "PORT_NAME",
                "NODE_NAME",
                "PORT_ID",
                "STATE",
                "ROLES",
                "TARGET",
                "DEV_LOSS",
                "FAST_IO_FAIL",
            ],
            &rows,
        ));
    }
    if !scan.sessions.is_empty() {
        let rows: Vec<Vec<String>> = scan
            .sessions
            .iter()
            .map(|s| {
                vec![
                    s.name.clone(),
                    s.host.map_or("-".into(), |h| format!("host{h}")),
                    opt(&s.targetname),
                    format!("{}:{}", opt(&s.persistent_address), opt(&s.persistent_port)),
                    opt(&s.state),
                ]
            })
            .collect();
        out.push('\n');
        out.push_str(&table(
            &["SESSION", "HOST", "TARGETNAME", "PORTAL", "STATE"],
            &rows,
        ));
    }
    if !scan.sas_devices.is_empty() {
        let rows: Vec<Vec<String>> = scan
            .sas_devices
            .iter()
            .map(|s| {
                vec![
                    s.name.clone(),
                    s.host.map_or("-".into(), |h| format!("host{h}")),
                    opt(&s.sas_address),
                    opt(&s.target_port_protocols),
                ]
            })
            .collect();
        out.push('\n');
        out.push_str(&table(
            &["END_DEVICE", "HOST", "SAS_ADDRESS", "PROTOCOLS"],
            &rows,
        ));
    }
    out
}

/// A rescan diff for humans.
pub fn diff_text(d: &Diff) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} added, {} removed, {} changed{}",
        d.added.len(),
        d.removed.len(),
        d.changed.len(),
        if d.settled {
            ""
        } else {
            " (devices were still changing at the timeout)"
        }
    );
    if !d.added.is_empty() {
        out.push_str("\nadded:\n");
        out.push_str(&paths_table(&d.added));
    }
    if !d.removed.is_empty() {
        out.push_str("\nremoved:\n");
        out.push_str(&paths_table(&d.removed));
    }
    if !d.changed.is_empty() {
        out.push_str("\nchanged:\n");
        let rows: Vec<Vec<String>> = d
            .changed
            .iter()
            .map(|c| {
                vec![
                    c.hctl.to_string(),
                    c.dev.clone(),
                    format!(
                        "{} -> {}",
                        human_size(c.size_before),
                        human_size(c.size_after)
                    ),
                    format!("{} -> {}", c.state_before, c.state_after),
                    opt(&c.wwid),
                ]
            })
            .collect();
        out.push_str(&table(&["HCTL", "DEV", "SIZE", "STATE", "WWID"], &rows));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Hctl;

    #[test]
    fn sizes() {
        assert_eq!(human_size(Some(8 << 20)), "8.0M");
        assert_eq!(human_size(Some(20 << 30)), "20G");
        assert_eq!(human_size(Some(512)), "512B");
        assert_eq!(human_size(None), "-");
    }

    #[test]
    fn proc_format_matches_the_kernel() {
        let mut p = ScsiPath::new(Hctl::new(0, 0, 0, 1), "sdb");
        p.vendor = "Linux".into();
        p.model = "scsi_debug".into();
        p.rev = "0191".into();
        p.scsi_type = Some(0);
        p.scsi_level = Some(8);
        assert_eq!(
            proc_scsi(&[p]),
            "Attached devices:\n\
             Host: scsi0 Channel: 00 Id: 00 Lun: 01\n  \
             Vendor: Linux    Model: scsi_debug       Rev: 0191\n  \
             Type:   Direct-Access                    ANSI  SCSI revision: 07\n"
        );
    }

    #[test]
    fn table_alignment() {
        let t = table(&["A", "BB"], &[vec!["xxx".into(), "y".into()]]);
        assert_eq!(t, "A    BB\nxxx  y\n");
    }
}
