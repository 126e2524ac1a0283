//! What is in the store, for `rcache stats`.

use serde::Serialize;

use super::{Error, Store};

/// Totals over the whole store.
#[derive(Debug, Clone, Serialize)]
pub struct Stats {
    /// Compiled code objects stored.
    pub entries: u64,
    /// Remembered compile failures.
    pub failures: u64,
    /// Marshal bytes before compression.
    pub bytes_raw: u64,
    /// Compressed bytes stored.
    pub bytes_stored: u64,
    /// Size of the store file on disk.
    pub bytes_file: u64,
    /// Lifetime lookups answered from the store.
    pub lifetime_hits: u64,
    /// Lifetime lookups that had to compile.
    pub lifetime_misses: u64,
    /// Lifetime totals of the remote caches' work for this store.
    pub remote: RemoteStats,
    /// One line per interpreter profile.
    pub profiles: Vec<ProfileStats>,
}

/// What remote caches did for this store over its life.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RemoteStats {
    /// Keys fetched (and checked) from a remote.
    pub hits: u64,
    /// Keys no remote had.
    pub misses: u64,
    /// Failed requests and refused objects.
    pub errors: u64,
    /// Objects uploaded.
    pub uploaded: u64,
    pub bytes_down: u64,
    pub bytes_up: u64,
}

/// Totals for one interpreter profile.
#[derive(Debug, Clone, Serialize)]
pub struct ProfileStats {
    pub implementation: String,
    pub version: String,
    pub cache_tag: String,
    pub entries: u64,
    pub failures: u64,
    pub bytes_raw: u64,
    pub bytes_stored: u64,
}

impl Store {
    /// Counts everything in the store.
    pub fn stats(&self) -> Result<Stats, Error> {
        let result = (|| {
            let mut statement = self.conn.prepare(
                "SELECT p.implementation, p.version, p.cache_tag,
                    (SELECT count(*) FROM entries e WHERE e.profile_id = p.id),
                    (SELECT count(*) FROM failures f WHERE f.profile_id = p.id),
                    (SELECT coalesce(sum(e.raw_size), 0) FROM entries e WHERE e.profile_id = p.id),
                    (SELECT coalesce(sum(length(e.data)), 0) FROM entries e WHERE e.profile_id = p.id)
                 FROM profiles p ORDER BY p.cache_tag, p.version",
            )?;
            let profiles = statement
                .query_map([], |row| {
                    Ok(ProfileStats {
                        implementation: row.get(0)?,
                        version: row.get(1)?,
                        cache_tag: row.get(2)?,
                        entries: row.get(3)?,
                        failures: row.get(4)?,
                        bytes_raw: row.get(5)?,
                        bytes_stored: row.get(6)?,
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            let counter = |name: &str| -> rusqlite::Result<u64> {
                self.conn.query_row(
                    "SELECT coalesce((SELECT value FROM counters WHERE name = ?1), 0)",
                    [name],
                    |row| row.get(0),
                )
            };
            Ok(Stats {
                entries: profiles.iter().map(|p| p.entries).sum(),
                failures: profiles.iter().map(|p| p.failures).sum(),
                bytes_raw: profiles.iter().map(|p| p.bytes_raw).sum(),
                bytes_stored: profiles.iter().map(|p| p.bytes_stored).sum(),
                bytes_file: 0,
                lifetime_hits: counter("hits")?,
                lifetime_misses: counter("misses")?,
                remote: RemoteStats {
                    hits: counter("remote_hits")?,
                    misses: counter("remote_misses")?,
                    errors: counter("remote_errors")?,
                    uploaded: counter("remote_uploaded")?,
                    bytes_down: counter("remote_bytes_down")?,
                    bytes_up: counter("remote_bytes_up")?,
                },
                profiles,
            })
        })();
        let mut stats = result.map_err(|source| self.sqlite_error(source))?;
        stats.bytes_file = self.file_bytes()?;
        Ok(stats)
    }
}
