//! Preparing code before the interpreter asks for it.
//!
//! Python imports one module at a time, so every answer is on the critical
//! path; looking one up (two indexed reads, zstd, checksum, filename
//! rewrite) costs about as much as CPython reading its own pyc. But a
//! program imports the same modules in the same order run after run, so
//! the server records that order (`import_sequences`), and the next process
//! that starts with the same module has the rest looked up on another core,
//! a bounded distance ahead of the requests. A prepared answer is used only
//! if the file still has the identity it was keyed with.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use super::lookup::{self, Answer, Learnt, Scratch};
use crate::identity::FileIdentity;
use crate::key::{Key, KeyContext};
use crate::store::Store;

/// How many answers may wait, prepared but not yet asked for.
const AHEAD: usize = 256;

/// A ready answer.
pub struct Prepared {
    /// The file's identity when its code was keyed.
    pub identity: FileIdentity,
    pub key: Key,
    /// The whole reply frame.
    pub frame: Vec<u8>,
}

/// What the two threads share.
struct Ready {
    /// Prepared answers by path, with their place in the sequence.
    answers: HashMap<Vec<u8>, (usize, Prepared)>,
    /// The place of the last answer taken: everything before it was skipped.
    last_taken: usize,
    stop: bool,
}

/// A running prefetcher for one connection.
pub struct Prefetch {
    state: Arc<(Mutex<Ready>, Condvar)>,
    thread: JoinHandle<Learnt>,
}

/// Where and for what the prefetcher looks up code.
pub struct Target {
    pub store_path: PathBuf,
    pub cache_tag: String,
    pub magic: [u8; 4],
    pub level: u8,
}

impl Prefetch {
    /// Starts preparing `paths`, in order, on a thread of its own.
    pub fn start(target: Target, paths: Vec<Vec<u8>>, frame_header: [u8; 5]) -> Self {
        let state = Arc::new((
            Mutex::new(Ready {
                answers: HashMap::new(),
                last_taken: 0,
                stop: false,
            }),
            Condvar::new(),
        ));
        let shared = Arc::clone(&state);
        let thread =
            std::thread::spawn(move || prepare_all(&target, &paths, frame_header, &shared));
        Self { state, thread }
    }

    /// The prepared answer for `path`, if there is one.
    pub fn take(&self, path: &[u8]) -> Option<Prepared> {
        let (lock, wake) = &*self.state;
        let mut ready = lock.lock().expect("prefetch state");
        let (place, prepared) = ready.answers.remove(path)?;
        if place > ready.last_taken {
            ready.last_taken = place;
            ready.answers.retain(|_, (other, _)| *other > place);
        }
        wake.notify_all();
        Some(prepared)
    }

    /// Stops preparing; returns what the lookups learnt.
    pub fn finish(self) -> Learnt {
        let (lock, wake) = &*self.state;
        lock.lock().expect("prefetch state").stop = true;
        wake.notify_all();
        self.thread.join().unwrap_or_default()
    }
}

fn prepare_all(
    target: &Target,
    paths: &[Vec<u8>],
    frame_header: [u8; 5],
    state: &(Mutex<Ready>, Condvar),
) -> Learnt {
    let mut learnt = Learnt::default();
    let (Ok(store), Ok(mut scratch)) = (Store::open(&target.store_path), Scratch::new()) else {
        return learnt;
    };
    let context = KeyContext {
        cache_tag: &target.cache_tag,
        magic: target.magic,
    };
    let (lock, wake) = state;
    for (place, path) in paths.iter().enumerate() {
        {
            let mut ready = lock.lock().expect("prefetch state");
            while place > ready.last_taken + AHEAD && !ready.stop {
                ready = wake.wait(ready).expect("prefetch state");
            }
            if ready.stop {
                break;
            }
        }
        let mut frame = frame_header.to_vec();
        let answer = lookup::answer(
            &store,
            &context,
            target.level,
            path,
            &mut learnt,
            &mut scratch,
            &mut frame,
        );
        if let Ok(Answer::Hit { key, identity }) = answer {
            let length = (frame.len() - 5) as u32;
            frame[1..5].copy_from_slice(&length.to_le_bytes());
            let prepared = Prepared {
                identity,
                key,
                frame,
            };
            let mut ready = lock.lock().expect("prefetch state");
            ready.answers.insert(path.clone(), (place, prepared));
        }
    }
    learnt
}
