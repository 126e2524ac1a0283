//! The engine behind `warm`: read each source once, key it, look it up,
//! compile only the misses, store the results in batches.
//!
//! ```text
//! files ──read+blake3 (or recall)──▶ keys ──lookup──┬─ hit / remembered failure
//!                                                   └─ miss ─▶ remote ─┬─ checked object ─▶ store
//!                                                                      └─ miss ─▶ pool ─▶ batched store writes
//!                                                                                      └─▶ upload
//! ```
//! The bytes sent to the compiler are the bytes hashed (`source.rs` checks
//! a file keyed from its record still hashes the same when read), so an
//! edit during the run cannot pair a key with other code. Content met under
//! several paths is compiled once.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::compile::{Fault, Job, LevelResult, Pool, PoolOptions};
use crate::env_vars;
use crate::interpreter::Profile;
use crate::interrupt;
use crate::key::{ContentHash, Key};
use crate::parallel;
use crate::progress::Reporter;
use crate::remote::{Fetched, Remote, Wanted};
use crate::report::{Failure, Summary, normalize_warnings, warnings_for};
use crate::scan::ScanError;
use crate::source::{Keyed, Source, key_all};
use crate::store::{Lookup, NewEntry, NewFailure, Store, StoredFailure};

/// A batch of results is committed when it is this big ...
const BATCH_ENTRIES: usize = 256;
/// ... or this old, keeping write transactions short.
const BATCH_AGE: Duration = Duration::from_millis(500);

/// What the pipeline needs to know and may use.
pub struct Pipeline<'a> {
    pub store: &'a mut Store,
    pub profile: &'a Profile,
    pub profile_id: i64,
    pub levels: &'a [u8],
    pub pool: PoolOptions,
    pub reporter: &'a dyn Reporter,
    /// The remote tier, asked for local misses and given what is compiled.
    pub remote: Option<&'a Remote>,
}

/// What a run over files produced.
pub struct Outcome {
    pub summary: Summary,
    /// Ctrl-C stopped the run (what was finished is stored).
    pub interrupted: bool,
    /// Every source read, with the levels whose code is in the store.
    pub compiled: Vec<(Source, Vec<(u8, Key)>)>,
}

/// What the lookups found: the state of every key, the keys whose last-use
/// time needs refreshing, and the compiles to run.
#[derive(Default)]
struct Plan {
    states: HashMap<Key, KeyState>,
    stale: Vec<Key>,
    jobs: Vec<Job>,
}

/// What is known of one key during the run.
enum KeyState {
    Hit {
        warnings: Option<String>,
    },
    Remembered(StoredFailure),
    /// Fetched from a remote (and now in the store).
    Fetched {
        warnings: Option<String>,
    },
    /// A failure fetched from a remote.
    FetchedFailure(StoredFailure),
    /// Compiled in this run, for the source at index `owner`.
    Compiled {
        warnings: Option<String>,
        owner: usize,
    },
    Failed(StoredFailure),
    /// Queued but not answered (the run was interrupted).
    Pending,
}

