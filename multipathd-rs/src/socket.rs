//! The control socket: a Unix stream socket server, its client, and the request language.
//!
//! Protocol (also in multipathd-rs/README.md, "Control socket"):
//! - The client connects and sends one request per line, terminated by `\n` (a `\r` before it
//!   is ignored), at most [`MAX_REQUEST_LEN`] bytes. A request is either plain words that
//!   mirror multipathd's CLI (`show maps json`, `fail path sda`) or a JSON object, the serde
//!   form of [`Command`] (`{"command":"fail_path","dev":"sda"}`).
//! - The server answers each request with a header line `CODE LENGTH\n` (HTTP-like status
//!   code, body length in bytes) followed by exactly LENGTH bytes of UTF-8 body. Several
//!   requests may follow on one connection; the server closes it on EOF, after an idle
//!   timeout, or after a request it could not frame (too long, cut off).
//! - Reads (`show ...`) are answered for any user; changes only for uid 0, checked with the
//!   peer's kernel credentials (SO_PEERCRED), never with anything the client claims.

use crate::error::Error;
use crate::priority::ThreadPriority;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Where the daemon listens unless told otherwise (`--socket`).
pub const DEFAULT_SOCKET_PATH: &str = "/run/multipathd-rs.sock";
/// Longest request line the server reads, newline excluded.
pub const MAX_REQUEST_LEN: usize = 4096;
/// How often the accept loop looks at its stop flag when no connection arrives.
pub const ACCEPT_POLL: Duration = Duration::from_millis(200);
/// How long a connection beyond the limit waits for a slot before its 503 (see
/// [`ServerOptions::busy_wait`]).
pub const BUSY_WAIT: Duration = Duration::from_millis(250);
/// Longest response body the client accepts.
pub const MAX_RESPONSE_LEN: usize = 256 * 1024 * 1024;

type Result<T> = std::result::Result<T, Error>;

/// How a `show` command wants its answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// Human tables / the `multipath -ll` layout.
    Human,
    /// Our own JSON (`--json`), see [`crate::output`].
    Json,
    /// multipathd's JSON shape (`show maps json`, `show map MAP json`).
    MultipathdJson,
}

/// A typed control request. The words each variant is parsed from are in its doc comment.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum Command {
    /// `show paths [--json|json]`
    ShowPaths { format: Format },
    /// `show maps` (table), `show maps json` (multipathd's JSON), `show maps --json` (ours)
    ShowMaps { format: Format },
    /// `show map MAP` (its topology), `show map MAP json`, `show map MAP --json`
    ShowMap { map: String, format: Format },
    /// `show topology`, `show maps topology`, `show map MAP topology`
    ShowTopology { map: Option<String> },
    /// `show config`
    ShowConfig,
    /// `show status [--json|json]`
    ShowStatus { format: Format },
    /// `fail path DEV`
    FailPath { dev: String },
    /// `reinstate path DEV`
    ReinstatePath { dev: String },
    /// `switchgroup MAP N`, `switchgroup map MAP group N`, `switch map MAP group N`
    SwitchGroup { map: String, group: u32 },
    /// `resize map MAP`
    ResizeMap { map: String },
    /// `rename map MAP force`: the rename the configuration asks for, although MAP is open
    RenameMapForce { map: String },
    /// `add path DEV`
    AddPath { dev: String },
    /// `del path DEV`, `remove path DEV`
    DelPath { dev: String },
    /// `add map MAP`
    AddMap { map: String },
    /// `del map MAP`, `remove map MAP`
    DelMap { map: String },
    /// `reconfigure`
    Reconfigure,
    /// `rescan`
    Rescan,
    /// `shutdown`
    Shutdown,
}

