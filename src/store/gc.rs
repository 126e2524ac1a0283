//! Keeping the store small: evicting code least recently used first (by
//! size or age), forgetting interpreters that are gone and records of files
//! that are gone, and giving freed pages back to the file system while
//! other processes keep working.
//!
//! Every step is a series of short write transactions (a few hundred rows,
//! a few MiB of pages each), never an exclusive `VACUUM`: readers go on in
//! WAL mode, and writers wait at most one batch. Pages are handed back by
//! `PRAGMA incremental_vacuum` (the store is `auto_vacuum = INCREMENTAL`
//! from its first schema) and the file shrinks at the next checkpoint.

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use rusqlite::params;
use serde::Serialize;

use super::{Error, Store, unix_now};
use crate::interpreter::FileIdentity;
use crate::key::Key;
use crate::pyc::os_string_from_bytes;

/// Rows deleted per write transaction.
const DELETE_BATCH: usize = 512;
/// How many times [`Store::evict_to`] measures and evicts again.
const EVICTION_ROUNDS: usize = 4;
/// Pages handed back per write transaction (8 MiB of 4 KiB pages).
const VACUUM_BATCH_PAGES: u32 = 2048;
/// What a row costs beyond its variable-size columns: the fixed columns,
/// the record header, and its entry in the key index.
const ROW_OVERHEAD: u64 = 160;

/// What may stay in the store.
#[derive(Debug, Clone, Copy, Default)]
pub struct Limits {
    /// Evict least recently used code until the store's pages in use fit.
    pub max_size: Option<u64>,
    /// Evict code not used for this long.
    pub max_age: Option<Duration>,
}

/// Code chosen for eviction, least recently used first.
#[derive(Debug, Default)]
pub struct Eviction {
    entries: Vec<Key>,
    failures: Vec<Key>,
    /// About how many bytes of the store the chosen rows take.
    pub bytes: u64,
}

impl Eviction {
    /// Compiled code objects chosen.
    pub fn entries(&self) -> u64 {
        self.entries.len() as u64
    }

    /// Remembered compile failures chosen.
    pub fn failures(&self) -> u64 {
        self.failures.len() as u64
    }
}

/// What forgetting interpreters that are gone removed.
#[derive(Debug, Default, Clone, Copy, Serialize)]
pub struct Forgotten {
    /// Executables recorded that no longer exist or have changed.
    pub interpreters: u64,
    /// Profiles no remaining interpreter has, with their code.
    pub profiles: u64,
    pub entries: u64,
    pub failures: u64,
}

impl Store {
    /// Bytes of the store file in use: its pages minus the free ones.
    pub fn used_bytes(&self) -> Result<u64, Error> {
        self.conn
            .query_row(
                "SELECT (page_count - freelist_count) * page_size
                 FROM pragma_page_count, pragma_freelist_count, pragma_page_size",
                [],
                |row| row.get(0),
            )
            .map_err(|source| self.sqlite_error(source))
    }

    /// Bytes of the store file, free pages included.
    pub fn file_bytes(&self) -> Result<u64, Error> {
        self.conn
            .query_row(
                "SELECT page_count * page_size FROM pragma_page_count, pragma_page_size",
                [],
                |row| row.get(0),
            )
            .map_err(|source| self.sqlite_error(source))
    }

