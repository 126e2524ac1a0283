//! What `rcache doctor` prints: one JSON object, or a summary with the
//! first files of each problem and what to do about them.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::store_report::{StoreReport, StoreState};
use super::unused::{SourcelessPyc, Unused, UnusedPyc};
use super::verdict::{State, Verdict};
use super::{python_at_level, serialize_path, shown};
use crate::report::Failure;
use crate::scan::Scan;

/// Files of each problem class shown without `-v`.
const SHOWN_PER_CLASS: usize = 5;

/// The interpreter judged for.
#[derive(Debug, Clone, Serialize)]
pub struct Python {
    #[serde(serialize_with = "serialize_path")]
    pub executable: PathBuf,
    pub version: String,
    pub cache_tag: String,
}

/// A directory walked under two paths (`.venv/lib64` and `.venv/lib`).
#[derive(Debug, Clone, Serialize)]
pub struct DirAlias {
    #[serde(serialize_with = "serialize_path")]
    pub path: PathBuf,
    /// The path chosen for it: beside the sources, pycs are written once,
    /// for the sources as reached through this path.
    #[serde(serialize_with = "serialize_path")]
    pub chosen: PathBuf,
    /// Sources walked through `path`.
    pub sources: u64,
}

impl DirAlias {
    /// The highest directory aliases of a scan, with their sources.
    pub fn of(scan: &Scan) -> Vec<Self> {
        scan.dir_aliases
            .iter()
            .map(|alias| Self {
                path: alias.path.clone(),
                chosen: alias.chosen.clone(),
                sources: scan
                    .aliases
                    .iter()
                    .filter(|source| source.path.starts_with(&alias.path))
                    .count() as u64,
            })
            .collect()
    }
}

/// Everything `rcache doctor` found.
#[derive(Debug, Serialize)]
pub struct Report {
    pub python: Python,
    /// The optimization levels judged.
    pub levels: Vec<u8>,
    pub prefix: Option<String>,
    pub check_hash_based_pycs: &'static str,
    /// Sources walked: one per pyc (beside the sources, several paths to
    /// one directory share its pycs; under a prefix each has its own).
    pub files: u64,
    /// Directories walked under a second path, each with the path whose
    /// name the pycs carry.
    pub aliases: Vec<DirAlias>,
    /// (source, level) pairs in each state; every state is present.
    pub counts: BTreeMap<&'static str, u64>,
    /// One verdict per (source, level), by path then level.
    pub sources: Vec<Verdict>,
    /// Pycs this interpreter never reads.
    pub unused: Vec<UnusedPyc>,
    /// Legacy pycs it imports with no source.
    pub sourceless: Vec<SourcelessPyc>,
    pub store: StoreReport,
    /// Paths that could not be walked, and sources that could not be read.
    pub failures: Vec<Failure>,
    pub seconds: f64,
    /// The directory paths are shown from in the summary.
    #[serde(skip)]
    pub cwd: PathBuf,
}