/// The commands, one per line, for error messages and `help`.
pub const COMMAND_SUMMARY: &str = "\
show paths [--json]
show maps [json|--json]
show map MAP [json|--json|topology]
show topology
show config
show status [--json]
fail path DEV
reinstate path DEV
switchgroup MAP N  (also: switch map MAP group N)
resize map MAP
rename map MAP force  (an open map's pending rename)
add path DEV
del path DEV
add map MAP
del map MAP
reconfigure
rescan
shutdown";

impl Command {
    /// Whether the command changes anything (and so needs root).
    pub fn is_change(&self) -> bool {
        !matches!(
            self,
            Command::ShowPaths { .. }
                | Command::ShowMaps { .. }
                | Command::ShowMap { .. }
                | Command::ShowTopology { .. }
                | Command::ShowConfig
                | Command::ShowStatus { .. }
        )
    }

    /// Parse a request line: a JSON object (first non-blank character `{`) or plain words.
    pub fn parse_request(line: &str) -> Result<Command> {
        let trimmed = line.trim();
        if trimmed.starts_with('{') {
            serde_json::from_str(trimmed).map_err(|e| Error::BadRequest {
                request: trimmed.to_string(),
                reason: format!("not a valid JSON command: {e}"),
            })
        } else {
            Self::parse_words(trimmed)
        }
    }

    /// Parse multipathd-style plain words (`show maps json`, `fail path sda`).
    pub fn parse_words(line: &str) -> Result<Command> {
        let words: Vec<&str> = line.split_whitespace().collect();
        let bad = |reason: String| Error::BadRequest {
            request: line.to_string(),
            reason,
        };
        let lower: Vec<String> = words.iter().map(|w| w.to_ascii_lowercase()).collect();
        let kw: Vec<&str> = lower.iter().map(String::as_str).collect();
        let show_format = |rest: &[&str], mpd_json: bool| -> Result<Format> {
            match rest {
                [] => Ok(Format::Human),
                ["--json"] => Ok(Format::Json),
                ["json"] if mpd_json => Ok(Format::MultipathdJson),
                ["json"] => Ok(Format::Json),
                other => Err(bad(format!(
                    "unexpected words after the command: {}",
                    other.join(" ")
                ))),
            }
        };
        let group_number = |w: &str| -> Result<u32> {
            match w.parse::<u32>() {
                Ok(n) if n >= 1 => Ok(n),
                _ => Err(bad(format!(
                    "path group number {w:?} is not a number from 1 up"
                ))),
            }
        };
        // Positional arguments keep their case (device and map names are case-sensitive).
        let arg = |i: usize| words.get(i).map(|s| s.to_string());
        match kw.as_slice() {
            [] => Err(bad("empty request".into())),
            ["show" | "list", "paths", rest @ ..] => Ok(Command::ShowPaths {
                format: show_format(rest, false)?,
            }),
            ["show" | "list", "maps" | "multipaths", "topology"]
            | ["show" | "list", "topology"] => Ok(Command::ShowTopology { map: None }),
            ["show" | "list", "maps" | "multipaths", rest @ ..] => Ok(Command::ShowMaps {
                format: show_format(rest, true)?,
            }),
            ["show" | "list", "map" | "multipath", _, "topology"] => {
                Ok(Command::ShowTopology { map: arg(2) })
            }
            ["show" | "list", "map" | "multipath", _, rest @ ..] => Ok(Command::ShowMap {
                map: words[2].to_string(),
                format: show_format(rest, true)?,
            }),
            ["show" | "list", "config"] => Ok(Command::ShowConfig),
            ["show" | "list", "status" | "daemon", rest @ ..] => Ok(Command::ShowStatus {
                format: show_format(rest, false)?,
            }),
            ["fail", "path", _] => Ok(Command::FailPath {
                dev: words[2].to_string(),
            }),
            ["reinstate", "path", _] => Ok(Command::ReinstatePath {
                dev: words[2].to_string(),
            }),
            ["switchgroup" | "switch", "map" | "multipath", _, "group", n] => {
                Ok(Command::SwitchGroup {
                    map: words[2].to_string(),
                    group: group_number(n)?,
                })
            }
            ["switchgroup", _, n] => Ok(Command::SwitchGroup {
                map: words[1].to_string(),
                group: group_number(n)?,
            }),
            ["resize", "map" | "multipath", _] => Ok(Command::ResizeMap {
                map: words[2].to_string(),
            }),
            ["rename", "map" | "multipath", _, "force"] => Ok(Command::RenameMapForce {
                map: words[2].to_string(),
            }),
            ["add", "path", _] => Ok(Command::AddPath {
                dev: words[2].to_string(),
            }),
            ["del" | "remove", "path", _] => Ok(Command::DelPath {
                dev: words[2].to_string(),
            }),
            ["add", "map" | "multipath", _] => Ok(Command::AddMap {
                map: words[2].to_string(),
            }),
            ["del" | "remove", "map" | "multipath", _] => Ok(Command::DelMap {
                map: words[2].to_string(),
            }),
            ["reconfigure"] => Ok(Command::Reconfigure),
            ["rescan"] => Ok(Command::Rescan),
            ["shutdown"] => Ok(Command::Shutdown),
            _ => Err(bad(format!(
                "unknown command; the commands are:\n{COMMAND_SUMMARY}"
            ))),
        }
    }
}

impl FromStr for Command {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Command::parse_request(s)
    }
}

fn format_suffix(f: Format) -> &'static str {
    match f {
        Format::Human => "",
        Format::Json => " --json",
        Format::MultipathdJson => " json",
    }
}

/// The canonical plain words of a command; `Command::parse_words` reads them back.
impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Command::ShowPaths { format } => write!(f, "show paths{}", format_suffix(*format)),
            Command::ShowMaps { format } => write!(f, "show maps{}", format_suffix(*format)),
            Command::ShowMap { map, format } => {
                write!(f, "show map {map}{}", format_suffix(*format))
            }
            Command::ShowTopology { map: None } => f.write_str("show topology"),
            Command::ShowTopology { map: Some(m) } => write!(f, "show map {m} topology"),
            Command::ShowConfig => f.write_str("show config"),
            Command::ShowStatus { format } => write!(f, "show status{}", format_suffix(*format)),
            Command::FailPath { dev } => write!(f, "fail path {dev}"),
            Command::ReinstatePath { dev } => write!(f, "reinstate path {dev}"),
            Command::SwitchGroup { map, group } => write!(f, "switchgroup {map} {group}"),
            Command::ResizeMap { map } => write!(f, "resize map {map}"),
            Command::RenameMapForce { map } => write!(f, "rename map {map} force"),
            Command::AddPath { dev } => write!(f, "add path {dev}"),
            Command::DelPath { dev } => write!(f, "del path {dev}"),
            Command::AddMap { map } => write!(f, "add map {map}"),
            Command::DelMap { map } => write!(f, "del map {map}"),
            Command::Reconfigure => f.write_str("reconfigure"),
            Command::Rescan => f.write_str("rescan"),
            Command::Shutdown => f.write_str("shutdown"),
        }
    }
}

