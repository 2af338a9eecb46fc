//! The command-runner seam: every outside program hostsync runs (lvm, lvmlockctl, sanlock, xl,
//! virsh, xenstore-*) goes through a [`Runner`], so the logic runs on recorded outputs in tests
//! ([`ScriptedRunner`]) and on the real tools in production ([`SystemRunner`]).
//!
//! A command that does not finish within its timeout is killed and reported as
//! [`Error::CommandTimeout`]; a command that cannot be started is [`Error::CommandStart`]. A
//! non-zero exit status is *not* an error here: callers decide what it means (and name the VG,
//! LV or host in their own error).

use std::collections::VecDeque;
use std::io::{Read as _, Write as _};
use std::process::Stdio;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::{Error, Result};

/// Default time limit of one command.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// A command to run: program, arguments, optional stdin, extra environment, time limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    /// The program (looked up on PATH).
    pub program: String,
    /// Its arguments.
    pub args: Vec<String>,
    /// Bytes written to its stdin (none: stdin is /dev/null).
    pub stdin: Option<Vec<u8>>,
    /// Extra environment variables.
    pub env: Vec<(String, String)>,
    /// Time limit; the process is killed when it is exceeded.
    pub timeout: Duration,
}

impl Command {
    /// `program` with no arguments and the default timeout.
    pub fn new(program: impl Into<String>) -> Self {
        Command {
            program: program.into(),
            args: Vec::new(),
            stdin: None,
            env: Vec::new(),
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// Adds one argument.
    pub fn arg(mut self, a: impl Into<String>) -> Self {
        self.args.push(a.into());
        self
    }

    /// Adds arguments.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Sets an environment variable.
    pub fn env(mut self, k: impl Into<String>, v: impl Into<String>) -> Self {
        self.env.push((k.into(), v.into()));
        self
    }

    /// Feeds `data` on stdin.
    pub fn stdin(mut self, data: impl Into<Vec<u8>>) -> Self {
        self.stdin = Some(data.into());
        self
    }

    /// Sets the time limit.
    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = t;
        self
    }

    /// The command line as a shell would show it (for messages and logs).
    pub fn line(&self) -> String {
        std::iter::once(self.program.as_str())
            .chain(self.args.iter().map(String::as_str))
            .map(|w| {
                if w.is_empty() || w.contains(|c: char| c.is_whitespace() || c == '\'') {
                    format!("'{}'", w.replace('\'', r"'\''"))
                } else {
                    w.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// What a finished command left.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Output {
    /// Exit status (-1 when killed by a signal).
    pub status: i32,
    /// Its stdout.
    pub stdout: Vec<u8>,
    /// Its stderr.
    pub stderr: Vec<u8>,
}

impl Output {
    /// Exit status 0.
    pub fn success(&self) -> bool {
        self.status == 0
    }

    /// stdout as text (lossy).
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    /// stderr as text (lossy), trimmed: for error messages.
    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr).trim().to_string()
    }

    /// A successful output with this stdout (for tests and scripted runners).
    pub fn ok(stdout: impl Into<Vec<u8>>) -> Self {
        Output {
            status: 0,
            stdout: stdout.into(),
            stderr: Vec::new(),
        }
    }

    /// A failed output with this status and stderr.
    pub fn fail(status: i32, stderr: impl Into<Vec<u8>>) -> Self {
        Output {
            status,
            stdout: Vec::new(),
            stderr: stderr.into(),
        }
    }
}

/// Runs commands.
pub trait Runner: Send + Sync {
    /// Runs `cmd` to completion (or its timeout).
    fn run(&self, cmd: &Command) -> Result<Output>;
}

/// Runs the real programs.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemRunner;

impl Runner for SystemRunner {
    fn run(&self, cmd: &Command) -> Result<Output> {
        tracing::debug!(command = %cmd.line(), "running");
        let mut c = std::process::Command::new(&cmd.program);
        c.args(&cmd.args)
            .stdin(if cmd.stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in &cmd.env {
            c.env(k, v);
        }
        let mut child = c.spawn().map_err(|e| Error::CommandStart {
            command: cmd.line(),
            message: e.to_string(),
        })?;
        // stdin, stdout and stderr are served by threads so a chatty program cannot deadlock
        // on a full pipe while we wait for it.
        let stdin_thread = match (child.stdin.take(), cmd.stdin.clone()) {
            (Some(mut pipe), Some(data)) => Some(std::thread::spawn(move || {
                let _ = pipe.write_all(&data);
            })),
            _ => None,
        };
        let mut out_pipe = child.stdout.take();
        let mut err_pipe = child.stderr.take();
        let out_thread = std::thread::spawn(move || {
            let mut v = Vec::new();
            if let Some(p) = out_pipe.as_mut() {
                let _ = p.read_to_end(&mut v);
            }
            v
        });
        let err_thread = std::thread::spawn(move || {
            let mut v = Vec::new();
            if let Some(p) = err_pipe.as_mut() {
                let _ = p.read_to_end(&mut v);
            }
            v
        });
        let start = Instant::now();
        let status = loop {
            match child.try_wait() {
                Ok(Some(s)) => break s,
                Ok(None) if start.elapsed() >= cmd.timeout => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(Error::CommandTimeout {
                        command: cmd.line(),
                        seconds: cmd.timeout.as_secs_f64(),
                    });
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(10)),
                Err(e) => {
                    return Err(Error::CommandStart {
                        command: cmd.line(),
                        message: format!("waiting for it failed: {e}"),
                    });
                }
            }
        };
        if let Some(t) = stdin_thread {
            let _ = t.join();
        }
        let stdout = out_thread.join().unwrap_or_default();
        let stderr = err_thread.join().unwrap_or_default();
        Ok(Output {
            status: status.code().unwrap_or(-1),
            stdout,
            stderr,
        })
    }
}

/// One expectation of a [`ScriptedRunner`]: a command whose program and leading arguments match
/// `prefix` answers `output`.
#[derive(Debug, Clone)]
struct Expect {
    prefix: Vec<String>,
    output: Result<Output, String>,
    repeat: bool,
}

/// A runner for tests: answers from a script and records every command it was asked to run.
/// Expectations are matched in order of registration by prefix (program then arguments); a
/// one-shot expectation is used once, a repeated one forever. An unexpected command is an
/// [`Error::CommandStart`] naming it, so a test sees exactly what was not scripted.
#[derive(Debug, Default)]
pub struct ScriptedRunner {
    expects: Mutex<VecDeque<Expect>>,
    calls: Mutex<Vec<Command>>,
}

impl ScriptedRunner {
    /// An empty script.
    pub fn new() -> Self {
        Self::default()
    }

    fn push(&self, prefix: &[&str], output: Result<Output, String>, repeat: bool) {
        if let Ok(mut e) = self.expects.lock() {
            e.push_back(Expect {
                prefix: prefix.iter().map(|s| s.to_string()).collect(),
                output,
                repeat,
            });
        }
    }

    /// The next command starting with `prefix` answers `output` (once).
    pub fn expect(&self, prefix: &[&str], output: Output) -> &Self {
        self.push(prefix, Ok(output), false);
        self
    }

    /// Every command starting with `prefix` answers `output`.
    pub fn always(&self, prefix: &[&str], output: Output) -> &Self {
        self.push(prefix, Ok(output), true);
        self
    }

    /// The next command starting with `prefix` times out.
    pub fn expect_timeout(&self, prefix: &[&str]) -> &Self {
        self.push(prefix, Err("timeout".into()), false);
        self
    }

    /// Every command run so far, in order.
    pub fn calls(&self) -> Vec<Command> {
        self.calls.lock().map(|c| c.clone()).unwrap_or_default()
    }

    /// Every command line run so far, in order.
    pub fn lines(&self) -> Vec<String> {
        self.calls().iter().map(Command::line).collect()
    }
}

impl Runner for ScriptedRunner {
    fn run(&self, cmd: &Command) -> Result<Output> {
        if let Ok(mut c) = self.calls.lock() {
            c.push(cmd.clone());
        }
        let words: Vec<&str> = std::iter::once(cmd.program.as_str())
            .chain(cmd.args.iter().map(String::as_str))
            .collect();
        let mut expects = self.expects.lock().map_err(|_| Error::CommandStart {
            command: cmd.line(),
            message: "the scripted runner's lock is poisoned".into(),
        })?;
        let pos = expects.iter().position(|e| {
            e.prefix.len() <= words.len() && e.prefix.iter().zip(&words).all(|(p, w)| p == w)
        });
        let Some(pos) = pos else {
            return Err(Error::CommandStart {
                command: cmd.line(),
                message: "not in the test's script".into(),
            });
        };
        let e = if expects[pos].repeat {
            expects[pos].clone()
        } else {
            expects.remove(pos).ok_or_else(|| Error::CommandStart {
                command: cmd.line(),
                message: "script changed under us".into(),
            })?
        };
        match e.output {
            Ok(o) => Ok(o),
            Err(_) => Err(Error::CommandTimeout {
                command: cmd.line(),
                seconds: cmd.timeout.as_secs_f64(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_runner_returns_status_and_both_streams_apart() {
        let out = SystemRunner
            .run(&Command::new("sh").args(["-c", "echo out; echo err >&2; exit 3"]))
            .unwrap();
        assert_eq!(out.status, 3);
        assert_eq!(out.stdout_text(), "out\n");
        assert_eq!(out.stderr_text(), "err");
    }

    #[test]
    fn system_runner_feeds_stdin_and_env() {
        let out = SystemRunner
            .run(
                &Command::new("sh")
                    .args(["-c", "cat; printf %s \"$X\""])
                    .stdin("in-")
                    .env("X", "env"),
            )
            .unwrap();
        assert_eq!(out.stdout_text(), "in-env");
    }

    #[test]
    fn system_runner_kills_a_command_past_its_timeout() {
        let t = Instant::now();
        let err = SystemRunner
            .run(
                &Command::new("sleep")
                    .arg("30")
                    .timeout(Duration::from_millis(200)),
            )
            .unwrap_err();
        assert!(t.elapsed() < Duration::from_secs(10));
        assert!(matches!(err, Error::CommandTimeout { .. }), "{err}");
        assert!(err.to_string().contains("sleep 30"), "{err}");
    }

    #[test]
    fn system_runner_names_a_missing_program() {
        let err = SystemRunner
            .run(&Command::new("/nonexistent/hostsync-no-such-tool").arg("x"))
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("/nonexistent/hostsync-no-such-tool x"),
            "{err}"
        );
    }

    #[test]
    fn scripted_runner_matches_by_prefix_in_order_and_records_calls() {
        let r = ScriptedRunner::new();
        r.expect(&["lvs"], Output::ok("first"))
            .expect(&["lvs"], Output::ok("second"))
            .always(&["vgs", "--reportformat"], Output::fail(5, "no"));
        let lvs = Command::new("lvs").arg("-a");
        assert_eq!(r.run(&lvs).unwrap().stdout_text(), "first");
        assert_eq!(r.run(&lvs).unwrap().stdout_text(), "second");
        assert!(r.run(&lvs).is_err(), "a third lvs was not scripted");
        let vgs = Command::new("vgs").args(["--reportformat", "json"]);
        assert_eq!(r.run(&vgs).unwrap().status, 5);
        assert_eq!(r.run(&vgs).unwrap().status, 5);
        assert!(
            r.run(&Command::new("vgs")).is_err(),
            "prefix longer than the call"
        );
        assert_eq!(r.lines()[0], "lvs -a");
        assert_eq!(r.calls().len(), 6);
    }

    #[test]
    fn command_line_quotes_words_with_spaces() {
        let c = Command::new("lvs").args(["-o", "a b", "it's"]);
        assert_eq!(c.line(), r"lvs -o 'a b' 'it'\''s'");
    }
}
