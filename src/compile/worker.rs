//! One `worker.py` process: start, ask, wait with a timeout, kill.
//!
//! Replies are read by a thread of their own, so that waiting can time out
//! and notice Ctrl-C; stderr is drained by another and its tail kept to
//! explain a crash. The worker runs in a process group of its own, so a
//! terminal's Ctrl-C reaches rcache only, and killing the group also stops
//! the child it may have forked for the current compile.

use std::io::{BufReader, Read};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, bounded};

use super::protocol::{self, LevelResult, READY, Request};

const WORKER_SCRIPT: &str = include_str!("worker.py");
/// How long a worker may take to start and say it is ready.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);
/// How often a wait looks at the interrupt flag.
const POLL: Duration = Duration::from_millis(100);
/// How much of a worker's stderr is kept to explain its death.
const STDERR_TAIL: usize = 4096;

/// Why a worker could not compile a request. The worker is unusable after
/// any of these and must be replaced.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("cannot start `{python}`: {source}")]
    Spawn {
        python: String,
        #[source]
        source: std::io::Error,
    },
    #[error("compile timed out after {0:.1?}")]
    Timeout(Duration),
    #[error("compile worker died{}", stderr_suffix(.stderr))]
    Died { stderr: String },
    #[error("compile worker answered garbage: {reason}")]
    Garbage { reason: String },
    #[error("interrupted")]
    Interrupted,
}

fn stderr_suffix(stderr: &str) -> String {
    let last = stderr.trim().lines().last().unwrap_or("");
    if last.is_empty() {
        String::new()
    } else {
        format!(": {last}")
    }
}

/// Why the reader of a worker's stdout stopped.
enum ReadFailure {
    /// The output ended or could not be read: the worker is probably dead.
    Closed(String),
    /// The worker wrote something that is not a reply.
    Garbage(String),
}

/// Replies read from the worker's stdout, or why reading stopped.
type ReplyResult = Result<Vec<u8>, ReadFailure>;

/// A running worker process.
pub struct Worker {
    child: Child,
    stdin: ChildStdin,
    replies: Receiver<ReplyResult>,
    stderr: Arc<Mutex<Vec<u8>>>,
}

impl Worker {
    /// Starts `python -S -s` on the embedded worker script, in a minimal
    /// environment, and waits until it says it is ready.
    pub fn start(python: &Path, interrupted: &AtomicBool) -> Result<Self, WorkerError> {
        let mut command = Command::new(python);
        command
            .args(["-S", "-s", "-c", WORKER_SCRIPT])
            .env_clear()
            // Hash randomisation changes the order of set and frozenset
            // constants, hence the bytes: fix it as reproducible builds do.
            .env("PYTHONHASHSEED", "0")
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        #[cfg(unix)]
        {
            use std::os::unix::process::CommandExt;
            command.process_group(0);
        }
        let mut child = command.spawn().map_err(|source| WorkerError::Spawn {
            python: python.display().to_string(),
            source,
        })?;
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr_pipe = child.stderr.take().expect("piped stderr");
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let tail = Arc::clone(&stderr);
        thread::spawn(move || drain_stderr(stderr_pipe, &tail));
        let (sender, replies) = bounded(1);
        thread::spawn(move || {
            let mut stdout = BufReader::new(stdout);
            let mut ready = [0u8; 4];
            let greeting = match stdout.read_exact(&mut ready) {
                Ok(()) if &ready == READY => Ok(Vec::new()),
                Ok(()) => Err(ReadFailure::Garbage("a bad greeting".to_owned())),
                Err(err) => Err(ReadFailure::Closed(err.to_string())),
            };
            let failed = greeting.is_err();
            if sender.send(greeting).is_err() || failed {
                return;
            }
            loop {
                let reply = match protocol::read_reply(&mut stdout) {
                    Ok(Some(body)) => Ok(body),
                    Ok(None) => Err(ReadFailure::Closed("end of output".to_owned())),
                    Err(err) if err.kind() == std::io::ErrorKind::InvalidData => {
                        Err(ReadFailure::Garbage(err.to_string()))
                    }
                    Err(err) => Err(ReadFailure::Closed(err.to_string())),
                };
                let stop = reply.is_err();
                if sender.send(reply).is_err() || stop {
                    return;
                }
            }
        });
        let mut worker = Self {
            child,
            stdin,
            replies,
            stderr,
        };
        worker.wait_reply(Some(STARTUP_TIMEOUT), interrupted)?;
        Ok(worker)
    }

