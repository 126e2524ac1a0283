//! Answering one request: the code of the source at a path, for one
//! interpreter and optimization level.
//!
//! The trust rule: code is served only for bytes rcache hashed, now or
//! earlier with the file's identity unchanged since (the `sources` record,
//! as `materialize` uses it). Nothing beside the source, no pyc, is read.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt as _;
use std::path::Path;

use crate::identity::FileIdentity;
use crate::key::{Key, KeyContext};
use crate::marshal::rewrite_filename_into;
use crate::source::{self, Source};
use crate::store::{ImportSequence, KnownSource, Store};

/// What to tell the interpreter.
pub enum Answer {
    /// Marshalled code with the real filename, appended to the reply: the
    /// code of the file with this identity.
    Hit { key: Key, identity: FileIdentity },
    /// No stored code: the interpreter compiles the source itself.
    Miss(Option<Box<Missed>>),
}

/// A source with no stored code at some level, to compile in the background.
pub struct Missed {
    pub source: Source,
    pub level: u8,
    pub key: Key,
}

/// What answering learnt, for the store at the end of the run.
#[derive(Default)]
pub struct Learnt {
    /// Sources read and hashed, to be keyed without reading next time.
    pub to_remember: Vec<(std::path::PathBuf, KnownSource)>,
    /// Keys served, whose last-use time to refresh.
    pub used: Vec<Key>,
    /// The order each process asked for sources in.
    pub sequences: Vec<ImportSequence>,
}

impl Learnt {
    /// Adds what another connection or thread learnt.
    pub fn append(&mut self, other: &mut Self) {
        self.to_remember.append(&mut other.to_remember);
        self.used.append(&mut other.used);
        self.sequences.append(&mut other.sequences);
    }
}

/// What one connection reuses from request to request: a decompressor
/// and buffers (code is often hundreds of KiB: fresh allocations would
/// each fault their pages in again).
pub struct Scratch {
    decompressor: zstd::bulk::Decompressor<'static>,
    code: Vec<u8>,
}

impl Scratch {
    pub fn new() -> std::io::Result<Self> {
        Ok(Self {
            decompressor: zstd::bulk::Decompressor::new()?,
            code: Vec::new(),
        })
    }
}

/// Looks up the code of `path_bytes` (an OS path) at `level`; on a hit,
/// appends it to `reply`.
pub fn answer(
    store: &Store,
    context: &KeyContext<'_>,
    level: u8,
    path_bytes: &[u8],
    learnt: &mut Learnt,
    scratch: &mut Scratch,
    reply: &mut Vec<u8>,
) -> Result<Answer, crate::store::Error> {
    if level > 2 {
        return Ok(Answer::Miss(None));
    }
    let path = Path::new(OsStr::from_bytes(path_bytes));
    store.reading(|| {
        let known = store.known_source(path)?;
        let Ok((source, remember)) = source::read_or_recall(path, known) else {
            // Unreadable or gone: the interpreter reports it as it would.
            return Ok(Answer::Miss(None));
        };
        if remember {
            learnt.to_remember.push((path.to_owned(), source.known()));
        }
        let key = context.key(level, &source.content);
        let Some(blob) = store.read_blob(&key)? else {
            return Ok(Answer::Miss(Some(Box::new(Missed { source, level, key }))));
        };
        if let Err(reason) = blob.decode_into(&mut scratch.decompressor, &mut scratch.code) {
            {
                // Never served; compiled again, the new entry replaces it.
                tracing::warn!(
                    "stored code for `{}` {reason}: compiling it again",
                    path.display()
                );
                return Ok(Answer::Miss(Some(Box::new(Missed { source, level, key }))));
            }
        }
        let placeholder = key.placeholder_filename();
        if rewrite_filename_into(&scratch.code, &placeholder, path_bytes, reply) {
            let identity = FileIdentity::from_metadata(&source.metadata);
            Ok(Answer::Hit { key, identity })
        } else {
            Ok(Answer::Miss(None))
        }
    })
}
