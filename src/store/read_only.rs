//! What a read-only store is given to keep: held in memory for the rest of
//! the process, so a run on a store it cannot write goes on exactly as if
//! it had stored (materialize writes the pycs of what it compiled, a
//! second level reuses the first's results), and nothing reaches the file.

use std::collections::HashMap;

use super::{Blob, Lookup, NewEntry, NewFailure};
use crate::key::Key;

/// Why the store cannot be written, and what this process compiled anyway.
#[derive(Debug)]
pub(super) struct ReadOnly {
    pub reason: String,
    /// Compiled code by key, with its warnings.
    entries: HashMap<Key, (Blob, Option<String>)>,
    failures: HashMap<Key, Lookup>,
}

impl ReadOnly {
    pub fn new(reason: String) -> Self {
        Self {
            reason,
            entries: HashMap::new(),
            failures: HashMap::new(),
        }
    }

    /// Keeps results the store would have written.
    pub fn keep(&mut self, entries: &[NewEntry], failures: &[NewFailure]) {
        for entry in entries {
            self.entries
                .insert(entry.key, (Blob::of(entry), entry.warnings.clone()));
        }
        for new in failures {
            self.failures
                .insert(new.key, Lookup::Failed(new.failure.clone()));
        }
    }

    /// What was kept for `key`, as the store would answer it.
    pub fn lookup(&self, key: &Key) -> Lookup {
        match self.entries.get(key) {
            Some((_, warnings)) => Lookup::Hit {
                warnings: warnings.clone(),
            },
            None => self.failures.get(key).cloned().unwrap_or(Lookup::Miss),
        }
    }

    /// The blob kept for `key`.
    pub fn blob(&self, key: &Key) -> Option<Blob> {
        self.entries.get(key).map(|(blob, _)| blob.clone())
    }

    /// Forgets `key` (found corrupt).
    pub fn remove(&mut self, key: &Key) {
        self.entries.remove(key);
    }
}
