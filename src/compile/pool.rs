//! The compile pool: a fixed number of threads, each owning at most one
//! worker process, started on its first job (a run with no misses starts no
//! Python). A worker that dies, hangs past the timeout or answers garbage is
//! dropped (killed) and its job reported failed; the next job starts a
//! fresh worker, so the run goes on.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender, bounded, unbounded};

use super::protocol::{Fault, LevelResult, Request};
use super::worker::{Worker, WorkerError};
use crate::store::StoredFailure;

/// A source to compile at some optimization levels.
#[derive(Debug, Clone)]
pub struct Job {
    /// The caller's handle for this job.
    pub id: u64,
    /// Optimization levels, each with the `co_filename` to compile under.
    pub targets: Vec<(u8, String)>,
    /// The exact bytes that were hashed into the key.
    pub source: Arc<[u8]>,
    pub fault: Fault,
}

/// A finished job: one result per level, in the order asked.
#[derive(Debug)]
pub struct Done {
    pub id: u64,
    pub results: Vec<LevelResult>,
}

/// Settings of a pool.
#[derive(Debug, Clone)]
pub struct PoolOptions {
    pub python: PathBuf,
    pub workers: usize,
    /// Per-file compile timeout; `None` waits forever.
    pub timeout: Option<Duration>,
}

/// A running pool. Dropping it (or [`Pool::finish`]) stops every worker.
pub struct Pool {
    jobs: Option<Sender<Job>>,
    done: Receiver<Done>,
    threads: Vec<JoinHandle<()>>,
    started: Arc<AtomicUsize>,
}

impl Pool {
    /// Starts the pool's threads; workers start with their first job.
    pub fn new(options: &PoolOptions, interrupted: &'static AtomicBool) -> Self {
        let workers = options.workers.max(1);
        let (jobs, job_queue) = bounded::<Job>(workers * 4);
        let (done_sender, done) = unbounded();
        let started = Arc::new(AtomicUsize::new(0));
        let threads = (0..workers)
            .map(|index| {
                let job_queue = job_queue.clone();
                let done_sender = done_sender.clone();
                let started = Arc::clone(&started);
                let options = options.clone();
                thread::Builder::new()
                    .name(format!("rcache-compile-{index}"))
                    .spawn(move || {
                        serve(&options, &job_queue, &done_sender, &started, interrupted);
                    })
                    .expect("spawning a compile thread")
            })
            .collect();
        Self {
            jobs: Some(jobs),
            done,
            threads,
            started,
        }
    }

    /// The sending end of the job queue, taken once. Sends block while
    /// every worker is busy and the queue is full, so feed jobs from one
    /// thread and drain [`Pool::done`] from another. Dropping the sender
    /// says no more jobs will come: `done` disconnects once all are answered.
    pub fn submitter(&mut self) -> Option<Sender<Job>> {
        self.jobs.take()
    }

    /// Finished jobs, in completion order.
    pub fn done(&self) -> &Receiver<Done> {
        &self.done
    }

    /// Waits for every thread and returns how many workers were started.
    pub fn finish(mut self) -> usize {
        self.jobs = None;
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
        self.started.load(Ordering::Relaxed)
    }
}

fn serve(
    options: &PoolOptions,
    job_queue: &Receiver<Job>,
    done: &Sender<Done>,
    started: &AtomicUsize,
    interrupted: &AtomicBool,
) {
    let mut worker: Option<Worker> = None;
    for job in job_queue {
        if interrupted.load(Ordering::Relaxed) {
            return;
        }
        let outcome = compile(options, &mut worker, &job, started, interrupted);
        let results = match outcome {
            Ok(results) => results,
            Err(WorkerError::Interrupted) => return,
            Err(err) => {
                tracing::debug!(job = job.id, "worker replaced: {err}");
                worker = None; // dropping kills it
                let failure = StoredFailure {
                    error_type: error_type(&err).to_owned(),
                    message: err.to_string(),
                    line: None,
                    col: None,
                };
                job.targets
                    .iter()
                    .map(|_| LevelResult::Failed {
                        failure: failure.clone(),
                        deterministic: false,
                    })
                    .collect()
            }
        };
        if done
            .send(Done {
                id: job.id,
                results,
            })
            .is_err()
        {
            return;
        }
    }
}

fn compile(
    options: &PoolOptions,
    worker: &mut Option<Worker>,
    job: &Job,
    started: &AtomicUsize,
    interrupted: &AtomicBool,
) -> Result<Vec<LevelResult>, WorkerError> {
    if worker.is_none() {
        started.fetch_add(1, Ordering::Relaxed);
        *worker = Some(Worker::start(&options.python, interrupted)?);
    }
    let worker = worker.as_mut().expect("a worker was just started");
    let request = Request {
        id: job.id,
        fault: job.fault,
        targets: &job.targets,
        source: &job.source,
    };
    worker.compile(&request, options.timeout, interrupted)
}

/// The name a pool failure is reported under, beside CPython's own types.
fn error_type(err: &WorkerError) -> &'static str {
    match err {
        WorkerError::Timeout(_) => "Timeout",
        WorkerError::Spawn { .. } | WorkerError::Died { .. } => "WorkerCrash",
        WorkerError::Garbage { .. } => "WorkerError",
        WorkerError::Interrupted => "Interrupted",
    }
}