/// The permission policy: reads from anyone, changes only from uid 0.
pub fn may_run(command: &Command, uid: u32) -> bool {
    !command.is_change() || uid == 0
}

/// The outcome of a request, as a status code on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// 200: done; the body is the answer.
    Ok,
    /// 400: the request could not be read or understood.
    BadRequest,
    /// 403: the caller may not make this change.
    Denied,
    /// 404: the named map or path does not exist.
    NotFound,
    /// 500: the command was understood but failed; the body says why.
    Failed,
    /// 503: the server is at its connection limit; retry later.
    Busy,
}

impl Status {
    pub fn code(self) -> u16 {
        match self {
            Status::Ok => 200,
            Status::BadRequest => 400,
            Status::Denied => 403,
            Status::NotFound => 404,
            Status::Failed => 500,
            Status::Busy => 503,
        }
    }

    pub fn from_code(code: u16) -> Option<Status> {
        Some(match code {
            200 => Status::Ok,
            400 => Status::BadRequest,
            403 => Status::Denied,
            404 => Status::NotFound,
            500 => Status::Failed,
            503 => Status::Busy,
            _ => return None,
        })
    }
}

/// A body up to this size goes out in one write with its header line.
const SMALL_BODY: usize = 64 * 1024;

/// Larger bodies sent at once, over every connection of the process.
const LARGE_SENDS_AT_ONCE: usize = 2;

static LARGE_SENDS: Turns = Turns::new(LARGE_SENDS_AT_ONCE);

/// A counting semaphore: at most `limit` holders of a [`Turn`] at a time.
struct Turns {
    taken: std::sync::Mutex<usize>,
    freed: std::sync::Condvar,
    limit: usize,
}

struct Turn<'a>(&'a Turns);

impl Turns {
    const fn new(limit: usize) -> Turns {
        Turns {
            taken: std::sync::Mutex::new(0),
            freed: std::sync::Condvar::new(),
            limit,
        }
    }

    /// Waits for a turn (a send is bounded by the connection's write timeout, so turns
    /// come back).
    fn take(&self) -> Turn<'_> {
        let mut n = self
            .taken
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        while *n >= self.limit {
            n = self
                .freed
                .wait(n)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        *n += 1;
        Turn(self)
    }
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        let mut n = self
            .0
            .taken
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *n = n.saturating_sub(1);
        self.0.freed.notify_one();
    }
}

/// A response: status and text body (a table, JSON, or a sentence saying what went wrong).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {
    pub status: Status,
    pub body: String,
}

impl Response {
    pub fn new(status: Status, body: impl Into<String>) -> Self {
        Self {
            status,
            body: body.into(),
        }
    }
    pub fn ok(body: impl Into<String>) -> Self {
        Self::new(Status::Ok, body)
    }
    pub fn failed(body: impl Into<String>) -> Self {
        Self::new(Status::Failed, body)
    }
    pub fn not_found(body: impl Into<String>) -> Self {
        Self::new(Status::NotFound, body)
    }
    pub fn bad_request(body: impl Into<String>) -> Self {
        Self::new(Status::BadRequest, body)
    }
    pub fn is_ok(&self) -> bool {
        self.status == Status::Ok
    }

    /// Writes the header line and the body; a large body is written from where it lies (a
    /// shared 20 MB `show paths --json` answer is not copied per client).
    fn write_to(&self, w: &mut impl Write) -> std::io::Result<()> {
        if self.body.len() <= SMALL_BODY {
            return self.write_now(w);
        }
        // A few large answers go out at a time; the other clients wait (asleep, costing no
        // CPU) instead of 64 senders and 64 readers taking the CPU from the failover loop.
        let _turn = LARGE_SENDS.take();
        self.write_now(w)
    }

    fn write_now(&self, w: &mut impl Write) -> std::io::Result<()> {
        let head = format!("{} {}\n", self.status.code(), self.body.len());
        if self.body.len() <= SMALL_BODY {
            let mut buf = head.into_bytes();
            buf.extend_from_slice(self.body.as_bytes());
            w.write_all(&buf)?;
        } else {
            w.write_all(head.as_bytes())?;
            w.write_all(self.body.as_bytes())?;
        }
        w.flush()
    }
}

/// Sends a read's answer. A large one waits for its turn (see [`Response::write_to`]) without
/// holding the answer: it is let go, and after the wait taken back from whoever still shares
/// it (the handler's cache of the current snapshot), or asked for `again` (a newer snapshot's).
/// Otherwise 62 waiting clients would each keep a 20 MB answer of the snapshot they came in
/// on, one per snapshot published while they wait.
fn send_read(
    response: Arc<Response>,
    again: impl FnOnce() -> Arc<Response>,
    w: &mut impl Write,
) -> std::io::Result<()> {
    if response.body.len() <= SMALL_BODY {
        return response.write_now(w);
    }
    let kept = Arc::downgrade(&response);
    drop(response);
    let _turn = LARGE_SENDS.take();
    let response = kept.upgrade().unwrap_or_else(again);
    response.write_now(w)
}

