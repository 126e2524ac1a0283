//! What `rcache verify` asks of the store: SQLite's own checks, every
//! stored blob read back, removing bad entries, and, when SQLite finds the
//! file itself damaged, rebuilding it from every row that can still be read.

use rusqlite::types::{Value, ValueRef};
use rusqlite::{Connection, OptionalExtension, params};

use super::{Blob, Error, Store};
use crate::key::Key;

/// SQLite's findings are cut at this many messages.
const MAX_INTEGRITY_MESSAGES: u32 = 100;
/// Rows read per query while salvaging; a query that fails skips ahead.
const SALVAGE_BATCH: i64 = 256;

/// One stored entry as read for checking.
#[derive(Debug)]
pub struct StoredEntry {
    /// Where the row is: the only handle on a row whose key is damaged.
    pub rowid: i64,
    pub key: Key,
    pub profile_id: i64,
    pub optimize: u8,
    pub blob: Blob,
}

impl Store {
    /// `PRAGMA integrity_check` and `foreign_key_check`: an empty list when
    /// SQLite finds nothing wrong, else its messages.
    pub fn integrity_problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let checked = self
            .conn
            .prepare(&format!("PRAGMA integrity_check({MAX_INTEGRITY_MESSAGES})"))
            .and_then(|mut statement| {
                statement
                    .query_map([], |row| row.get::<_, String>(0))?
                    .collect::<rusqlite::Result<Vec<_>>>()
            });
        match checked {
            Ok(messages) => problems.extend(messages.into_iter().filter(|m| m != "ok")),
            Err(err) => problems.push(format!("the integrity check could not run: {err}")),
        }
        let foreign = self
            .conn
            .prepare("PRAGMA foreign_key_check")
            .and_then(|mut statement| {
                statement
                    .query_map([], |row| {
                        Ok(format!(
                            "row {} of `{}` refers to a missing row of `{}`",
                            row.get::<_, i64>(1)?,
                            row.get::<_, String>(0)?,
                            row.get::<_, String>(2)?
                        ))
                    })?
                    .collect::<rusqlite::Result<Vec<_>>>()
            });
        match foreign {
            Ok(messages) => problems.extend(messages),
            Err(err) => problems.push(format!("the foreign key check could not run: {err}")),
        }
        problems
    }

    /// Calls `each` with every stored entry, in key order, `batch` at a
    /// time (so that callers can check them on several threads). An error
    /// reading the table ends the walk and is returned.
    pub fn each_entry(
        &self,
        batch: usize,
        mut each: impl FnMut(Vec<StoredEntry>),
    ) -> Result<(), Error> {
        let result = (|| {
            // The table itself, not its key index: a row is checked as it
            // is, even when the index disagrees with it.
            let mut statement = self.conn.prepare(
                "SELECT key, profile_id, optimize, data, raw_size, checksum, rowid
                 FROM entries NOT INDEXED ORDER BY rowid",
            )?;
            let mut rows = statement.query([])?;
            let mut entries = Vec::with_capacity(batch);
            while let Some(row) = rows.next()? {
                // Columns of the wrong type (a damaged or tampered row) make
                // a blob that fails its check, never an error that hides the
                // rest of the table.
                let mut key = [0; 32];
                let stored_key = bytes_of(row.get_ref(0)?);
                let length = stored_key.len().min(32);
                key[..length].copy_from_slice(&stored_key[..length]);
                entries.push(StoredEntry {
                    rowid: row.get(6)?,
                    key: Key(key),
                    profile_id: row.get(1).unwrap_or(0),
                    optimize: row.get(2).unwrap_or(0),
                    blob: Blob {
                        data: bytes_of(row.get_ref(3)?),
                        raw_size: row.get(4).unwrap_or(-1),
                        checksum: bytes_of(row.get_ref(5)?),
                    },
                });
                if entries.len() == batch {
                    each(std::mem::take(&mut entries));
                }
            }
            if !entries.is_empty() {
                each(entries);
            }
            Ok(())
        })();
        result.map_err(|source| self.sqlite_error(source))
    }

    /// Removes the entries in rows `rowids` (found bad), after rebuilding
    /// the indexes from the tables (a damaged index could otherwise keep a
    /// removed row's key, or miss a row).
    pub fn remove_entry_rows(&mut self, rowids: &[i64]) -> Result<(), Error> {
        self.write_transaction(|tx| {
            tx.execute_batch("REINDEX")?;
            let mut delete = tx.prepare_cached("DELETE FROM entries WHERE rowid = ?1")?;
            for rowid in rowids {
                delete.execute([rowid])?;
            }
            Ok(())
        })
    }

    /// Rebuilds a damaged store from every row that can still be read:
    /// copied table by table into a new database beside it, then written
    /// over this one through SQLite's backup API, under its locks, so other
    /// processes see either the old file or the new one. Entries whose blob
    /// fails its checksum are left out. Returns the rows that could not be
    /// read or were left out.
    pub fn rebuild(&mut self) -> Result<u64, Error> {
        let dir = super::parent_dir(&self.path);
        crate::sweep::remove_stale_temps(dir);
        let temp = tempfile::Builder::new()
            .prefix(".rcache-rebuild-")
            .suffix(".tmp")
            .tempfile_in(dir)
            .map_err(|source| Error::Create {
                path: self.path.clone(),
                source,
            })?;
        let open_error = |source| Error::Open {
            path: temp.path().to_owned(),
            source,
        };
        let mut fresh = Connection::open(temp.path()).map_err(open_error)?;
        super::configure(&mut fresh).map_err(open_error)?;
        let lost = salvage(&self.conn, &fresh).map_err(open_error)?;
        let backup = rusqlite::backup::Backup::new(&fresh, &mut self.conn)
            .and_then(|backup| backup.run_to_completion(1024, std::time::Duration::ZERO, None));
        backup.map_err(|source| self.sqlite_error(source))?;
        Ok(lost)
    }
}

