//! The store's side of export archives ([`crate::archive`]): profiles,
//! entries and failures read row by row for `rcache export`, and batches of
//! rows merged in for `rcache import` without ever replacing good code.

use rusqlite::{OptionalExtension, Row, params};
use serde::Serialize;

use super::entries::decode_checked;
use super::{Error, Store, StoredFailure, unix_now};

use crate::key::Key;

/// Which rows to read.
#[derive(Debug, Clone, Copy)]
pub enum Selection<'a> {
    /// Every row.
    Everything,
    /// The rows of these keys, those the store holds.
    Keys(&'a [Key]),
}

/// One `entries` row, but for its profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryRow {
    pub key: Key,
    pub optimize: u8,
    /// Size of the marshal bytes before compression.
    pub raw_size: u64,
    /// blake3 of the marshal bytes before compression.
    pub checksum: [u8; 32],
    /// zstd-compressed marshal bytes, as stored.
    pub data: Vec<u8>,
    pub warnings: Option<String>,
    /// Unix seconds.
    pub created: i64,
    pub last_used: i64,
}

impl EntryRow {
    /// Decompresses the code into `code` and checks it against its size and
    /// checksum; `Err` says why the entry is corrupt.
    pub fn check(
        &self,
        decompressor: &mut zstd::bulk::Decompressor<'_>,
        code: &mut Vec<u8>,
    ) -> Result<(), String> {
        decode_checked(
            &self.data,
            self.raw_size,
            &self.checksum,
            decompressor,
            code,
        )
    }
}

/// One `failures` row, but for its profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailureRow {
    pub key: Key,
    pub optimize: u8,
    pub failure: StoredFailure,
    /// Unix seconds.
    pub created: i64,
    pub last_used: i64,
}

/// What merging rows into the store did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Merged {
    /// Entries the store did not hold.
    pub entries_added: u64,
    /// Entries the store already held, good: left as they were.
    pub entries_present: u64,
    /// Entries the store held corrupt, replaced by the good ones merged.
    pub entries_replaced: u64,
    /// Failures the store did not hold.
    pub failures_added: u64,
    /// Failures the store already held: left as they were.
    pub failures_present: u64,
}

impl std::ops::AddAssign for Merged {
    fn add_assign(&mut self, other: Self) {
        self.entries_added += other.entries_added;
        self.entries_present += other.entries_present;
        self.entries_replaced += other.entries_replaced;
        self.failures_added += other.failures_added;
        self.failures_present += other.failures_present;
    }
}

const ENTRY_COLUMNS: &str =
    "profile_id, key, optimize, raw_size, checksum, data, warnings, created, last_used";
const FAILURE_COLUMNS: &str =
    "profile_id, key, optimize, error_type, message, line, col, created, last_used";

impl Store {
    /// Calls `each` with the profile id and row of every selected entry, one
    /// row at a time (blobs are never all in memory). A row whose key or
    /// checksum is not 32 bytes is no entry, as no lookup could find it.
    /// Run it inside [`Store::reading`] to see one state of the store.
    pub fn for_each_entry<E: From<Error>>(
        &self,
        selection: Selection<'_>,
        mut each: impl FnMut(i64, EntryRow) -> Result<(), E>,
    ) -> Result<(), E> {
        self.for_each_row(
            "entries",
            ENTRY_COLUMNS,
            selection,
            |row| {
                let (Ok(key), Ok(checksum)) = (
                    Key::try_from(row.get::<_, Vec<u8>>(1)?.as_slice()),
                    <[u8; 32]>::try_from(row.get::<_, Vec<u8>>(4)?.as_slice()),
                ) else {
                    return Ok(None);
                };
                Ok(Some(EntryRow {
                    key,
                    optimize: row.get(2)?,
                    raw_size: u64::try_from(row.get::<_, i64>(3)?).unwrap_or(u64::MAX),
                    checksum,
                    data: row.get(5)?,
                    warnings: row.get(6)?,
                    created: row.get(7)?,
                    last_used: row.get(8)?,
                }))
            },
            &mut each,
        )
    }

