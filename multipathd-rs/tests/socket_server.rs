#![allow(clippy::unwrap_used)]
//! The control socket server and client, run in threads on sockets in a temp dir with a
//! fake handler.

use multipathd_rs::Error;
use multipathd_rs::socket::{
    Command, Format, Peer, Response, Server, ServerHandle, ServerOptions, Status, peer_credentials,
    request, request_line, request_with_timeout,
};
use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(10);

/// Records what it was asked, answers with the canonical words of the command.
#[derive(Default)]
struct Fake {
    seen: Mutex<Vec<(Command, u32)>>,
}

impl Fake {
    fn seen(&self) -> Vec<Command> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .map(|(c, _)| c.clone())
            .collect()
    }
}

impl multipathd_rs::socket::CommandHandler for Fake {
    fn handle(&self, command: &Command, peer: &Peer) -> Response {
        self.seen.lock().unwrap().push((command.clone(), peer.uid));
        match command {
            Command::FailPath { dev } if dev == "sdzz" => {
                Response::not_found(format!("no path named {dev}"))
            }
            Command::ResizeMap { map } if map == "boom" => panic!("handler bug"),
            _ => Response::ok(format!("did: {command}\n")),
        }
    }
}

struct Running {
    _dir: tempfile::TempDir,
    path: PathBuf,
    fake: Arc<Fake>,
    handle: Option<ServerHandle>,
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(h) = self.handle.take() {
            h.stop();
        }
    }
}

fn start(options: ServerOptions) -> Running {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ctl.sock");
    let fake = Arc::new(Fake::default());
    let server = Server::bind(&path, options).unwrap();
    let handle = server.spawn(fake.clone()).unwrap();
    Running {
        _dir: dir,
        path,
        fake,
        handle: Some(handle),
    }
}

fn as_uid(uid: u32) -> fn(&UnixStream) -> std::io::Result<Peer> {
    match uid {
        0 => |_| {
            Ok(Peer {
                uid: 0,
                gid: 0,
                pid: 1,
            })
        },
        _ => |_| {
            Ok(Peer {
                uid: 1000,
                gid: 1000,
                pid: 1,
            })
        },
    }
}