impl Pipeline<'_> {
    /// Warms the store with `files`; `scan_errors` are reported with them.
    pub fn run(mut self, files: &[PathBuf], scan_errors: &[ScanError]) -> anyhow::Result<Outcome> {
        let start = Instant::now();
        let mut summary = Summary::default();
        let Keyed {
            mut sources,
            read,
            shared,
            errors: mut read_errors,
            to_remember,
        } = key_all(
            self.store,
            files,
            self.profile,
            self.levels,
            self.pool.workers,
        )?;
        tracing::debug!(
            "keyed {} sources: {read} read, {shared} read under another path, {} unchanged since the store's record of them, by {:.1?}",
            sources.len(),
            sources.len() - read - shared,
            start.elapsed()
        );
        self.store.record_sources(&to_remember)?;
        summary.files = files.len() as u64;
        summary.bytes_source = sources.iter().map(|source| source.metadata.len()).sum();

        let Plan {
            mut states,
            stale,
            jobs,
        } = self.plan(&mut sources, &mut read_errors)?;
        tracing::debug!(
            "looked up by {:.1?}: {} to compile",
            start.elapsed(),
            jobs.len()
        );
        let mut interrupted = false;
        if !jobs.is_empty() {
            let (started, stored_bytes) = self.compile(jobs, &sources, &mut states)?;
            summary.workers_started = started as u64;
            summary.bytes_stored = stored_bytes;
            interrupted = interrupt::requested();
        }

        tally(&mut summary, &sources, &states);
        summary.failures.extend(
            read_errors
                .iter()
                .chain(scan_errors)
                .cloned()
                .map(Failure::from),
        );
        // Unreadable files, and paths that could not be walked (loops, dangling
        // links), fail at every level asked.
        summary.failed += (read_errors.len() + scan_errors.len()) as u64 * self.levels.len() as u64;
        summary.failures.sort_by(|a, b| a.path.cmp(&b.path));
        let count = |wanted: fn(&KeyState) -> bool| {
            let keys = sources.iter().flat_map(|source| &source.keys);
            keys.filter(|key| states.get(*key).is_some_and(wanted))
                .count() as u64
        };
        // Lifetime counters: a remembered failure is a lookup the store
        // answered; a fresh failure is one it could not. What a remote
        // answered is counted as the remote's (`rcache stats`).
        let answered = summary.hits - summary.from_remote
            + count(|state| matches!(state, KeyState::Remembered(_)));
        let misses = summary.compiled + count(|state| matches!(state, KeyState::Failed(_)));
        self.store
            .finish_run(&stale, &[("hits", answered), ("misses", misses)])?;
        summary.seconds = start.elapsed().as_secs_f64();
        let levels = self.levels;
        let compiled = sources
            .into_iter()
            .map(|source| {
                let usable = levels
                    .iter()
                    .zip(&source.keys)
                    .filter(|(_, key)| {
                        matches!(
                            states.get(*key),
                            Some(
                                KeyState::Hit { .. }
                                    | KeyState::Fetched { .. }
                                    | KeyState::Compiled { .. }
                            )
                        )
                    })
                    .map(|(&level, &key)| (level, key))
                    .collect();
                (source, usable)
            })
            .collect();
        Ok(Outcome {
            summary,
            interrupted,
            compiled,
        })
    }

    /// Looks every key up once (content under several paths shares its
    /// keys) and makes one job per content with misses. A source keyed from
    /// its record is read now if it has misses; one that can no longer be
    /// read moves to `read_errors`.
    fn plan(
        &mut self,
        sources: &mut Vec<Source>,
        read_errors: &mut Vec<ScanError>,
    ) -> anyhow::Result<Plan> {
        let mut plan = Plan::default();
        self.store.reading(|| -> anyhow::Result<()> {
            for key in sources.iter().flat_map(|source| &source.keys) {
                let Entry::Vacant(vacant) = plan.states.entry(*key) else {
                    continue; // the same content under another path
                };
                let (lookup, refresh) = self.store.lookup(key)?;
                if refresh {
                    plan.stale.push(*key);
                }
                vacant.insert(match lookup {
                    Lookup::Hit { warnings } => KeyState::Hit { warnings },
                    Lookup::Failed(failure) => KeyState::Remembered(failure),
                    Lookup::Miss => KeyState::Pending,
                });
            }
            Ok(())
        })?;
        if let Some(remote) = self.remote {
            self.fetch(remote, sources, &mut plan.states)?;
        }
        let is_miss = |key: &Key| matches!(plan.states.get(key), Some(KeyState::Pending));
        if !plan
            .states
            .values()
            .any(|state| matches!(state, KeyState::Pending))
        {
            return Ok(plan); // all hits: nothing to read or compile
        }
        let unreadable = parallel::map(sources, self.pool.workers, |source| {
            if source.keys.iter().any(is_miss) {
                source.bytes().err()
            } else {
                None
            }
        });
        let mut unreadable = unreadable.into_iter();
        sources.retain(|_| match unreadable.next().flatten() {
            Some(error) => {
                read_errors.push(error);
                false
            }
            None => true,
        });
        let mut queued = std::collections::HashSet::new();
        for (index, source) in sources.iter().enumerate() {
            let targets: Vec<_> = self
                .levels
                .iter()
                .zip(&source.keys)
                .filter(|(_, key)| is_miss(key) && queued.insert(**key))
                .map(|(&level, key)| (level, key.placeholder_filename()))
                .collect();
            if !targets.is_empty() {
                let bytes = source.bytes().expect("read above");
                plan.jobs.push(Job {
                    id: index as u64,
                    targets,
                    source: Arc::clone(bytes),
                    fault: injected_fault(&source.path),
                });
            }
        }
        Ok(plan)
    }

    /// Asks `remote` for every key still missing, and stores what it has.
    fn fetch(
        &mut self,
        remote: &Remote,
        sources: &[Source],
        states: &mut HashMap<Key, KeyState>,
    ) -> anyhow::Result<()> {
        let mut asked = std::collections::HashSet::new();
        let wanted: Vec<Wanted> = sources
            .iter()
            .flat_map(|source| {
                self.levels
                    .iter()
                    .zip(&source.keys)
                    .map(|(&optimize, &key)| Wanted {
                        key,
                        source: source.content,
                        optimize,
                    })
            })
            .filter(|wanted| {
                matches!(states.get(&wanted.key), Some(KeyState::Pending))
                    && asked.insert(wanted.key)
            })
            .collect();
        if wanted.is_empty() {
            return Ok(());
        }
        let start = Instant::now();
        let context = self.profile.key_context();
        self.reporter.started("Fetching", wanted.len() as u64);
        let fetched = remote.fetch(&context, &wanted, self.profile_id, self.reporter);
        self.reporter.finished();
        let mut batch = Batch::default();
        for (wanted, fetched) in wanted.iter().zip(fetched) {
            match fetched {
                Some(Fetched::Code(entry)) => {
                    states.insert(
                        wanted.key,
                        KeyState::Fetched {
                            warnings: entry.warnings.clone(),
                        },
                    );
                    batch.entries.push(entry);
                }
                Some(Fetched::Failure(failure)) => {
                    states.insert(
                        wanted.key,
                        KeyState::FetchedFailure(failure.failure.clone()),
                    );
                    batch.failures.push(failure);
                }
                None => {}
            }
        }
        let found = batch.entries.len() + batch.failures.len();
        batch.flush(self.store)?;
        tracing::debug!(
            "remote: {found} of {} found by {:.1?}",
            wanted.len(),
            start.elapsed()
        );
        Ok(())
    }

    /// Runs `jobs` through the pool, storing results as they come.
    /// Returns the workers started and the compressed bytes stored.
    fn compile(
        &mut self,
        jobs: Vec<Job>,
        sources: &[Source],
        states: &mut HashMap<Key, KeyState>,
    ) -> anyhow::Result<(usize, u64)> {
        let mut options = self.pool.clone();
        options.workers = options.workers.min(jobs.len());
        self.reporter.started("Compiling", jobs.len() as u64);
        let mut pool = Pool::new(&options, interrupt::flag());
        let submitter = pool.submitter().expect("a new pool has its submitter");
        let mut batch = Batch::default();
        let mut stored_bytes = 0;
        let result = std::thread::scope(|scope| -> anyhow::Result<()> {
            scope.spawn(move || {
                for job in jobs {
                    if interrupt::requested() || submitter.send(job).is_err() {
                        return;
                    }
                }
            });
            for done in pool.done() {
                let owner = usize::try_from(done.id).expect("job ids are source indexes");
                let source = &sources[owner];
                let pending: Vec<(u8, Key)> = self
                    .levels
                    .iter()
                    .zip(&source.keys)
                    .filter(|(_, key)| matches!(states.get(*key), Some(KeyState::Pending)))
                    .map(|(&level, &key)| (level, key))
                    .collect();
                for ((level, key), result) in pending.into_iter().zip(done.results) {
                    let state = self.record(key, level, owner, source.content, result, &mut batch);
                    states.insert(key, state);
                }
                self.reporter.advanced();
                if batch.is_due() {
                    stored_bytes += batch.flush(self.store)?;
                }
            }
            Ok(())
        });
        // Whatever happened, keep what was finished.
        let flushed = batch.flush(self.store);
        self.reporter.finished();
        let started = pool.finish();
        result?;
        stored_bytes += flushed?;
        Ok((started, stored_bytes))
    }

    fn record(
        &self,
        key: Key,
        level: u8,
        owner: usize,
        content: ContentHash,
        result: LevelResult,
        batch: &mut Batch,
    ) -> KeyState {
        match result {
            LevelResult::Compiled { code, warnings } => {
                let warnings = normalize_warnings(&warnings, &key.placeholder_filename());
                let entry =
                    NewEntry::compressed(key, self.profile_id, level, &code, warnings.clone());
                if let Some(remote) = self.remote {
                    remote.upload_code(&self.profile.key_context(), &content, &entry);
                }
                batch.entries.push(entry);
                KeyState::Compiled { warnings, owner }
            }
            LevelResult::Failed {
                failure,
                deterministic,
            } => {
                if deterministic {
                    let failure = NewFailure {
                        key,
                        profile_id: self.profile_id,
                        optimize: level,
                        failure: failure.clone(),
                    };
                    if let Some(remote) = self.remote {
                        remote.upload_failure(&self.profile.key_context(), &content, &failure);
                    }
                    batch.failures.push(failure);
                }
                KeyState::Failed(failure)
            }
        }
    }
}