/// Who is asking, from the kernel (SO_PEERCRED).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Peer {
    pub uid: u32,
    pub gid: u32,
    pub pid: i32,
}

/// Read the peer's credentials of a connected Unix socket with SO_PEERCRED.
pub fn peer_credentials(stream: &UnixStream) -> std::io::Result<Peer> {
    let cred = nix::sys::socket::getsockopt(stream, nix::sys::socket::sockopt::PeerCredentials)
        .map_err(std::io::Error::from)?;
    Ok(Peer {
        uid: cred.uid(),
        gid: cred.gid(),
        pid: cred.pid(),
    })
}

/// What the daemon does with a request. The composition layer implements it; the server
/// has already parsed the request and checked the permission policy when it is called.
pub trait CommandHandler: Send + Sync + 'static {
    fn handle(&self, command: &Command, peer: &Peer) -> Response;

    /// The same answer, possibly shared: a handler that answers many clients from one
    /// rendered text (the daemon's snapshot) hands out that text without a copy per client.
    fn handle_shared(&self, command: &Command, peer: &Peer) -> Arc<Response> {
        Arc::new(self.handle(command, peer))
    }
}

impl<F> CommandHandler for F
where
    F: Fn(&Command, &Peer) -> Response + Send + Sync + 'static,
{
    fn handle(&self, command: &Command, peer: &Peer) -> Response {
        self(command, peer)
    }
}

/// Server limits and seams.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// Longest request line, newline excluded.
    pub max_request_len: usize,
    /// How long a client has to deliver each complete request line (counted from the end
    /// of the previous answer, so a client trickling one byte at a time is cut off too);
    /// also the write timeout.
    pub idle_timeout: Duration,
    /// Connections served at once (one thread each); more are answered 503 and closed.
    pub max_connections: usize,
    /// Of `max_connections`, how many only root may use, so unprivileged clients holding
    /// connections open can never lock the administrator out.
    pub reserved_for_root: usize,
    /// Permissions of the socket file. Everyone may connect; changes are guarded by the
    /// peer's uid, not by file permissions.
    pub socket_mode: u32,
    /// How the server learns who is connected. [`peer_credentials`] in production; tests
    /// inject another function to act as a non-root user.
    pub credentials: fn(&UnixStream) -> std::io::Result<Peer>,
    /// The nice value a connection's thread answers read commands at (its starting one for
    /// changes), so `show` traffic never takes the CPU from failover (see
    /// [`crate::priority`]); None: every command at the accept thread's priority.
    pub read_nice: Option<i32>,
    /// How long a connection beyond `max_connections` waits for a slot before it is
    /// answered 503 (the accept loop waits with it; further connections queue meanwhile).
    pub busy_wait: Duration,
}

impl Default for ServerOptions {
    fn default() -> Self {
        Self {
            max_request_len: MAX_REQUEST_LEN,
            idle_timeout: Duration::from_secs(30),
            max_connections: 32,
            reserved_for_root: 4,
            socket_mode: 0o666,
            credentials: peer_credentials,
            read_nice: Some(crate::priority::READ_NICE),
            busy_wait: BUSY_WAIT,
        }
    }
}

/// A bound control socket, not yet serving.
pub struct Server {
    listener: UnixListener,
    path: PathBuf,
    inode: (u64, u64),
    options: ServerOptions,
    stop: Arc<AtomicBool>,
}

/// Stops a running server from anywhere (a handler answering `shutdown`, a signal thread).
#[derive(Debug, Clone)]
pub struct Stopper {
    stop: Arc<AtomicBool>,
    path: PathBuf,
}

impl Stopper {
    /// Ask the accept loop to end. Open connections finish the request being run; any
    /// further request on them is answered 503 "the daemon is shutting down".
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept(); failure means it is not listening any more.
        let _ = UnixStream::connect(&self.path);
    }
}

/// A server running in its own thread.
pub struct ServerHandle {
    stopper: Stopper,
    thread: JoinHandle<()>,
}

impl ServerHandle {
    pub fn stopper(&self) -> Stopper {
        self.stopper.clone()
    }

    /// Stop accepting, remove the socket file and wait for the accept loop to end.
    pub fn stop(self) {
        self.stopper.stop();
        self.join();
    }

    /// Wait for the accept loop to end (after a [`Stopper::stop`] from elsewhere).
    pub fn join(self) {
        if self.thread.join().is_err() {
            tracing::error!("control socket accept loop panicked");
        }
    }
}