impl Report {
    /// Counts the verdicts in each state.
    pub fn count(verdicts: &[Verdict]) -> BTreeMap<&'static str, u64> {
        let mut counts: BTreeMap<&'static str, u64> =
            State::ALL.iter().map(|state| (state.name(), 0)).collect();
        for verdict in verdicts {
            *counts.entry(verdict.state.name()).or_default() += 1;
        }
        counts
    }

    /// `path` as the summary shows it: from the current directory when
    /// it is below it.
    fn show(&self, path: &Path) -> String {
        shown(path.strip_prefix(&self.cwd).unwrap_or(path))
    }

    /// The human summary; `verbose` lists every file.
    pub fn render(&self, verbose: bool, suggested: &Suggested) -> String {
        let mut out = String::new();
        let levels: Vec<String> = self.levels.iter().map(|&l| python_at_level(l)).collect();
        let _ = writeln!(
            out,
            "python:   CPython {} (`{}`), cache tag {}",
            self.python.version,
            shown(&self.python.executable),
            self.python.cache_tag
        );
        let _ = writeln!(
            out,
            "run as:   {}, --check-hash-based-pycs {}{}",
            levels.join(" and "),
            self.check_hash_based_pycs,
            self.prefix
                .as_ref()
                .map(|prefix| format!(", pycache prefix `{prefix}`"))
                .unwrap_or_default()
        );
        let _ = writeln!(out, "sources:  {}", self.files);
        self.render_aliases(&mut out);
        out.push('\n');
        self.render_states(&mut out, verbose, &suggested.materialize);
        self.render_unused(&mut out, verbose);
        self.render_store(&mut out, suggested);
        out
    }

    fn render_aliases(&self, out: &mut String) {
        let shared = if self.prefix.is_some() {
            "each path has pycs of its own under the prefix"
        } else {
            "one pyc each, named for the path chosen"
        };
        for alias in &self.aliases {
            let _ = writeln!(
                out,
                "aliases:  `{}` is `{}` ({} source{}; {shared})",
                self.show(&alias.path),
                self.show(&alias.chosen),
                alias.sources,
                if alias.sources == 1 { "" } else { "s" },
            );
        }
    }

    fn render_states(&self, out: &mut String, verbose: bool, materialize: &str) {
        let _ = writeln!(out, "What CPython will do with each source's pyc:");
        for state in State::ALL {
            let count = self.counts.get(state.name()).copied().unwrap_or(0);
            if count > 0 {
                let _ = writeln!(
                    out,
                    "  {:<16} {count:>6}  {}",
                    state.name(),
                    state.meaning()
                );
            }
        }
        for state in State::ALL {
            let listed: Vec<&Verdict> = self
                .sources
                .iter()
                .filter(|verdict| verdict.state == state)
                .collect();
            if listed.is_empty() || (state == State::Valid && !verbose) {
                continue;
            }
            let _ = writeln!(out, "\n{} ({}):", state.name(), listed.len());
            for verdict in shown_part(&listed, verbose) {
                let level = if self.levels.len() > 1 {
                    format!(" [-O {}]", verdict.level)
                } else {
                    String::new()
                };
                let _ = write!(out, "  {}{level}", self.show(&verdict.source));
                if let Some(detail) = &verdict.detail {
                    let _ = write!(out, ": {detail}");
                }
                out.push('\n');
            }
            more(out, "  ", listed.len(), verbose);
            if let Some(advice) = advice(state, materialize) {
                let _ = writeln!(out, "  → {advice}");
            }
        }
    }

    fn render_unused(&self, out: &mut String, verbose: bool) {
        if !self.unused.is_empty() {
            let _ = writeln!(
                out,
                "\nPycs this Python never reads ({}):",
                self.unused.len()
            );
        }
        let kinds = [
            "other_level",
            "other_tag",
            "orphan",
            "beside_source",
            "outside_prefix",
        ];
        for kind in kinds {
            let listed: Vec<&UnusedPyc> = self
                .unused
                .iter()
                .filter(|pyc| pyc.why.name() == kind)
                .collect();
            if listed.is_empty() {
                continue;
            }
            let _ = writeln!(out, "  {kind} ({}):", listed.len());
            for pyc in shown_part(&listed, verbose) {
                let _ = writeln!(
                    out,
                    "    {}: {}",
                    self.show(&pyc.path),
                    pyc.explain(
                        &self.python.cache_tag,
                        self.prefix.as_deref().map(Path::new)
                    )
                );
            }
            more(out, "    ", listed.len(), verbose);
            let _ = writeln!(out, "    → {}", unused_advice(&listed[0].why));
        }
        if !self.sourceless.is_empty() {
            let _ = writeln!(
                out,
                "\nLegacy pycs imported with no source beside them ({}):",
                self.sourceless.len()
            );
            let listed: Vec<&SourcelessPyc> = self.sourceless.iter().collect();
            for pyc in shown_part(&listed, verbose) {
                let note = if pyc.magic_matches {
                    "imported as it is"
                } else {
                    "another Python's: importing it fails (bad magic number)"
                };
                let _ = writeln!(out, "  {}: {note}", self.show(&pyc.path));
            }
            more(out, "  ", listed.len(), verbose);
            let _ = writeln!(
                out,
                "  → CPython runs these whatever source you think it runs; delete them unless you ship bytecode only"
            );
        }
    }

    fn render_store(&self, out: &mut String, suggested: &Suggested) {
        let store = &self.store;
        let _ = writeln!(out, "\nstore:    {}", store.path);
        let state = match store.state {
            StoreState::Absent => "no store yet (`rcache warm` or `rcache materialize` creates it)",
            StoreState::Empty => "empty: no store yet (the next run makes it one)",
            StoreState::Outdated => "from an older rcache",
            StoreState::Writable => "trusted, writable",
            StoreState::ReadOnly => "trusted, read-only: its hits are used, nothing is stored",
            StoreState::Refused => "REFUSED: rcache will not use it",
            StoreState::Unusable => "cannot be read",
        };
        let _ = write!(out, "state:    {state}");
        if let Some(reason) = &store.reason {
            let _ = write!(out, " ({reason})");
        }
        out.push('\n');
        if let (Some(bytes), Some(uid), Some(mode)) = (store.bytes, store.owner_uid, &store.mode) {
            let _ = writeln!(
                out,
                "file:     {}, owner uid {uid}, mode {mode}",
                crate::commands::human_bytes(bytes)
            );
        }
        if let Some(entries) = store.entries {
            let _ = writeln!(
                out,
                "entries:  {entries} ({} for CPython {})",
                store.entries_for_python.unwrap_or(0),
                self.python.version
            );
        }
        if store.lookups > 0 {
            let _ = writeln!(
                out,
                "this tree: {} of {} (source, level) pairs have code in the store ({:.1}%){}",
                store.hits,
                store.lookups,
                percent(store.hits, store.lookups),
                if store.failures > 0 {
                    format!("; {} are known not to compile", store.failures)
                } else {
                    String::new()
                }
            );
            if store.hits + store.failures < store.lookups {
                let _ = writeln!(
                    out,
                    "  → `{}` compiles the rest into the store; `{}` also writes the pycs",
                    suggested.warm, suggested.materialize
                );
            }
        }
        if let (Some(hits), Some(misses)) = (store.lifetime_hits, store.lifetime_misses)
            && hits + misses > 0
        {
            let _ = writeln!(
                out,
                "lifetime: {:.1}% of {} lookups answered from the store",
                percent(hits, hits + misses),
                hits + misses
            );
        }
    }
}

