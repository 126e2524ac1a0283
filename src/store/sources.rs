//! What each source file held when last read (schema `0003_sources.sql`):
//! a file whose identity is unchanged is keyed without reading it.

use std::path::{Path, PathBuf};

use rusqlite::{OptionalExtension, params};

use super::{Error, Store};
use crate::identity::FileIdentity;
use crate::key::ContentHash;

/// One file's record: its identity when read, and the hash of what it held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KnownSource {
    pub identity: FileIdentity,
    pub content: ContentHash,
}

impl Store {
    /// What the file at `path` held when last recorded, if it was.
    pub fn known_source(&self, path: &Path) -> Result<Option<KnownSource>, Error> {
        self.conn
            .prepare_cached(
                "SELECT device, inode, size, mtime_ns, ctime_ns, content_hash
                 FROM sources WHERE path = ?1",
            )
            .and_then(|mut statement| {
                statement
                    .query_row([path.as_os_str().as_encoded_bytes()], |row| {
                        let content: Vec<u8> = row.get(5)?;
                        let Ok(content) = <[u8; 32]>::try_from(content.as_slice()) else {
                            return Ok(None); // a damaged row is no record
                        };
                        Ok(Some(KnownSource {
                            identity: FileIdentity {
                                device: row.get::<_, i64>(0)? as u64,
                                inode: row.get::<_, i64>(1)? as u64,
                                size: row.get::<_, i64>(2)? as u64,
                                mtime_ns: row.get(3)?,
                                ctime_ns: row.get(4)?,
                            },
                            content: ContentHash(content),
                        }))
                    })
                    .optional()
            })
            .map(Option::flatten)
            .map_err(|source| self.sqlite_error(source))
    }

    /// Records what files held when read, in one transaction.
    pub fn record_sources(&mut self, records: &[(PathBuf, KnownSource)]) -> Result<(), Error> {
        if records.is_empty() {
            return Ok(());
        }
        self.write_transaction(|tx| {
            let mut insert = tx.prepare_cached(
                "INSERT OR REPLACE INTO sources
                     (path, device, inode, size, mtime_ns, ctime_ns, content_hash)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?;
            for (path, known) in records {
                let identity = &known.identity;
                insert.execute(params![
                    path.as_os_str().as_encoded_bytes(),
                    identity.device as i64,
                    identity.inode as i64,
                    identity.size as i64,
                    identity.mtime_ns,
                    identity.ctime_ns,
                    known.content.0.as_slice(),
                ])?;
            }
            Ok(())
        })
    }
}
