//! Compiled code and remembered failures, by key.

use rusqlite::{OptionalExtension, params};

use super::{Error, Store, unix_now};
use crate::key::Key;

/// Last-use times are only rewritten when older than this, so hits on the
/// hot path almost never cost a write.
const LAST_USED_GRANULARITY_SECS: i64 = 24 * 60 * 60;

/// zstd level for stored code: marshal data compresses about 3x at level 3,
/// and higher levels cost more compile-path time than they save on disk.
const ZSTD_LEVEL: i32 = 3;

/// What the store holds for a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// Compiled code is stored; these are the warnings its compile printed.
    Hit { warnings: Option<String> },
    /// The source is known not to compile.
    Failed(StoredFailure),
    /// Nothing is known.
    Miss,
}

/// Code read back from the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoredCode {
    /// The marshal bytes, checked against their checksum.
    Found(Vec<u8>),
    /// The blob does not decompress or fails its checksum: never use it.
    Corrupt(String),
}

/// A stored blob as read, not yet decompressed or checked.
#[derive(Debug, Clone)]
pub struct Blob {
    pub(super) data: Vec<u8>,
    pub(super) raw_size: i64,
    pub(super) checksum: Vec<u8>,
}

impl Blob {
    /// The blob `entry` would be stored as.
    pub(super) fn of(entry: &NewEntry) -> Self {
        Self {
            data: entry.data.clone(),
            raw_size: entry.raw_size as i64,
            checksum: entry.checksum.to_vec(),
        }
    }

    /// Decompresses and checks the blob against its checksum.
    pub fn decode(&self) -> StoredCode {
        let mut code = Vec::new();
        match zstd::bulk::Decompressor::new() {
            Ok(mut decompressor) => match self.decode_into(&mut decompressor, &mut code) {
                Ok(()) => StoredCode::Found(code),
                Err(reason) => StoredCode::Corrupt(reason),
            },
            Err(err) => StoredCode::Corrupt(format!("cannot be decompressed: {err}")),
        }
    }

    /// The entry this blob was stored from, checked as one received from
    /// elsewhere would be ([`NewEntry::checked`]), to send to a remote.
    pub fn to_entry(
        &self,
        key: Key,
        profile_id: i64,
        optimize: u8,
        warnings: Option<String>,
    ) -> Result<NewEntry, String> {
        let checksum = <[u8; 32]>::try_from(self.checksum.as_slice())
            .map_err(|_| "a malformed checksum".to_owned())?;
        let raw_size = u64::try_from(self.raw_size).unwrap_or(u64::MAX);
        NewEntry::checked(
            key,
            profile_id,
            optimize,
            raw_size,
            checksum,
            self.data.clone(),
            warnings,
        )
    }

    /// [`Blob::decode`] into `code`, with a decompressor and buffer a
    /// caller reuses from one blob to the next; `Err` says why it is corrupt.
    pub fn decode_into(
        &self,
        decompressor: &mut zstd::bulk::Decompressor<'_>,
        code: &mut Vec<u8>,
    ) -> Result<(), String> {
        let raw_size = u64::try_from(self.raw_size).unwrap_or(0);
        decode_checked(&self.data, raw_size, &self.checksum, decompressor, code)
    }
}

/// Decompresses `data` into `code` and checks that it is `raw_size` bytes
/// hashing to `checksum`; `Err` says why it is corrupt. The one test of
/// stored code: for blobs read ([`Blob`]) and for entries exported or
/// imported (`archive.rs`), whose sizes may come from an untrusted file.
pub(super) fn decode_checked(
    data: &[u8],
    raw_size: u64,
    checksum: &[u8],
    decompressor: &mut zstd::bulk::Decompressor<'_>,
    code: &mut Vec<u8>,
) -> Result<(), String> {
    code.clear();
    let reserved = usize::try_from(raw_size)
        .ok()
        .filter(|&capacity| code.try_reserve(capacity).is_ok());
    let Some(capacity) = reserved else {
        return Err(format!("declares an impossible size ({raw_size} bytes)"));
    };
    if let Err(err) = decompressor.decompress_to_buffer(data, code) {
        return Err(format!("does not decompress: {err}"));
    }
    if code.len() != capacity || blake3::hash(code).as_bytes().as_slice() != checksum {
        return Err("fails its checksum".to_owned());
    }
    Ok(())
}

/// A deterministic compile error, as CPython reported it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredFailure {
    /// The exception type, e.g. `SyntaxError`.
    pub error_type: String,
    /// The exception message.
    pub message: String,
    /// 1-based line, when CPython gives one.
    pub line: Option<u32>,
    /// 1-based column, when CPython gives one.
    pub col: Option<u32>,
}

/// Compiled code to store.
#[derive(Debug, Clone)]
pub struct NewEntry {
    pub key: Key,
    pub profile_id: i64,
    pub optimize: u8,
    /// Size of the marshal bytes before compression.
    pub raw_size: usize,
    /// blake3 of the marshal bytes before compression.
    pub checksum: [u8; 32],
    /// zstd-compressed marshal bytes.
    pub data: Vec<u8>,
    pub warnings: Option<String>,
}

