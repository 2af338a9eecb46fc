//! `etcd://HOST:PORT,...`: the registry in an etcd v3 cluster, through the `etcd-client` crate.
//! hostsync's API is synchronous (the daemon and the CLI are), so calls run on one small
//! process-wide tokio runtime. Transient failures (no leader during an election, a member
//! going away, a timeout) are retried until a deadline; every write hostsync makes is a
//! conditional transaction or an idempotent put, so a retry after an unknown outcome is safe.

use std::future::Future;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use etcd_client::{
    Client, CompactionOptions, Compare as ECompare, CompareOp, ConnectOptions, EventType,
    GetOptions, PutOptions, Txn, TxnOp, TxnOpResponse, WatchOptions, WatchStream,
};

use crate::registry::{Compare, Event, Kv, Op, Registry, Snapshot, TxnResult, WatchEvent, Watcher};
use crate::{Error, Result};

/// How long one call keeps retrying transient failures.
const DEADLINE: Duration = Duration::from_secs(30);
/// Timeout of one attempt.
const ATTEMPT: Duration = Duration::from_secs(5);

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        #[allow(clippy::expect_used)]
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("hostsync-etcd")
            .enable_all()
            .build()
            .expect("cannot start the tokio runtime for the etcd client")
    })
}

fn transient(e: &etcd_client::Error) -> bool {
    use etcd_client::Error as E;
    match e {
        // Not worth retrying: InvalidArgument 3, NotFound 5, AlreadyExists 6,
        // PermissionDenied 7, FailedPrecondition 9, OutOfRange 11 (compacted),
        // Unimplemented 12, Unauthenticated 16.
        E::GRpcStatus(s) => !matches!(s.code() as i32, 3 | 5 | 6 | 7 | 9 | 11 | 12 | 16),
        E::TransportError(_) | E::IoError(_) | E::WatchError(_) | E::LeaseKeepAliveError(_) => true,
        _ => false,
    }
}

/// The registry in etcd.
#[derive(Clone)]
pub struct EtcdRegistry {
    url: String,
    client: Client,
}

impl std::fmt::Debug for EtcdRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdRegistry")
            .field("url", &self.url)
            .finish()
    }
}

fn options() -> ConnectOptions {
    ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(2))
        .with_timeout(ATTEMPT)
        .with_keep_alive(Duration::from_secs(2), Duration::from_secs(2))
        .with_require_leader(true)
}

fn to_kv(kv: &etcd_client::KeyValue) -> Kv {
    Kv {
        key: String::from_utf8_lossy(kv.key()).into_owned(),
        value: kv.value().to_vec(),
        create_revision: kv.create_revision(),
        mod_revision: kv.mod_revision(),
        lease: kv.lease(),
    }
}

impl EtcdRegistry {
    /// Connects to the members at `endpoints` (`http://HOST:PORT`); `url` names it in messages.
    pub fn connect(url: &str, endpoints: &[String]) -> Result<Self> {
        let eps = endpoints.to_vec();
        let client = runtime()
            .block_on(async move { Client::connect(eps, Some(options())).await })
            .map_err(|e| Error::Registry {
                registry: url.to_string(),
                action: "connect".into(),
                message: e.to_string(),
            })?;
        Ok(Self {
            url: url.to_string(),
            client,
        })
    }

    fn err(&self, action: &str, e: impl ToString) -> Error {
        Error::Registry {
            registry: self.url.clone(),
            action: action.into(),
            message: e.to_string(),
        }
    }

    /// Runs `f` with retries of transient failures until [`DEADLINE`].
    fn call<T, F, Fut>(&self, action: &str, f: F) -> Result<T>
    where
        F: Fn(Client) -> Fut,
        Fut: Future<Output = std::result::Result<T, etcd_client::Error>>,
    {
        let start = Instant::now();
        let mut delay = Duration::from_millis(20);
        loop {
            let attempt = runtime()
                .block_on(async { tokio::time::timeout(ATTEMPT, f(self.client.clone())).await });
            let e = match attempt {
                Ok(Ok(v)) => return Ok(v),
                Ok(Err(e)) if !transient(&e) => return Err(self.err(action, e)),
                Ok(Err(e)) => e.to_string(),
                Err(_) => format!("no answer within {} s", ATTEMPT.as_secs()),
            };
            if start.elapsed() >= DEADLINE {
                return Err(self.err(
                    action,
                    format!("{e} (gave up after {} s)", DEADLINE.as_secs()),
                ));
            }
            tracing::debug!(registry = %self.url, action, error = %e, "retrying");
            std::thread::sleep(delay);
            delay = (delay * 2).min(Duration::from_millis(500));
        }
    }

