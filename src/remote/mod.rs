//! The remote tier: a second cache on servers a team already runs (HTTP
//! with WebDAV PUT, redis, a shared directory), between the local store and
//! the compiler.
//!
//! ```text
//! local misses ──fetch (threads × keep-alive)──▶ check object ──▶ local store
//!                                  └ not found ─▶ compile ──▶ upload queue ─▶ PUT (threads)
//! ```
//! A remote never breaks a build: every failure (refused connection,
//! timeout, 4xx/5xx, an object that fails its checks) is counted, warned
//! about once per remote, and the run carries on locally; a remote that
//! fails [`MAX_ERRORS`] times is skipped for the rest of the run. Uploads run
//! in the background while the run goes on, and [`Remote::finish`] waits
//! for them.

mod dir;
mod http;
mod location;
mod object;
mod redis;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use serde::Serialize;

use crate::interrupt;
use crate::key::{ContentHash, Key, KeyContext};
use crate::progress::Reporter;
use crate::store::{NewEntry, NewFailure};
pub use location::Location;
pub use object::{Fetched, Wanted, encode_code, encode_failure};

/// Requests in flight at once when fetching, each thread keeping its
/// connection alive: a cold tree costs `keys / FETCH_THREADS` round trips.
const FETCH_THREADS: usize = 16;
/// Threads uploading in the background.
const UPLOAD_THREADS: usize = 4;
/// A remote that failed this many times is not used again in the run.
pub const MAX_ERRORS: u32 = 3;

/// One way of reaching a remote's objects.
trait Backend: Send + Sync {
    /// The object stored under `key`; `None` when there is none.
    fn get(&self, key: &Key) -> Result<Option<Vec<u8>>, String>;
    /// Stores `object` under `key`.
    fn put(&self, key: &Key, object: &[u8]) -> Result<(), String>;
    /// Whether an object is stored under `key`, without fetching it.
    fn has(&self, key: &Key) -> Result<bool, String>;
}

/// How rcache uses its remotes.
#[derive(Debug, Clone)]
pub struct Options {
    pub locations: Vec<Location>,
    /// Only fetch: never upload (untrusted runners).
    pub read_only: bool,
    /// How long one request may take.
    pub timeout: Duration,
    /// Print no warnings.
    pub quiet: bool,
}

/// What the remotes did in one run, in a command's `--json` summary.
#[derive(Debug, Default, Clone, Serialize)]
pub struct RemoteSummary {
    /// Keys found on a remote (and checked).
    pub hits: u64,
    /// Keys no remote had.
    pub misses: u64,
    /// Failed requests and refused objects.
    pub errors: u64,
    /// Objects uploaded.
    pub uploaded: u64,
    /// Objects a remote already had when asked before an upload (`push`).
    pub present: u64,
    /// Object bytes received.
    pub bytes_down: u64,
    /// Object bytes sent.
    pub bytes_up: u64,
    /// Requests made, over every remote.
    pub requests: u64,
    /// Remotes given up on during the run.
    pub skipped: Vec<String>,
}

impl RemoteSummary {
    /// The store's lifetime counters this run adds to (`rcache stats`).
    pub fn counters(&self) -> Vec<(&'static str, u64)> {
        vec![
            ("remote_hits", self.hits),
            ("remote_misses", self.misses),
            ("remote_errors", self.errors),
            ("remote_uploaded", self.uploaded),
            ("remote_bytes_down", self.bytes_down),
            ("remote_bytes_up", self.bytes_up),
        ]
    }
}

/// The remotes of a run, tried in order.
pub struct Remote {
    shared: Arc<Shared>,
    uploads: Option<Uploads>,
}

struct Shared {
    endpoints: Vec<Endpoint>,
    quiet: bool,
    counters: Counters,
}

struct Endpoint {
    shown: String,
    backend: Box<dyn Backend>,
    errors: AtomicU32,
    warned: AtomicBool,
}

#[derive(Default)]
struct Counters {
    hits: AtomicU64,
    misses: AtomicU64,
    errors: AtomicU64,
    uploaded: AtomicU64,
    present: AtomicU64,
    bytes_down: AtomicU64,
    bytes_up: AtomicU64,
    requests: AtomicU64,
}

/// The background upload threads and their queue.
struct Uploads {
    queue: crossbeam_channel::Sender<(Key, Vec<u8>)>,
    threads: Vec<JoinHandle<()>>,
}