    /// Compiles one request; on error the worker must be dropped.
    pub fn compile(
        &mut self,
        request: &Request<'_>,
        timeout: Option<Duration>,
        interrupted: &AtomicBool,
    ) -> Result<Vec<LevelResult>, WorkerError> {
        if let Err(err) = protocol::write_request(&mut self.stdin, request) {
            // A dead worker shows as a broken pipe: explain with its stderr.
            return Err(self.died_or(err.to_string()));
        }
        let body = self.wait_reply(timeout, interrupted)?;
        let (id, results) = protocol::parse_reply(&body, request.targets.len()).map_err(|err| {
            WorkerError::Garbage {
                reason: err.to_string(),
            }
        })?;
        if id != request.id {
            return Err(WorkerError::Garbage {
                reason: format!("a reply to request {id} while waiting for {}", request.id),
            });
        }
        Ok(results)
    }

    fn wait_reply(
        &mut self,
        timeout: Option<Duration>,
        interrupted: &AtomicBool,
    ) -> Result<Vec<u8>, WorkerError> {
        let start = Instant::now();
        loop {
            if interrupted.load(Ordering::Relaxed) {
                return Err(WorkerError::Interrupted);
            }
            match self.replies.recv_timeout(POLL) {
                Ok(Ok(body)) => return Ok(body),
                Ok(Err(ReadFailure::Closed(reason))) => return Err(self.died_or(reason)),
                Ok(Err(ReadFailure::Garbage(reason))) => {
                    return Err(WorkerError::Garbage { reason });
                }
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(self.died_or("end of output".to_owned()));
                }
                Err(RecvTimeoutError::Timeout) => {}
            }
            if let Some(limit) = timeout
                && start.elapsed() >= limit
            {
                return Err(WorkerError::Timeout(limit));
            }
        }
    }

    /// A worker that has exited died; one still running said `reason`.
    fn died_or(&mut self, reason: String) -> WorkerError {
        let exited = (0..20).any(|_| {
            let done = matches!(self.child.try_wait(), Ok(Some(_)));
            if !done {
                thread::sleep(Duration::from_millis(10));
            }
            done
        });
        if exited {
            thread::sleep(Duration::from_millis(20)); // let stderr drain
            let stderr = self
                .stderr
                .lock()
                .map(|tail| String::from_utf8_lossy(&tail).into_owned());
            WorkerError::Died {
                stderr: stderr.unwrap_or_default(),
            }
        } else {
            WorkerError::Garbage { reason }
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        #[cfg(unix)]
        #[allow(unsafe_code)]
        if let Ok(pid) = i32::try_from(self.child.id()) {
            // SAFETY: kill(2) with a negative pid signals the worker's own
            // process group, which `process_group(0)` made for it alone.
            unsafe {
                libc::kill(-pid, libc::SIGKILL);
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn drain_stderr(mut pipe: impl Read, tail: &Mutex<Vec<u8>>) {
    let mut buffer = [0u8; 4096];
    while let Ok(read) = pipe.read(&mut buffer) {
        if read == 0 {
            return;
        }
        if let Ok(mut tail) = tail.lock() {
            tail.extend_from_slice(&buffer[..read]);
            let excess = tail.len().saturating_sub(STDERR_TAIL);
            tail.drain(..excess);
        }
    }
}
