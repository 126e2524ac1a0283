//! What `materialize` wrote (schema `0002_written_pycs.sql`), so a no-op
//! run can tell a pyc is the file it wrote without reading it.

use std::path::Path;

use rusqlite::{OptionalExtension, params};

use super::{Error, Store};
use crate::identity::FileIdentity;
use crate::key::Key;

/// The record of one pyc written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrittenPyc {
    /// The code it holds.
    pub key: Key,
    /// Its header mode (`timestamp`, `checked-hash`, `unchecked-hash`).
    pub mode: String,
    /// The source's size and mtime the header was made for.
    pub source_size: u64,
    pub source_mtime_ns: i64,
    /// The pyc file right after writing.
    pub pyc: FileIdentity,
}

impl Store {
    /// The record of what rcache wrote at `pyc_path`, if any.
    pub fn written_pyc(&self, pyc_path: &Path) -> Result<Option<WrittenPyc>, Error> {
        self.conn
            .prepare_cached(
                "SELECT key, mode, source_size, source_mtime_ns, pyc_device, pyc_inode,
                        pyc_size, pyc_mtime_ns, pyc_ctime_ns
                 FROM written_pycs WHERE pyc_path = ?1",
            )
            .and_then(|mut statement| {
                statement
                    .query_row([pyc_path.as_os_str().as_encoded_bytes()], |row| {
                        let key: Vec<u8> = row.get(0)?;
                        Ok(Key::try_from(key.as_slice()).ok().map(|key| WrittenPyc {
                            key,
                            mode: row.get(1).unwrap_or_default(),
                            source_size: row.get(2).unwrap_or_default(),
                            source_mtime_ns: row.get(3).unwrap_or_default(),
                            pyc: FileIdentity {
                                device: row.get::<_, i64>(4).unwrap_or_default() as u64,
                                inode: row.get::<_, i64>(5).unwrap_or_default() as u64,
                                size: row.get::<_, i64>(6).unwrap_or_default() as u64,
                                mtime_ns: row.get(7).unwrap_or_default(),
                                ctime_ns: row.get(8).unwrap_or_default(),
                            },
                        }))
                    })
                    .optional()
            })
            .map(Option::flatten)
            .map_err(|source| self.sqlite_error(source))
    }

    /// Records pycs just written, in one transaction.
    pub fn record_written(
        &mut self,
        records: &[(std::path::PathBuf, WrittenPyc)],
    ) -> Result<(), Error> {
        if records.is_empty() {
            return Ok(());
        }
        self.write_transaction(|tx| {
            let mut insert = tx.prepare_cached(
                "INSERT OR REPLACE INTO written_pycs
                     (pyc_path, key, mode, source_size, source_mtime_ns, pyc_device, pyc_inode,
                      pyc_size, pyc_mtime_ns, pyc_ctime_ns)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            )?;
            for (path, record) in records {
                insert.execute(params![
                    path.as_os_str().as_encoded_bytes(),
                    record.key.0.as_slice(),
                    record.mode,
                    record.source_size as i64,
                    record.source_mtime_ns,
                    record.pyc.device as i64,
                    record.pyc.inode as i64,
                    record.pyc.size as i64,
                    record.pyc.mtime_ns,
                    record.pyc.ctime_ns,
                ])?;
            }
            Ok(())
        })
    }
}
