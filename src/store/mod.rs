//! The store: one SQLite file that every checkout, worktree and virtualenv
//! of a user shares.
//!
//! ## Locking
//! Many rcache processes on one store is the normal case. The store runs in
//! WAL mode (readers never block the writer), with a long busy timeout, and
//! every write is a short `BEGIN IMMEDIATE` transaction: taking the write
//! lock up front means the busy handler waits for it, where upgrading a read
//! transaction would fail at once with "database is locked". Results are
//! written in batches, never one transaction per file.
//!
//! ## Compatibility
//! `PRAGMA application_id` marks an rcache store and `PRAGMA user_version`
//! counts its migrations (`migrate.rs`). A file that is not an rcache store,
//! or a store from a newer rcache, is refused before anything is written.
//!
//! ## Read-only stores
//! A store this process cannot write (a read-only mount, a root-owned store
//! baked into an image) still serves what it holds: it is opened
//! `immutable`, the way SQLite reads a WAL database without creating its
//! `-wal` and `-shm` files, as a snapshot of the main file that nobody is
//! expected to change meanwhile. Every write is then skipped, and what a
//! run compiles is kept in memory instead (`read_only.rs`): runs go on as
//! if they had stored, and the command says so once.
//!
//! ## Durability
//! `synchronous=NORMAL` in WAL mode never corrupts the store on a crash; at
//! worst the last transactions are lost, and they are only a cache. At the
//! end of a run the WAL is checkpointed into the main file, so copying the
//! `.sqlite3` file alone (as CI caches do) loses nothing. `auto_vacuum` is
//! INCREMENTAL from the first schema, so space can be given back later
//! without an exclusive full VACUUM.

mod archive;
mod entries;
mod gc;
mod guard;
mod inspect;
mod migrate;
mod profiles;
mod read_only;
mod sequences;
mod sources;
mod stats;
mod verify;
mod written;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

pub use archive::{EntryRow, FailureRow, Merged, Selection};
pub use entries::{Blob, Lookup, NewEntry, NewFailure, StoredCode, StoredFailure};
pub use gc::{Forgotten, Limits};
pub use guard::current_uid;
pub use inspect::Inspection;
pub use sequences::ImportSequence;
pub use sources::KnownSource;
pub use stats::{ProfileStats, RemoteStats, Stats};
pub use verify::StoredEntry;
pub use written::WrittenPyc;

/// How long a process waits for another one's write lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(120);
/// A WAL this big is checkpointed even by a run that stored no code.
const WAL_CHECKPOINT_BYTES: u64 = 4 << 20;

/// Errors opening or using the store.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("`{}` is not an rcache store; refusing to touch it", path.display())]
    NotAStore { path: PathBuf },
    #[error(
        "`{}` was written by a newer rcache (schema {found}, this rcache knows up to {known}); refusing to touch it",
        path.display()
    )]
    TooNew {
        path: PathBuf,
        found: i64,
        known: i64,
    },
    #[error("cannot create the store directory `{}`", path.display())]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot create the store `{}`", path.display())]
    Create {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "refusing the store: its {what} `{}` {problem}; bytecode from it would be executed",
        path.display()
    )]
    NotPrivate {
        path: PathBuf,
        what: &'static str,
        problem: String,
    },
    #[error(
        "`{}` is read-only and at schema {found}; this rcache needs {needed} and cannot upgrade it",
        path.display()
    )]
    ReadOnlyOutdated {
        path: PathBuf,
        found: i64,
        needed: i64,
    },
    #[error("cannot read `{}`", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot open the store `{}`", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error(
        "the disk holding the store `{}` is full: the store is intact, but this run's results could not be stored (free some space, or shrink the store with `rcache gc --max-size SIZE`)",
        path.display()
    )]
    DiskFull { path: PathBuf },
    #[error(
        "the store `{}` is damaged ({detail}): `rcache verify --repair` rebuilds it from what can still be read",
        path.display()
    )]
    Damaged { path: PathBuf, detail: String },
    #[error(
        "the store `{}` is damaged where SQLite cannot even open it ({detail}); it only holds a cache: delete it (and its -wal and -shm files)",
        path.display()
    )]
    Unopenable { path: PathBuf, detail: String },
    #[error(
        "the store `{}` is truncated ({found} bytes where its header says {expected}); it only holds a cache: delete it (and its -wal and -shm files)",
        path.display()
    )]
    Truncated {
        path: PathBuf,
        found: u64,
        expected: u64,
    },
    #[error("store `{}`", path.display())]
    Sqlite {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
}

