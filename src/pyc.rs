//! What CPython expects of a pyc file: its header (PEP 552) and its path
//! (`importlib.util.cache_from_source`, with or without a pycache prefix).

use std::ffi::OsString;
use std::fmt::Write as _;
use std::hash::Hasher;
use std::path::{Component, Path, PathBuf};

use siphasher::sip::{SipHasher13, SipHasher24};

use crate::interpreter::{Profile, SourceHash};

/// How a pyc says which source it was made from (PEP 552).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Source mtime and size: the default of `py_compile` and imports.
    Timestamp,
    /// The source's hash, checked by the import system against the source.
    CheckedHash,
    /// The source's hash, never checked: the pyc is trusted as it is.
    UncheckedHash,
}

impl Mode {
    /// The name used on the command line and in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Timestamp => "timestamp",
            Self::CheckedHash => "checked-hash",
            Self::UncheckedHash => "unchecked-hash",
        }
    }
}

/// What of the source the timestamp header records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourceStamp {
    /// `int(st_mtime)`, before the 32-bit mask.
    pub mtime: i64,
    /// `st_size`, before the 32-bit mask.
    pub size: u64,
}

impl SourceStamp {
    /// The stamp CPython's `SourceLoader` takes from `metadata`: it builds
    /// the float `st_mtime` as `sec + nsec * 1e-9` and truncates it with
    /// `int()`, so the float's rounding is reproduced here.
    #[cfg(unix)]
    pub fn of(metadata: &std::fs::Metadata) -> Self {
        use std::os::unix::fs::MetadataExt;
        let st_mtime = metadata.mtime() as f64 + metadata.mtime_nsec() as f64 * 1e-9;
        Self {
            mtime: st_mtime.trunc() as i64,
            size: metadata.size(),
        }
    }

    /// The same from portable metadata.
    #[cfg(not(unix))]
    pub fn of(metadata: &std::fs::Metadata) -> Self {
        let mtime = metadata
            .modified()
            .ok()
            .and_then(|time| time.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |elapsed| elapsed.as_secs() as i64);
        Self {
            mtime,
            size: metadata.len(),
        }
    }
}

/// What a pyc's header holds to tie it to its source (PEP 552).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Validation {
    /// The source's mtime and size ([`Mode::Timestamp`]).
    Timestamp(SourceStamp),
    /// The source's [`source_hash`], checked on import or not.
    Hash { checked: bool, hash: [u8; 8] },
}

/// The 16-byte header CPython writes in front of the marshalled code.
pub fn header(magic: [u8; 4], validation: Validation) -> [u8; 16] {
    let mut header = [0u8; 16];
    header[..4].copy_from_slice(&magic);
    match validation {
        Validation::Timestamp(stamp) => {
            // `_pack_uint32(x)` is `(int(x) & 0xFFFFFFFF).to_bytes(4, 'little')`.
            header[8..12].copy_from_slice(&((stamp.mtime & 0xFFFF_FFFF) as u32).to_le_bytes());
            header[12..16].copy_from_slice(&((stamp.size & 0xFFFF_FFFF) as u32).to_le_bytes());
        }
        Validation::Hash { checked, hash } => {
            let flags: u32 = if checked { 0b11 } else { 0b01 };
            header[4..8].copy_from_slice(&flags.to_le_bytes());
            header[8..16].copy_from_slice(&hash);
        }
    }
    header
}

/// Why CPython's `_classify_pyc` rejects a pyc: it then ignores the file
/// and compiles the source instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BadHeader {
    /// The first 4 bytes are not this interpreter's magic number (another
    /// build of Python, or not a pyc at all): what they are.
    Magic(Vec<u8>),
    /// The magic number is right but the 16-byte header is cut short: its
    /// length.
    Truncated(usize),
    /// Flags other than the two PEP 552 defines.
    Flags(u32),
}

impl std::fmt::Display for BadHeader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Magic(found) => write!(f, "bad magic number {}", hex(found)),
            Self::Truncated(length) => {
                write!(f, "header cut short ({length} bytes of 16)")
            }
            Self::Flags(flags) => write!(f, "invalid flags {flags:#x}"),
        }
    }
}

/// `_classify_pyc(data, ...)` for an interpreter with `magic`: the magic
/// number first, then the length, then the flags, in CPython's order (so a
/// file shorter than 4 bytes has a bad magic number). Returns how the pyc
/// says it must be checked against its source.
pub fn classify(data: &[u8], magic: [u8; 4]) -> Result<Mode, BadHeader> {
    if data.get(..4) != Some(magic.as_slice()) {
        return Err(BadHeader::Magic(data[..data.len().min(4)].to_vec()));
    }
    if data.len() < 16 {
        return Err(BadHeader::Truncated(data.len()));
    }
    let flags = u32::from_le_bytes(data[4..8].try_into().expect("4 bytes"));
    match flags {
        // 0b10 passes `_classify_pyc`; bit 0 clear makes it a timestamp pyc.
        0 | 0b10 => Ok(Mode::Timestamp),
        0b01 => Ok(Mode::UncheckedHash),
        0b11 => Ok(Mode::CheckedHash),
        _ => Err(BadHeader::Flags(flags)),
    }
}

