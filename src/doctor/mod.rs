//! `rcache doctor`: what CPython will do with the pycs of a tree, with one
//! interpreter, without writing anything.
//!
//! * [`verdict`]: for each source and optimization level asked, the pyc
//!   `SourceLoader.get_code` reads and what it makes of it (used, used
//!   unchecked, recompiled, or an import that fails), following
//!   `importlib._bootstrap_external` of CPython 3.8–3.13, whose rules are the
//!   same in every one of them;
//! * [`unused`]: the pycs beside the sources that this interpreter never
//!   reads (other optimization levels, other Pythons, orphans, legacy pycs
//!   shadowed by their source, `__pycache__` while a pycache prefix is set),
//!   and the legacy pycs it imports with no source at all;
//! * [`store_report`]: the store, opened only to be read, and how much of
//!   the tree it holds code for;
//! * [`report`]: the JSON object and the human summary.

pub mod report;
pub mod store_report;
pub mod unused;
pub mod verdict;

use std::path::Path;

use crate::pyc::Mode;

/// CPython's `--check-hash-based-pycs` option: which hash-based pycs the
/// import system checks against their source.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum CheckHashBasedPycs {
    /// Checked-hash pycs are checked, unchecked-hash ones are not (CPython's default).
    #[default]
    Default,
    /// Every hash-based pyc is checked.
    Always,
    /// No hash-based pyc is checked.
    Never,
}

impl CheckHashBasedPycs {
    /// The value as CPython's option spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Default => "default",
            Self::Always => "always",
            Self::Never => "never",
        }
    }

    /// Whether a pyc of `mode` is checked against its source before use:
    /// `_imp.check_hash_based_pycs != 'never' and (check_source or
    /// _imp.check_hash_based_pycs == 'always')` for hash-based pycs; a
    /// timestamp pyc always is.
    pub fn checks(self, mode: Mode) -> bool {
        match mode {
            Mode::Timestamp => true,
            Mode::CheckedHash => self != Self::Never,
            Mode::UncheckedHash => self == Self::Always,
        }
    }
}

/// `path` as shown in reports and JSON (not every path is UTF-8).
pub fn shown(path: &Path) -> String {
    path.display().to_string()
}

/// Serializes a path as [`shown`] gives it.
fn serialize_path<S: serde::Serializer>(path: &Path, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&shown(path))
}

/// How `python` is run to use pycs of optimization `level`.
pub fn python_at_level(level: u8) -> String {
    match level {
        0 => "`python` (no -O)".to_owned(),
        1 => "`python -O`".to_owned(),
        2 => "`python -OO`".to_owned(),
        other => format!("`PYTHONOPTIMIZE={other} python`"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn which_hash_based_pycs_are_checked() {
        use CheckHashBasedPycs::{Always, Default, Never};
        assert!(Default.checks(Mode::CheckedHash) && !Default.checks(Mode::UncheckedHash));
        assert!(Always.checks(Mode::CheckedHash) && Always.checks(Mode::UncheckedHash));
        assert!(!Never.checks(Mode::CheckedHash) && !Never.checks(Mode::UncheckedHash));
        assert!(Never.checks(Mode::Timestamp));
    }
}
