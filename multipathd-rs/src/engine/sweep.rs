//! The engine's side of the sweep thread ([`crate::sweep`]): it hands the thread the member
//! paths when they changed and takes the thread's news (states read, paths to check at once).

#[allow(clippy::wildcard_imports)]
use super::*;

use crate::sweep::{Member, Membership, Port, SweepLink};

impl Engine {
    /// Lets a sweep thread watch the member paths (the daemon starts it); from now on the
    /// daemon loop takes its news ([`Engine::take_sweep_news`]) instead of sweeping under the
    /// lock, and the planner counts a path the thread read down as unusable.
    pub fn attach_sweep(&mut self, link: SweepLink) {
        self.sweep = Some(link);
        self.publish_sweep_members();
    }

    /// Whether a sweep thread is attached.
    pub fn sweep_attached(&self) -> bool {
        self.sweep.is_some()
    }

    /// The device-mapper backend, shared with the threads that call it directly (the sweep).
    pub fn shared_backend(&self) -> Arc<dyn DmBackend> {
        Arc::clone(&self.backend)
    }

    /// A path's SCSI `state` attribute: in its SCSI device's directory when the scan found it
    /// (no symlinks to walk), else under `block/<dev>/device/`.
    pub(super) fn state_file_of(&self, p: &ScsiPath) -> PathBuf {
        if p.syspath.as_os_str().is_empty() {
            self.opts
                .sysfs_root
                .join("block")
                .join(&p.dev)
                .join("device/state")
        } else {
            p.syspath.join("state")
        }
    }

    /// The transport port a path runs through and its state attribute: its FC remote port's
    /// `port_state`, or its iSCSI session's `state` (None for other transports).
    fn port_of(&self, p: &ScsiPath) -> Option<Port> {
        let class = self.opts.sysfs_root.join("class");
        if let Some(r) = &p.rport {
            Some(Port {
                name: r.to_string(),
                state_file: class
                    .join("fc_remote_ports")
                    .join(r.as_str())
                    .join("port_state"),
                healthy: "Online",
            })
        } else {
            p.iscsi_session.as_ref().map(|s| Port {
                name: s.to_string(),
                state_file: class.join("iscsi_session").join(s.as_str()).join("state"),
                healthy: "LOGGED_IN",
            })
        }
    }

    /// Hands the sweep thread the member paths when they differ from what it has (a walk over
    /// the maps' tables, no allocation when nothing changed). Returns whether it replaced them.
    /// The daemon calls it whenever it publishes a snapshot (after a change).
    pub fn publish_sweep_members(&self) -> bool {
        let Some(link) = &self.sweep else {
            return false;
        };
        let current = link.membership();
        let mut i = 0;
        let mut same = true;
        'maps: for m in self.maps.values() {
            for d in m.table.paths().map(|p| p.devno) {
                let Some(p) = self.path_at(d) else {
                    continue;
                };
                let ok = current.members.get(i).is_some_and(|x| {
                    x.devno == d
                        && x.dev == p.dev
                        && x.map == m.name
                        && x.port
                            .and_then(|k| current.ports.get(k))
                            .map(|q| q.name.as_str())
                            == port_name(p)
                        && if p.syspath.as_os_str().is_empty() {
                            x.state_file == self.state_file_of(p)
                        } else {
                            x.state_file.parent() == Some(p.syspath.as_path())
                        }
                });
                i += 1;
                if !ok {
                    same = false;
                    break 'maps;
                }
            }
        }
        if same && i == current.members.len() {
            return false;
        }
        let mut members = Vec::with_capacity(self.member.len());
        let mut ports: Vec<Port> = Vec::new();
        let mut port_index: HashMap<String, usize> = HashMap::new();
        for m in self.maps.values() {
            for d in m.table.paths().map(|p| p.devno) {
                if let Some(p) = self.path_at(d) {
                    let port = match port_name(p).map(|k| port_index.get(k)) {
                        Some(Some(&k)) => Some(k),
                        Some(None) => self.port_of(p).map(|q| {
                            port_index.insert(q.name.clone(), ports.len());
                            ports.push(q);
                            ports.len() - 1
                        }),
                        None => None,
                    };
                    members.push(Member {
                        dev: p.dev.clone(),
                        devno: d,
                        map: m.name.clone(),
                        state_file: self.state_file_of(p),
                        known: p.state.to_string(),
                        port,
                    });
                }
            }
        }
        link.set_membership(Membership { members, ports });
        true
    }

    /// Takes what the sweep thread read since the last call: each moved path gets its new
    /// SCSI state and is due for its real check at once (a path the thread failed is then
    /// known failed by its check, and stays failed across reloads). Returns those paths.
    pub fn take_sweep_news(&mut self) -> Vec<String> {
        let Some(link) = &self.sweep else {
            return Vec::new();
        };
        let news = link.take_news();
        let now = self.clock.now();
        let mut moved = Vec::with_capacity(news.len());
        for (dev, state) in news {
            let Some(&i) = self.by_dev.get(&dev) else {
                continue;
            };
            self.paths[i].state = state.into();
            self.scheduler.recheck_path(&dev, now);
            moved.push(dev);
        }
        moved
    }

    /// Whether the sweep thread read `dev` down and the engine has not taken that news yet.
    pub(super) fn swept_down(&self, dev: &str) -> bool {
        self.sweep.as_ref().is_some_and(|l| l.reported_down(dev))
    }

    /// The sweep's counters for `show status` (zeros without a thread).
    pub(super) fn sweep_stats(&self) -> crate::sweep::SweepStats {
        self.sweep
            .as_ref()
            .map(SweepLink::stats)
            .unwrap_or_default()
    }
}

/// The name of the transport port a path runs through (see [`Engine::port_of`]).
fn port_name(p: &ScsiPath) -> Option<&str> {
    p.rport.as_deref().or(p.iscsi_session.as_deref())
}
