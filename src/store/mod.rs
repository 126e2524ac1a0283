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
//! ## Durability
//! `synchronous=NORMAL` in WAL mode never corrupts the store on a crash; at
//! worst the last transactions are lost, and they are only a cache. At the
//! end of a run the WAL is checkpointed into the main file, so copying the
//! `.sqlite3` file alone (as CI caches do) loses nothing. `auto_vacuum` is
//! INCREMENTAL from the first schema, so space can be given back later
//! without an exclusive full VACUUM.

mod archive;
mod entries;
mod migrate;
mod profiles;
mod sequences;
mod sources;
mod stats;
mod written;

use std::path::{Path, PathBuf};
use std::time::Duration;

use std::io::Read as _;

use rusqlite::Connection;

pub use archive::{EntryRow, FailureRow, Merged, Selection};
pub use entries::{Blob, Lookup, NewEntry, NewFailure, StoredCode, StoredFailure};
pub use sequences::ImportSequence;
pub use sources::KnownSource;
pub use stats::{ProfileStats, Stats};
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
        "refusing the store: its {what} `{}` {problem}; bytecode from it would be executed (fix with `chmod go-w`)",
        path.display()
    )]
    NotPrivate {
        path: PathBuf,
        what: &'static str,
        problem: String,
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
        let dir = path
            .parent()
            .filter(|dir| !dir.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        create_private_dir(dir).map_err(|source| Error::CreateDir {
            path: dir.to_owned(),
            source,
        })?;
        if !path.exists() {
            create_store(dir, path)?;
        }
        check_header(path)?;
        check_private(path)?;
        let open_error = |source| Error::Open {
            path: path.to_owned(),
            source,
        };
        let mut conn = Connection::open(path).map_err(open_error)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(open_error)?;
        check_schema(path, &conn)?;
        configure(&mut conn).map_err(|source| classify(path, source))?;
        Ok(Self {
            conn,
            path: path.to_owned(),
            stored_code: false,
        })
    }

    /// Where this store lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Moves everything in the WAL into the main file, if this run stored
    /// code or the WAL has grown past [`WAL_CHECKPOINT_BYTES`]: the fsyncs
    /// of a checkpoint cost a no-op run a third of its time, and what it
    /// writes (counters, records of files) is harmless to lose with a copy
    /// of the main file alone. Best effort: another process reading at this
    /// moment just leaves some for the next run.
    pub fn checkpoint(&self) {
        let mut wal = self.path.clone().into_os_string();
        wal.push("-wal");
        let wal_bytes = std::fs::metadata(wal).map_or(0, |metadata| metadata.len());
        if !self.stored_code && wal_bytes < WAL_CHECKPOINT_BYTES {
            return;
        }
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
    /// "Locking") and commits it.
    fn write_transaction<T>(
        &mut self,
        work: impl FnOnce(&rusqlite::Transaction<'_>) -> rusqlite::Result<T>,
    ) -> Result<T, Error> {
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
        Error::Sqlite {
            path: self.path.clone(),
            source,
        }
    }
}

/// How much of the store SQLite maps into memory.
const MMAP_SIZE: i64 = 1 << 30;

fn configure(conn: &mut Connection) -> rusqlite::Result<()> {
    conn.pragma_update(None, "foreign_keys", true)?;
    let pages: i64 = conn.query_row("PRAGMA page_count", [], |row| row.get(0))?;
    if pages == 0 {
        // Only takes effect before the first table is created.
        conn.pragma_update(None, "auto_vacuum", "INCREMENTAL")?;
    }
    conn.query_row("PRAGMA journal_mode = WAL", [], |_| Ok(()))?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    // Reads through a mapping instead of a pread per page: a blob of tens
    // of KiB spans a dozen overflow pages. Address space only.
    conn.pragma_update(None, "mmap_size", MMAP_SIZE)?;
    migrate::migrate(conn)
}

/// Refuses a file that is not an rcache store, or is from a newer rcache,
/// from its 100-byte SQLite header alone, before SQLite opens it (which
/// could create `-wal` and `-shm` files beside it).
fn check_header(path: &Path) -> Result<(), Error> {
    let mut header = Vec::with_capacity(100);
    let read = std::fs::File::open(path).and_then(|file| file.take(100).read_to_end(&mut header));
    if let Err(source) = read {
        return Err(Error::Read {
            path: path.to_owned(),
            source,
        });
    }
    if header.is_empty() {
        return Ok(()); // an empty file is an empty database: made a store below
    }
    if header.len() < 100 || !header.starts_with(b"SQLite format 3\0") {
        return Err(Error::NotAStore {
            path: path.to_owned(),
        });
    }
    let field = |at: usize| i32::from_be_bytes(header[at..at + 4].try_into().expect("4 bytes"));
    let (user_version, application_id) = (field(60), field(68));
    if application_id != 0 && application_id != migrate::APPLICATION_ID {
        return Err(Error::NotAStore {
            path: path.to_owned(),
        });
    }
    check_version(path, i64::from(user_version))
}

/// The same check through SQL, which also sees a header still in the WAL
/// and a foreign database that sets no application id; run before the
/// connection changes anything.
fn check_schema(path: &Path, conn: &Connection) -> Result<(), Error> {
    let read = |sql: &str| -> Result<i64, Error> {
        conn.query_row(sql, [], |row| row.get(0))
            .map_err(|source| classify(path, source))
    };
    let application_id = read("PRAGMA application_id")?;
    let version = read("PRAGMA user_version")?;
    let objects = read("SELECT count(*) FROM sqlite_master")?;
    let blank = application_id == 0 && version == 0 && objects == 0;
    if application_id != i64::from(migrate::APPLICATION_ID) && !blank {
        return Err(Error::NotAStore {
            path: path.to_owned(),
        });
    }
    check_version(path, version)
}

fn check_version(path: &Path, version: i64) -> Result<(), Error> {
    if version > migrate::current_version() {
        return Err(Error::TooNew {
            path: path.to_owned(),
            found: version,
            known: migrate::current_version(),
        });
    }
    Ok(())
}

/// Bytecode from the store will be executed, so, as ssh does for its files,
/// the store and its directory must belong to the user (or root) and be
/// writable by nobody else: anyone who can write there can plant code.
#[cfg(unix)]
fn check_private(path: &Path) -> Result<(), Error> {
    use std::os::unix::fs::MetadataExt;
    let me = current_uid();
    let dir = path
        .parent()
        .filter(|dir| !dir.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    for (what, checked) in [("directory", dir), ("file", path)] {
        let metadata = std::fs::metadata(checked).map_err(|source| Error::Read {
            path: checked.to_owned(),
            source,
        })?;
        let problem = if metadata.uid() != me && metadata.uid() != 0 {
            Some(format!("is owned by another user (uid {})", metadata.uid()))
        } else if metadata.mode() & 0o022 != 0 {
            Some(format!(
                "is writable by others (mode {:o})",
                metadata.mode() & 0o7777
            ))
        } else {
            None
        };
        if let Some(problem) = problem {
            return Err(Error::NotPrivate {
                path: checked.to_owned(),
                what,
                problem,
            });
        }
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_private(_path: &Path) -> Result<(), Error> {
    Ok(())
}

/// This process's effective uid.
#[cfg(unix)]
#[allow(unsafe_code)]
pub fn current_uid() -> u32 {
    // SAFETY: geteuid(2) cannot fail and has no preconditions.
    unsafe { libc::geteuid() }
}

/// SQLite reports a foreign file as `NotADatabase`: say so plainly.
fn classify(path: &Path, source: rusqlite::Error) -> Error {
    if source.sqlite_error_code() == Some(rusqlite::ErrorCode::NotADatabase) {
        Error::NotAStore {
            path: path.to_owned(),
        }
    } else {
        Error::Open {
            path: path.to_owned(),
            source,
        }
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