    /// Calls `each` with the profile id and row of every selected failure;
    /// as [`Store::for_each_entry`].
    pub fn for_each_failure<E: From<Error>>(
        &self,
        selection: Selection<'_>,
        mut each: impl FnMut(i64, FailureRow) -> Result<(), E>,
    ) -> Result<(), E> {
        self.for_each_row(
            "failures",
            FAILURE_COLUMNS,
            selection,
            |row| {
                let Ok(key) = Key::try_from(row.get::<_, Vec<u8>>(1)?.as_slice()) else {
                    return Ok(None);
                };
                Ok(Some(FailureRow {
                    key,
                    optimize: row.get(2)?,
                    failure: StoredFailure {
                        error_type: row.get(3)?,
                        message: row.get(4)?,
                        line: row.get(5)?,
                        col: row.get(6)?,
                    },
                    created: row.get(7)?,
                    last_used: row.get(8)?,
                }))
            },
            &mut each,
        )
    }

    /// `each` over the rows of `table` that `selection` names, read with
    /// `columns` (the profile id first) and turned into values by `convert`
    /// (`None` for a damaged row).
    fn for_each_row<T, E: From<Error>>(
        &self,
        table: &str,
        columns: &str,
        selection: Selection<'_>,
        convert: impl Fn(&Row<'_>) -> rusqlite::Result<Option<T>>,
        each: &mut impl FnMut(i64, T) -> Result<(), E>,
    ) -> Result<(), E> {
        let error = |source| E::from(self.sqlite_error(source));
        let mut take = |row: &Row<'_>| -> Result<(), E> {
            match convert(row).map_err(error)? {
                Some(value) => each(row.get(0).map_err(error)?, value),
                None => Ok(()),
            }
        };
        match selection {
            Selection::Everything => {
                let mut statement = self
                    .conn
                    .prepare(&format!("SELECT {columns} FROM {table}"))
                    .map_err(error)?;
                let mut rows = statement.query([]).map_err(error)?;
                while let Some(row) = rows.next().map_err(error)? {
                    take(row)?;
                }
            }
            Selection::Keys(keys) => {
                let mut statement = self
                    .conn
                    .prepare(&format!("SELECT {columns} FROM {table} WHERE key = ?1"))
                    .map_err(error)?;
                for key in keys {
                    let mut rows = statement.query([key.0.as_slice()]).map_err(error)?;
                    if let Some(row) = rows.next().map_err(error)? {
                        take(row)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Merges rows, each with its profile id here, in one short write
    /// transaction. A key the store holds keeps its row, unless its code is
    /// corrupt: then the merged entry (which the caller has checked, see
    /// [`EntryRow::check`]) replaces it. Last-use times become the later of
    /// the two; times in the future are taken as now.
    pub fn merge(
        &mut self,
        entries: &[(i64, EntryRow)],
        failures: &[(i64, FailureRow)],
    ) -> Result<Merged, Error> {
        if entries.is_empty() && failures.is_empty() {
            return Ok(Merged::default());
        }
        let now = unix_now();
        let mut decompressor = zstd::bulk::Decompressor::new().map_err(|source| Error::Read {
            path: self.path.clone(),
            source,
        })?;
        let mut scratch = Vec::new();
        self.stored_code = true;
        self.write_transaction(|tx| {
            let mut merged = Merged::default();
            let mut existing =
                tx.prepare_cached("SELECT data, raw_size, checksum FROM entries WHERE key = ?1")?;
            let mut insert = tx.prepare_cached(&format!(
                "INSERT OR REPLACE INTO entries ({ENTRY_COLUMNS})
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"
            ))?;
            let mut touch_entry = tx.prepare_cached(
                "UPDATE entries SET last_used = max(last_used, ?2) WHERE key = ?1",
            )?;
            for (profile_id, entry) in entries {
                let last_used = entry.last_used.min(now);
                let held = existing
                    .query_row([entry.key.0.as_slice()], |row| {
                        Ok((
                            row.get::<_, Vec<u8>>(0)?,
                            row.get::<_, i64>(1)?,
                            row.get::<_, Vec<u8>>(2)?,
                        ))
                    })
                    .optional()?;
                let held_good = held.map(|(data, raw_size, checksum)| {
                    let raw_size = u64::try_from(raw_size).unwrap_or(u64::MAX);
                    decode_checked(&data, raw_size, &checksum, &mut decompressor, &mut scratch)
                        .is_ok()
                });
                match held_good {
                    Some(true) => {
                        touch_entry.execute(params![entry.key.0.as_slice(), last_used])?;
                        merged.entries_present += 1;
                        continue;
                    }
                    Some(false) => merged.entries_replaced += 1,
                    None => merged.entries_added += 1,
                }
                insert.execute(params![
                    profile_id,
                    entry.key.0.as_slice(),
                    entry.optimize,
                    i64::try_from(entry.raw_size).unwrap_or(i64::MAX),
                    entry.checksum.as_slice(),
                    entry.data,
                    entry.warnings,
                    entry.created.min(now),
                    last_used,
                ])?;
            }
            let mut insert = tx.prepare_cached(&format!(
                "INSERT INTO failures ({FAILURE_COLUMNS})
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) ON CONFLICT (key) DO NOTHING"
            ))?;
            let mut touch_failure = tx.prepare_cached(
                "UPDATE failures SET last_used = max(last_used, ?2) WHERE key = ?1",
            )?;
            for (profile_id, row) in failures {
                let last_used = row.last_used.min(now);
                let added = insert.execute(params![
                    profile_id,
                    row.key.0.as_slice(),
                    row.optimize,
                    row.failure.error_type,
                    row.failure.message,
                    row.failure.line,
                    row.failure.col,
                    row.created.min(now),
                    last_used,
                ])?;
                if added == 1 {
                    merged.failures_added += 1;
                } else {
                    touch_failure.execute(params![row.key.0.as_slice(), last_used])?;
                    merged.failures_present += 1;
                }
            }
            Ok(merged)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::NewEntry;
    use crate::store::testing::profile_312 as profile;

    fn entry_row(key: u8, code: &[u8]) -> EntryRow {
        let new = NewEntry::compressed(Key([key; 32]), 0, 1, code, Some("1: W: w".into()));
        EntryRow {
            key: new.key,
            optimize: new.optimize,
            raw_size: new.raw_size as u64,
            checksum: new.checksum,
            data: new.data,
            warnings: new.warnings,
            created: 100,
            last_used: 200,
        }
    }

    fn entries(store: &Store, selection: Selection<'_>) -> Vec<(i64, EntryRow)> {
        let mut found = Vec::new();
        store
            .for_each_entry(selection, |id, row| -> Result<(), Error> {
                found.push((id, row));
                Ok(())
            })
            .unwrap();
        found
    }

    #[test]
    fn merge_keeps_good_rows_and_replaces_corrupt_ones() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("store.sqlite3")).unwrap();
        let id = store.profile_id(&profile()).unwrap();
        assert_eq!(
            store.profiles().unwrap(),
            std::collections::HashMap::from([(id, profile())])
        );
        let good = entry_row(1, b"good code");
        let mut corrupt = entry_row(2, b"other code");
        corrupt.data[0] ^= 0xff;
        let failure = FailureRow {
            key: Key([3; 32]),
            optimize: 0,
            failure: StoredFailure {
                error_type: "SyntaxError".into(),
                message: "invalid syntax".into(),
                line: Some(1),
                col: None,
            },
            created: 100,
            last_used: 200,
        };
        let merged = store
            .merge(
                &[(id, good.clone()), (id, corrupt)],
                &[(id, failure.clone())],
            )
            .unwrap();
        assert_eq!(merged.entries_added, 2);
        assert_eq!(merged.failures_added, 1);

        let mut newer = entry_row(1, b"good code");
        newer.data = b"never stored".to_vec();
        newer.last_used = 300;
        let repaired = entry_row(2, b"other code");
        let merged = store
            .merge(&[(id, newer), (id, repaired.clone())], &[(id, failure)])
            .unwrap();
        assert_eq!(
            merged,
            Merged {
                entries_present: 1,
                entries_replaced: 1,
                failures_present: 1,
                ..Merged::default()
            }
        );
        let found = entries(&store, Selection::Everything);
        let kept = EntryRow {
            last_used: 300,
            ..good
        };
        assert_eq!(found, vec![(id, kept), (id, repaired.clone())]);
        let only = entries(&store, Selection::Keys(&[Key([2; 32]), Key([9; 32])]));
        assert_eq!(only, vec![(id, repaired)]);
        let mut failures = Vec::new();
        store
            .for_each_failure(Selection::Everything, |id, row| -> Result<(), Error> {
                failures.push((id, row.key, row.last_used));
                Ok(())
            })
            .unwrap();
        assert_eq!(failures, vec![(id, Key([3; 32]), 200)]);
    }
}
