//! What CPython does with one source's pyc at one optimization level:
//! `SourceLoader.get_code` step by step.
//!
//! `cache_from_source` names the pyc (`pyc::cache_path`). Reading it fails
//! → the source is compiled. `_classify_pyc` rejects a bad magic number, a
//! header shorter than 16 bytes or unknown flags → compiled. A timestamp pyc
//! must record `int(st_mtime)` and `st_size` (each masked to 32 bits), a
//! hash-based one that `--check-hash-based-pycs` says to check must record
//! `_imp.source_hash` of the source bytes → else stale, compiled. A
//! hash-based pyc that is not checked is used whatever the source holds.
//! A pyc that passes is handed to `marshal.loads` *outside* the `try` that
//! falls back to the source: code that is not a code object fails the
//! import.

use std::io::Read as _;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::{CheckHashBasedPycs, serialize_path};
use crate::interpreter::Profile;
use crate::pyc::{self, Mode, SourceStamp, Validation};
use crate::scan::{ScanError, io_error};

/// Marshal's type code of a code object (`TYPE_CODE`), without `FLAG_REF`.
const TYPE_CODE: u8 = b'c';
/// Marshal's flag on a record the stream refers back to.
const FLAG_REF: u8 = 0x80;

/// What CPython does with a source's pyc.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Checked against the source, matches: used.
    Valid,
    /// A hash-based pyc used without checking; it does match the source.
    Unchecked,
    /// A hash-based pyc used without checking, and the source has changed
    /// since: the old code runs.
    UncheckedStale,
    /// Accepted, but what follows the header is no code object: the
    /// import fails.
    Broken,
    /// Does not match the source: compiled on every import (and rewritten
    /// when the directory is writable and bytecode writing is on).
    Stale,
    /// No pyc: compiled.
    Missing,
    /// Rejected by `_classify_pyc` (magic number, short header, flags):
    /// compiled.
    Corrupt,
    /// Cannot be read: compiled.
    Unreadable,
}

impl State {
    /// Every state, in report order.
    pub const ALL: [Self; 8] = [
        Self::Valid,
        Self::Unchecked,
        Self::UncheckedStale,
        Self::Broken,
        Self::Stale,
        Self::Missing,
        Self::Corrupt,
        Self::Unreadable,
    ];

    /// The name used in JSON and reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::Valid => "valid",
            Self::Unchecked => "unchecked",
            Self::UncheckedStale => "unchecked_stale",
            Self::Broken => "broken",
            Self::Stale => "stale",
            Self::Missing => "missing",
            Self::Corrupt => "corrupt",
            Self::Unreadable => "unreadable",
        }
    }

    /// What CPython does, in a few words.
    pub fn meaning(self) -> &'static str {
        match self {
            Self::Valid => "pyc checked and used",
            Self::Unchecked => "pyc used without checking the source (it matches)",
            Self::UncheckedStale => "pyc used without checking: OLD CODE RUNS, the source changed",
            Self::Broken => "pyc accepted but holds no code object: the import FAILS",
            Self::Stale => "pyc out of date: the source is compiled on every import",
            Self::Missing => "no pyc: the source is compiled on every import",
            Self::Corrupt => "pyc rejected (bad header): the source is compiled",
            Self::Unreadable => "pyc cannot be read: the source is compiled",
        }
    }

    /// Whether CPython runs the pyc's code, as opposed to compiling.
    pub fn uses_pyc(self) -> bool {
        matches!(self, Self::Valid | Self::Unchecked | Self::UncheckedStale)
    }
}

/// The verdict on one (source, level).
#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    #[serde(rename = "path", serialize_with = "serialize_path")]
    pub source: PathBuf,
    pub level: u8,
    /// The pyc CPython reads (`cache_from_source`).
    #[serde(serialize_with = "serialize_path")]
    pub pyc: PathBuf,
    pub state: State,
    /// What the pyc's header says, once it passed `_classify_pyc`.
    pub mode: Option<Mode>,
    /// Why, in words: which header field differs from the source, what is
    /// wrong with the header or code.
    pub detail: Option<String>,
    /// Whether the store holds this source's code at this level for this
    /// interpreter; `None` when no store could be read.
    pub in_store: Option<bool>,
}

