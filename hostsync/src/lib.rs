//! hostsync: the cluster layer. One name per LUN on every host, decided cluster-wide through a
//! [`Registry`] (`local:DIR` or `etcd://HOST:PORT,...`). See hostsync/README.md.

pub mod activate;
pub mod block;
pub mod doctor;
pub mod domu;
pub mod domu_disk;
mod error;
pub mod etcd;
pub mod fence;
pub mod hosts;
pub mod import;
mod kvstate;
pub mod local;
pub mod lvcheck;
pub mod lvm;
pub mod lvstate;
pub mod migrate;
pub mod namer;
pub mod names;
pub mod probe;
pub mod provision;
pub mod publish;
pub mod registry;
pub mod report;
pub mod runner;
pub mod san;
#[doc(hidden)]
pub mod testkit;
pub mod vgshare;
pub mod watch;

pub use error::{Error, Result};
pub use hosts::{HostPresence, HostState, MapState, cluster_state, publish_host_state};
pub use namer::{CacheReport, ClusterNamer, NamerOptions};
pub use registry::{Registry, open};