impl Remote {
    /// The remotes `options` name; `None` when there are none. Fails only
    /// on a URL a client refuses (a configuration error); servers are not
    /// contacted until needed.
    pub fn connect(options: &Options) -> anyhow::Result<Option<Self>> {
        if options.locations.is_empty() {
            return Ok(None);
        }
        let mut endpoints = Vec::new();
        for location in &options.locations {
            let backend: Box<dyn Backend> = match location {
                Location::Http(url) => {
                    Box::new(http::Http::new(url, FETCH_THREADS, options.timeout))
                }
                Location::Redis { url, ttl } => Box::new(
                    redis::Redis::new(url, *ttl, options.timeout)
                        .map_err(|why| anyhow::anyhow!("remote `{}`: {why}", location.display()))?,
                ),
                Location::Dir(dir) => Box::new(dir::Dir::new(dir)),
            };
            endpoints.push(Endpoint {
                shown: location.display(),
                backend,
                errors: AtomicU32::new(0),
                warned: AtomicBool::new(false),
            });
        }
        let shared = Arc::new(Shared {
            endpoints,
            quiet: options.quiet,
            counters: Counters::default(),
        });
        let uploads = (!options.read_only).then(|| Uploads::start(&shared));
        Ok(Some(Self { shared, uploads }))
    }

    /// Fetches the objects of `wanted` (keys of `context`), a few requests
    /// at a time, and returns those that pass their checks, in order,
    /// ready for the store's profile `profile_id`.
    pub fn fetch(
        &self,
        context: &KeyContext<'_>,
        wanted: &[Wanted],
        profile_id: i64,
        reporter: &dyn Reporter,
    ) -> Vec<Option<Fetched>> {
        crate::parallel::map(wanted, FETCH_THREADS, |wanted| {
            if interrupt::requested() {
                return None;
            }
            let fetched = self.shared.fetch_one(context, wanted, profile_id);
            reporter.advanced();
            fetched
        })
    }

    /// Queues compiled code for upload (nothing when read-only).
    pub fn upload_code(&self, context: &KeyContext<'_>, source: &ContentHash, entry: &NewEntry) {
        if let Some(uploads) = &self.uploads {
            uploads.queue(entry.key, object::encode_code(context, source, entry));
        }
    }

    /// Queues a compile failure for upload (nothing when read-only).
    pub fn upload_failure(
        &self,
        context: &KeyContext<'_>,
        source: &ContentHash,
        failure: &NewFailure,
    ) {
        if let Some(uploads) = &self.uploads {
            uploads.queue(
                failure.key,
                object::encode_failure(context, source, failure),
            );
        }
    }

    /// Makes sure every remote holds `objects` (key, object bytes): asks
    /// each (`HEAD`, `EXISTS`) and uploads what it lacks, a few at a time.
    pub fn ensure(&self, objects: &[(Key, Vec<u8>)], reporter: &dyn Reporter) {
        let counters = &self.shared.counters;
        reporter.started("Pushing", objects.len() as u64);
        crate::parallel::map(objects, FETCH_THREADS, |(key, object)| {
            if interrupt::requested() {
                return;
            }
            for endpoint in self.shared.usable() {
                counters.requests.fetch_add(1, Ordering::Relaxed);
                match endpoint.backend.has(key) {
                    Ok(true) => {
                        counters.present.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(false) => self.shared.put(endpoint, key, object),
                    Err(why) => self
                        .shared
                        .failed(endpoint, &format!("{why} ({})", short(key))),
                }
            }
            reporter.advanced();
        });
        reporter.finished();
    }

    /// Waits for the queued uploads and says what the remotes did.
    pub fn finish(mut self) -> RemoteSummary {
        if let Some(uploads) = self.uploads.take() {
            uploads.finish();
        }
        self.shared.summary()
    }
}

impl Shared {
    fn fetch_one(
        &self,
        context: &KeyContext<'_>,
        wanted: &Wanted,
        profile_id: i64,
    ) -> Option<Fetched> {
        let counters = &self.counters;
        let mut missing = false;
        for endpoint in self.usable() {
            counters.requests.fetch_add(1, Ordering::Relaxed);
            match endpoint.backend.get(&wanted.key) {
                Ok(None) => missing = true,
                Ok(Some(bytes)) => {
                    counters
                        .bytes_down
                        .fetch_add(bytes.len() as u64, Ordering::Relaxed);
                    match object::decode(&bytes, context, wanted, profile_id) {
                        Ok(fetched) => {
                            counters.hits.fetch_add(1, Ordering::Relaxed);
                            return Some(fetched);
                        }
                        Err(why) => {
                            self.failed(
                                endpoint,
                                &format!("refused {}: {why}", short(&wanted.key)),
                            );
                        }
                    }
                }
                Err(why) => self.failed(endpoint, &format!("{why} ({})", short(&wanted.key))),
            }
        }
        if missing {
            counters.misses.fetch_add(1, Ordering::Relaxed);
        }
        None
    }

