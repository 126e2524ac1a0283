//! What a run did, as one JSON object (`--json`) or as lines on stderr.
//!
//! Every command that walks files reports the same [`Summary`]: counters
//! per (file, optimization level), plus the failures, each printed as
//! `path:line:col: ErrorType: message` the way CPython reports them.

use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;

use crate::scan::ScanError;
use crate::store::StoredFailure;

/// The outcome of a run over files.
#[derive(Debug, Default, Serialize)]
pub struct Summary {
    /// Sources seen.
    pub files: u64,
    /// Paths walked to sources that another path in `files` also reaches
    /// (a virtualenv's `lib64` is its `lib`): beside the sources they share
    /// its pycs, so they are left out (under a pycache prefix none are).
    pub aliases: u64,
    /// (file, level) pairs answered from the store.
    pub hits: u64,
    /// Of `hits`, those fetched from a remote cache.
    pub from_remote: u64,
    /// (file, level) pairs compiled in this run.
    pub compiled: u64,
    /// (file, level) pairs that failed, remembered failures included.
    pub failed: u64,
    /// Bytes of source read.
    pub bytes_source: u64,
    /// Compressed bytes added to the store.
    pub bytes_stored: u64,
    /// Python worker processes started.
    pub workers_started: u64,
    /// Wall time of the run.
    pub seconds: f64,
    /// pyc files written (`materialize`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub written: Option<u64>,
    /// pyc files already identical to what would be written (`materialize`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub up_to_date: Option<u64>,
    /// Orphaned pyc files removed (`materialize`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub removed: Option<u64>,
    /// What the remote caches did, when there are any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remote: Option<crate::remote::RemoteSummary>,
    /// Every failure, sorted by path.
    pub failures: Vec<Failure>,
    /// Warnings CPython prints when compiling (e.g. `SyntaxWarning`).
    pub warnings: Vec<Warning>,
}

/// A file that could not be compiled or read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Failure {
    pub path: String,
    pub line: Option<u32>,
    pub col: Option<u32>,
    #[serde(rename = "type")]
    pub error_type: String,
    pub message: String,
}

/// A warning printed by `compile()`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Warning {
    pub path: String,
    pub line: Option<u32>,
    #[serde(rename = "type")]
    pub category: String,
    pub message: String,
}

impl Failure {
    /// A failure of `path` as CPython reported it.
    pub fn new(path: &Path, failure: &StoredFailure) -> Self {
        Self {
            path: path.display().to_string(),
            line: failure.line,
            col: failure.col,
            error_type: failure.error_type.clone(),
            message: failure.message.clone(),
        }
    }
}

impl From<ScanError> for Failure {
    /// A path that could not be walked, read, written or removed.
    fn from(error: ScanError) -> Self {
        Self {
            path: error.path.display().to_string(),
            line: None,
            col: None,
            error_type: error.error_type,
            message: error.message,
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.path)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(col) = self.col {
                write!(f, ":{col}")?;
            }
        }
        write!(f, ": {}: {}", self.error_type, self.message)
    }
}

impl std::fmt::Display for Warning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.path)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        write!(f, ": {}: {}", self.category, self.message)
    }
}

/// Warnings as the worker captured them, for the source compiled under
/// `placeholder`: keeps `LINE: Category: message` lines, without the path,
/// so the text stored with an entry holds for every copy of the content.
pub fn normalize_warnings(printed: &str, placeholder: &str) -> Option<String> {
    let lines: Vec<&str> = printed
        .lines()
        .filter_map(|line| line.strip_prefix(placeholder)?.strip_prefix(':'))
        .collect();
    (!lines.is_empty()).then(|| lines.join("\n"))
}

/// Warnings stored by [`normalize_warnings`], reported for `path`.
pub fn warnings_for(path: &Path, stored: &str) -> Vec<Warning> {
    stored
        .lines()
        .map(|line| {
            let (number, rest) = line.split_once(": ").unwrap_or(("", line));
            let (category, message) = rest.split_once(": ").unwrap_or(("Warning", rest));
            Warning {
                path: path.display().to_string(),
                line: number.parse().ok(),
                category: category.to_owned(),
                message: message.to_owned(),
            }
        })
        .collect()
}

impl Summary {
    /// One human line: what was done, how fast.
    pub fn headline(&self) -> String {
        let mut line = format!(
            "{} file{} in {:.2}s: {} compiled, {} from the store",
            self.files,
            if self.files == 1 { "" } else { "s" },
            self.seconds,
            self.compiled,
            self.hits,
        );
        if let Some(remote) = &self.remote {
            let _ = write!(
                line,
                " ({} from the remote, {} uploaded)",
                self.from_remote, remote.uploaded
            );
        }
        if let (Some(written), Some(up_to_date)) = (self.written, self.up_to_date) {
            let _ = write!(line, "; {written} pyc written, {up_to_date} up to date");
        }
        if self.failed > 0 {
            let _ = write!(line, ", {} failed", self.failed);
        }
        if self.workers_started > 0 {
            let _ = write!(
                line,
                " ({} worker{})",
                self.workers_started,
                if self.workers_started == 1 { "" } else { "s" }
            );
        }
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_lines_read_like_cpython() {
        let mut failure = Failure {
            path: "/src/bad.py".into(),
            line: Some(3),
            col: Some(7),
            error_type: "SyntaxError".into(),
            message: "invalid syntax".into(),
        };
        assert_eq!(
            failure.to_string(),
            "/src/bad.py:3:7: SyntaxError: invalid syntax"
        );
        failure.col = None;
        assert_eq!(
            failure.to_string(),
            "/src/bad.py:3: SyntaxError: invalid syntax"
        );
        failure.line = None;
        assert_eq!(
            failure.to_string(),
            "/src/bad.py: SyntaxError: invalid syntax"
        );
    }

    #[test]
    fn warnings_lose_the_placeholder_and_gain_the_path() {
        let printed = "<rcache-ab>:2: SyntaxWarning: invalid escape sequence '\\d'\n  x = '\\d'\n";
        let stored = normalize_warnings(printed, "<rcache-ab>").unwrap();
        assert_eq!(stored, "2: SyntaxWarning: invalid escape sequence '\\d'");
        let warnings = warnings_for(Path::new("/a.py"), &stored);
        assert_eq!(
            warnings[0].to_string(),
            "/a.py:2: SyntaxWarning: invalid escape sequence '\\d'"
        );
        assert_eq!(normalize_warnings("", "<rcache-ab>"), None);
    }
}