impl Server {
    /// Create the socket at `path`. A stale socket file nobody listens on is replaced; a
    /// live one is an error ([`Error::SocketInUse`]); any other file there is left alone.
    pub fn bind(path: impl AsRef<Path>, options: ServerOptions) -> Result<Server> {
        let path = path.as_ref().to_path_buf();
        let bind_err = |source| Error::SocketBind {
            path: path.clone(),
            source,
        };
        if let Ok(meta) = std::fs::symlink_metadata(&path) {
            if !meta.file_type().is_socket() {
                return Err(bind_err(std::io::Error::new(
                    std::io::ErrorKind::AlreadyExists,
                    "a file that is not a socket is in the way",
                )));
            }
            match UnixStream::connect(&path) {
                Ok(_) => return Err(Error::SocketInUse { path }),
                Err(_) => std::fs::remove_file(&path).map_err(bind_err)?,
            }
        }
        let listener = UnixListener::bind(&path).map_err(bind_err)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(options.socket_mode))
            .map_err(bind_err)?;
        let meta = std::fs::metadata(&path).map_err(bind_err)?;
        Ok(Server {
            listener,
            inode: (meta.dev(), meta.ino()),
            path,
            options,
            stop: Arc::new(AtomicBool::new(false)),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn stopper(&self) -> Stopper {
        Stopper {
            stop: self.stop.clone(),
            path: self.path.clone(),
        }
    }

    /// Serve in a new thread.
    pub fn spawn<H: CommandHandler>(self, handler: Arc<H>) -> Result<ServerHandle> {
        let stopper = self.stopper();
        let path = self.path.clone();
        let thread = std::thread::Builder::new()
            .name("control-socket".into())
            .spawn(move || self.run(handler))
            .map_err(|source| Error::SocketBind { path, source })?;
        Ok(ServerHandle { stopper, thread })
    }

    /// The next connection, or None once the server is stopping. The listener is polled
    /// with a timeout rather than blocked in accept(), so a stop is seen within
    /// [`ACCEPT_POLL`] even when [`Stopper::stop`] cannot wake it by connecting (the socket
    /// file was removed, or replaced by another process's socket).
    fn next_connection(&self) -> Option<std::io::Result<UnixStream>> {
        use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
        use std::os::fd::AsFd;
        let timeout = PollTimeout::try_from(ACCEPT_POLL).unwrap_or(PollTimeout::NONE);
        loop {
            if self.stop.load(Ordering::SeqCst) {
                return None;
            }
            let mut fds = [PollFd::new(self.listener.as_fd(), PollFlags::POLLIN)];
            match poll(&mut fds, timeout) {
                Ok(0) | Err(nix::errno::Errno::EINTR) => continue,
                Ok(_) => {}
                Err(e) => return Some(Err(std::io::Error::from(e))),
            }
            if self.stop.load(Ordering::SeqCst) {
                return None;
            }
            match self.listener.accept() {
                // Accepted sockets are blocking whatever the listener is; made sure of here
                // because the connection threads rely on blocking reads with timeouts.
                Ok((stream, _)) => return Some(stream.set_nonblocking(false).map(|()| stream)),
                // The client gave up between poll and accept.
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(e) => return Some(Err(e)),
            }
        }
    }

    /// Serve on this thread until stopped; then remove the socket file (if it is still ours).
    pub fn run<H: CommandHandler>(self, handler: Arc<H>) {
        let active = Arc::new(Slots::default());
        // The accept loop (credentials, 503s) and the connections it starts run at the read
        // priority; a connection goes back to this thread's priority for a change.
        let base_nice = crate::priority::thread_nice().ok();
        ThreadPriority::of_this_thread(base_nice, self.options.read_nice).for_command(false);
        if let Err(e) = self.listener.set_nonblocking(true) {
            tracing::warn!(socket = %self.path.display(), "cannot make the listener non-blocking: {e}");
        }
        while let Some(conn) = self.next_connection() {
            let stream = match conn {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(socket = %self.path.display(), "accept failed: {e}");
                    // Avoid spinning if accept keeps failing (e.g. out of descriptors).
                    std::thread::sleep(Duration::from_millis(50));
                    continue;
                }
            };
            let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
            let peer = match (self.options.credentials)(&stream) {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!("cannot read the credentials of a control connection: {e}");
                    let _ = Response::new(
                        Status::Denied,
                        format!("cannot tell who is connecting ({e}); refusing to serve"),
                    )
                    .write_to(&mut &stream);
                    continue;
                }
            };
            let limit = if peer.uid == 0 {
                self.options.max_connections
            } else {
                self.options
                    .max_connections
                    .saturating_sub(self.options.reserved_for_root)
            };
            // At the limit, the connection waits a little for a slot, and the others wait in
            // the listen queue meanwhile: clients that retry a 503 at once cannot keep this
            // thread (and their own) spinning.
            if let Err(busy) = active.take_within(limit, self.options.busy_wait) {
                let _ = Response::new(
                    Status::Busy,
                    format!("the daemon is already serving {busy} connections; try again"),
                )
                .write_to(&mut &stream);
                continue;
            }
            let guard = ActiveGuard(active.clone());
            let handler = handler.clone();
            let options = self.options.clone();
            let stop = self.stop.clone();
            let spawned = std::thread::Builder::new()
                .name("control-conn".into())
                .spawn(move || {
                    let _guard = guard;
                    serve_connection(stream, peer, handler.as_ref(), &options, &stop, base_nice);
                });
            if let Err(e) = spawned {
                // The closure (and with it the guard) was dropped: the count is restored.
                tracing::warn!("cannot start a thread for a control connection: {e}");
            }
        }
        // Remove the socket file only if nobody replaced it meanwhile.
        if let Ok(meta) = std::fs::symlink_metadata(&self.path)
            && (meta.dev(), meta.ino()) == self.inode
        {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// The connections being served, and a wait for one to end.
#[derive(Default)]
struct Slots {
    taken: std::sync::Mutex<usize>,
    freed: std::sync::Condvar,
}

impl Slots {
    /// Takes a slot if fewer than `limit` are taken, waiting up to `wait` for one to free up;
    /// else the number taken.
    fn take_within(&self, limit: usize, wait: Duration) -> std::result::Result<(), usize> {
        let deadline = Instant::now() + wait;
        let mut n = self
            .taken
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        while *n >= limit {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(*n);
            }
            n = self
                .freed
                .wait_timeout(n, left)
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .0;
        }
        *n += 1;
        Ok(())
    }
}

struct ActiveGuard(Arc<Slots>);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        let mut n = self
            .0
            .taken
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *n = n.saturating_sub(1);
        self.0.freed.notify_one();
    }
}

