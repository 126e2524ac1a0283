//! Compiling what `rcache exec` missed, beside the running program.
//!
//! The program does not wait: on a miss it compiles the source itself. The
//! code it made there is not stored, because marshal's output depends on
//! the state of the process that compiled it; the store only takes what a
//! pristine worker (`crate::compile`) compiles from the bytes that were
//! hashed, exactly as `warm` does, so the next run of any checkout hits.
//! With remote caches, what they have is fetched instead (queued misses are
//! fetched together), and what is compiled is uploaded, as `warm` does.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender, select, unbounded};

use super::lookup::Missed;
use crate::compile::{Done, Fault, Job, LevelResult, Pool, PoolOptions};
use crate::interpreter::Profile;
use crate::interrupt;
use crate::key::{ContentHash, Key};
use crate::progress::Silent;
use crate::remote::{self, Fetched, Remote, Wanted};
use crate::report::normalize_warnings;
use crate::store::{NewEntry, NewFailure, Store};

/// How long one file may take to compile in the background.
const TIMEOUT: Duration = Duration::from_secs(120);
/// Results are committed when this many are waiting, or when no compile is.
const BATCH: usize = 64;

/// The background compiler: send it misses, then [`Background::finish`].
pub struct Background {
    sender: Sender<Box<Missed>>,
    thread: JoinHandle<u64>,
}

impl Background {
    /// Starts the thread; the worker process starts with the first miss
    /// that no remote has.
    pub fn start(
        store_path: PathBuf,
        python: PathBuf,
        profile: Profile,
        profile_id: i64,
        remote: &remote::Options,
    ) -> Self {
        let (sender, queue) = unbounded();
        let remote = match Remote::connect(remote) {
            Ok(remote) => remote,
            Err(err) => {
                tracing::warn!("no remote cache: {err:#}");
                None
            }
        };
        let results = Results::new(profile, profile_id, remote);
        let thread = std::thread::Builder::new()
            .name("rcache-background".to_owned())
            .spawn(move || compile_all(&queue, &store_path, python, results))
            .expect("spawning the background compiler");
        Self { sender, thread }
    }

    /// Where to send misses.
    pub fn sender(&self) -> Sender<Box<Missed>> {
        self.sender.clone()
    }

    /// Compiles what is queued and returns how many entries were stored.
    pub fn finish(self) -> u64 {
        drop(self.sender);
        self.thread.join().unwrap_or(0)
    }
}

fn compile_all(
    queue: &Receiver<Box<Missed>>,
    store_path: &std::path::Path,
    python: PathBuf,
    mut results: Results,
) -> u64 {
    let mut pool = Pool::new(
        &PoolOptions {
            python,
            workers: 1,
            timeout: Some(TIMEOUT),
        },
        interrupt::flag(),
    );
    let submit = pool.submitter().expect("a new pool takes jobs");
    let mut seen = HashSet::new();
    let mut pending: HashMap<u64, Target> = HashMap::new();
    let mut next_id = 0;
    let mut open = true;
    'run: while open || !pending.is_empty() {
        select! {
            recv(queue) -> missed => match missed {
                Ok(missed) => {
                    let mut batch = vec![*missed];
                    batch.extend(queue.try_iter().map(|missed| *missed));
                    batch.retain(|missed| seen.insert(missed.key));
                    for missed in results.fetch(batch) {
                        let Ok(bytes) = missed.source.bytes() else { continue };
                        next_id += 1;
                        let id = next_id;
                        let job = Job {
                            id,
                            targets: vec![(missed.level, missed.key.placeholder_filename())],
                            source: bytes.clone(),
                            fault: Fault::None,
                        };
                        if submit.send(job).is_err() {
                            break 'run;
                        }
                        let target = Target {
                            key: missed.key,
                            level: missed.level,
                            content: missed.source.content,
                        };
                        pending.insert(id, target);
                    }
                    if pending.is_empty() {
                        results.commit(store_path);
                    }
                }
                Err(_) => open = false,
            },
            recv(pool.done()) -> done => {
                let Ok(done) = done else { break };
                if let Some(target) = pending.remove(&done.id) {
                    results.add(&target, done);
                }
                if pending.is_empty() || results.len() >= BATCH {
                    results.commit(store_path);
                }
            },
        }
    }
    drop(submit);
    pool.finish();
    results.commit(store_path);
    results.finish_remote();
    results.commit(store_path);
    results.stored
}