    /// Chooses what to evict, least recently used first (oldest created
    /// first among equals): everything older than `max_age`, then more
    /// until the store fits in `max_size`. Changes nothing.
    pub fn plan_eviction(&self, limits: Limits) -> Result<Eviction, Error> {
        let used = self.used_bytes()?;
        let mut to_free = limits.max_size.map_or(0, |max| used.saturating_sub(max));
        let age_cutoff = limits.max_age.map_or(i64::MIN, |age| {
            unix_now().saturating_sub(i64::try_from(age.as_secs()).unwrap_or(i64::MAX))
        });
        let mut eviction = Eviction::default();
        if to_free == 0 && limits.max_age.is_none() {
            return Ok(eviction);
        }
        let result = (|| {
            let mut statement = self.conn.prepare(
                "SELECT 0, key, last_used, length(data) + coalesce(length(warnings), 0), created
                 FROM entries
                 UNION ALL
                 SELECT 1, key, last_used, length(error_type) + length(message), created
                 FROM failures
                 ORDER BY 3, 5",
            )?;
            let mut rows = statement.query([])?;
            while let Some(row) = rows.next()? {
                let last_used: i64 = row.get(2)?;
                if to_free == 0 && last_used >= age_cutoff {
                    break;
                }
                let key = Key(row.get(1)?);
                let bytes = row.get::<_, u64>(3)? + ROW_OVERHEAD;
                if row.get::<_, i64>(0)? == 0 {
                    eviction.entries.push(key);
                } else {
                    eviction.failures.push(key);
                }
                eviction.bytes += bytes;
                to_free = to_free.saturating_sub(bytes);
            }
            Ok(())
        })();
        result.map_err(|source| self.sqlite_error(source))?;
        Ok(eviction)
    }

    /// Deletes the chosen code, a batch per transaction.
    pub fn evict(&mut self, eviction: &Eviction) -> Result<(), Error> {
        for (table, keys) in [
            ("entries", &eviction.entries),
            ("failures", &eviction.failures),
        ] {
            let sql = format!("DELETE FROM {table} WHERE key = ?1");
            for batch in keys.chunks(DELETE_BATCH) {
                self.write_transaction(|tx| {
                    let mut delete = tx.prepare_cached(&sql)?;
                    for key in batch {
                        delete.execute([key.0.as_slice()])?;
                    }
                    Ok(())
                })?;
            }
        }
        Ok(())
    }

    /// Forgets executables that no longer exist or have changed since they
    /// were probed, then every profile all of whose executables are gone,
    /// with its code. Profiles no executable was ever recorded for (code
    /// imported from an archive) stay. Starts no interpreter.
    pub fn forget_missing_interpreters(&mut self, dry_run: bool) -> Result<Forgotten, Error> {
        let recorded = self.recorded_interpreters()?;
        let (gone, present): (Vec<_>, Vec<_>) =
            recorded.into_iter().partition(|(path, identity, _)| {
                FileIdentity::of(Path::new(path)).ok().as_ref() != Some(identity)
            });
        let installed: HashSet<i64> = present.iter().map(|(_, _, profile)| *profile).collect();
        let orphaned: HashSet<i64> = gone
            .iter()
            .map(|(_, _, profile)| *profile)
            .filter(|profile| !installed.contains(profile))
            .collect();
        let mut forgotten = Forgotten {
            interpreters: gone.len() as u64,
            profiles: orphaned.len() as u64,
            ..Forgotten::default()
        };
        for &profile in &orphaned {
            let (entries, failures) = self.profile_rows(profile)?;
            forgotten.entries += entries;
            forgotten.failures += failures;
        }
        if dry_run {
            return Ok(forgotten);
        }
        self.write_transaction(|tx| {
            let mut delete = tx.prepare_cached("DELETE FROM interpreters WHERE path = ?1")?;
            for (path, _, _) in &gone {
                delete.execute([path])?;
            }
            Ok(())
        })?;
        for profile in orphaned {
            for table in ["entries", "failures"] {
                let sql = format!(
                    "DELETE FROM {table} WHERE rowid IN
                     (SELECT rowid FROM {table} WHERE profile_id = ?1 LIMIT {DELETE_BATCH})"
                );
                while self.write_transaction(|tx| tx.execute(&sql, [profile]))? > 0 {}
            }
            self.write_transaction(|tx| {
                tx.execute("DELETE FROM profiles WHERE id = ?1", [profile])
            })?;
        }
        Ok(forgotten)
    }