/// Why a request line could not be read.
#[derive(Debug)]
enum LineError {
    /// No newline within the limit.
    TooLong,
    /// The peer closed the connection in the middle of a line.
    CutOff,
    Io(std::io::Error),
}

/// Read one `\n`-terminated line of at most `max` bytes (newline excluded).
/// `Ok(None)` is a clean end of connection between requests.
fn read_line(
    reader: &mut impl BufRead,
    max: usize,
) -> std::result::Result<Option<Vec<u8>>, LineError> {
    let mut buf = Vec::new();
    let n = reader
        .take(max as u64 + 1)
        .read_until(b'\n', &mut buf)
        .map_err(LineError::Io)?;
    if n == 0 {
        return Ok(None);
    }
    if buf.last() != Some(&b'\n') {
        return Err(if buf.len() > max {
            LineError::TooLong
        } else {
            LineError::CutOff
        });
    }
    buf.pop();
    if buf.last() == Some(&b'\r') {
        buf.pop();
    }
    Ok(Some(buf))
}

/// Reads from the socket but gives up at a deadline, however the bytes trickle in.
struct DeadlineReader<'a> {
    stream: &'a UnixStream,
    deadline: Instant,
}

impl Read for DeadlineReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "no complete request in time",
            ));
        }
        self.stream.set_read_timeout(Some(left))?;
        (&mut &*self.stream).read(buf)
    }
}

/// `base_nice`: the priority changes run at (the server's before its accept thread lowered
/// itself; the connection's thread starts at the accept thread's).
fn serve_connection(
    stream: UnixStream,
    peer: Peer,
    handler: &dyn CommandHandler,
    options: &ServerOptions,
    stop: &AtomicBool,
    base_nice: Option<i32>,
) {
    let _ = stream.set_write_timeout(Some(options.idle_timeout));
    let mut reader = BufReader::new(DeadlineReader {
        stream: &stream,
        deadline: Instant::now() + options.idle_timeout,
    });
    let mut writer = &stream;
    let mut priority = ThreadPriority::of_this_thread(base_nice, options.read_nice);
    loop {
        reader.get_mut().deadline = Instant::now() + options.idle_timeout;
        let line = match read_line(&mut reader, options.max_request_len) {
            Ok(Some(line)) => line,
            Ok(None) => return,
            Err(LineError::TooLong) => {
                let _ = Response::bad_request(format!(
                    "request longer than {} bytes; closing the connection",
                    options.max_request_len
                ))
                .write_to(&mut writer);
                return;
            }
            Err(LineError::CutOff) => {
                // Never act on half a request: "del map mpatha" cut short could name another map.
                tracing::debug!(uid = peer.uid, "control client disconnected mid-request");
                return;
            }
            Err(LineError::Io(e)) => {
                tracing::debug!(uid = peer.uid, "control connection closed: {e}");
                return;
            }
        };
        // Once the server is stopping, no further command runs on an open connection.
        let sent = if stop.load(Ordering::SeqCst) {
            Response::new(Status::Busy, "the daemon is shutting down").write_to(&mut writer)
        } else {
            let (response, read) = answer(&line, &peer, handler, &mut priority);
            if read {
                let again = || answer(&line, &peer, handler, &mut priority).0;
                send_read(response, again, &mut writer)
            } else {
                response.write_to(&mut writer)
            }
        };
        if let Err(e) = sent {
            tracing::debug!(uid = peer.uid, "cannot send a control response: {e}");
            return;
        }
    }
}

/// Parse, authorise and run one request line (a read at the connection's read priority).
/// The answer, and whether it was a read (a command that changes nothing; asking again is
/// harmless).
fn answer(
    line: &[u8],
    peer: &Peer,
    handler: &dyn CommandHandler,
    priority: &mut ThreadPriority,
) -> (Arc<Response>, bool) {
    let Ok(text) = std::str::from_utf8(line) else {
        return (
            Arc::new(Response::bad_request("request is not valid UTF-8")),
            false,
        );
    };
    if text.trim().is_empty() {
        return (
            Arc::new(Response::bad_request(format!(
                "empty request; the commands are:\n{COMMAND_SUMMARY}"
            ))),
            false,
        );
    }
    let command = match Command::parse_request(text) {
        Ok(c) => c,
        Err(e) => return (Arc::new(Response::bad_request(e.to_string())), false),
    };
    if !may_run(&command, peer.uid) {
        tracing::info!(uid = peer.uid, pid = peer.pid, %command, "refused a change from a non-root user");
        return (
            Arc::new(Response::new(
                Status::Denied,
                format!(
                    "permission denied: \"{command}\" changes the daemon's state and only root may do that (you are uid {})",
                    peer.uid
                ),
            )),
            false,
        );
    }
    tracing::debug!(uid = peer.uid, %command, "control request");
    // The answer is rendered (a read's) and sent on this thread at this priority.
    let read = !command.is_change();
    priority.for_command(!read);
    let response = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        handler.handle_shared(&command, peer)
    })) {
        Ok(r) => r,
        Err(_) => {
            tracing::error!(%command, "control command handler panicked");
            Arc::new(Response::failed(format!(
                "internal error while running \"{command}\""
            )))
        }
    };
    (response, read)
}