/// An open store.
pub struct Store {
    conn: Connection,
    path: PathBuf,
    /// This connection committed compiled code or failures.
    stored_code: bool,
    /// Why this process cannot write the store, when it cannot, and what
    /// it was given to store meanwhile.
    read_only: Option<read_only::ReadOnly>,
}

impl Store {
    /// The default location: `rcache/store.sqlite3` in the user cache dir
    /// (`$XDG_CACHE_HOME` or `~/.cache` on Linux).
    pub fn default_path() -> Option<PathBuf> {
        dirs::cache_dir().map(|dir| dir.join("rcache").join("store.sqlite3"))
    }

    /// Opens the store at `path`, creating it (and its directory, private to
    /// the user) if needed, and brings its schema up to date.
    pub fn open(path: &Path) -> Result<Self, Error> {
        let dir = parent_dir(path);
        create_private_dir(dir).map_err(|source| Error::CreateDir {
            path: dir.to_owned(),
            source,
        })?;
        if !path.exists() {
            create_store(dir, path)?;
        }
        guard::check_header(path)?;
        guard::check_private(path)?;
        let read_only = guard::read_only_reason(path);
        let open_error = |source| Error::Open {
            path: path.to_owned(),
            source,
        };
        let mut conn = match read_only {
            None => Connection::open(path),
            Some(_) => Connection::open_with_flags(
                immutable_uri(path),
                OpenFlags::SQLITE_OPEN_READ_ONLY
                    | OpenFlags::SQLITE_OPEN_URI
                    | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            ),
        }
        .map_err(open_error)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(open_error)?;
        let version = guard::check_schema(path, &conn)?;
        if read_only.is_some() {
            if version != migrate::current_version() {
                return Err(Error::ReadOnlyOutdated {
                    path: path.to_owned(),
                    found: version,
                    needed: migrate::current_version(),
                });
            }
            configure_reads(&conn).map_err(|source| classify(path, source))?;
        } else {
            configure(&mut conn).map_err(|source| classify(path, source))?;
        }
        Ok(Self {
            conn,
            path: path.to_owned(),
            stored_code: false,
            read_only: read_only.map(read_only::ReadOnly::new),
        })
    }

    /// Why this process cannot write the store, if it cannot: then nothing
    /// is ever written (see "Read-only stores").
    pub fn read_only(&self) -> Option<&str> {
        self.read_only
            .as_ref()
            .map(|read_only| read_only.reason.as_str())
    }

    /// Where this store lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Ends a run: keeps the store under `max_size` (`gc.rs`, usually two
    /// `PRAGMA` reads) and checkpoints. Best effort: a failure to evict is
    /// logged; what the run stored stays stored.
    pub fn end_run(&mut self, max_size: u64) {
        match self.enforce_limit(max_size) {
            Ok(Some(evicted)) => tracing::info!(
                "the store outgrew {max_size} bytes: evicted {} entries and {} failures",
                evicted.entries(),
                evicted.failures()
            ),
            Ok(None) => {}
            Err(err) => tracing::warn!("cannot keep the store under its size limit: {err:#}"),
        }
        self.checkpoint();
    }

    /// Moves everything in the WAL into the main file, if this run stored
    /// code or the WAL has grown past [`WAL_CHECKPOINT_BYTES`]: the fsyncs
    /// of a checkpoint cost a no-op run a third of its time, and what it
    /// writes (counters, records of files) is harmless to lose with a copy
    /// of the main file alone. Best effort: another process reading at this
    /// moment just leaves some for the next run.
    fn checkpoint(&self) {
        if self.read_only.is_some() {
            return;
        }
        let wal = guard::with_suffix(&self.path, "-wal");
        let wal_bytes = std::fs::metadata(wal).map_or(0, |metadata| metadata.len());
        if self.stored_code || wal_bytes >= WAL_CHECKPOINT_BYTES {
            self.checkpoint_now();
        }
    }

