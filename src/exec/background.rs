//! Compiling what `rcache exec` missed, beside the running program.
//!
//! The program does not wait: on a miss it compiles the source itself. The
//! code it made there is not stored, because marshal's output depends on
//! the state of the process that compiled it; the store only takes what a
//! pristine worker (`crate::compile`) compiles from the bytes that were
//! hashed, exactly as `warm` does, so the next run of any checkout hits.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender, select, unbounded};

use super::lookup::Missed;
use crate::compile::{Done, Fault, Job, LevelResult, Pool, PoolOptions};
use crate::interrupt;
use crate::key::Key;
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
    /// Starts the thread; the worker process starts with the first miss.
    pub fn start(store_path: PathBuf, python: PathBuf, profile_id: i64) -> Self {
        let (sender, queue) = unbounded();
        let thread = std::thread::Builder::new()
            .name("rcache-background".to_owned())
            .spawn(move || compile_all(&queue, &store_path, python, profile_id))
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
    profile_id: i64,
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
    let mut pending: HashMap<u64, (Key, u8)> = HashMap::new();
    let mut results = Results::new(profile_id);
    let mut open = true;
    while open || !pending.is_empty() {
        select! {
            recv(queue) -> missed => match missed {
                Ok(missed) => {
                    if !seen.insert(missed.key) {
                        continue;
                    }
                    let Ok(bytes) = missed.source.bytes() else { continue };
                    let id = seen.len() as u64;
                    let job = Job {
                        id,
                        targets: vec![(missed.level, missed.key.placeholder_filename())],
                        source: bytes.clone(),
                        fault: Fault::None,
                    };
                    if submit.send(job).is_err() {
                        break;
                    }
                    pending.insert(id, (missed.key, missed.level));
                }
                Err(_) => open = false,
            },
            recv(pool.done()) -> done => {
                let Ok(done) = done else { break };
                if let Some(target) = pending.remove(&done.id) {
                    results.add(target, done);
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
    results.stored
}

/// Compiled code waiting to be committed.
struct Results {
    profile_id: i64,
    entries: Vec<NewEntry>,
    failures: Vec<NewFailure>,
    store: Option<Store>,
    stored: u64,
}

impl Results {
    fn new(profile_id: i64) -> Self {
        Self {
            profile_id,
            entries: Vec::new(),
            failures: Vec::new(),
            store: None,
            stored: 0,
        }
    }

    fn len(&self) -> usize {
        self.entries.len() + self.failures.len()
    }

    fn add(&mut self, (key, level): (Key, u8), done: Done) {
        for result in done.results {
            match result {
                LevelResult::Compiled { code, warnings } => {
                    let warnings = normalize_warnings(&warnings, &key.placeholder_filename());
                    self.entries.push(NewEntry::compressed(
                        key,
                        self.profile_id,
                        level,
                        &code,
                        warnings,
                    ));
                }
                LevelResult::Failed {
                    failure,
                    deterministic: true,
                } => self.failures.push(NewFailure {
                    key,
                    profile_id: self.profile_id,
                    optimize: level,
                    failure,
                }),
                LevelResult::Failed { .. } => {}
            }
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
        self.entries.clear();
        self.failures.clear();
    }
}
