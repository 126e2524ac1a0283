//! File identity: (device, inode, size, mtime, ctime), to tell a file is
//! unchanged without reading it.

use std::path::Path;

/// What identifies a file's contents without reading it: any write, any
/// replacement changes one of these fields (ctime cannot be set back).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FileIdentity {
    pub device: u64,
    pub inode: u64,
    pub size: u64,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
}

impl FileIdentity {
    /// The identity of the file `path` points to (symlinks followed).
    pub fn of(path: &Path) -> std::io::Result<Self> {
        let metadata = std::fs::metadata(path)?;
        Ok(Self::from_metadata(&metadata))
    }

    /// The identity `metadata` describes.
    #[cfg(unix)]
    pub fn from_metadata(metadata: &std::fs::Metadata) -> Self {
        use std::os::unix::fs::MetadataExt;
        Self {
            device: metadata.dev(),
            inode: metadata.ino(),
            size: metadata.size(),
            mtime_ns: metadata.mtime() * 1_000_000_000 + metadata.mtime_nsec(),
            ctime_ns: metadata.ctime() * 1_000_000_000 + metadata.ctime_nsec(),
        }
    }

    /// The identity `metadata` describes (no device or inode off Unix).
    #[cfg(not(unix))]
    pub fn from_metadata(metadata: &std::fs::Metadata) -> Self {
        let nanos = |time: std::io::Result<std::time::SystemTime>| {
            time.ok()
                .and_then(|time| time.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |elapsed| elapsed.as_nanos() as i64)
        };
        Self {
            device: 0,
            inode: 0,
            size: metadata.len(),
            mtime_ns: nanos(metadata.modified()),
            ctime_ns: nanos(metadata.created()),
        }
    }
}