/// What a compile job is for.
struct Target {
    key: Key,
    level: u8,
    content: ContentHash,
}

/// Compiled or fetched code waiting to be committed, and the remotes.
struct Results {
    profile: Profile,
    profile_id: i64,
    remote: Option<Remote>,
    entries: Vec<NewEntry>,
    failures: Vec<NewFailure>,
    /// Lifetime counters to add at the end (the remotes').
    counters: Vec<(&'static str, u64)>,
    store: Option<Store>,
    stored: u64,
}

impl Results {
    fn new(profile: Profile, profile_id: i64, remote: Option<Remote>) -> Self {
        Self {
            profile,
            profile_id,
            remote,
            entries: Vec::new(),
            failures: Vec::new(),
            counters: Vec::new(),
            store: None,
            stored: 0,
        }
    }

    fn len(&self) -> usize {
        self.entries.len() + self.failures.len() + self.counters.len()
    }

    /// Takes what the remotes have of `batch`; returns the rest, to compile.
    fn fetch(&mut self, batch: Vec<Missed>) -> Vec<Missed> {
        let Some(remote) = &self.remote else {
            return batch;
        };
        let wanted: Vec<Wanted> = batch
            .iter()
            .map(|missed| Wanted {
                key: missed.key,
                source: missed.source.content,
                optimize: missed.level,
            })
            .collect();
        let context = self.profile.key_context();
        let fetched = remote.fetch(&context, &wanted, self.profile_id, &Silent);
        let mut rest = Vec::new();
        for (missed, fetched) in batch.into_iter().zip(fetched) {
            match fetched {
                Some(Fetched::Code(entry)) => self.entries.push(entry),
                Some(Fetched::Failure(failure)) => self.failures.push(failure),
                None => rest.push(missed),
            }
        }
        rest
    }

    fn add(&mut self, target: &Target, done: Done) {
        let Target {
            key,
            level,
            content,
        } = *target;
        let context = self.profile.key_context();
        for result in done.results {
            match result {
                LevelResult::Compiled { code, warnings } => {
                    let warnings = normalize_warnings(&warnings, &key.placeholder_filename());
                    let entry = NewEntry::compressed(key, self.profile_id, level, &code, warnings);
                    if let Some(remote) = &self.remote {
                        remote.upload_code(&context, &content, &entry);
                    }
                    self.entries.push(entry);
                }
                LevelResult::Failed {
                    failure,
                    deterministic: true,
                } => {
                    let failure = NewFailure {
                        key,
                        profile_id: self.profile_id,
                        optimize: level,
                        failure,
                    };
                    if let Some(remote) = &self.remote {
                        remote.upload_failure(&context, &content, &failure);
                    }
                    self.failures.push(failure);
                }
                LevelResult::Failed { .. } => {}
            }
        }
    }

    /// Waits for the uploads; their counters are committed next.
    fn finish_remote(&mut self) {
        if let Some(remote) = self.remote.take() {
            self.counters = remote.finish().counters();
        }
    }

    /// Writes what is waiting; a store that cannot be written loses only
    /// this run's compiles, which the next run makes again.
    fn commit(&mut self, store_path: &std::path::Path) {
        if self.len() == 0 {
            return;
        }
        let store = match &mut self.store {
            Some(store) => store,
            None => match Store::open(store_path) {
                Ok(store) => self.store.insert(store),
                Err(err) => {
                    tracing::warn!("cannot store what was compiled: {err}");
                    self.entries.clear();
                    self.failures.clear();
                    return;
                }
            },
        };
        match store.write(&self.entries, &self.failures) {
            Ok(()) => self.stored += self.entries.len() as u64,
            Err(err) => tracing::warn!("cannot store what was compiled: {err}"),
        }
        if let Err(err) = store.finish_run(&[], &self.counters) {
            tracing::warn!("cannot count what the remotes did: {err}");
        }
        self.entries.clear();
        self.failures.clear();
        self.counters.clear();
    }
}