    /// The status of every endpoint that answers: (endpoint, member id, leader id).
    pub fn member_status(endpoints: &[String]) -> Vec<(String, u64, u64)> {
        let mut out = Vec::new();
        for ep in endpoints {
            let ep2 = ep.clone();
            let r = runtime().block_on(async move {
                let mut c = Client::connect([ep2], Some(options())).await?;
                tokio::time::timeout(Duration::from_secs(2), c.status())
                    .await
                    .map_err(|_| etcd_client::Error::InvalidArgs("timeout".into()))?
            });
            if let Ok(s) = r
                && let Some(h) = s.header()
            {
                out.push((ep.clone(), h.member_id(), s.leader()));
            }
        }
        out
    }
}

impl Registry for EtcdRegistry {
    fn url(&self) -> String {
        self.url.clone()
    }

    fn get(&self, key: &str) -> Result<Option<Kv>> {
        let r = self.call(&format!("read {key}"), |mut c| async move {
            c.get(key, None).await
        })?;
        Ok(r.kvs().first().map(to_kv))
    }

    fn range(&self, prefix: &str) -> Result<Snapshot> {
        let r = self.call(&format!("read {prefix}*"), |mut c| async move {
            c.get(prefix, Some(GetOptions::new().with_prefix())).await
        })?;
        Ok(Snapshot {
            revision: r.header().map_or(0, |h| h.revision()),
            kvs: r.kvs().iter().map(to_kv).collect(),
        })
    }

    fn txn(&self, when: &[Compare], then: &[Op]) -> Result<TxnResult> {
        let compares: Vec<ECompare> = when
            .iter()
            .map(|c| match c {
                Compare::Absent(k) => ECompare::create_revision(k.as_str(), CompareOp::Equal, 0),
                Compare::ModRevision(k, r) => {
                    ECompare::mod_revision(k.as_str(), CompareOp::Equal, *r)
                }
            })
            .collect();
        let ops: Vec<TxnOp> = then
            .iter()
            .map(|o| match o {
                Op::Put { key, value, lease } => TxnOp::put(
                    key.as_str(),
                    value.clone(),
                    (*lease != 0).then(|| PutOptions::new().with_lease(*lease)),
                ),
                Op::Delete { key } => TxnOp::delete(key.as_str(), None),
            })
            .collect();
        let gets: Vec<TxnOp> = when.iter().map(|c| TxnOp::get(c.key(), None)).collect();
        let keys: Vec<&str> = when.iter().map(Compare::key).collect();
        let r = self.call(&format!("write {}", keys.join(" and ")), |mut c| {
            let t = Txn::new()
                .when(compares.clone())
                .and_then(ops.clone())
                .or_else(gets.clone());
            async move { c.txn(t).await }
        })?;
        let mut current = Vec::new();
        if !r.succeeded() {
            for op in r.op_responses() {
                if let TxnOpResponse::Get(g) = op {
                    current.extend(g.kvs().iter().map(to_kv));
                }
            }
        }
        Ok(TxnResult {
            succeeded: r.succeeded(),
            revision: r.header().map_or(0, |h| h.revision()),
            current,
        })
    }

    fn watch(&self, prefix: &str, from_revision: i64) -> Result<Box<dyn Watcher>> {
        Ok(Box::new(EtcdWatcher {
            reg: self.clone(),
            prefix: prefix.to_string(),
            next: from_revision.max(1),
            stream: None,
        }))
    }

    fn grant_lease(&self, ttl_s: i64) -> Result<i64> {
        let r = self.call("grant a lease", |mut c| async move {
            c.lease_grant(ttl_s, None).await
        })?;
        Ok(r.id())
    }