    /// How many entries and failures `profile` has.
    fn profile_rows(&self, profile: i64) -> Result<(u64, u64), Error> {
        self.conn
            .query_row(
                "SELECT (SELECT count(*) FROM entries WHERE profile_id = ?1),
                        (SELECT count(*) FROM failures WHERE profile_id = ?1)",
                params![profile],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .map_err(|source| self.sqlite_error(source))
    }

    /// Forgets what the store recorded about files that no longer exist:
    /// sources read, pycs written, import orders starting at a gone file.
    /// Returns how many records went (or would go, on a dry run).
    pub fn forget_gone_files(&mut self, dry_run: bool) -> Result<u64, Error> {
        let mut forgotten = 0;
        for (table, column) in [
            ("sources", "path"),
            ("written_pycs", "pyc_path"),
            ("import_sequences", "first_path"),
        ] {
            let gone: Vec<Vec<u8>> = self
                .conn
                .prepare(&format!("SELECT DISTINCT {column} FROM {table}"))
                .and_then(|mut statement| {
                    statement
                        .query_map([], |row| row.get::<_, Vec<u8>>(0))?
                        .collect::<rusqlite::Result<Vec<_>>>()
                })
                .map_err(|source| self.sqlite_error(source))?
                .into_iter()
                .filter(|path| {
                    std::fs::symlink_metadata(os_string_from_bytes(path.clone()))
                        .is_err_and(|err| err.kind() == std::io::ErrorKind::NotFound)
                })
                .collect();
            let sql = format!("DELETE FROM {table} WHERE {column} = ?1");
            for batch in gone.chunks(DELETE_BATCH) {
                if dry_run {
                    let mut count = 0;
                    for path in batch {
                        count += self.count_rows(table, column, path)?;
                    }
                    forgotten += count;
                    continue;
                }
                forgotten += self.write_transaction(|tx| {
                    let mut delete = tx.prepare_cached(&sql)?;
                    let mut deleted = 0;
                    for path in batch {
                        deleted += delete.execute([path])? as u64;
                    }
                    Ok(deleted)
                })?;
            }
        }
        Ok(forgotten)
    }

    fn count_rows(&self, table: &str, column: &str, value: &[u8]) -> Result<u64, Error> {
        self.conn
            .query_row(
                &format!("SELECT count(*) FROM {table} WHERE {column} = ?1"),
                [value],
                |row| row.get(0),
            )
            .map_err(|source| self.sqlite_error(source))
    }

    /// Removes temp files a killed rcache left beside the store (a store
    /// being created, a rebuild): upkeep, not the job of every open.
    pub fn remove_stale_temps(&self) {
        crate::sweep::remove_stale_temps(super::parent_dir(&self.path));
    }

    /// Hands free pages back to the file system, a batch per transaction,
    /// then checkpoints so that the file itself shrinks.
    pub fn give_back_space(&mut self) -> Result<(), Error> {
        let sql = format!("PRAGMA incremental_vacuum({VACUUM_BATCH_PAGES})");
        loop {
            let free: u64 = self
                .conn
                .query_row("PRAGMA freelist_count", [], |row| row.get(0))
                .map_err(|source| self.sqlite_error(source))?;
            if free == 0 || self.read_only().is_some() {
                break;
            }
            self.write_transaction(|tx| tx.execute_batch(&sql))?;
        }
        self.checkpoint_now();
        Ok(())
    }

    /// Enforces `max_size` after a run, as sccache does: nothing to do
    /// unless the store has outgrown it (two `PRAGMA` reads); then evicts
    /// down to [`AUTO_GC_TARGET_TENTHS`] of it, so the next eviction is due only
    /// after real growth. Returns what was evicted, if anything.
    pub fn enforce_limit(&mut self, max_size: u64) -> Result<Option<Eviction>, Error> {
        if self.read_only().is_some() || self.used_bytes()? <= max_size {
            return Ok(None);
        }
        let target = max_size / 10 * AUTO_GC_TARGET_TENTHS;
        self.evict_to(Limits {
            max_size: Some(target),
            max_age: None,
        })
        .map(Some)
    }

    /// Evicts what `limits` ask and gives the space back; if the store is
    /// still over `max_size` (the per-row estimate was short, or pages
    /// stayed partly filled), plans again from what the file now measures,
    /// a few rounds at most. Returns everything evicted.
    pub fn evict_to(&mut self, limits: Limits) -> Result<Eviction, Error> {
        let mut evicted = Eviction::default();
        let mut round_limits = limits;
        for _ in 0..EVICTION_ROUNDS {
            let eviction = self.plan_eviction(round_limits)?;
            if eviction.entries.is_empty() && eviction.failures.is_empty() {
                break;
            }
            self.evict(&eviction)?;
            self.give_back_space()?;
            evicted.entries.extend(eviction.entries);
            evicted.failures.extend(eviction.failures);
            evicted.bytes += eviction.bytes;
            // What is older than the age limit went in the first round.
            round_limits.max_age = None;
            if limits
                .max_size
                .is_none_or(|max| self.used_bytes().is_ok_and(|used| used <= max))
            {
                break;
            }
        }
        Ok(evicted)
    }
}

/// The automatic limit evicts down to this many tenths of the limit.
const AUTO_GC_TARGET_TENTHS: u64 = 9;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::NewEntry;

