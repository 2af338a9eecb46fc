//! Test and benchmark support: a real etcd cluster of N members on loopback ports, started
//! with Debian's `/usr/bin/etcd`, data in a private directory, every member killed on drop;
//! and the records the block script's tests (unit and integration) share. Not part of the API.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::etcd::EtcdRegistry;

/// Where Debian installs etcd.
pub const ETCD_BIN: &str = "/usr/bin/etcd";

/// True if etcd is installed (tests skip with a message otherwise).
pub fn etcd_available() -> bool {
    Path::new(ETCD_BIN).is_file()
}

fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

struct Member {
    name: String,
    client: u16,
    peer: u16,
    child: Option<Child>,
}

/// A running etcd cluster.
pub struct EtcdCluster {
    dir: PathBuf,
    members: Vec<Member>,
    token: String,
}

impl std::fmt::Debug for EtcdCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdCluster")
            .field("url", &self.url())
            .finish()
    }
}

impl EtcdCluster {
    /// Starts `n` members and waits until they have a leader.
    pub fn start(n: usize) -> std::io::Result<Self> {
        let base = if Path::new("/dev/shm").is_dir() {
            PathBuf::from("/dev/shm")
        } else {
            std::env::temp_dir()
        };
        static SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let token = format!(
            "hostsync-test-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        let dir = base.join(&token);
        std::fs::create_dir_all(&dir)?;
        let mut members = Vec::new();
        for i in 0..n {
            members.push(Member {
                name: format!("m{i}"),
                client: free_port()?,
                peer: free_port()?,
                child: None,
            });
        }
        let mut c = Self {
            dir,
            members,
            token,
        };
        for i in 0..n {
            c.spawn(i, "new")?;
        }
        if let Err(e) = c.wait_leader(Duration::from_secs(30)) {
            // The directory goes with the cluster: what the members said goes in the error.
            return Err(std::io::Error::other(format!("{e}; {}", c.log_tails(5))));
        }
        Ok(c)
    }

    /// The last `lines` lines of each member's log, and whether it is still running.
    fn log_tails(&mut self, lines: usize) -> String {
        let mut out = Vec::new();
        for m in &mut self.members {
            let running = m
                .child
                .as_mut()
                .is_some_and(|c| matches!(c.try_wait(), Ok(None)));
            let log = std::fs::read_to_string(self.dir.join(format!("{}.log", m.name)))
                .unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(lines).collect();
            out.push(format!(
                "{} (client port {}, peer port {}, {}): {}",
                m.name,
                m.client,
                m.peer,
                if running { "running" } else { "exited" },
                tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
            ));
        }
        out.join("; ")
    }

    fn spawn(&mut self, i: usize, state: &str) -> std::io::Result<()> {
        let initial: Vec<String> = self
            .members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer))
            .collect();
        let m = &self.members[i];
        let log = std::fs::File::create(self.dir.join(format!("{}.log", m.name)))?;
        let child = Command::new(ETCD_BIN)
            .args(["--name", &m.name])
            .arg("--data-dir")
            .arg(self.dir.join(&m.name))
            .args([
                "--listen-client-urls",
                &format!("http://127.0.0.1:{}", m.client),
                "--advertise-client-urls",
                &format!("http://127.0.0.1:{}", m.client),
                "--listen-peer-urls",
                &format!("http://127.0.0.1:{}", m.peer),
                "--initial-advertise-peer-urls",
                &format!("http://127.0.0.1:{}", m.peer),
                "--initial-cluster",
                &initial.join(","),
                "--initial-cluster-state",
                state,
                "--initial-cluster-token",
                &self.token,
                "--heartbeat-interval",
                "50",
                "--election-timeout",
                "500",
                "--logger",
                "zap",
                "--log-level",
                "warn",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()?;
        self.members[i].child = Some(child);
        Ok(())
    }

    /// `etcd://...` with every member.
    pub fn url(&self) -> String {
        let eps: Vec<String> = self
            .members
            .iter()
            .map(|m| format!("127.0.0.1:{}", m.client))
            .collect();
        format!("etcd://{}", eps.join(","))
    }

    /// `http://127.0.0.1:PORT` of every member.
    pub fn endpoints(&self) -> Vec<String> {
        self.members
            .iter()
            .map(|m| format!("http://127.0.0.1:{}", m.client))
            .collect()
    }

    /// Index of the current leader among the running members.
    pub fn leader(&self) -> Option<usize> {
        let st = EtcdRegistry::member_status(&self.endpoints());
        let leader = st.iter().find(|s| s.2 != 0)?.2;
        let ep = st.iter().find(|s| s.1 == leader)?.0.clone();
        self.endpoints().iter().position(|e| *e == ep)
    }

    /// Waits until a running member reports a leader.
    pub fn wait_leader(&self, timeout: Duration) -> std::io::Result<usize> {
        let start = Instant::now();
        loop {
            if let Some(l) = self.leader() {
                return Ok(l);
            }
            if start.elapsed() > timeout {
                return Err(std::io::Error::other(format!(
                    "etcd cluster has no leader after {} s; logs in {}",
                    timeout.as_secs(),
                    self.dir.display()
                )));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Kills member `i` with SIGKILL (a crash).
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.members[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Stops member `i` cleanly (SIGTERM).
    pub fn stop(&mut self, i: usize) {
        if let Some(mut c) = self.members[i].child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(10) {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts member `i` again on its data directory.
    pub fn restart(&mut self, i: usize) -> std::io::Result<()> {
        self.spawn(i, "existing")
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Block-script fixture: `host`'s LVM record, holding vgsan/web1 (LV UUID `LV1`, open) in
/// `mode`.
pub fn holding(host: &str, mode: crate::lvstate::LvMode) -> crate::lvstate::HostLvm {
    crate::lvstate::HostLvm {
        host: host.into(),
        host_id: Some(1),
        io_timeout: Some(10),
        taken_unix: 1,
        vgs: vec![],
        lvs: vec![crate::lvstate::LvState {
            vg: "vgsan".into(),
            lv: "web1".into(),
            uuid: "LV1".into(),
            mode,
            open: true,
        }],
    }
}

/// Block-script fixture: domU web1's migration from `from` to `to`, handing over LV1.
pub fn web1_migration(from: &str, to: &str) -> crate::lvstate::Migration {
    crate::lvstate::Migration {
        domu: "web1".into(),
        from: from.into(),
        to: to.into(),
        lv_uuids: vec!["LV1".into()],
        started_unix: 1,
    }
}
