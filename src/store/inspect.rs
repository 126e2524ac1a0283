//! Opening a store only to look at it (`rcache doctor`): never created,
//! upgraded or written, and the same checks as [`Store::open`] decide
//! whether rcache would use it at all.

use std::path::Path;

use rusqlite::{Connection, OpenFlags};

use super::{Error, Store, classify, configure_reads, guard, immutable_uri, migrate, read_only};

/// What is at a store's path, seen without changing anything.
pub enum Inspection {
    /// No file there (or not even its directory): no store yet.
    Absent,
    /// An empty file or an empty database: the next run makes it a store.
    Empty,
    /// A store at an older schema, which the next writable run upgrades;
    /// not read, since its tables are not the ones this rcache queries.
    Outdated { version: i64 },
    /// A store at the current schema, open for reading: every write
    /// through it is skipped, as for a read-only store.
    Open {
        store: Box<Store>,
        /// Why this process could not write it, if it could not: what any
        /// other command would say about it.
        read_only: Option<String>,
    },
}

impl Store {
    /// Opens the store at `path` for reading only, after the checks
    /// [`Store::open`] makes (an rcache store, not from a newer rcache,
    /// private to the user): those refusals are its errors.
    ///
    /// A store with no `-wal` file beside it (every store between runs: the
    /// last connection checkpoints and removes it) is opened `immutable`,
    /// which reads the main file without creating or locking anything. One
    /// with a `-wal` (a run is going on, or one was killed) is opened
    /// read-only through SQLite's locks, so what the WAL holds is seen.
    pub fn open_to_inspect(path: &Path) -> Result<Inspection, Error> {
        if !path.exists() {
            return Ok(Inspection::Absent);
        }
        guard::check_header(path)?;
        guard::check_private(path)?;
        let read_only = guard::read_only_reason(path);
        let uri = if guard::with_suffix(path, "-wal").exists() {
            path.as_os_str().to_owned()
        } else {
            immutable_uri(path)
        };
        let conn = Connection::open_with_flags(
            uri,
            OpenFlags::SQLITE_OPEN_READ_ONLY
                | OpenFlags::SQLITE_OPEN_URI
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|source| Error::Open {
            path: path.to_owned(),
            source,
        })?;
        let version = guard::check_schema(path, &conn)?;
        if version == 0 {
            return Ok(Inspection::Empty);
        }
        if version < migrate::current_version() {
            return Ok(Inspection::Outdated { version });
        }
        configure_reads(&conn).map_err(|source| classify(path, source))?;
        let store = Box::new(Self {
            conn,
            path: path.to_owned(),
            stored_code: false,
            read_only: Some(read_only::ReadOnly::new(
                "opened only to be inspected".to_owned(),
            )),
        });
        Ok(Inspection::Open { store, read_only })
    }
}