    /// A store holding `count` entries of 64 KiB of incompressible code.
    fn store_with(count: u8) -> (tempfile::TempDir, Store, Vec<Key>) {
        let (dir, mut store, id) = crate::store::testing::store_with_profile();
        let keys: Vec<Key> = (0..count).map(|n| Key([n; 32])).collect();
        for key in &keys {
            // Incompressible code, 64 KiB each.
            let mut code = vec![0; 65_536];
            blake3::Hasher::new()
                .update(&key.0)
                .finalize_xof()
                .fill(&mut code);
            store
                .write(&[NewEntry::compressed(*key, id, 0, &code, None)], &[])
                .unwrap();
        }
        (dir, store, keys)
    }

    fn set_last_used(store: &Store, key: &Key, when: i64) {
        store
            .conn
            .execute(
                "UPDATE entries SET last_used = ?1 WHERE key = ?2",
                params![when, key.0.as_slice()],
            )
            .unwrap();
    }

    #[test]
    fn evicts_least_recently_used_first_until_it_fits() {
        let (_dir, mut store, keys) = store_with(8);
        let now = unix_now();
        for (age, key) in keys.iter().enumerate() {
            set_last_used(&store, key, now - 86_400 * (10 - age as i64));
        }
        let used = store.used_bytes().unwrap();
        let eviction = store
            .plan_eviction(Limits {
                max_size: Some(used - 150_000),
                max_age: None,
            })
            .unwrap();
        assert_eq!(eviction.entries, keys[..3].to_vec(), "the three oldest");
        store.evict(&eviction).unwrap();
        let before = store.file_bytes().unwrap();
        store.give_back_space().unwrap();
        assert!(store.used_bytes().unwrap() <= used - 150_000);
        assert!(store.file_bytes().unwrap() < before, "pages handed back");
        let size = std::fs::metadata(store.path()).unwrap().len();
        assert_eq!(size, store.file_bytes().unwrap(), "the file shrank");
    }

    #[test]
    fn evicts_by_age() {
        let (_dir, mut store, keys) = store_with(4);
        let now = unix_now();
        set_last_used(&store, &keys[1], now - 40 * 86_400);
        set_last_used(&store, &keys[3], now - 31 * 86_400);
        let eviction = store
            .plan_eviction(Limits {
                max_size: None,
                max_age: Some(Duration::from_secs(30 * 86_400)),
            })
            .unwrap();
        assert_eq!(eviction.entries, vec![keys[1], keys[3]]);
        store.evict(&eviction).unwrap();
        assert_eq!(store.stats().unwrap().entries, 2);
    }

    #[test]
    fn the_automatic_limit_evicts_below_the_limit_only_when_over_it() {
        let (_dir, mut store, _) = store_with(10);
        let used = store.used_bytes().unwrap();
        assert!(store.enforce_limit(used).unwrap().is_none());
        let evicted = store.enforce_limit(used - 1).unwrap().unwrap();
        assert!(evicted.entries() >= 1);
        assert!(store.used_bytes().unwrap() <= (used - 1) / 10 * AUTO_GC_TARGET_TENTHS);
    }
}
