//! What a file must be before it is used as a store: an rcache store (or
//! nothing yet), not from a newer rcache, private to the user, and whether
//! this process may write it.

use std::io::Read as _;
use std::path::Path;

use rusqlite::Connection;

use super::{Error, classify, migrate, parent_dir};

/// Refuses a file that is not an rcache store, or is from a newer rcache,
/// from its 100-byte SQLite header alone, before SQLite opens it (which
/// could create `-wal` and `-shm` files beside it).
pub(super) fn check_header(path: &Path) -> Result<(), Error> {
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
/// connection changes anything. Returns the store's schema version.
pub(super) fn check_schema(path: &Path, conn: &Connection) -> Result<i64, Error> {
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
    check_version(path, version)?;
    Ok(version)
}

/// The file's length and the length its header gives, when the file is
/// shorter: what a copy cut short leaves. Asked only once SQLite has found
/// the file damaged (a checkpoint in progress can make a sound store look
/// short for a moment).
pub(super) fn truncation(path: &Path) -> Option<(u64, u64)> {
    let mut header = [0; 100];
    let mut file = std::fs::File::open(path).ok()?;
    file.read_exact(&mut header).ok()?;
    let found = file.metadata().ok()?.len();
    let page_size = match u16::from_be_bytes([header[16], header[17]]) {
        1 => 65_536,
        size => u64::from(size),
    };
    let pages = u64::from(u32::from_be_bytes(header[28..32].try_into().ok()?));
    let expected = pages * page_size;
    (found < expected).then_some((found, expected))
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
/// the store, its directory and its `-wal` and `-shm` files (when they
/// exist) must belong to the user (or root) and be writable by nobody
/// else: anyone who can write there can plant code.
#[cfg(unix)]
pub(super) fn check_private(path: &Path) -> Result<(), Error> {
    use std::os::unix::fs::MetadataExt;
    let me = current_uid();
    let dir = parent_dir(path);
    let (wal, shm) = (with_suffix(path, "-wal"), with_suffix(path, "-shm"));
    let checks = [
        ("directory", dir, true),
        ("file", path, true),
        ("WAL file", &wal, false),
        ("shared-memory file", &shm, false),
    ];
    for (what, checked, required) in checks {
        let metadata = match std::fs::metadata(checked) {
            Ok(metadata) => metadata,
            Err(err) if !required && err.kind() == std::io::ErrorKind::NotFound => continue,
            Err(source) => {
                return Err(Error::Read {
                    path: checked.to_owned(),
                    source,
                });
            }
        };
        let problem = if metadata.uid() != me && metadata.uid() != 0 {
            Some(format!("is owned by another user (uid {})", metadata.uid()))
        } else if metadata.mode() & 0o022 != 0 {
            Some(format!(
                "is writable by others (mode {:o}; fix with `chmod go-w`)",
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
pub(super) fn check_private(_path: &Path) -> Result<(), Error> {
    Ok(())
}

/// Why this process cannot write the store at `path`, if it cannot: a
/// read-only mount, an immutable file, or no write permission on the file
/// or on its directory (where SQLite makes the `-wal` and `-shm` files).
/// Asked of the kernel with the effective ids, as the writes would be.
#[cfg(unix)]
pub(super) fn read_only_reason(path: &Path) -> Option<String> {
    if let Err(err) = writable(path) {
        return Some(err.to_string());
    }
    writable(parent_dir(path))
        .err()
        .map(|err| format!("its directory: {err}"))
}

#[cfg(not(unix))]
pub(super) fn read_only_reason(_path: &Path) -> Option<String> {
    None
}

/// `faccessat(W_OK, AT_EACCESS)`: what a write by this process would get.
#[cfg(unix)]
#[allow(unsafe_code)]
fn writable(path: &Path) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    // SAFETY: `path` is a valid NUL-terminated string that outlives the call.
    let status =
        unsafe { libc::faccessat(libc::AT_FDCWD, path.as_ptr(), libc::W_OK, libc::AT_EACCESS) };
    if status == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// `path` with `suffix` appended to its file name (`store.sqlite3-wal`).
pub(super) fn with_suffix(path: &Path, suffix: &str) -> std::path::PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    name.into()
}

/// This process's effective uid.
#[cfg(unix)]
#[allow(unsafe_code)]
pub fn current_uid() -> u32 {
    // SAFETY: geteuid(2) cannot fail and has no preconditions.
    unsafe { libc::geteuid() }
}
