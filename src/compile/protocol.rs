//! The frames exchanged with `worker.py` over its stdin and stdout.
//!
//! Request: `u32` big-endian length, then `id: u64`, `fault: u8`,
//! `level_count: u8`, per level the level (`u8`), a `u32` filename length and
//! the UTF-8 filename to compile under, then the source bytes to the end. Reply: the tag `RCWR`, `u32` length, then
//! `id: u64` and one result per level: status `0` with `u32`-prefixed marshal
//! bytes and warnings text, or status `1` (deterministic error) / `2`
//! (transient error) with `u32`-prefixed type and message, then `u32` line
//! and column (0 when absent). The worker announces itself with `RCW1`.

use std::io::{self, Read, Write};

use crate::store::StoredFailure;

/// What a worker writes once it is ready.
pub const READY: &[u8; 4] = b"RCW1";
/// What starts every reply, so that stray output is caught at once.
pub const REPLY_TAG: &[u8; 4] = b"RCWR";

/// Misbehaviour a test can ask of a worker (`__RCACHE_TEST_WORKER_FAULT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Fault {
    #[default]
    None = 0,
    Crash = 1,
    Hang = 2,
    Garbage = 3,
}

/// One compile request.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    pub id: u64,
    pub fault: Fault,
    /// Optimization levels, each with the `co_filename` to compile under.
    pub targets: &'a [(u8, String)],
    pub source: &'a [u8],
}

/// The result of compiling a source at one optimization level.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LevelResult {
    /// Marshal bytes of the module code object, and the warnings printed.
    Compiled { code: Vec<u8>, warnings: String },
    /// CPython refused the source; `deterministic` errors are worth storing.
    Failed {
        failure: StoredFailure,
        deterministic: bool,
    },
}

/// Writes `request` as one frame.
pub fn write_request(out: &mut impl Write, request: &Request<'_>) -> io::Result<()> {
    let too_big = || io::Error::new(io::ErrorKind::InvalidInput, "request over 4 GiB");
    let level_count = u8::try_from(request.targets.len()).map_err(|_| too_big())?;
    let mut head = Vec::with_capacity(64);
    head.extend_from_slice(&[0; 4]); // the length, filled in below
    head.extend_from_slice(&request.id.to_be_bytes());
    head.push(request.fault as u8);
    head.push(level_count);
    for (level, filename) in request.targets {
        head.push(*level);
        let name_len = u32::try_from(filename.len()).map_err(|_| too_big())?;
        head.extend_from_slice(&name_len.to_be_bytes());
        head.extend_from_slice(filename.as_bytes());
    }
    let body_len = u32::try_from(head.len() - 4 + request.source.len()).map_err(|_| too_big())?;
    head[..4].copy_from_slice(&body_len.to_be_bytes());
    out.write_all(&head)?;
    out.write_all(request.source)?;
    out.flush()
}

/// Reads one reply frame; `None` at a clean end of stream.
pub fn read_reply(input: &mut impl Read) -> io::Result<Option<Vec<u8>>> {
    let mut tag = [0u8; 4];
    match input.read_exact(&mut tag) {
        Err(err) if err.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        other => other?,
    }
    if &tag != REPLY_TAG {
        return Err(garbage("a reply that does not start with the reply tag"));
    }
    let mut len = [0u8; 4];
    input.read_exact(&mut len)?;
    let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
    input.read_exact(&mut body)?;
    Ok(Some(body))
}

