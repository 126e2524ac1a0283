//! Asks an interpreter whether stored code still loads: `marshal.loads` of
//! each blob must give a code object compiled under its key's placeholder
//! filename, so a blob that passes its checksum but is not what its key
//! names (or that this CPython cannot read) is caught. One process per
//! interpreter answers a batch at a time (`unmarshal.py`).

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use crate::key::Key;

const UNMARSHAL_SCRIPT: &str = include_str!("unmarshal.py");
/// The frame length that asks `unmarshal.py` to flush its answers.
const SYNC: u32 = u32::MAX;
/// Frames sent before the answers are read: their answers (a line each)
/// must fit in the pipe, or both sides would wait on each other.
const BATCH: usize = 256;

/// A running `unmarshal.py`.
pub struct UnmarshalCheck {
    python: PathBuf,
    process: Option<Running>,
}

struct Running {
    child: Child,
    stdin: ChildStdin,
    answers: BufReader<ChildStdout>,
}

impl UnmarshalCheck {
    /// A checker run by `python` (started at the first batch).
    pub fn new(python: &Path) -> Self {
        Self {
            python: python.to_owned(),
            process: None,
        }
    }

    /// Checks each `(key, marshal bytes)`; returns, in order, `None` for
    /// code that loads as its key's, or what is wrong. Code that kills the
    /// interpreter is reported as such and the rest is checked by a new one.
    pub fn check(&mut self, code: &[(Key, &[u8])]) -> std::io::Result<Vec<Option<String>>> {
        let mut verdicts = Vec::with_capacity(code.len());
        for batch in code.chunks(BATCH) {
            verdicts.extend(self.check_batch(batch)?);
        }
        Ok(verdicts)
    }

    fn check_batch(&mut self, batch: &[(Key, &[u8])]) -> std::io::Result<Vec<Option<String>>> {
        let mut verdicts = Vec::with_capacity(batch.len());
        while verdicts.len() < batch.len() {
            let rest = &batch[verdicts.len()..];
            let answered = self.ask(rest)?;
            let complete = answered.len() == rest.len();
            verdicts.extend(answered);
            if !complete {
                // It died on the next one.
                self.stop();
                verdicts.push(Some("kills the interpreter that loads it".to_owned()));
            }
        }
        Ok(verdicts)
    }

    /// Sends `batch` and reads the answers until they end or the process does.
    fn ask(&mut self, batch: &[(Key, &[u8])]) -> std::io::Result<Vec<Option<String>>> {
        let running = match &mut self.process {
            Some(running) => running,
            None => self.process.insert(start(&self.python)?),
        };
        let mut frames = Vec::new();
        for (key, code) in batch {
            let filename = key.placeholder_filename();
            frames.extend(frame_length(filename.len()));
            frames.extend(filename.as_bytes());
            frames.extend(frame_length(code.len()));
            frames.extend(*code);
        }
        frames.extend(SYNC.to_le_bytes());
        // A dead process makes this fail; its answers so far are still read.
        let _ = running
            .stdin
            .write_all(&frames)
            .and_then(|()| running.stdin.flush());
        let mut verdicts = Vec::with_capacity(batch.len());
        let mut line = String::new();
        while verdicts.len() < batch.len() {
            line.clear();
            if running.answers.read_line(&mut line)? == 0 {
                break;
            }
            let answer = line.trim_end();
            verdicts.push(answer.strip_prefix("bad ").map(str::to_owned));
        }
        Ok(verdicts)
    }

    fn stop(&mut self) {
        if let Some(mut running) = self.process.take() {
            let _ = running.child.kill();
            let _ = running.child.wait();
        }
    }
}

impl Drop for UnmarshalCheck {
    fn drop(&mut self) {
        if let Some(Running {
            mut child, stdin, ..
        }) = self.process.take()
        {
            drop(stdin); // end of input: it exits
            let _ = child.wait();
        }
    }
}

fn start(python: &Path) -> std::io::Result<Running> {
    let mut child = Command::new(python)
        .args(["-S", "-s", "-c", UNMARSHAL_SCRIPT])
        .env_clear()
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let stdin = child.stdin.take().expect("piped");
    let answers = BufReader::new(child.stdout.take().expect("piped"));
    Ok(Running {
        child,
        stdin,
        answers,
    })
}

fn frame_length(length: usize) -> [u8; 4] {
    u32::try_from(length)
        .expect("stored code is far below 4 GiB")
        .to_le_bytes()
}
