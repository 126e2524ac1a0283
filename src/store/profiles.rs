//! Interpreter profiles, and the executables already probed.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use rusqlite::{OptionalExtension, params};

use super::{Error, Store, unix_now};
use crate::interpreter::{FileIdentity, Profile, SourceHash};

/// The profile id a read-only store gives a profile it does not hold
/// (SQLite numbers rows from 1).
pub const UNSTORED_PROFILE: i64 = 0;

impl Store {
    /// The profile recorded for `executable`, if the file is unchanged since
    /// it was probed.
    pub fn cached_profile(
        &self,
        executable: &Path,
        identity: &FileIdentity,
    ) -> Result<Option<(i64, Profile)>, Error> {
        self.conn
            .prepare_cached(
                "SELECT p.id, p.implementation, p.version, p.cache_tag, p.magic, p.source_hash
                 FROM interpreters i JOIN profiles p ON p.id = i.profile_id
                 WHERE i.path = ?1 AND i.device = ?2 AND i.inode = ?3 AND i.size = ?4
                   AND i.mtime_ns = ?5 AND i.ctime_ns = ?6",
            )
            .and_then(|mut statement| {
                statement
                    .query_row(
                        params![
                            executable.to_string_lossy(),
                            identity.device as i64,
                            identity.inode as i64,
                            identity.size as i64,
                            identity.mtime_ns,
                            identity.ctime_ns,
                        ],
                        read_profile_row,
                    )
                    .optional()
            })
            .map(Option::flatten)
            .map_err(|source| self.sqlite_error(source))
    }

    /// Records that `executable`, with this identity, has `profile`;
    /// returns the profile's id.
    pub fn remember_profile(
        &mut self,
        executable: &Path,
        identity: &FileIdentity,
        profile: &Profile,
    ) -> Result<i64, Error> {
        let id = self.profile_id(profile)?;
        self.write_transaction(|tx| {
            tx.execute(
                "INSERT OR REPLACE INTO interpreters
                 (path, device, inode, size, mtime_ns, ctime_ns, profile_id, probed_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![
                    executable.to_string_lossy(),
                    identity.device as i64,
                    identity.inode as i64,
                    identity.size as i64,
                    identity.mtime_ns,
                    identity.ctime_ns,
                    id,
                    unix_now(),
                ],
            )
        })?;
        Ok(id)
    }

    /// The id of `profile`, inserting it if it is new. A read-only store
    /// that lacks it answers [`UNSTORED_PROFILE`]: nothing is ever stored
    /// under it, and no key of it can be found.
    pub fn profile_id(&mut self, profile: &Profile) -> Result<i64, Error> {
        const SELECT: &str = "SELECT id FROM profiles WHERE implementation = ?1 AND version = ?2
                              AND cache_tag = ?3 AND magic = ?4 AND source_hash = ?5";
        let columns = params![
            profile.implementation,
            profile.version,
            profile.cache_tag,
            profile.magic.as_slice(),
            profile.source_hash.as_str(),
        ];
        if self.read_only().is_some() {
            return self
                .conn
                .query_row(SELECT, columns, |row| row.get(0))
                .optional()
                .map(|id| id.unwrap_or(UNSTORED_PROFILE))
                .map_err(|source| self.sqlite_error(source));
        }
        self.write_transaction(|tx| {
            tx.execute(
                "INSERT OR IGNORE INTO profiles
                 (implementation, version, cache_tag, magic, source_hash)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                columns,
            )?;
            tx.query_row(SELECT, columns, |row| row.get(0))
        })
    }

    /// Every executable recorded: path, identity when probed, profile.
    pub(super) fn recorded_interpreters(&self) -> Result<Vec<(String, FileIdentity, i64)>, Error> {
        let result = (|| -> rusqlite::Result<Vec<_>> {
            let mut statement = self.conn.prepare(
                "SELECT path, device, inode, size, mtime_ns, ctime_ns, profile_id
                 FROM interpreters",
            )?;
            let rows = statement.query_map([], |row| {
                Ok((
                    row.get(0)?,
                    FileIdentity {
                        device: row.get::<_, i64>(1)? as u64,
                        inode: row.get::<_, i64>(2)? as u64,
                        size: row.get::<_, i64>(3)? as u64,
                        mtime_ns: row.get(4)?,
                        ctime_ns: row.get(5)?,
                    },
                    row.get(6)?,
                ))
            })?;
            rows.collect()
        })();
        result.map_err(|source| self.sqlite_error(source))
    }

    /// For each profile, an executable recorded for it that is still
    /// there, unchanged since it was probed.
    pub fn installed_interpreters(&self) -> Result<HashMap<i64, PathBuf>, Error> {
        let mut installed = HashMap::new();
        for (path, identity, profile) in self.recorded_interpreters()? {
            let path = PathBuf::from(path);
            if !installed.contains_key(&profile)
                && FileIdentity::of(&path).is_ok_and(|now| now == identity)
            {
                installed.insert(profile, path);
            }
        }
        Ok(installed)
    }

    /// Every profile in the store, by id.
    pub fn profiles(&self) -> Result<HashMap<i64, Profile>, Error> {
        let result = (|| -> rusqlite::Result<Vec<_>> {
            let mut statement = self.conn.prepare(
                "SELECT id, implementation, version, cache_tag, magic, source_hash FROM profiles",
            )?;
            let rows = statement.query_map([], read_profile_row)?;
            rows.collect()
        })();
        let rows = result.map_err(|source| self.sqlite_error(source))?;
        Ok(rows.into_iter().flatten().collect())
    }
}

/// A profile row: id, implementation, version, cache tag, magic, source
/// hash name; `None` if the columns do not make a profile.
fn read_profile_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Option<(i64, Profile)>> {
    let magic: Vec<u8> = row.get(4)?;
    let hash: String = row.get(5)?;
    let (Ok(magic), Some(source_hash)) = (magic.try_into(), SourceHash::from_name(&hash)) else {
        return Ok(None);
    };
    let profile = Profile {
        implementation: row.get(1)?,
        version: row.get(2)?,
        cache_tag: row.get(3)?,
        magic,
        source_hash,
    };
    Ok(Some((row.get(0)?, profile)))
}