/// Send raw bytes, then read everything until the server closes or `wait` passes.
fn raw(path: &Path, bytes: &[u8], wait: Duration) -> String {
    let mut s = UnixStream::connect(path).unwrap();
    s.set_read_timeout(Some(wait)).unwrap();
    s.write_all(bytes).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn requests_and_answers_round_trip() {
    let r = start(ServerOptions::default());
    let resp = request(
        &r.path,
        &Command::ShowMaps {
            format: Format::MultipathdJson,
        },
    )
    .unwrap();
    assert_eq!(resp, Response::ok("did: show maps json\n"));
    // Plain words work too, the same as multipathd's CLI.
    let resp = request_line(&r.path, "switch map mpatha group 2", T).unwrap();
    assert_eq!(resp.status, Status::Ok);
    assert_eq!(resp.body, "did: switchgroup mpatha 2\n");
    // The handler's status reaches the client.
    let resp = request(&r.path, &Command::FailPath { dev: "sdzz".into() }).unwrap();
    assert_eq!(resp.status, Status::NotFound);
    assert_eq!(resp.body, "no path named sdzz");
    assert_eq!(
        r.fake.seen(),
        vec![
            Command::ShowMaps {
                format: Format::MultipathdJson
            },
            Command::SwitchGroup {
                map: "mpatha".into(),
                group: 2
            },
            Command::FailPath { dev: "sdzz".into() },
        ]
    );
}

#[test]
fn wire_format_is_code_length_body_and_connections_are_reusable() {
    let r = start(ServerOptions::default());
    let out = raw(
        &r.path,
        b"show config\r\nshow status\n",
        Duration::from_millis(500),
    );
    assert_eq!(
        out, "200 17\ndid: show config\n200 17\ndid: show status\n",
        "two requests on one connection, CRLF accepted"
    );
}

#[test]
fn non_root_may_read_but_not_change() {
    let r = start(ServerOptions {
        credentials: as_uid(1000),
        ..Default::default()
    });
    let read = request(&r.path, &Command::ShowTopology { map: None }).unwrap();
    assert_eq!(read.status, Status::Ok);
    let change = request(
        &r.path,
        &Command::DelMap {
            map: "mpatha".into(),
        },
    )
    .unwrap();
    assert_eq!(change.status, Status::Denied);
    assert!(
        change.body.contains("permission denied")
            && change.body.contains("del map mpatha")
            && change.body.contains("only root")
            && change.body.contains("uid 1000"),
        "{}",
        change.body
    );
    // The refused change never reached the handler.
    assert_eq!(r.fake.seen(), vec![Command::ShowTopology { map: None }]);
}

#[test]
fn root_may_change() {
    let r = start(ServerOptions {
        credentials: as_uid(0),
        ..Default::default()
    });
    let resp = request(&r.path, &Command::Shutdown).unwrap();
    assert_eq!(resp.status, Status::Ok);
    assert_eq!(r.fake.seen(), vec![Command::Shutdown]);
}

#[test]
fn real_peer_credentials_decide() {
    // With the kernel's SO_PEERCRED: whoever runs the test is the peer.
    let me = nix::unistd::getuid().as_raw();
    let (a, _b) = UnixStream::pair().unwrap();
    let peer = peer_credentials(&a).unwrap();
    assert_eq!(peer.uid, me);
    assert_eq!(peer.pid, std::process::id() as i32);

    let r = start(ServerOptions::default());
    let resp = request(&r.path, &Command::Rescan).unwrap();
    if me == 0 {
        assert_eq!(resp.status, Status::Ok);
        assert_eq!(r.fake.seen(), vec![Command::Rescan]);
    } else {
        assert_eq!(resp.status, Status::Denied);
        assert!(r.fake.seen().is_empty());
    }
    assert_eq!(
        r.fake
            .seen
            .lock()
            .unwrap()
            .iter()
            .map(|(_, u)| *u)
            .find(|u| *u != me),
        None
    );
}

#[test]
fn bad_requests_get_400_and_the_connection_goes_on() {
    let r = start(ServerOptions::default());
    let out = raw(
        &r.path,
        b"frobnicate\n\xff\xfe show\n\nshow paths\n",
        Duration::from_millis(500),
    );
    let mut rest = out.as_str();
    let mut answers = Vec::new();
    while !rest.is_empty() {
        let (header, tail) = rest.split_once('\n').unwrap();
        let (code, len) = header.split_once(' ').unwrap();
        let len: usize = len.parse().unwrap();
        answers.push((code.to_string(), tail[..len].to_string()));
        rest = &tail[len..];
    }
    assert_eq!(answers.len(), 4, "{out}");
    assert_eq!(answers[0].0, "400");
    assert!(answers[0].1.contains("unknown command"), "{}", answers[0].1);
    assert_eq!(
        answers[1],
        ("400".into(), "request is not valid UTF-8".into())
    );
    assert_eq!(answers[2].0, "400");
    assert!(answers[2].1.contains("empty request"));
    assert_eq!(answers[3], ("200".into(), "did: show paths\n".into()));
    assert_eq!(
        r.fake.seen(),
        vec![Command::ShowPaths {
            format: Format::Human
        }]
    );
}

#[test]
fn oversized_request_is_refused_and_closed() {
    let r = start(ServerOptions {
        max_request_len: 64,
        ..Default::default()
    });
    let mut big = vec![b'a'; 10_000];
    big.push(b'\n');
    let out = raw(&r.path, &big, T);
    assert!(
        out.starts_with("400 ") && out.contains("request longer than 64 bytes"),
        "{out}"
    );
    // Exactly at the limit is fine.
    let line = format!("show map {}\n", "m".repeat(64 - 9));
    assert_eq!(line.len(), 65);
    let out = raw(&r.path, line.as_bytes(), Duration::from_millis(300));
    assert!(out.starts_with("200 "), "{out}");
}

#[test]
fn client_vanishing_mid_request_runs_nothing() {
    let r = start(ServerOptions::default());
    {
        let mut s = UnixStream::connect(&r.path).unwrap();
        s.write_all(b"del map mpath").unwrap();
        // Dropped without a newline.
    }
    // The server is still fine and never ran the half request.
    let resp = request(&r.path, &Command::ShowConfig).unwrap();
    assert_eq!(resp.status, Status::Ok);
    assert_eq!(r.fake.seen(), vec![Command::ShowConfig]);
}

#[test]
fn a_slow_client_does_not_block_others() {
    let r = start(ServerOptions::default());
    let mut slow = UnixStream::connect(&r.path).unwrap();
    slow.write_all(b"show ma").unwrap();
    let started = Instant::now();
    for _ in 0..5 {
        let resp =
            request_with_timeout(&r.path, &Command::ShowConfig, Duration::from_secs(5)).unwrap();
        assert_eq!(resp.status, Status::Ok);
    }
    assert!(started.elapsed() < Duration::from_secs(5));
    // The slow one finishes its request later and is answered.
    slow.write_all(b"ps\n").unwrap();
    let mut buf = [0u8; 64];
    slow.set_read_timeout(Some(T)).unwrap();
    let n = slow.read(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"200 15\ndid: show maps\n");
}

#[test]
fn idle_connections_are_closed() {
    let r = start(ServerOptions {
        idle_timeout: Duration::from_millis(200),
        ..Default::default()
    });
    let mut s = UnixStream::connect(&r.path).unwrap();
    s.set_read_timeout(Some(T)).unwrap();
    let started = Instant::now();
    let mut buf = Vec::new();
    let n = s.read_to_end(&mut buf).unwrap();
    assert_eq!(n, 0, "closed without an answer");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn connection_limit_answers_busy() {
    let r = start(ServerOptions {
        max_connections: 1,
        reserved_for_root: 0,
        ..Default::default()
    });
    let mut first = UnixStream::connect(&r.path).unwrap();
    // Make sure the first connection is being served before the second arrives.
    first.write_all(b"show config\n").unwrap();
    let mut buf = [0u8; 64];
    first.set_read_timeout(Some(T)).unwrap();
    let n = first.read(&mut buf).unwrap();
    assert!(buf[..n].starts_with(b"200 "));
    let busy = request(&r.path, &Command::ShowConfig).unwrap();
    assert_eq!(busy.status, Status::Busy);
    assert!(busy.body.contains("already serving 1 connections"));
    drop(first);
    // Once it is gone, the slot frees up.
    let deadline = Instant::now() + T;
    loop {
        let resp = request(&r.path, &Command::ShowConfig).unwrap();
        if resp.status == Status::Ok {
            break;
        }
        assert!(Instant::now() < deadline, "slot never freed");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_panicking_handler_gives_500_and_the_server_survives() {
    let r = start(ServerOptions::default());
    let resp = request(&r.path, &Command::ResizeMap { map: "boom".into() }).unwrap();
    assert_eq!(resp.status, Status::Failed);
    assert!(
        resp.body
            .contains("internal error while running \"resize map boom\"")
    );
    assert_eq!(
        request(&r.path, &Command::Rescan).unwrap().status,
        Status::Ok
    );
}

#[test]
fn socket_file_lifecycle() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ctl.sock");

    // A stale socket (nobody listening) is replaced.
    drop(UnixListener::bind(&path).unwrap());
    assert!(path.exists());
    let server = Server::bind(&path, ServerOptions::default()).unwrap();
    let mode = std::fs::metadata(&path).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
        0o666
    );

    // A live one is not.
    let handle = server.spawn(Arc::new(Fake::default())).unwrap();
    match Server::bind(&path, ServerOptions::default()) {
        Err(Error::SocketInUse { path: p }) => assert_eq!(p, path),
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("bound twice"),
    }

    // Stopping removes the socket; the client then says the daemon is not running.
    let stopper = handle.stopper();
    stopper.stop();
    handle.join();
    assert!(!path.exists());
    match request(&path, &Command::ShowConfig) {
        Err(e @ Error::SocketConnect { .. }) => {
            assert!(e.to_string().contains("is the daemon running?"), "{e}")
        }
        other => panic!("{other:?}"),
    }

    // Anything that is not a socket is left alone.
    std::fs::write(&path, "precious").unwrap();
    match Server::bind(&path, ServerOptions::default()) {
        Err(e @ Error::SocketBind { .. }) => assert!(e.to_string().contains("not a socket")),
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("bound over a file"),
    }
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "precious");
}

#[test]
fn shutdown_from_inside_the_handler() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ctl.sock");
    let server = Server::bind(&path, ServerOptions::default()).unwrap();
    let stopper = server.stopper();
    let handler = move |c: &Command, _: &Peer| {
        if *c == Command::Shutdown {
            stopper.stop();
        }
        Response::ok("bye\n")
    };
    let handle = server.spawn(Arc::new(handler)).unwrap();
    assert_eq!(
        request(&path, &Command::Shutdown).unwrap(),
        Response::ok("bye\n")
    );
    handle.join();
    assert!(!path.exists());
}