impl NewEntry {
    /// The entry for marshal bytes `code` compiled at `optimize`, with the
    /// warnings as [`crate::report::normalize_warnings`] keeps them.
    pub fn compressed(
        key: Key,
        profile_id: i64,
        optimize: u8,
        code: &[u8],
        warnings: Option<String>,
    ) -> Self {
        Self {
            key,
            profile_id,
            optimize,
            raw_size: code.len(),
            checksum: *blake3::hash(code).as_bytes(),
            data: zstd::bulk::compress(code, ZSTD_LEVEL)
                .expect("compressing into a Vec cannot fail"),
            warnings,
        }
    }
}

impl NewEntry {
    /// The entry for compressed code received from elsewhere (a remote
    /// cache), once it decompresses to `raw_size` bytes hashing to
    /// `checksum` and names its own key as `co_filename` (all stored code
    /// does); `Err` says why it is refused.
    pub fn checked(
        key: Key,
        profile_id: i64,
        optimize: u8,
        raw_size: u64,
        checksum: [u8; 32],
        data: Vec<u8>,
        warnings: Option<String>,
    ) -> Result<Self, String> {
        let mut decompressor = zstd::bulk::Decompressor::new()
            .map_err(|err| format!("cannot be decompressed: {err}"))?;
        let mut code = Vec::new();
        decode_checked(&data, raw_size, &checksum, &mut decompressor, &mut code)?;
        if memchr::memmem::find(&code, key.placeholder_filename().as_bytes()).is_none() {
            return Err("code that does not name its key".to_owned());
        }
        Ok(Self {
            key,
            profile_id,
            optimize,
            raw_size: code.len(),
            checksum,
            data,
            warnings,
        })
    }
}

/// A compile failure to remember.
#[derive(Debug, Clone)]
pub struct NewFailure {
    pub key: Key,
    pub profile_id: i64,
    pub optimize: u8,
    pub failure: StoredFailure,
}

impl Store {
    /// What the store holds for `key`; also tells whether its last-use time
    /// is old enough to be refreshed by [`Store::finish_run`].
    pub fn lookup(&self, key: &Key) -> Result<(Lookup, bool), Error> {
        let stale_before = unix_now() - LAST_USED_GRANULARITY_SECS;
        let hit = self
            .conn
            .prepare_cached("SELECT warnings, last_used FROM entries WHERE key = ?1")
            .and_then(|mut statement| {
                statement
                    .query_row([key.0.as_slice()], |row| {
                        Ok((row.get::<_, Option<String>>(0)?, row.get::<_, i64>(1)?))
                    })
                    .optional()
            })
            .map_err(|source| self.sqlite_error(source))?;
        if let Some((warnings, last_used)) = hit {
            return Ok((Lookup::Hit { warnings }, last_used < stale_before));
        }
        let failure = self
            .conn
            .prepare_cached(
                "SELECT error_type, message, line, col, last_used FROM failures WHERE key = ?1",
            )
            .and_then(|mut statement| {
                statement
                    .query_row([key.0.as_slice()], |row| {
                        Ok((
                            StoredFailure {
                                error_type: row.get(0)?,
                                message: row.get(1)?,
                                line: row.get(2)?,
                                col: row.get(3)?,
                            },
                            row.get::<_, i64>(4)?,
                        ))
                    })
                    .optional()
            })
            .map_err(|source| self.sqlite_error(source))?;
        Ok(match failure {
            Some((failure, last_used)) => (Lookup::Failed(failure), last_used < stale_before),
            None => match &self.read_only {
                Some(read_only) => (read_only.lookup(key), false),
                None => (Lookup::Miss, false),
            },
        })
    }

    /// The stored blob for `key`, still compressed, so that callers can
    /// decode it on other threads ([`Blob::decode`]).
    pub fn read_blob(&self, key: &Key) -> Result<Option<Blob>, Error> {
        if let Some(blob) = self.read_only.as_ref().and_then(|kept| kept.blob(key)) {
            return Ok(Some(blob));
        }
        self.conn
            .prepare_cached("SELECT data, raw_size, checksum FROM entries WHERE key = ?1")
            .and_then(|mut statement| {
                statement
                    .query_row([key.0.as_slice()], |row| {
                        Ok(Blob {
                            data: row.get(0)?,
                            raw_size: row.get(1)?,
                            checksum: row.get(2)?,
                        })
                    })
                    .optional()
            })
            .map_err(|source| self.sqlite_error(source))
    }

    /// Removes the entries of `keys` (found corrupt), so they are compiled
    /// again.
    pub fn remove_entries(&mut self, keys: &[Key]) -> Result<(), Error> {
        if let Some(read_only) = &mut self.read_only {
            for key in keys {
                read_only.remove(key);
            }
        }
        self.write_transaction(|tx| {
            let mut delete = tx.prepare_cached("DELETE FROM entries WHERE key = ?1")?;
            for key in keys {
                delete.execute([key.0.as_slice()])?;
            }
            Ok(())
        })
    }

