//! Which Python rcache compiles for, and what the store must know of it.
//!
//! Finding the interpreter (`discover`) never starts Python for real
//! binaries and pyenv shims; probing it (`probe`) does, once per executable
//! file: the resulting [`Profile`] is kept in the store keyed by the file's
//! identity, so a run whose sources all hit starts no Python at all.

mod discover;
mod probe;
mod unmarshal;

use std::path::{Path, PathBuf};

pub use crate::identity::FileIdentity;
pub use discover::{Candidate, discover};
pub use probe::probe;
pub use unmarshal::UnmarshalCheck;

use crate::key::KeyContext;

/// Oldest and newest supported CPython, as (major, minor).
pub const SUPPORTED: (u32, u32, u32) = (3, 8, 13);

/// Errors finding or probing an interpreter; all are environment errors (exit 2).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "no Python interpreter found: pass `--python`, set `RCACHE_PYTHON`, or put `python3` on PATH"
    )]
    NotFound,
    #[error("interpreter `{}` does not exist or is not a file", path.display())]
    Missing { path: PathBuf },
    #[error("failed to run `{}`", path.display())]
    Spawn {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("`{}` failed to report its profile ({status}){}", path.display(), stderr_suffix(.stderr))]
    ProbeFailed {
        path: PathBuf,
        status: String,
        stderr: String,
    },
    #[error("`{}` is {what}; rcache supports CPython 3.8 to 3.13", path.display())]
    Unsupported { path: PathBuf, what: String },
}

fn stderr_suffix(stderr: &str) -> String {
    if stderr.is_empty() {
        String::new()
    } else {
        format!(": {stderr}")
    }
}

/// The hash function behind `_imp.source_hash`, used in hash-based pycs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceHash {
    /// SipHash-2-4, CPython 3.7 to 3.10.
    SipHash24,
    /// SipHash-1-3, CPython 3.11 and later.
    SipHash13,
}

impl SourceHash {
    /// The name stored in the `profiles` table.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SipHash24 => "siphash24",
            Self::SipHash13 => "siphash13",
        }
    }

    /// Parses a name written by [`SourceHash::as_str`].
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "siphash24" => Some(Self::SipHash24),
            "siphash13" => Some(Self::SipHash13),
            _ => None,
        }
    }
}

/// What the store needs to know of one interpreter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    /// `sys.implementation.name`; always `cpython` for supported ones.
    pub implementation: String,
    /// Full version, e.g. `3.12.1`.
    pub version: String,
    /// `sys.implementation.cache_tag`, e.g. `cpython-312`.
    pub cache_tag: String,
    /// `importlib.util.MAGIC_NUMBER`.
    pub magic: [u8; 4],
    /// The algorithm `_imp.source_hash` uses, found by hashing a test vector.
    pub source_hash: SourceHash,
}

impl Profile {
    /// What of this profile enters content keys.
    pub fn key_context(&self) -> KeyContext<'_> {
        KeyContext {
            cache_tag: &self.cache_tag,
            magic: self.magic,
        }
    }

    /// (major, minor) parsed from the version.
    pub fn major_minor(&self) -> Option<(u32, u32)> {
        parse_major_minor(&self.version)
    }
}

/// (major, minor) of a version string such as `3.12.1` or `3.12.1.final.0`.
pub fn parse_major_minor(version: &str) -> Option<(u32, u32)> {
    let mut parts = version.trim().split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// An interpreter ready to compile for: where it is and what it is.
#[derive(Debug, Clone)]
pub struct Interpreter {
    /// The executable workers are started from (the real binary, or a
    /// virtualenv's `python`, never a shell shim).
    pub executable: PathBuf,
    /// Its profile.
    pub profile: Profile,
}

impl Interpreter {
    /// The executable's path.
    pub fn path(&self) -> &Path {
        &self.executable
    }
}