/// Stops `handle` from another thread and says whether the accept loop ended in `within`
/// (a hang detector with a wide margin, not a timing test).
fn stops_within(handle: ServerHandle, within: Duration) -> bool {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        handle.stop();
        let _ = tx.send(());
    });
    rx.recv_timeout(within).is_ok()
}

#[test]
fn stop_finishes_when_the_socket_file_was_removed() {
    let mut r = start(ServerOptions::default());
    assert!(request(&r.path, &Command::ShowConfig).unwrap().is_ok());
    std::fs::remove_file(&r.path).unwrap();
    let handle = r.handle.take().unwrap();
    assert!(
        stops_within(handle, T),
        "stop hung with the socket file removed"
    );
}

#[test]
fn stop_finishes_when_the_socket_file_was_replaced_and_leaves_the_new_one() {
    let mut r = start(ServerOptions::default());
    std::fs::remove_file(&r.path).unwrap();
    // Someone else's socket now lives at the path; the stop's wake-up connection reaches
    // it, not us.
    let other = UnixListener::bind(&r.path).unwrap();
    let handle = r.handle.take().unwrap();
    assert!(
        stops_within(handle, T),
        "stop hung with the socket file replaced"
    );
    assert!(r.path.exists(), "the other socket's file must stay");
    other.set_nonblocking(true).unwrap();
    drop(other);
    // Our own socket was served until the stop: nothing of it is left to answer.
    assert!(request_with_timeout(&r.path, &Command::ShowConfig, T).is_err());
    assert!(r.fake.seen().iter().all(|c| *c != Command::Shutdown));
}