/// Decodes a reply body into its id and one result per level.
pub fn parse_reply(body: &[u8], level_count: usize) -> io::Result<(u64, Vec<LevelResult>)> {
    let mut cursor = Cursor { rest: body };
    let id = u64::from_be_bytes(cursor.take(8)?.try_into().expect("8 bytes"));
    let mut results = Vec::with_capacity(level_count);
    for _ in 0..level_count {
        let status = cursor.take(1)?[0];
        results.push(match status {
            0 => LevelResult::Compiled {
                code: cursor.field()?.to_vec(),
                warnings: cursor.text()?,
            },
            1 | 2 => LevelResult::Failed {
                failure: StoredFailure {
                    error_type: cursor.text()?,
                    message: cursor.text()?,
                    line: Some(cursor.u32()?).filter(|&line| line > 0),
                    col: Some(cursor.u32()?).filter(|&col| col > 0),
                },
                deterministic: status == 1,
            },
            _ => return Err(garbage("an unknown status")),
        });
    }
    if !cursor.rest.is_empty() {
        return Err(garbage("trailing bytes"));
    }
    Ok((id, results))
}

fn garbage(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("worker sent {what}"))
}

struct Cursor<'a> {
    rest: &'a [u8],
}

impl<'a> Cursor<'a> {
    fn take(&mut self, count: usize) -> io::Result<&'a [u8]> {
        if self.rest.len() < count {
            return Err(garbage("a truncated reply"));
        }
        let (head, rest) = self.rest.split_at(count);
        self.rest = rest;
        Ok(head)
    }

    fn u32(&mut self) -> io::Result<u32> {
        Ok(u32::from_be_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }

    fn field(&mut self) -> io::Result<&'a [u8]> {
        let len = self.u32()? as usize;
        self.take(len)
    }

    fn text(&mut self) -> io::Result<String> {
        Ok(String::from_utf8_lossy(self.field()?).into_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_layout() {
        let mut out = Vec::new();
        let targets = [(0, "f".to_owned()), (2, "g".to_owned())];
        let request = Request {
            id: 7,
            fault: Fault::None,
            targets: &targets,
            source: b"pass\n",
        };
        write_request(&mut out, &request).unwrap();
        let body_len = 8 + 1 + 1 + 2 * (1 + 4 + 1) + 5;
        assert_eq!(out.len(), 4 + body_len);
        assert_eq!(&out[..4], &(body_len as u32).to_be_bytes());
        assert_eq!(&out[4..12], &7u64.to_be_bytes());
        assert_eq!(&out[12..15], &[0, 2, 0]);
        assert_eq!(&out[15..20], b"\0\0\0\x01f");
        assert!(out.ends_with(b"\x02\0\0\0\x01gpass\n"));
    }

    #[test]
    fn reply_round_trip() {
        let mut body = 9u64.to_be_bytes().to_vec();
        body.push(0);
        body.extend_from_slice(&3u32.to_be_bytes());
        body.extend_from_slice(b"\xe3ab");
        body.extend_from_slice(&0u32.to_be_bytes());
        body.push(1);
        for text in ["SyntaxError", "invalid syntax"] {
            body.extend_from_slice(&(text.len() as u32).to_be_bytes());
            body.extend_from_slice(text.as_bytes());
        }
        body.extend_from_slice(&4u32.to_be_bytes());
        body.extend_from_slice(&0u32.to_be_bytes());
        let mut framed = REPLY_TAG.to_vec();
        framed.extend_from_slice(&(body.len() as u32).to_be_bytes());
        framed.extend_from_slice(&body);
        let read = read_reply(&mut framed.as_slice()).unwrap().unwrap();
        let (id, results) = parse_reply(&read, 2).unwrap();
        assert_eq!(id, 9);
        assert_eq!(
            results[0],
            LevelResult::Compiled {
                code: b"\xe3ab".to_vec(),
                warnings: String::new()
            }
        );
        assert_eq!(
            results[1],
            LevelResult::Failed {
                failure: StoredFailure {
                    error_type: "SyntaxError".into(),
                    message: "invalid syntax".into(),
                    line: Some(4),
                    col: None,
                },
                deterministic: true,
            }
        );
    }

    #[test]
    fn garbage_is_rejected() {
        let err = read_reply(&mut b"this is not a frame\n".as_slice()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(parse_reply(&[0; 8], 1).is_err(), "truncated");
        assert!(parse_reply(&[0; 10], 1).is_err(), "unknown status");
    }
}