/// Judges pycs as one interpreter, run one way, would.
pub struct Judge<'a> {
    pub profile: &'a Profile,
    pub check: CheckHashBasedPycs,
    /// `sys.pycache_prefix`, absolute.
    pub prefix: Option<&'a Path>,
}

impl Judge<'_> {
    /// The verdict on `source`'s pyc at `level`. `Err` when the source
    /// itself cannot be read where CPython would read it (then the import
    /// fails whatever the pyc holds).
    pub fn judge(&self, source: &Path, level: u8) -> Result<Verdict, ScanError> {
        let pyc = pyc::cache_path(source, &self.profile.cache_tag, level, self.prefix);
        let mut verdict = Verdict {
            source: source.to_owned(),
            level,
            pyc,
            state: State::Missing,
            mode: None,
            detail: None,
            in_store: None,
        };
        let metadata =
            std::fs::metadata(source).map_err(|err| io_error(source.to_owned(), &err))?;
        let data = match read_start(&verdict.pyc) {
            Ok(data) => data,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(verdict),
            Err(err) => {
                verdict.state = State::Unreadable;
                verdict.detail = Some(io_error(verdict.pyc.clone(), &err).message);
                return Ok(verdict);
            }
        };
        let magic = self.profile.magic;
        let mode = match pyc::classify(&data, magic) {
            Ok(mode) => mode,
            Err(bad) => {
                verdict.state = State::Corrupt;
                verdict.detail = Some(bad.to_string());
                return Ok(verdict);
            }
        };
        verdict.mode = Some(mode);
        let mismatch = match mode {
            Mode::Timestamp => timestamp_mismatch(&data, magic, SourceStamp::of(&metadata)),
            Mode::CheckedHash | Mode::UncheckedHash => {
                let bytes =
                    std::fs::read(source).map_err(|err| io_error(source.to_owned(), &err))?;
                let hash = pyc::source_hash(self.profile, &bytes);
                let checked = mode == Mode::CheckedHash;
                (!pyc::records(&data, magic, Validation::Hash { checked, hash })).then(|| {
                    format!(
                        "the pyc records source hash {}, the source hashes to {}",
                        pyc::hex(&data[8..16]),
                        pyc::hex(&hash)
                    )
                })
            }
        };
        verdict.state = match (self.check.checks(mode), mismatch.is_some()) {
            (true, false) => State::Valid,
            (true, true) => State::Stale,
            (false, false) => State::Unchecked,
            (false, true) => State::UncheckedStale,
        };
        verdict.detail = mismatch;
        if verdict.state.uses_pyc()
            && let Some(why) = not_code(&data)
        {
            verdict.state = State::Broken;
            verdict.detail = Some(why.to_owned());
        }
        Ok(verdict)
    }
}

/// How a timestamp pyc's header differs from the source's stamp, if it
/// does (`_validate_timestamp_pyc`).
fn timestamp_mismatch(data: &[u8], magic: [u8; 4], stamp: SourceStamp) -> Option<String> {
    if pyc::records(data, magic, Validation::Timestamp(stamp)) {
        return None;
    }
    let field = |at: usize| u32::from_le_bytes(data[at..at + 4].try_into().expect("4 bytes"));
    Some(format!(
        "the pyc records mtime {} and size {}, the source has mtime {} and size {}",
        field(8),
        field(12),
        stamp.mtime & 0xFFFF_FFFF,
        stamp.size & 0xFFFF_FFFF
    ))
}

/// Why `marshal.loads` of what follows the header gives no code object,
/// judged from its first byte (a body cut short later is not seen).
fn not_code(data: &[u8]) -> Option<&'static str> {
    match data.get(16) {
        None => Some("nothing after the header: `marshal.loads` raises EOFError"),
        Some(&byte) if byte & !FLAG_REF != TYPE_CODE => {
            Some("what follows the header is not a code object: the import raises")
        }
        Some(_) => None,
    }
}

/// The header and the first byte of the code: all a verdict needs.
fn read_start(pyc: &Path) -> std::io::Result<Vec<u8>> {
    let mut data = Vec::with_capacity(17);
    std::fs::File::open(pyc)?.take(17).read_to_end(&mut data)?;
    Ok(data)
}