/// A server that does not speak the protocol.
fn lying_server(
    answer: &'static [u8],
) -> (tempfile::TempDir, PathBuf, std::thread::JoinHandle<()>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("liar.sock");
    let listener = UnixListener::bind(&path).unwrap();
    let t = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut line = [0u8; 256];
        let _ = s.read(&mut line);
        let _ = s.write_all(answer);
    });
    (dir, path, t)
}

#[test]
fn client_rejects_malformed_answers() {
    for (answer, needle) in [
        (&b"hello\n"[..], "is not \"CODE LENGTH\""),
        (b"999 0\n", "unknown status code"),
        (b"200 x\n", "not a number"),
        (b"200 10\nshort", "before the 10-byte body was complete"),
        (b"200 2\n\xff\xfe", "not valid UTF-8"),
        (b"", "closed before any answer"),
        (b"200 999999999999\n", "exceeds"),
    ] {
        let (_dir, path, t) = lying_server(answer);
        match request_with_timeout(&path, &Command::ShowConfig, T) {
            Err(e @ Error::BadResponse { .. }) => {
                assert!(e.to_string().contains(needle), "{answer:?}: {e}")
            }
            other => panic!("{answer:?}: {other:?}"),
        }
        t.join().unwrap();
    }
}

static FAKE_UID: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(1000);