/// Whether a classified pyc's header (`data`, at least 16 bytes) records
/// the source as `validation` describes it: bytes 8..16 are what
/// [`header`] writes, which is what `_validate_timestamp_pyc` (mtime and
/// size, each masked to 32 bits) and `_validate_hash_pyc` compare.
pub fn records(data: &[u8], magic: [u8; 4], validation: Validation) -> bool {
    data.get(8..16) == Some(&header(magic, validation)[8..16])
}

/// Lower-case hex of `bytes`, as pyc fields are shown to users.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut text, byte| {
        let _ = write!(text, "{byte:02x}");
        text
    })
}

/// `NAME`, cache tag and optimization level of a pyc file name
/// `NAME.TAG[.opt-N].pyc` (the inverse of [`cache_path`]'s name), for any
/// tag; `None` for other names.
pub fn parse_cache_name(name: &[u8]) -> Option<(&[u8], &[u8], u8)> {
    let rest = name.strip_suffix(b".pyc")?;
    let (rest, level) = match rest.windows(5).rposition(|window| window == b".opt-") {
        Some(at) => {
            let digits = std::str::from_utf8(&rest[at + 5..]).ok()?;
            if digits.is_empty() || !digits.bytes().all(|byte| byte.is_ascii_digit()) {
                return None;
            }
            (&rest[..at], digits.parse().ok()?)
        }
        None => (rest, 0),
    };
    let dot = rest.iter().rposition(|&byte| byte == b'.')?;
    let (stem, tag) = (&rest[..dot], &rest[dot + 1..]);
    (!stem.is_empty() && !tag.is_empty()).then_some((stem, tag, level))
}

/// `_imp.source_hash(_RAW_MAGIC_NUMBER, source)`: SipHash keyed with the
/// magic number read as a little-endian integer, and zero.
pub fn source_hash(profile: &Profile, source: &[u8]) -> [u8; 8] {
    let key = u64::from(u32::from_le_bytes(profile.magic));
    let value = match profile.source_hash {
        SourceHash::SipHash13 => {
            let mut hasher = SipHasher13::new_with_keys(key, 0);
            hasher.write(source);
            hasher.finish()
        }
        SourceHash::SipHash24 => {
            let mut hasher = SipHasher24::new_with_keys(key, 0);
            hasher.write(source);
            hasher.finish()
        }
    };
    value.to_le_bytes()
}

/// `importlib.util.cache_from_source(source, optimization=...)` for this
/// interpreter: `DIR/__pycache__/NAME.TAG[.opt-N].pyc`, or under `prefix`
/// the source's absolute directory re-rooted there (`sys.pycache_prefix`).
/// `source` must be absolute.
pub fn cache_path(source: &Path, cache_tag: &str, optimize: u8, prefix: Option<&Path>) -> PathBuf {
    let dir = source.parent().unwrap_or(Path::new("/"));
    let name = source.file_name().unwrap_or_default().as_encoded_bytes();
    // `base, sep, rest = tail.rpartition('.')`, then `(base or rest) + sep + tag`,
    // so `foo.py` gives `foo.TAG`, `.py` gives `py.TAG` and `foo` gives `fooTAG`.
    let (first, sep): (&[u8], &[u8]) = match name.iter().rposition(|&byte| byte == b'.') {
        Some(dot) if dot > 0 => (&name[..dot], b"."),
        Some(dot) => (&name[dot + 1..], b"."),
        None => (name, b""),
    };
    let mut file = [first, sep, cache_tag.as_bytes()].concat();
    if optimize > 0 {
        file.extend_from_slice(format!(".opt-{optimize}").as_bytes());
    }
    file.extend_from_slice(b".pyc");
    let file = os_string_from_bytes(file);
    match prefix {
        Some(prefix) => prefix_dir(prefix, dir).join(file),
        None => dir.join("__pycache__").join(file),
    }
}

/// Where the pycs of the sources in the absolute directory `dir` go under
/// `prefix`: `_path_join(prefix, head.lstrip(path_separators))`.
pub fn prefix_dir(prefix: &Path, dir: &Path) -> PathBuf {
    let relative: PathBuf = dir
        .components()
        .filter(|part| !matches!(part, Component::RootDir | Component::Prefix(_)))
        .collect();
    prefix.join(relative)
}

/// The file name made of `bytes` (an OS string's bytes plus ASCII).
#[cfg(unix)]
pub fn os_string_from_bytes(bytes: Vec<u8>) -> OsString {
    use std::os::unix::ffi::OsStringExt;
    OsString::from_vec(bytes)
}