/// Answer a read-only command from a snapshot with the formats of [`crate::output`];
/// None for commands that change something (and for `show config`, which only the
/// configuration layer can render). An unknown map gives a 404 that names it.
pub fn answer_read(command: &Command, snapshot: &crate::state::Snapshot) -> Option<Response> {
    use crate::output;
    let find = |map: &str| {
        snapshot.find_map(map).ok_or_else(|| {
            Response::not_found(format!("no map named {map:?} (by alias, WWID or dm-N)"))
        })
    };
    let status = || {
        snapshot
            .status
            .clone()
            .unwrap_or_else(|| crate::state::DaemonStatus {
                version: env!("CARGO_PKG_VERSION").to_string(),
                uptime_secs: 0,
                path_count: snapshot.paths.len() as u32,
                map_count: snapshot.maps.len() as u32,
                checker: crate::state::CheckerStats::from_paths(&snapshot.paths),
                busy: false,
                checks: Default::default(),
                sweep: Default::default(),
                rereads: Vec::new(),
            })
    };
    Some(match command {
        Command::ShowPaths {
            format: Format::Human,
        } => Response::ok(output::paths_table(&snapshot.paths)),
        Command::ShowPaths { .. } => Response::ok(output::paths_json(&snapshot.paths)),
        Command::ShowMaps {
            format: Format::Human,
        } => Response::ok(output::maps_table(&snapshot.maps)),
        Command::ShowMaps {
            format: Format::Json,
        } => Response::ok(output::maps_json(&snapshot.maps)),
        Command::ShowMaps {
            format: Format::MultipathdJson,
        } => Response::ok(output::multipathd_maps_json(&snapshot.maps)),
        Command::ShowTopology { map: None } => Response::ok(output::topology(&snapshot.maps)),
        Command::ShowTopology { map: Some(m) }
        | Command::ShowMap {
            map: m,
            format: Format::Human,
        } => match find(m) {
            Ok(map) => Response::ok(output::topology(std::slice::from_ref(map))),
            Err(r) => r,
        },
        Command::ShowMap { map: m, format } => match find(m) {
            Ok(map) if *format == Format::MultipathdJson => {
                Response::ok(output::multipathd_map_json(map))
            }
            Ok(map) => Response::ok(output::maps_json(std::slice::from_ref(map))),
            Err(r) => r,
        },
        Command::ShowStatus {
            format: Format::Human,
        } => Response::ok(output::status_text(&status())),
        Command::ShowStatus { .. } => Response::ok(output::status_json(&status())),
        // `show config` needs the configuration layer; changes need the daemon.
        _ => return None,
    })
}

// ---------------------------------------------------------------------------------------
// Client
// ---------------------------------------------------------------------------------------

/// How long [`request`] waits for the daemon's answer.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(120);

/// Send one command to the daemon and return its answer.
pub fn request(socket_path: &Path, command: &Command) -> Result<Response> {
    request_with_timeout(socket_path, command, CLIENT_TIMEOUT)
}

/// [`request`] with an explicit timeout for connecting, sending and receiving.
pub fn request_with_timeout(
    socket_path: &Path,
    command: &Command,
    timeout: Duration,
) -> Result<Response> {
    let line = serde_json::to_string(command).map_err(|e| Error::BadRequest {
        request: command.to_string(),
        reason: format!("cannot encode as JSON: {e}"),
    })?;
    request_line(socket_path, &line, timeout)
}

/// Send one raw request line (plain words or JSON, without the newline).
pub fn request_line(socket_path: &Path, line: &str, timeout: Duration) -> Result<Response> {
    let io_err = |source| Error::SocketIo {
        path: socket_path.to_path_buf(),
        source,
    };
    if line.contains('\n') {
        return Err(Error::BadRequest {
            request: line.to_string(),
            reason: "a request is one line".into(),
        });
    }
    let stream = UnixStream::connect(socket_path).map_err(|source| Error::SocketConnect {
        path: socket_path.to_path_buf(),
        source,
    })?;
    stream.set_read_timeout(Some(timeout)).map_err(io_err)?;
    stream.set_write_timeout(Some(timeout)).map_err(io_err)?;
    let mut w = &stream;
    // The server may answer (503, or 403 when it cannot read our credentials) and close
    // before reading the request; then the write fails but the answer is waiting to be read.
    let sent = w
        .write_all(format!("{line}\n").as_bytes())
        .and_then(|()| w.flush());
    if let Err(e) = &sent
        && !matches!(
            e.kind(),
            std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset
        )
    {
        return Err(io_err(std::io::Error::new(e.kind(), e.to_string())));
    }
    let response = read_response(socket_path, &stream);
    match (sent, response) {
        (_, Ok(r)) => Ok(r),
        (Err(e), Err(_)) => Err(io_err(e)),
        (Ok(()), Err(e)) => Err(e),
    }
}