    fn keep_alive(&self, lease: i64) -> Result<bool> {
        self.call(&format!("renew lease {lease:x}"), |mut c| async move {
            // Opening the keep-alive stream sends one renewal and reads its answer.
            match c.lease_keep_alive(lease).await {
                Ok(_) => Ok(true),
                // The lease expired or was revoked: an answer, not a failure.
                Err(etcd_client::Error::LeaseKeepAliveError(m)) if m.contains("not found") => {
                    Ok(false)
                }
                Err(e) => Err(e),
            }
        })
    }

    fn revoke_lease(&self, lease: i64) -> Result<()> {
        let r = self.call(&format!("revoke lease {lease:x}"), |mut c| async move {
            c.lease_revoke(lease).await
        });
        match r {
            Ok(_) => Ok(()),
            // Already expired: its keys are gone, which is what revoking wanted.
            Err(Error::Registry { message, .. }) if message.contains("lease not found") => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn compact(&self, revision: i64) -> Result<()> {
        self.call(
            &format!("compact to revision {revision}"),
            |mut c| async move {
                c.compact(revision, Some(CompactionOptions::new().with_physical()))
                    .await
            },
        )?;
        Ok(())
    }
}

struct EtcdWatcher {
    reg: EtcdRegistry,
    prefix: String,
    next: i64,
    stream: Option<WatchStream>,
}

enum Step {
    Got(WatchEvent),
    Broken(String),
}

impl Watcher for EtcdWatcher {
    fn next(&mut self, timeout: Duration) -> Result<WatchEvent> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let mut client = self.reg.client.clone();
            let prefix = self.prefix.clone();
            let next = self.next;
            let mut stream = self.stream.take();
            let step = runtime().block_on(async {
                if stream.is_none() {
                    let opts = WatchOptions::new().with_prefix().with_start_revision(next);
                    match tokio::time::timeout_at(deadline, client.watch(prefix, Some(opts))).await
                    {
                        Ok(Ok(s)) => stream = Some(s),
                        Ok(Err(e)) => return (Step::Broken(e.to_string()), None),
                        Err(_) => return (Step::Got(WatchEvent::Idle), None),
                    }
                }
                let Some(s) = stream.as_mut() else {
                    return (Step::Broken("no stream".into()), None);
                };
                loop {
                    match tokio::time::timeout_at(deadline, s.message()).await {
                        Err(_) => return (Step::Got(WatchEvent::Idle), stream),
                        Ok(Err(e)) => return (Step::Broken(e.to_string()), None),
                        Ok(Ok(None)) => return (Step::Broken("stream ended".into()), None),
                        Ok(Ok(Some(resp))) => {
                            if resp.canceled() {
                                if resp.compact_revision() > 0 {
                                    return (Step::Got(WatchEvent::Resync), None);
                                }
                                return (
                                    Step::Broken(format!("cancelled: {}", resp.cancel_reason())),
                                    None,
                                );
                            }
                            if resp.events().is_empty() {
                                continue;
                            }
                            let mut rev = 0;
                            let events = resp
                                .events()
                                .iter()
                                .filter_map(|ev| {
                                    let kv = ev.kv()?;
                                    rev = rev.max(kv.mod_revision());
                                    Some(match ev.event_type() {
                                        EventType::Put => Event::Put(to_kv(kv)),
                                        EventType::Delete => Event::Delete {
                                            key: String::from_utf8_lossy(kv.key()).into_owned(),
                                            revision: kv.mod_revision(),
                                        },
                                    })
                                })
                                .collect();
                            return (
                                Step::Got(WatchEvent::Changes {
                                    revision: rev,
                                    events,
                                }),
                                stream,
                            );
                        }
                    }
                }
            });
            match step {
                (Step::Got(ev), s) => {
                    self.stream = s;
                    if let WatchEvent::Changes { revision, .. } = &ev {
                        self.next = revision + 1;
                    }
                    return Ok(ev);
                }
                (Step::Broken(e), _) => {
                    // A member went away or the leader changed: watch again from where we
                    // were, through whichever member answers.
                    tracing::debug!(registry = %self.reg.url, error = %e, "watch broken, re-creating");
                    if tokio::time::Instant::now() >= deadline {
                        return Ok(WatchEvent::Idle);
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        }
    }
}