/// Copies every readable row of every table from `damaged` into `fresh`,
/// leaving out entries whose blob is bad. Returns the rows lost.
fn salvage(damaged: &Connection, fresh: &Connection) -> rusqlite::Result<u64> {
    let mut lost = 0;
    // Rows are copied as found; rows whose profile was lost go at the end.
    fresh.pragma_update(None, "foreign_keys", false)?;
    fresh.execute_batch("BEGIN")?;
    // Every table the current schema has (foreign keys are off while
    // copying, so their order does not matter).
    let tables: Vec<String> = fresh
        .prepare(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'",
        )?
        .query_map([], |row| row.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    for table in &tables {
        let columns: Vec<String> = fresh
            .prepare(&format!("SELECT name FROM pragma_table_info('{table}')"))?
            .query_map([], |row| row.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        let column_list = columns.join(", ");
        let select = format!(
            "SELECT rowid, {column_list} FROM {table} WHERE rowid >= ?1 ORDER BY rowid LIMIT {SALVAGE_BATCH}"
        );
        // Rows keep their rowids: what `verify` found is named by rowid.
        let placeholders = vec!["?"; columns.len() + 1].join(", ");
        let mut insert = fresh.prepare(&format!(
            "INSERT OR IGNORE INTO {table} (rowid, {column_list}) VALUES ({placeholders})"
        ))?;
        let total: Option<i64> = damaged
            .query_row(&format!("SELECT count(*) FROM {table}"), [], |row| {
                row.get(0)
            })
            .optional()
            .unwrap_or(None);
        let mut copied = 0;
        let mut next = i64::MIN;
        let mut skip = 1;
        loop {
            let rows = damaged.prepare(&select).and_then(|mut statement| {
                statement
                    .query_map(params![next], |row| {
                        let rowid: i64 = row.get(0)?;
                        let values = (1..=columns.len())
                            .map(|index| row.get_ref(index).map(owned))
                            .collect::<rusqlite::Result<Vec<_>>>()?;
                        Ok((rowid, values))
                    })?
                    .collect::<rusqlite::Result<Vec<_>>>()
            });
            match rows {
                Ok(rows) if rows.is_empty() => break,
                Ok(rows) => {
                    skip = 1;
                    for (rowid, values) in rows {
                        next = rowid.saturating_add(1);
                        if table == "entries" && !entry_is_sound(&columns, &values) {
                            continue;
                        }
                        let row = std::iter::once(Value::Integer(rowid)).chain(values);
                        if let Ok(inserted) = insert.execute(rusqlite::params_from_iter(row)) {
                            copied += inserted as i64;
                        }
                    }
                }
                // Unreadable here: skip ahead, further each time.
                Err(_) if next < i64::MAX - skip => {
                    next = next.saturating_add(skip);
                    skip = skip.saturating_mul(2);
                }
                Err(_) => break,
            }
        }
        lost += u64::try_from(total.unwrap_or(copied) - copied).unwrap_or(0);
    }
    for table in ["interpreters", "entries", "failures"] {
        lost += fresh.execute(
            &format!("DELETE FROM {table} WHERE profile_id NOT IN (SELECT id FROM profiles)"),
            [],
        )? as u64;
    }
    let version = super::migrate::current_version();
    fresh.execute_batch(&format!(
        "PRAGMA user_version = {version}; PRAGMA application_id = {};",
        super::migrate::APPLICATION_ID
    ))?;
    fresh.execute_batch("COMMIT")?;
    fresh.pragma_update(None, "foreign_keys", true)?;
    Ok(lost)
}

/// The bytes of a BLOB or TEXT value; nothing for other types.
fn bytes_of(value: ValueRef<'_>) -> Vec<u8> {
    match value {
        ValueRef::Blob(bytes) | ValueRef::Text(bytes) => bytes.to_vec(),
        _ => Vec::new(),
    }
}

/// An owned copy of `value`; TEXT that is not UTF-8 is kept as a BLOB.
fn owned(value: ValueRef<'_>) -> Value {
    match value {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(integer) => Value::Integer(integer),
        ValueRef::Real(real) => Value::Real(real),
        ValueRef::Text(bytes) => match std::str::from_utf8(bytes) {
            Ok(text) => Value::Text(text.to_owned()),
            Err(_) => Value::Blob(bytes.to_vec()),
        },
        ValueRef::Blob(bytes) => Value::Blob(bytes.to_vec()),
    }
}

/// Whether an `entries` row read while salvaging holds a sound blob.
fn entry_is_sound(columns: &[String], values: &[Value]) -> bool {
    let column = |name: &str| {
        columns
            .iter()
            .position(|column| column == name)
            .map(|index| &values[index])
    };
    let (Some(Value::Blob(data)), Some(Value::Integer(raw_size)), Some(Value::Blob(checksum))) =
        (column("data"), column("raw_size"), column("checksum"))
    else {
        return false;
    };
    let blob = Blob {
        data: data.clone(),
        raw_size: *raw_size,
        checksum: checksum.clone(),
    };
    matches!(blob.decode(), super::StoredCode::Found(_))
}
