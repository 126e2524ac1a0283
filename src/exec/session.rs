//! One interpreter process's requests: answered from what the prefetcher
//! prepared when the file is unchanged since, else looked up now; misses
//! go to the background compiler; the order of requests is remembered.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt as _;
use std::path::{Path, PathBuf};

use crossbeam_channel::Sender;

use super::lookup::{self, Answer, Learnt, Missed, Scratch};
use super::prefetch::{self, Prefetch};
use crate::identity::FileIdentity;
use crate::key::KeyContext;
use crate::store::{ImportSequence, Store};

const HIT: u8 = b'H';
const MISS: u8 = b'M';
/// Most requests of one process remembered as its import sequence.
const MAX_SEQUENCE: usize = 20_000;

/// The state of one connection.
pub struct Session {
    store: Store,
    store_path: PathBuf,
    cache_tag: String,
    magic: [u8; 4],
    /// Where misses go to be compiled; `None` for other interpreters.
    compile_queue: Option<Sender<Box<Missed>>>,
    learnt: Learnt,
    scratch: Scratch,
    frame: Vec<u8>,
    /// Paths asked for, in order.
    asked: Vec<Vec<u8>>,
    /// A process asks at one level (`sys.flags.optimize`), fixed at start.
    level: Option<u8>,
    prefetch: Option<Prefetch>,
}

impl Session {
    pub fn new(
        store: Store,
        store_path: PathBuf,
        cache_tag: String,
        magic: [u8; 4],
        compile_queue: Option<Sender<Box<Missed>>>,
    ) -> std::io::Result<Self> {
        Ok(Self {
            store,
            store_path,
            cache_tag,
            magic,
            compile_queue,
            learnt: Learnt::default(),
            scratch: Scratch::new()?,
            frame: Vec::new(),
            asked: Vec::new(),
            level: None,
            prefetch: None,
        })
    }

    /// The reply frame for one request, and whether it is a hit.
    pub fn answer(&mut self, level: u8, path: &[u8]) -> (bool, &[u8]) {
        if self.asked.len() < MAX_SEQUENCE {
            self.asked.push(path.to_vec());
        }
        let first_level = *self.level.get_or_insert(level);
        if let Some(prepared) = self
            .prefetch
            .as_ref()
            .and_then(|prefetch| prefetch.take(path))
        {
            let unchanged = FileIdentity::of(Path::new(OsStr::from_bytes(path)))
                .is_ok_and(|identity| identity == prepared.identity);
            if unchanged && level == first_level {
                self.learnt.used.push(prepared.key);
                self.frame = prepared.frame;
                return (true, &self.frame);
            }
        }
        // The reply: status, length (filled in below), code.
        self.frame.clear();
        self.frame.extend_from_slice(&[HIT, 0, 0, 0, 0]);
        let context = KeyContext {
            cache_tag: &self.cache_tag,
            magic: self.magic,
        };
        let answer = lookup::answer(
            &self.store,
            &context,
            level,
            path,
            &mut self.learnt,
            &mut self.scratch,
            &mut self.frame,
        )
        .unwrap_or_else(|err| {
            tracing::warn!("store lookup failed: {err}");
            Answer::Miss(None)
        });
        let hit = match answer {
            Answer::Hit { key, .. } => {
                self.learnt.used.push(key);
                true
            }
            Answer::Miss(missed) => {
                if let (Some(missed), Some(queue)) = (missed, &self.compile_queue) {
                    let _ = queue.send(missed);
                }
                self.frame.truncate(5);
                self.frame[0] = MISS;
                false
            }
        };
        let length = (self.frame.len() - 5) as u32;
        self.frame[1..5].copy_from_slice(&length.to_le_bytes());
        if self.prefetch.is_none() && self.asked.len() == 1 {
            self.prefetch = self.start_prefetch(level, path);
        }
        (hit, &self.frame)
    }

    /// Starts preparing what a process that first asked for `first_path`
    /// asked for last time, if that is known.
    fn start_prefetch(&self, level: u8, first_path: &[u8]) -> Option<Prefetch> {
        let mut paths = self
            .store
            .import_sequence(first_path, &self.cache_tag, level)
            .ok()??;
        if paths.first().map(Vec::as_slice) == Some(first_path) {
            paths.remove(0);
        }
        let target = prefetch::Target {
            store_path: self.store_path.clone(),
            cache_tag: self.cache_tag.clone(),
            magic: self.magic,
            level,
        };
        Some(Prefetch::start(target, paths, [HIT, 0, 0, 0, 0]))
    }

    /// Ends the session: what it learnt, its import sequence included.
    pub fn finish(mut self) -> Learnt {
        if let Some(prefetch) = self.prefetch.take() {
            self.learnt.append(&mut prefetch.finish());
        }
        if let (Some(first_path), Some(optimize)) = (self.asked.first(), self.level) {
            self.learnt.sequences.push(ImportSequence {
                first_path: first_path.clone(),
                cache_tag: self.cache_tag.clone(),
                optimize,
                paths: std::mem::take(&mut self.asked),
            });
        }
        self.learnt
    }
}