fn fake_uid(_: &UnixStream) -> std::io::Result<Peer> {
    let uid = FAKE_UID.load(std::sync::atomic::Ordering::SeqCst);
    Ok(Peer {
        uid,
        gid: uid,
        pid: 1,
    })
}

#[test]
fn unprivileged_clients_cannot_take_the_last_slots() {
    let r = start(ServerOptions {
        max_connections: 2,
        reserved_for_root: 1,
        credentials: fake_uid,
        ..Default::default()
    });
    // A user holds one connection open...
    let mut held = UnixStream::connect(&r.path).unwrap();
    held.write_all(b"show config\n").unwrap();
    let mut buf = [0u8; 64];
    held.set_read_timeout(Some(T)).unwrap();
    assert!(held.read(&mut buf).unwrap() > 0);
    // ...so the next user is turned away...
    let busy = request(&r.path, &Command::ShowConfig).unwrap();
    assert_eq!(busy.status, Status::Busy);
    // ...but root still gets in.
    FAKE_UID.store(0, std::sync::atomic::Ordering::SeqCst);
    let root = request(&r.path, &Command::Reconfigure).unwrap();
    assert_eq!(root.status, Status::Ok);
    assert_eq!(root.body, "did: reconfigure\n");
}

#[test]
fn a_trickling_client_is_cut_off_at_the_deadline() {
    let r = start(ServerOptions {
        idle_timeout: Duration::from_millis(300),
        ..Default::default()
    });
    let mut s = UnixStream::connect(&r.path).unwrap();
    let started = Instant::now();
    let mut closed = false;
    // One byte every 50 ms never completes a line; each byte alone would reset a plain
    // read timeout, the per-request deadline does not care.
    for b in b"show topology please please please please"
        .iter()
        .cycle()
        .take(200)
    {
        if s.write_all(&[*b]).is_err() {
            closed = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
        if started.elapsed() > Duration::from_secs(3) {
            break;
        }
    }
    if !closed {
        // The server may have closed without our write failing yet; reading tells.
        s.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let mut buf = [0u8; 16];
        closed = matches!(s.read(&mut buf), Ok(0) | Err(_));
    }
    assert!(
        closed,
        "connection still open after {:?}",
        started.elapsed()
    );
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(r.fake.seen().is_empty());
}

#[test]
fn open_connections_run_nothing_after_stop() {
    let mut r = start(ServerOptions::default());
    let mut s = UnixStream::connect(&r.path).unwrap();
    s.set_read_timeout(Some(T)).unwrap();
    s.write_all(b"show config\n").unwrap();
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf).unwrap();
    assert!(buf[..n].starts_with(b"200 "));
    r.handle.take().unwrap().stop();
    s.write_all(b"shutdown\n").unwrap();
    let n = s.read(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"503 27\nthe daemon is shutting down");
    assert_eq!(r.fake.seen(), vec![Command::ShowConfig]);
}

#[test]
fn a_connection_beyond_the_limit_waits_for_a_slot_instead_of_a_503() {
    let r = start(ServerOptions {
        max_connections: 1,
        reserved_for_root: 0,
        busy_wait: Duration::from_secs(5),
        ..Default::default()
    });
    let mut first = UnixStream::connect(&r.path).unwrap();
    first.write_all(b"show config\n").unwrap();
    let mut buf = [0u8; 64];
    first.set_read_timeout(Some(T)).unwrap();
    assert!(first.read(&mut buf).unwrap() > 0);
    let path = r.path.clone();
    let second = std::thread::spawn(move || request(&path, &Command::ShowConfig).unwrap());
    // The second waits (no 503) while the first is served, and is served once it is gone.
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        !second.is_finished(),
        "answered while the only slot was taken"
    );
    drop(first);
    let resp = second.join().unwrap();
    assert_eq!(resp.status, Status::Ok, "{}", resp.body);
}