    /// Moves everything in the WAL into the main file now, and truncates
    /// the WAL (best effort, as [`Store::checkpoint`]).
    fn checkpoint_now(&self) {
        if let Err(err) = self
            .conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        {
            tracing::debug!("checkpoint skipped: {err}");
        }
    }

    /// Runs `reads` in one read transaction: one consistent snapshot, and
    /// one lock round-trip instead of one per statement (thousands of
    /// lookups otherwise cost more in `fcntl` than in SQLite).
    pub fn reading<T, E: From<Error>>(&self, reads: impl FnOnce() -> Result<T, E>) -> Result<T, E> {
        let tx = self
            .conn
            .unchecked_transaction()
            .map_err(|source| self.sqlite_error(source))?;
        let value = reads()?;
        tx.commit().map_err(|source| self.sqlite_error(source))?;
        Ok(value)
    }

    /// Runs `work` in one short `BEGIN IMMEDIATE` transaction (see
    /// "Locking") and commits it; in a read-only store, skips it and
    /// returns `T::default()`.
    fn write_transaction<T: Default>(
        &mut self,
        work: impl FnOnce(&rusqlite::Transaction<'_>) -> rusqlite::Result<T>,
    ) -> Result<T, Error> {
        if self.read_only.is_some() {
            return Ok(T::default());
        }
        let result = (|| {
            let tx = self
                .conn
                .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let value = work(&tx)?;
            tx.commit()?;
            Ok(value)
        })();
        result.map_err(|source| self.sqlite_error(source))
    }

    fn sqlite_error(&self, source: rusqlite::Error) -> Error {
        match source.sqlite_error_code() {
            Some(rusqlite::ErrorCode::DiskFull) => {
                return Error::DiskFull {
                    path: self.path.clone(),
                };
            }
            Some(rusqlite::ErrorCode::DatabaseCorrupt) => {
                return Error::Damaged {
                    path: self.path.clone(),
                    detail: source.to_string(),
                };
            }
            _ => {}
        }
        Error::Sqlite {
            path: self.path.clone(),
            source,
        }
    }
}

/// How much of the store SQLite maps into memory.
const MMAP_SIZE: i64 = 1 << 30;

/// Sets up a writable connection and brings the schema up to date.
fn configure(conn: &mut Connection) -> rusqlite::Result<()> {
    conn.pragma_update(None, "foreign_keys", true)?;
    let pages: i64 = conn.query_row("PRAGMA page_count", [], |row| row.get(0))?;
    if pages == 0 {
        // Only takes effect before the first table is created.
        conn.pragma_update(None, "auto_vacuum", "INCREMENTAL")?;
    }
    conn.query_row("PRAGMA journal_mode = WAL", [], |_| Ok(()))?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    configure_reads(conn)?;
    migrate::migrate(conn)
}

/// What every connection sets, read-only ones included.
fn configure_reads(conn: &Connection) -> rusqlite::Result<()> {
    // Reads through a mapping instead of a pread per page: a blob of tens
    // of KiB spans a dozen overflow pages. Address space only.
    conn.pragma_update(None, "mmap_size", MMAP_SIZE)
}

/// The SQLite URI that opens `path` as an immutable database: nothing is
/// locked or created beside it. `%`, `?` and `#` are escaped; other bytes
/// of the path go through as they are.
fn immutable_uri(path: &Path) -> OsString {
    let mut uri = Vec::from(*b"file:");
    for &byte in path.as_os_str().as_encoded_bytes() {
        match byte {
            b'%' | b'?' | b'#' => uri.extend(format!("%{byte:02X}").bytes()),
            _ => uri.push(byte),
        }
    }
    uri.extend(b"?immutable=1");
    std::os::unix::ffi::OsStringExt::from_vec(uri)
}

/// The directory holding `path` (`.` for a bare file name).
fn parent_dir(path: &Path) -> &Path {
    path.parent()
        .filter(|dir| !dir.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// SQLite reports a foreign file as `NotADatabase`, and a store whose
/// schema itself is damaged as corrupt on opening: say so plainly.
fn classify(path: &Path, source: rusqlite::Error) -> Error {
    match source.sqlite_error_code() {
        Some(rusqlite::ErrorCode::NotADatabase) => Error::NotAStore {
            path: path.to_owned(),
        },
        Some(rusqlite::ErrorCode::DatabaseCorrupt) => match guard::truncation(path) {
            Some((found, expected)) => Error::Truncated {
                path: path.to_owned(),
                found,
                expected,
            },
            None => Error::Unopenable {
                path: path.to_owned(),
                detail: source.to_string(),
            },
        },
        _ => Error::Open {
            path: path.to_owned(),
            source,
        },
    }
}

/// Creates `dir` (and parents); a directory rcache creates is private to
/// the user (0700), since bytecode from the store will be executed.
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir)
}

/// Creates a complete store at `path` atomically: built and migrated under
/// a temp name in the same directory (0600, as tempfile creates it; SQLite
/// gives `-wal` and `-shm` the same mode), closed, then moved into place
/// without replacing anything. Concurrent first runs never see a store
/// half made; the one that loses the race opens the winner's.
fn create_store(dir: &Path, path: &Path) -> Result<(), Error> {
    crate::sweep::remove_stale_temps(dir);
    let temp = tempfile::Builder::new()
        .prefix(".rcache-store-")
        .suffix(".tmp")
        .tempfile_in(dir)
        .map_err(|source| Error::Create {
            path: path.to_owned(),
            source,
        })?;
    let open_error = |source| Error::Open {
        path: path.to_owned(),
        source,
    };
    let mut conn = Connection::open(temp.path()).map_err(open_error)?;
    configure(&mut conn).map_err(open_error)?;
    conn.close().map_err(|(_, source)| open_error(source))?;
    match temp.persist_noclobber(path) {
        Ok(_) => Ok(()),
        Err(err) if err.error.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(err) => Err(Error::Create {
            path: path.to_owned(),
            source: err.error,
        }),
    }
}

/// Seconds since the Unix epoch, the unit of every time in the store.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| {
            i64::try_from(elapsed.as_secs()).unwrap_or(i64::MAX)
        })
}