/// Results waiting to be committed together.
struct Batch {
    entries: Vec<NewEntry>,
    failures: Vec<NewFailure>,
    since: Instant,
}

impl Default for Batch {
    fn default() -> Self {
        Self {
            entries: Vec::new(),
            failures: Vec::new(),
            since: Instant::now(),
        }
    }
}

impl Batch {
    fn is_due(&self) -> bool {
        self.entries.len() + self.failures.len() >= BATCH_ENTRIES
            || self.since.elapsed() >= BATCH_AGE
    }

    /// Commits the batch; returns the compressed bytes written.
    fn flush(&mut self, store: &mut Store) -> anyhow::Result<u64> {
        store.write(&self.entries, &self.failures)?;
        let bytes = self
            .entries
            .iter()
            .map(|entry| entry.data.len() as u64)
            .sum();
        *self = Self::default();
        Ok(bytes)
    }
}

/// Counts each (file, level) once, and collects failures and warnings.
fn tally(summary: &mut Summary, sources: &[Source], states: &HashMap<Key, KeyState>) {
    for (index, source) in sources.iter().enumerate() {
        let mut failures: Vec<Failure> = Vec::new();
        let mut warnings = Vec::new();
        for key in &source.keys {
            let (failure, stored_warnings) = match states.get(key) {
                Some(KeyState::Hit { warnings }) => {
                    summary.hits += 1;
                    (None, warnings.as_deref())
                }
                Some(KeyState::Fetched { warnings }) => {
                    summary.hits += 1;
                    summary.from_remote += 1;
                    (None, warnings.as_deref())
                }
                Some(KeyState::Compiled { warnings, owner }) => {
                    if *owner == index {
                        summary.compiled += 1;
                    } else {
                        summary.hits += 1;
                    }
                    (None, warnings.as_deref())
                }
                Some(
                    KeyState::Remembered(failure)
                    | KeyState::Failed(failure)
                    | KeyState::FetchedFailure(failure),
                ) => {
                    summary.failed += 1;
                    (Some(failure), None)
                }
                Some(KeyState::Pending) | None => (None, None),
            };
            if let Some(failure) = failure {
                let failure = Failure::new(&source.path, failure);
                if !failures.contains(&failure) {
                    failures.push(failure);
                }
            }
            for warning in stored_warnings
                .map(|text| warnings_for(&source.path, text))
                .unwrap_or_default()
            {
                if !warnings.contains(&warning) {
                    warnings.push(warning);
                }
            }
        }
        summary.failures.extend(failures);
        summary.warnings.extend(warnings);
    }
}

/// The test seam of [`env_vars::RCACHE_TEST_WORKER_FAULT`].
fn injected_fault(path: &Path) -> Fault {
    let Ok(rule) = std::env::var(env_vars::RCACHE_TEST_WORKER_FAULT) else {
        return Fault::None;
    };
    let Some((kind, marker)) = rule.split_once(':') else {
        return Fault::None;
    };
    if !path.to_string_lossy().contains(marker) {
        return Fault::None;
    }
    match kind {
        "crash" => Fault::Crash,
        "hang" => Fault::Hang,
        "garbage" => Fault::Garbage,
        _ => Fault::None,
    }
}