/// The file name made of `bytes` (an OS string's bytes plus ASCII).
#[cfg(not(unix))]
pub fn os_string_from_bytes(bytes: Vec<u8>) -> OsString {
    OsString::from(String::from_utf8_lossy(&bytes).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile(source_hash: SourceHash, magic: [u8; 4]) -> Profile {
        Profile {
            implementation: "cpython".into(),
            version: "3.12.1".into(),
            cache_tag: "cpython-312".into(),
            magic,
            source_hash,
        }
    }

    #[test]
    fn cache_paths_follow_cache_from_source() {
        let path = |source: &str, level, prefix: Option<&str>| {
            cache_path(
                Path::new(source),
                "cpython-312",
                level,
                prefix.map(Path::new),
            )
        };
        assert_eq!(
            path("/a/b/mod.py", 0, None),
            Path::new("/a/b/__pycache__/mod.cpython-312.pyc")
        );
        assert_eq!(
            path("/a/b/mod.py", 2, None),
            Path::new("/a/b/__pycache__/mod.cpython-312.opt-2.pyc")
        );
        assert_eq!(
            path("/a/x.y.py", 0, None),
            Path::new("/a/__pycache__/x.y.cpython-312.pyc")
        );
        assert_eq!(
            path("/a/.py", 0, None),
            Path::new("/a/__pycache__/py.cpython-312.pyc")
        );
        assert_eq!(
            path("/a/script", 0, None),
            Path::new("/a/__pycache__/scriptcpython-312.pyc")
        );
        assert_eq!(
            path("/a/b/mod.py", 1, Some("/cache")),
            Path::new("/cache/a/b/mod.cpython-312.opt-1.pyc")
        );
    }

    #[test]
    fn timestamp_header_masks_to_32_bits() {
        let profile = profile(SourceHash::SipHash13, *b"\xcb\x0d\x0d\x0a");
        let stamp = SourceStamp {
            mtime: -1,
            size: (1 << 32) + 5,
        };
        let header = header(profile.magic, Validation::Timestamp(stamp));
        assert_eq!(&header[..4], b"\xcb\x0d\x0d\x0a");
        assert_eq!(&header[4..8], &[0; 4]);
        assert_eq!(&header[8..12], &[0xff; 4]);
        assert_eq!(&header[12..16], &5u32.to_le_bytes());
    }

    #[test]
    fn classify_follows_classify_pyc() {
        let magic = *b"\xcb\x0d\x0d\x0a";
        let stamp = SourceStamp { mtime: 7, size: 9 };
        let timestamp = header(magic, Validation::Timestamp(stamp));
        assert_eq!(classify(&timestamp, magic), Ok(Mode::Timestamp));
        assert!(records(&timestamp, magic, Validation::Timestamp(stamp)));
        let edited = SourceStamp { mtime: 7, size: 10 };
        assert!(!records(&timestamp, magic, Validation::Timestamp(edited)));
        let checked = header(
            magic,
            Validation::Hash {
                checked: true,
                hash: [1; 8],
            },
        );
        assert_eq!(classify(&checked, magic), Ok(Mode::CheckedHash));
        let unchecked = header(
            magic,
            Validation::Hash {
                checked: false,
                hash: [1; 8],
            },
        );
        assert_eq!(classify(&unchecked, magic), Ok(Mode::UncheckedHash));
        assert_eq!(
            classify(b"\xcb\x0d", magic),
            Err(BadHeader::Magic(b"\xcb\x0d".to_vec()))
        );
        assert_eq!(
            classify(&timestamp[..10], magic),
            Err(BadHeader::Truncated(10))
        );
        let mut flagged = timestamp;
        flagged[4] = 4;
        assert_eq!(classify(&flagged, magic), Err(BadHeader::Flags(4)));
        assert_eq!(
            classify(&timestamp, *b"\x55\x0d\x0d\x0a"),
            Err(BadHeader::Magic(magic.to_vec()))
        );
    }

    #[test]
    fn cache_names_parse_back() {
        assert_eq!(
            parse_cache_name(b"mod.cpython-312.pyc"),
            Some((&b"mod"[..], &b"cpython-312"[..], 0))
        );
        assert_eq!(
            parse_cache_name(b"a.b.cpython-39.opt-2.pyc"),
            Some((&b"a.b"[..], &b"cpython-39"[..], 2))
        );
        assert_eq!(parse_cache_name(b"mod.pyc"), None);
        assert_eq!(parse_cache_name(b"mod.cpython-312.opt-.pyc"), None);
        assert_eq!(parse_cache_name(b".rcache-x.tmp"), None);
    }

    /// `_imp.source_hash(_RAW_MAGIC_NUMBER, b"rcache source_hash probe")`
    /// on CPython 3.11.7 and 3.8.18 (the probe's test vector).
    #[test]
    fn source_hash_matches_cpython() {
        let new = profile(SourceHash::SipHash13, 168_627_623u32.to_le_bytes());
        assert_eq!(
            source_hash(&new, b"rcache source_hash probe"),
            [0x88, 0xba, 0x8d, 0xae, 0x7a, 0x46, 0xcb, 0x72]
        );
        let old = profile(SourceHash::SipHash24, 168_627_541u32.to_le_bytes());
        let validation = Validation::Hash {
            checked: true,
            hash: source_hash(&old, b"rcache source_hash probe"),
        };
        let header = header(old.magic, validation);
        assert_eq!(&header[4..8], &3u32.to_le_bytes());
        assert_eq!(
            &header[8..],
            &[0xa1, 0x62, 0x8c, 0xb8, 0xa6, 0x34, 0xcd, 0xa7]
        );
    }
}