    fn put_everywhere(&self, key: &Key, object: &[u8]) {
        for endpoint in self.usable() {
            self.put(endpoint, key, object);
        }
    }

    fn put(&self, endpoint: &Endpoint, key: &Key, object: &[u8]) {
        let counters = &self.counters;
        counters.requests.fetch_add(1, Ordering::Relaxed);
        match endpoint.backend.put(key, object) {
            Ok(()) => {
                counters.uploaded.fetch_add(1, Ordering::Relaxed);
                counters
                    .bytes_up
                    .fetch_add(object.len() as u64, Ordering::Relaxed);
            }
            Err(why) => self.failed(endpoint, &format!("{why} ({})", short(key))),
        }
    }

    /// The remotes not given up on.
    fn usable(&self) -> impl Iterator<Item = &Endpoint> {
        self.endpoints
            .iter()
            .filter(|endpoint| endpoint.errors.load(Ordering::Relaxed) < MAX_ERRORS)
    }

    /// Counts a failure of `endpoint`; warns the first time.
    fn failed(&self, endpoint: &Endpoint, what: &str) {
        self.counters.errors.fetch_add(1, Ordering::Relaxed);
        let errors = endpoint.errors.fetch_add(1, Ordering::Relaxed) + 1;
        tracing::debug!("remote `{}`: {what}", endpoint.shown);
        if errors == MAX_ERRORS {
            tracing::debug!(
                "remote `{}`: not used for the rest of the run",
                endpoint.shown
            );
        }
        if !self.quiet && !endpoint.warned.swap(true, Ordering::Relaxed) {
            #[expect(clippy::print_stderr, reason = "a warning, once per remote")]
            {
                eprintln!(
                    "warning: remote `{}`: {what}; carrying on without it (skipped after {MAX_ERRORS} failures)",
                    endpoint.shown
                );
            }
        }
    }

    fn summary(&self) -> RemoteSummary {
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        let counters = &self.counters;
        RemoteSummary {
            hits: get(&counters.hits),
            misses: get(&counters.misses),
            errors: get(&counters.errors),
            uploaded: get(&counters.uploaded),
            present: get(&counters.present),
            bytes_down: get(&counters.bytes_down),
            bytes_up: get(&counters.bytes_up),
            requests: get(&counters.requests),
            skipped: self
                .endpoints
                .iter()
                .filter(|endpoint| endpoint.errors.load(Ordering::Relaxed) >= MAX_ERRORS)
                .map(|endpoint| endpoint.shown.clone())
                .collect(),
        }
    }
}

impl Uploads {
    fn start(shared: &Arc<Shared>) -> Self {
        let (queue, jobs) = crossbeam_channel::unbounded::<(Key, Vec<u8>)>();
        let threads = (0..UPLOAD_THREADS)
            .map(|_| {
                let shared = Arc::clone(shared);
                let jobs = jobs.clone();
                std::thread::spawn(move || {
                    for (key, object) in jobs {
                        if !interrupt::requested() {
                            shared.put_everywhere(&key, &object);
                        }
                    }
                })
            })
            .collect();
        Self { queue, threads }
    }

    fn queue(&self, key: Key, object: Vec<u8>) {
        // The threads outlive the queue's sender; a send cannot fail.
        let _ = self.queue.send((key, object));
    }

    fn finish(self) {
        drop(self.queue);
        for thread in self.threads {
            let _ = thread.join();
        }
    }
}

/// A key as named in warnings: enough hex to find it.
fn short(key: &Key) -> String {
    format!("object {}…", &key.to_hex()[..12])
}