    /// Stores a batch of results in one short write transaction.
    pub fn write(&mut self, entries: &[NewEntry], failures: &[NewFailure]) -> Result<(), Error> {
        if entries.is_empty() && failures.is_empty() {
            return Ok(());
        }
        if let Some(read_only) = &mut self.read_only {
            read_only.keep(entries, failures);
            return Ok(());
        }
        let now = unix_now();
        self.stored_code = true;
        self.write_transaction(|tx| {
                let mut insert = tx.prepare_cached(
                    "INSERT OR REPLACE INTO entries
                     (key, profile_id, optimize, raw_size, checksum, data, warnings, created, last_used)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8)",
                )?;
                for entry in entries {
                    insert.execute(params![
                        entry.key.0.as_slice(),
                        entry.profile_id,
                        entry.optimize,
                        entry.raw_size as i64,
                        entry.checksum.as_slice(),
                        entry.data,
                        entry.warnings,
                        now,
                    ])?;
                }
                let mut insert = tx.prepare_cached(
                    "INSERT OR REPLACE INTO failures
                     (key, profile_id, optimize, error_type, message, line, col, created, last_used)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8)",
                )?;
                for new in failures {
                    insert.execute(params![
                        new.key.0.as_slice(),
                        new.profile_id,
                        new.optimize,
                        new.failure.error_type,
                        new.failure.message,
                        new.failure.line,
                        new.failure.col,
                        now,
                    ])?;
                }
            Ok(())
        })
    }

    /// Ends a run: refreshes the last-use time of `used` keys (those used
    /// within the last day keep theirs) and adds
    /// `counters` to the lifetime totals, in one transaction (none at all
    /// when there is nothing to write).
    pub fn finish_run(&mut self, used: &[Key], counters: &[(&str, u64)]) -> Result<(), Error> {
        let counters: Vec<_> = counters.iter().filter(|(_, delta)| *delta > 0).collect();
        if used.is_empty() && counters.is_empty() {
            return Ok(());
        }
        let now = unix_now();
        self.write_transaction(|tx| {
            // Times within the granularity stay: no page is dirtied for them.
            let stale_before = now - LAST_USED_GRANULARITY_SECS;
            let mut touch_entry = tx.prepare_cached(
                "UPDATE entries SET last_used = ?1 WHERE key = ?2 AND last_used < ?3",
            )?;
            let mut touch_failure = tx.prepare_cached(
                "UPDATE failures SET last_used = ?1 WHERE key = ?2 AND last_used < ?3",
            )?;
            for key in used {
                if touch_entry.execute(params![now, key.0.as_slice(), stale_before])? == 0 {
                    touch_failure.execute(params![now, key.0.as_slice(), stale_before])?;
                }
            }
            let mut add = tx.prepare_cached(
                "INSERT INTO counters (name, value) VALUES (?1, ?2)
                     ON CONFLICT (name) DO UPDATE SET value = value + excluded.value",
            )?;
            for (name, delta) in counters {
                add.execute(params![name, i64::try_from(*delta).unwrap_or(i64::MAX)])?;
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::store_with_profile;

    #[test]
    fn write_then_lookup() {
        let (_dir, mut store, profile_id) = store_with_profile();
        let hit = Key([1; 32]);
        let failed = Key([2; 32]);
        let failure = StoredFailure {
            error_type: "SyntaxError".into(),
            message: "invalid syntax".into(),
            line: Some(3),
            col: None,
        };
        store
            .write(
                &[NewEntry {
                    key: hit,
                    profile_id,
                    optimize: 0,
                    raw_size: 3,
                    checksum: *blake3::hash(b"abc").as_bytes(),
                    data: b"zzz".to_vec(),
                    warnings: None,
                }],
                &[NewFailure {
                    key: failed,
                    profile_id,
                    optimize: 0,
                    failure: failure.clone(),
                }],
            )
            .unwrap();
        assert_eq!(
            store.lookup(&hit).unwrap().0,
            Lookup::Hit { warnings: None }
        );
        assert_eq!(store.lookup(&failed).unwrap().0, Lookup::Failed(failure));
        assert_eq!(store.lookup(&Key([3; 32])).unwrap().0, Lookup::Miss);
        let blob = store.read_blob(&hit).unwrap().unwrap();
        assert!(matches!(blob.decode(), StoredCode::Corrupt(_)), "not zstd");
        assert!(store.read_blob(&Key([3; 32])).unwrap().is_none());
        store
            .finish_run(&[hit, failed], &[("hits", 2), ("misses", 0)])
            .unwrap();
        let stats = store.stats().unwrap();
        assert_eq!(stats.entries, 1);
        assert_eq!(stats.failures, 1);
        assert_eq!(stats.lifetime_hits, 2);
    }
}