/// The items to list: all with `-v`, else the first few.
fn shown_part<'a, T>(listed: &'a [&'a T], verbose: bool) -> &'a [&'a T] {
    if verbose {
        listed
    } else {
        &listed[..listed.len().min(SHOWN_PER_CLASS)]
    }
}

/// "...and N more" when the list was cut.
fn more(out: &mut String, indent: &str, total: usize, verbose: bool) {
    if !verbose && total > SHOWN_PER_CLASS {
        let _ = writeln!(
            out,
            "{indent}...and {} more (-v lists them)",
            total - SHOWN_PER_CLASS
        );
    }
}

fn percent(part: u64, whole: u64) -> f64 {
    100.0 * part as f64 / whole.max(1) as f64
}

/// What to do about sources in `state`.
fn advice(state: State, materialize: &str) -> Option<String> {
    match state {
        State::Valid | State::Unchecked => None,
        State::UncheckedStale => Some(format!(
            "rewrite them now with `{materialize} --mode unchecked-hash`, and after every edit; or use checked-hash pycs"
        )),
        State::Broken => Some(format!(
            "these imports fail: `{materialize}` replaces the pycs"
        )),
        State::Stale | State::Missing | State::Corrupt | State::Unreadable => Some(format!(
            "`{materialize}` writes valid pycs (from the store; it compiles only what the store lacks)"
        )),
    }
}

/// What to do about pycs never read.
fn unused_advice(why: &Unused) -> String {
    match why {
        Unused::OtherLevel { .. } => {
            "harmless, but a pyc made at one -O level does nothing for another: make pycs for the level you run (`rcache -O N doctor` judges level N)"
                .to_owned()
        }
        Unused::OtherTag { .. } => {
            "harmless, left by another Python; `rcache --python THAT-PYTHON clean` removes them"
                .to_owned()
        }
        Unused::Orphan => {
            "dead weight: `rcache materialize` removes this Python's orphans; delete the others"
                .to_owned()
        }
        Unused::BesideSource => "dead weight, and a trap if the .py is ever deleted: delete them".to_owned(),
        Unused::OutsidePrefix => {
            "dead weight while the prefix is set: `rcache clean` without a prefix removes this Python's"
                .to_owned()
        }
    }
}

/// The commands the advice names, with the levels, prefix and paths judged.
pub struct Suggested {
    pub materialize: String,
    pub warm: String,
}

impl Suggested {
    pub fn new(levels: &[u8], prefix: Option<&Path>, paths: &[PathBuf]) -> Self {
        let command = |verb: &str, prefix: Option<&Path>| {
            let mut command = "rcache".to_owned();
            if levels != [0] {
                for level in levels {
                    let _ = write!(command, " -O {level}");
                }
            }
            let _ = write!(command, " {verb}");
            if let Some(prefix) = prefix {
                let _ = write!(command, " --prefix {}", shown(prefix));
            }
            for path in paths.iter().filter(|path| *path != Path::new(".")) {
                let _ = write!(command, " {}", shown(path));
            }
            command
        };
        Self {
            materialize: command("materialize", prefix),
            warm: command("warm", None),
        }
    }
}