fn read_response(socket_path: &Path, stream: &UnixStream) -> Result<Response> {
    let io_err = |source| Error::SocketIo {
        path: socket_path.to_path_buf(),
        source,
    };
    let bad = |reason: String| Error::BadResponse {
        path: socket_path.to_path_buf(),
        reason,
    };

    let mut reader = BufReader::new(stream);
    let header = match read_line(&mut reader, 64) {
        Ok(Some(h)) => h,
        Ok(None) => return Err(bad("connection closed before any answer".into())),
        Err(LineError::TooLong) => return Err(bad("header line too long".into())),
        Err(LineError::CutOff) => return Err(bad("connection closed inside the header".into())),
        Err(LineError::Io(e)) => return Err(io_err(e)),
    };
    let header = String::from_utf8_lossy(&header).into_owned();
    let mut parts = header.split(' ');
    let (Some(code), Some(len), None) = (parts.next(), parts.next(), parts.next()) else {
        return Err(bad(format!("header {header:?} is not \"CODE LENGTH\"")));
    };
    let status = code
        .parse::<u16>()
        .ok()
        .and_then(Status::from_code)
        .ok_or_else(|| bad(format!("unknown status code {code:?}")))?;
    let len: usize = len
        .parse()
        .map_err(|_| bad(format!("body length {len:?} is not a number")))?;
    if len > MAX_RESPONSE_LEN {
        return Err(bad(format!(
            "body of {len} bytes exceeds the {MAX_RESPONSE_LEN}-byte limit"
        )));
    }
    let mut body = vec![0u8; len];
    reader.read_exact(&mut body).map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            bad(format!(
                "connection closed before the {len}-byte body was complete"
            ))
        } else {
            io_err(e)
        }
    })?;
    let body = String::from_utf8(body).map_err(|_| bad("body is not valid UTF-8".into()))?;
    Ok(Response { status, body })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_reads_for_all_changes_for_root() {
        let read = Command::ShowMaps {
            format: Format::Human,
        };
        let change = Command::FailPath { dev: "sda".into() };
        assert!(may_run(&read, 0));
        assert!(may_run(&read, 1000));
        assert!(may_run(&change, 0));
        assert!(!may_run(&change, 1000));
        assert!(!may_run(&Command::Shutdown, 1));
    }

    #[test]
    fn read_line_limits() {
        let mut r = std::io::Cursor::new(b"abc\r\nde".to_vec());
        assert_eq!(read_line(&mut r, 10).ok().flatten(), Some(b"abc".to_vec()));
        assert!(matches!(read_line(&mut r, 10), Err(LineError::CutOff)));
        let mut r = std::io::Cursor::new(b"abcdef\n".to_vec());
        assert!(matches!(read_line(&mut r, 5), Err(LineError::TooLong)));
        let mut r = std::io::Cursor::new(b"abcde\n".to_vec());
        assert_eq!(read_line(&mut r, 5).ok().flatten(), Some(b"abcde".to_vec()));
        assert!(matches!(read_line(&mut r, 5), Ok(None)));
    }

    #[test]
    fn a_large_read_is_not_kept_while_it_waits_for_its_turn() {
        let large = |c: &str| Arc::new(Response::ok(c.repeat(SMALL_BODY + 1)));
        // the cache still shares it: sent as it is
        let cached = large("a");
        let mut out = Vec::new();
        send_read(Arc::clone(&cached), || panic!("asked again"), &mut out).unwrap();
        assert!(out.ends_with(cached.body.as_bytes()));
        // no turn free: the sender lets its answer go while it waits; the cache drops it (a
        // newer snapshot), so the answer is asked for again once the turn comes
        let turns: Vec<_> = (0..LARGE_SENDS_AT_ONCE)
            .map(|_| LARGE_SENDS.take())
            .collect();
        let cache = large("o");
        let watch = Arc::downgrade(&cache);
        let sent = Arc::clone(&cache);
        let t = std::thread::spawn(move || {
            let mut out = Vec::new();
            send_read(sent, || large("n"), &mut out).unwrap();
            out
        });
        let deadline = Instant::now() + Duration::from_secs(10);
        while watch.strong_count() > 1 {
            assert!(
                Instant::now() < deadline,
                "the waiting sender kept its answer"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        drop(cache);
        assert_eq!(watch.strong_count(), 0);
        drop(turns);
        let out = t.join().unwrap();
        assert!(
            out.ends_with(b"nnnn") && !out.contains(&b'o'),
            "{}",
            out.len()
        );
        // a small answer goes out at once, without a turn
        let mut out = Vec::new();
        send_read(
            Arc::new(Response::ok("hi")),
            || panic!("asked again"),
            &mut out,
        )
        .unwrap();
        assert_eq!(out, b"200 2\nhi");
    }
}
