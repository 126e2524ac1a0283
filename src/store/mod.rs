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

mod entries;
mod migrate;
mod profiles;
mod stats;

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

pub use entries::{Lookup, NewEntry, NewFailure, StoredFailure};
pub use stats::{ProfileStats, Stats};

/// How long a process waits for another one's write lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(120);

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
        if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
            create_private_dir(dir).map_err(|source| Error::CreateDir {
                path: dir.to_owned(),
                source,
            })?;
        }
        if path.exists() {
            check_existing(path)?;
        } else {
            create_private_file(path);
        }
        let open_error = |source| Error::Open {
            path: path.to_owned(),
            source,
        };
        let mut conn = Connection::open(path).map_err(open_error)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(open_error)?;
        configure(&mut conn).map_err(|source| classify(path, source))?;
        Ok(Self {
            conn,
            path: path.to_owned(),
        })
    }

    /// Where this store lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Moves everything in the WAL into the main file. Best effort: another
    /// process reading at this moment just leaves some for the next run.
    pub fn checkpoint(&self) {
        if let Err(err) = self
            .conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        {
            tracing::debug!("checkpoint skipped: {err}");
        }
    }

    fn sqlite_error(&self, source: rusqlite::Error) -> Error {
        Error::Sqlite {
            path: self.path.clone(),
            source,
        }
    }
}

fn configure(conn: &mut Connection) -> rusqlite::Result<()> {
    conn.pragma_update(None, "foreign_keys", true)?;
    let pages: i64 = conn.query_row("PRAGMA page_count", [], |row| row.get(0))?;
    if pages == 0 {
        // Only takes effect before the first table is created.
        conn.pragma_update(None, "auto_vacuum", "INCREMENTAL")?;
    }
    conn.query_row("PRAGMA journal_mode = WAL", [], |_| Ok(()))?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    migrate::migrate(conn)
}

/// Refuses a file that is not an rcache store, or is from a newer rcache,
/// looking at it through a read-only connection so it is left untouched.
fn check_existing(path: &Path) -> Result<(), Error> {
    if std::fs::metadata(path).is_ok_and(|metadata| metadata.len() == 0) {
        return Ok(()); // an empty file is an empty database: made a store below
    }
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|source| classify(path, source))?;
    conn.busy_timeout(BUSY_TIMEOUT)
        .map_err(|source| classify(path, source))?;
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
    if version > migrate::current_version() {
        return Err(Error::TooNew {
            path: path.to_owned(),
            found: version,
            known: migrate::current_version(),
        });
    }
    Ok(())
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

/// Creates the store file 0600 before SQLite does (it would use the umask);
/// SQLite gives its `-wal` and `-shm` files the same mode. Losing a creation
/// race to another rcache is fine, and any real problem resurfaces in open.
fn create_private_file(path: &Path) {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    if let Err(err) = options.open(path) {
        tracing::debug!("creating `{}`: {err}", path.display());
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