/// What the store's unit tests start from.
#[cfg(test)]
pub(crate) mod testing {
    use super::Store;
    use crate::interpreter::{Profile, SourceHash};

    /// CPython 3.12.1's profile.
    pub fn profile_312() -> Profile {
        Profile {
            implementation: "cpython".into(),
            version: "3.12.1".into(),
            cache_tag: "cpython-312".into(),
            magic: *b"\xcb\x0d\x0d\x0a",
            source_hash: SourceHash::SipHash13,
        }
    }

    /// A new store in a temp dir, holding [`profile_312`]; returns the dir
    /// (keep it alive), the store and the profile's id.
    pub fn store_with_profile() -> (tempfile::TempDir, Store, i64) {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("store.sqlite3")).unwrap();
        let id = store.profile_id(&profile_312()).unwrap();
        (dir, store, id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_a_foreign_database_without_touching_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("other.sqlite3");
        Connection::open(&path)
            .unwrap()
            .execute_batch("CREATE TABLE notes (body TEXT)")
            .unwrap();
        let before = std::fs::read(&path).unwrap();
        let err = Store::open(&path).err().unwrap();
        assert!(matches!(err, Error::NotAStore { .. }), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), before);
    }

    #[test]
    fn refuses_a_file_that_is_not_sqlite() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.sqlite3");
        std::fs::write(&path, b"definitely not a database, but long enough to be read as one......................................................................").unwrap();
        let err = Store::open(&path).err().unwrap();
        assert!(matches!(err, Error::NotAStore { .. }), "{err}");
    }

    #[test]
    fn refuses_a_newer_store() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.sqlite3");
        drop(Store::open(&path).unwrap());
        Connection::open(&path)
            .unwrap()
            .pragma_update(None, "user_version", 99)
            .unwrap();
        let err = Store::open(&path).err().unwrap();
        assert!(matches!(err, Error::TooNew { found: 99, .. }), "{err}");
    }

    #[test]
    fn new_store_is_private_wal_and_incremental() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/store.sqlite3");
        let store = Store::open(&path).unwrap();
        let mode: String = store
            .conn
            .query_row("PRAGMA journal_mode", [], |row| row.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        let vacuum: i64 = store
            .conn
            .query_row("PRAGMA auto_vacuum", [], |row| row.get(0))
            .unwrap();
        assert_eq!(vacuum, 2, "INCREMENTAL");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(&path), 0o600);
            assert_eq!(mode(path.parent().unwrap()), 0o700);
        }
    }
}
