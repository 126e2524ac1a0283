//! Export archives: the one file `rcache export` writes and `rcache import`
//! reads, so a CI job can carry exactly the code a repository needs.
//!
//! An archive is a stream of records, written and read one at a time (a
//! store's code is never all in memory), ending in a trailer that checksums
//! every byte before it, so a reader can check a whole archive before using
//! any of it.
//!
//! ## Format, version 1
//!
//! Integers are little-endian. A *string* is a u32 byte length followed by
//! that many bytes of UTF-8. An *optional* value is one byte, 0 (none) or 1
//! (some), followed by the value when 1.
//!
//! ```text
//! header    magic     8 bytes   "RCACHEX\0"
//!           version   u32       1
//! records   type      u8        1 profile, 2 entry, 3 failure, 4 trailer
//!           length    u32       bytes in the body
//!           body      length bytes, as below
//! ```
//!
//! * **profile** (1): implementation, version, cache tag (strings), magic
//!   number (4 bytes), `_imp.source_hash` algorithm (string: `siphash13` or
//!   `siphash24`). Profiles are numbered from 0 in the order they appear;
//!   each comes before the first record that names it.
//! * **entry** (2): key (32 bytes), profile number (u32), optimization level
//!   (u8, 0–2), raw size (u64: bytes of marshal data), checksum (32 bytes:
//!   blake3 of the marshal data), warnings (optional string), created and
//!   last used (i64 Unix seconds each), then, for the rest of the body, the
//!   zstd-compressed marshal data as the store keeps it.
//! * **failure** (3): key (32 bytes), profile number (u32), optimization
//!   level (u8), error type and message (strings), line and column
//!   (optional u32 each), created and last used (i64 each).
//! * **trailer** (4), last in the file: the number of records before it
//!   (u64) and blake3 of every byte before it, header included (32 bytes).
//!
//! A reader refuses a file without the magic ([`FormatError::NotAnArchive`])
//! and a version above [`VERSION`] ([`FormatError::TooNew`]: a later
//! format may change anything after the version). Anything else unexpected
//! — an unknown record type, a malformed body, a profile named before it
//! appears, a wrong count or checksum, a missing trailer, bytes after it —
//! is corruption ([`FormatError::Corrupt`]). The code in entries is checked
//! against its own checksum by the importer, entry by entry.

use std::io::{self, Read, Write};

use crate::interpreter::{Profile, SourceHash};
use crate::key::Key;
use crate::store::{EntryRow, FailureRow, StoredFailure};

/// The first bytes of every archive.
pub const MAGIC: [u8; 8] = *b"RCACHEX\0";
/// The format this rcache writes, and the newest it reads.
pub const VERSION: u32 = 1;

/// The most marshal data an entry may declare (1 GiB): beyond it is
/// corruption, not code, and must not be allocated.
const MAX_RAW_SIZE: u64 = 1 << 30;

const PROFILE: u8 = 1;
const ENTRY: u8 = 2;
const FAILURE: u8 = 3;
const TRAILER: u8 = 4;
/// Record count and checksum.
const TRAILER_LENGTH: u32 = 8 + 32;

/// Why an archive cannot be read; each reads after the archive's name.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    #[error("is not an rcache export")]
    NotAnArchive,
    #[error("was written by a newer rcache (format {found}, this rcache reads up to {VERSION})")]
    TooNew { found: u32 },
    #[error("is corrupt or truncated: {0}")]
    Corrupt(String),
    #[error("cannot be read: {0}")]
    Io(#[from] io::Error),
}

/// One record of an archive, the trailer aside.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// The next profile; its number is the count of profiles before it.
    Profile(Profile),
    /// Compiled code, for the profile of that number.
    Entry { profile: u32, entry: EntryRow },
    /// A remembered compile failure, for the profile of that number.
    Failure { profile: u32, failure: FailureRow },
}

/// Writes an archive to `output`, record by record.
pub struct Writer<W: Write> {
    output: W,
    /// Every byte written so far.
    hasher: blake3::Hasher,
    bytes: u64,
    records: u64,
    profiles: u32,
    /// The body being built, reused from one record to the next.
    body: Vec<u8>,
}

impl<W: Write> Writer<W> {
    /// Starts an archive: writes its header.
    pub fn new(output: W) -> io::Result<Self> {
        let mut writer = Self {
            output,
            hasher: blake3::Hasher::new(),
            bytes: 0,
            records: 0,
            profiles: 0,
            body: Vec::new(),
        };
        writer.put(&MAGIC)?;
        writer.put(&VERSION.to_le_bytes())?;
        Ok(writer)
    }

    /// Writes a profile record; returns the number records name it by.
    pub fn profile(&mut self, profile: &Profile) -> io::Result<u32> {
        self.body.clear();
        put_string(&mut self.body, &profile.implementation)?;
        put_string(&mut self.body, &profile.version)?;
        put_string(&mut self.body, &profile.cache_tag)?;
        self.body.extend_from_slice(&profile.magic);
        put_string(&mut self.body, profile.source_hash.as_str())?;
        self.record(PROFILE, &[])?;
        self.profiles += 1;
        Ok(self.profiles - 1)
    }

    /// Writes an entry record for the profile numbered `profile`.
    pub fn entry(&mut self, profile: u32, entry: &EntryRow) -> io::Result<()> {
        self.check_profile(profile)?;
        self.body.clear();
        self.body.extend_from_slice(&entry.key.0);
        self.body.extend_from_slice(&profile.to_le_bytes());
        self.body.push(entry.optimize);
        self.body.extend_from_slice(&entry.raw_size.to_le_bytes());
        self.body.extend_from_slice(&entry.checksum);
        put_optional_string(&mut self.body, entry.warnings.as_deref())?;
        self.body.extend_from_slice(&entry.created.to_le_bytes());
        self.body.extend_from_slice(&entry.last_used.to_le_bytes());
        self.record(ENTRY, &entry.data)
    }

    /// Writes a failure record for the profile numbered `profile`.
    pub fn failure(&mut self, profile: u32, row: &FailureRow) -> io::Result<()> {
        self.check_profile(profile)?;
        self.body.clear();
        self.body.extend_from_slice(&row.key.0);
        self.body.extend_from_slice(&profile.to_le_bytes());
        self.body.push(row.optimize);
        put_string(&mut self.body, &row.failure.error_type)?;
        put_string(&mut self.body, &row.failure.message)?;
        put_optional_u32(&mut self.body, row.failure.line);
        put_optional_u32(&mut self.body, row.failure.col);
        self.body.extend_from_slice(&row.created.to_le_bytes());
        self.body.extend_from_slice(&row.last_used.to_le_bytes());
        self.record(FAILURE, &[])
    }

    /// Writes the trailer and flushes; returns the output and the size of
    /// the archive in bytes.
    pub fn finish(mut self) -> io::Result<(W, u64)> {
        let checksum = self.hasher.finalize();
        self.put(&[TRAILER])?;
        self.put(&TRAILER_LENGTH.to_le_bytes())?;
        self.put(&self.records.to_le_bytes())?;
        self.put(checksum.as_bytes())?;
        self.output.flush()?;
        Ok((self.output, self.bytes))
    }

    fn check_profile(&self, profile: u32) -> io::Result<()> {
        if profile < self.profiles {
            Ok(())
        } else {
            Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("profile {profile} is not in the archive yet"),
            ))
        }
    }

    /// Writes a record of type `kind`: the body built, then `tail`.
    fn record(&mut self, kind: u8, tail: &[u8]) -> io::Result<()> {
        let length = u32::try_from(self.body.len() + tail.len())
            .map_err(|_| too_long("record"))?
            .to_le_bytes();
        self.put(&[kind])?;
        self.put(&length)?;
        let body = std::mem::take(&mut self.body);
        let written = self.put(&body).and_then(|()| self.put(tail));
        self.body = body;
        self.records += 1;
        written
    }

    fn put(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.output.write_all(bytes)?;
        self.hasher.update(bytes);
        self.bytes += bytes.len() as u64;
        Ok(())
    }
}

fn too_long(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("{what} too long for an archive"),
    )
}

fn put_string(body: &mut Vec<u8>, text: &str) -> io::Result<()> {
    let length = u32::try_from(text.len()).map_err(|_| too_long("string"))?;
    body.extend_from_slice(&length.to_le_bytes());
    body.extend_from_slice(text.as_bytes());
    Ok(())
}

fn put_optional_string(body: &mut Vec<u8>, text: Option<&str>) -> io::Result<()> {
    if let Some(text) = text {
        body.push(1);
        put_string(body, text)
    } else {
        body.push(0);
        Ok(())
    }
}

fn put_optional_u32(body: &mut Vec<u8>, value: Option<u32>) {
    match value {
        Some(value) => {
            body.push(1);
            body.extend_from_slice(&value.to_le_bytes());
        }
        None => body.push(0),
    }
}

/// Reads an archive from `input`, record by record.
pub struct Reader<R: Read> {
    input: R,
    /// Every byte read so far.
    hasher: blake3::Hasher,
    bytes: u64,
    records: u64,
    profiles: u32,
    /// The body being decoded, reused from one record to the next.
    body: Vec<u8>,
    /// The trailer was read and checked.
    finished: bool,
}

impl<R: Read> Reader<R> {
    /// Reads and checks the header.
    pub fn open(input: R) -> Result<Self, FormatError> {
        let mut reader = Self {
            input,
            hasher: blake3::Hasher::new(),
            bytes: 0,
            records: 0,
            profiles: 0,
            body: Vec::new(),
            finished: false,
        };
        let mut magic = [0; MAGIC.len()];
        if reader.read_up_to(&mut magic)? < MAGIC.len() || magic != MAGIC {
            return Err(FormatError::NotAnArchive);
        }
        let mut version = [0; 4];
        if reader.read_up_to(&mut version)? < version.len() {
            return Err(corrupt("it ends inside its header"));
        }
        reader.hasher.update(&magic);
        reader.hasher.update(&version);
        match u32::from_le_bytes(version) {
            0 => Err(corrupt("its format version is 0")),
            VERSION => Ok(reader),
            found => Err(FormatError::TooNew { found }),
        }
    }

    /// The next record; `None` once the trailer is read and the whole
    /// archive found intact.
    pub fn next_record(&mut self) -> Result<Option<Record>, FormatError> {
        if self.finished {
            return Ok(None);
        }
        let at = self.bytes;
        let mut frame = [0; 5];
        match self.read_up_to(&mut frame)? {
            0 => {
                return Err(corrupt(format!(
                    "it ends after {} records, without its trailer",
                    self.records
                )));
            }
            5 => {}
            _ => return Err(corrupt(format!("it ends inside the record at byte {at}"))),
        }
        let [kind, length @ ..] = frame;
        let length = u32::from_le_bytes(length);
        if kind == TRAILER {
            self.check_trailer(at, length)?;
            self.finished = true;
            return Ok(None);
        }
        self.hasher.update(&frame);
        self.body.clear();
        let read = (&mut self.input)
            .take(u64::from(length))
            .read_to_end(&mut self.body)?;
        self.hasher.update(&self.body);
        self.bytes += read as u64;
        if read < length as usize {
            return Err(corrupt(format!("it ends inside the record at byte {at}")));
        }
        let body = std::mem::take(&mut self.body);
        let record = self.decode(kind, &body);
        self.body = body;
        self.records += 1;
        record
            .map(Some)
            .map_err(|why| corrupt(format!("the record at byte {at} is malformed ({why})")))
    }

    /// The archive's size so far, in bytes.
    pub fn bytes_read(&self) -> u64 {
        self.bytes
    }

    /// Checks the trailer starting at byte `at`, whose length field says
    /// `length`, against everything read before it.
    fn check_trailer(&mut self, at: u64, length: u32) -> Result<(), FormatError> {
        if length != TRAILER_LENGTH {
            return Err(corrupt(format!(
                "the trailer at byte {at} has length {length}"
            )));
        }
        let mut trailer = [0; TRAILER_LENGTH as usize];
        if self.read_up_to(&mut trailer)? < trailer.len() {
            return Err(corrupt("it ends inside its trailer"));
        }
        let (count, stored) = trailer.split_at(8);
        let count = u64::from_le_bytes(count.try_into().expect("8 bytes"));
        if count != self.records {
            return Err(corrupt(format!(
                "its trailer counts {count} records, it holds {}",
                self.records
            )));
        }
        if stored != self.hasher.finalize().as_bytes() {
            return Err(corrupt("its checksum does not match its contents"));
        }
        if self.read_up_to(&mut [0])? > 0 {
            return Err(corrupt("it goes on after its trailer"));
        }
        Ok(())
    }

    fn decode(&mut self, kind: u8, body: &[u8]) -> Result<Record, String> {
        let mut fields = Fields(body);
        match kind {
            PROFILE => {
                let implementation = fields.string()?;
                let version = fields.string()?;
                let cache_tag = fields.string()?;
                let magic = fields.array()?;
                let name = fields.string()?;
                let source_hash = SourceHash::from_name(&name)
                    .ok_or_else(|| format!("unknown source hash `{name}`"))?;
                fields.end()?;
                self.profiles = self.profiles.checked_add(1).ok_or("too many profiles")?;
                Ok(Record::Profile(Profile {
                    implementation,
                    version,
                    cache_tag,
                    magic,
                    source_hash,
                }))
            }
            ENTRY => {
                let key = Key(fields.array()?);
                let profile = self.profile(&mut fields)?;
                let optimize = optimize(&mut fields)?;
                let raw_size = fields.u64()?;
                if raw_size > MAX_RAW_SIZE {
                    return Err(format!("{raw_size} bytes of code"));
                }
                let entry = EntryRow {
                    key,
                    optimize,
                    raw_size,
                    checksum: fields.array()?,
                    warnings: fields.optional_string()?,
                    created: fields.i64()?,
                    last_used: fields.i64()?,
                    data: fields.0.to_vec(),
                };
                Ok(Record::Entry { profile, entry })
            }
            FAILURE => {
                let key = Key(fields.array()?);
                let profile = self.profile(&mut fields)?;
                let failure = FailureRow {
                    key,
                    optimize: optimize(&mut fields)?,
                    failure: StoredFailure {
                        error_type: fields.string()?,
                        message: fields.string()?,
                        line: fields.optional_u32()?,
                        col: fields.optional_u32()?,
                    },
                    created: fields.i64()?,
                    last_used: fields.i64()?,
                };
                fields.end()?;
                Ok(Record::Failure { profile, failure })
            }
            other => Err(format!("unknown record type {other}")),
        }
    }

    /// A profile number, which must name a profile read already.
    fn profile(&self, fields: &mut Fields<'_>) -> Result<u32, String> {
        let profile = fields.u32()?;
        if profile < self.profiles {
            Ok(profile)
        } else {
            Err(format!("profile {profile} is not defined before it"))
        }
    }

    /// Reads into `buffer` until it is full or the input ends; returns the
    /// number of bytes read. The caller hashes what belongs in the checksum.
    fn read_up_to(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        let mut filled = 0;
        while filled < buffer.len() {
            match self.input.read(&mut buffer[filled..]) {
                Ok(0) => break,
                Ok(read) => filled += read,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => return Err(err),
            }
        }
        self.bytes += filled as u64;
        Ok(filled)
    }
}

/// Reads a whole archive, checking everything but the code in its entries
/// (that is checked entry by entry on import); returns its size in bytes.
pub fn check(input: impl Read) -> Result<u64, FormatError> {
    let mut reader = Reader::open(input)?;
    while reader.next_record()?.is_some() {}
    Ok(reader.bytes_read())
}

fn corrupt(why: impl Into<String>) -> FormatError {
    FormatError::Corrupt(why.into())
}

/// An optimization level, 0 to 2.
fn optimize(fields: &mut Fields<'_>) -> Result<u8, String> {
    match fields.u8()? {
        level @ 0..=2 => Ok(level),
        level => Err(format!("optimization level {level}")),
    }
}

/// The fields of a record body, decoded front to back.
struct Fields<'a>(&'a [u8]);

impl Fields<'_> {
    fn array<const N: usize>(&mut self) -> Result<[u8; N], String> {
        let (value, rest) = self
            .0
            .split_first_chunk::<N>()
            .ok_or("it ends before its last field")?;
        self.0 = rest;
        Ok(*value)
    }

    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.array::<1>()?[0])
    }

    fn u32(&mut self) -> Result<u32, String> {
        self.array().map(u32::from_le_bytes)
    }

    fn u64(&mut self) -> Result<u64, String> {
        self.array().map(u64::from_le_bytes)
    }

    fn i64(&mut self) -> Result<i64, String> {
        self.array().map(i64::from_le_bytes)
    }

    fn string(&mut self) -> Result<String, String> {
        let length = self.u32()? as usize;
        let (text, rest) = self
            .0
            .split_at_checked(length)
            .ok_or("a string goes past its end")?;
        self.0 = rest;
        String::from_utf8(text.to_vec()).map_err(|_| "a string is not UTF-8".to_owned())
    }

    fn present(&mut self) -> Result<bool, String> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            flag => Err(format!("optional field flag {flag}")),
        }
    }

    fn optional_string(&mut self) -> Result<Option<String>, String> {
        if self.present()? {
            self.string().map(Some)
        } else {
            Ok(None)
        }
    }

    fn optional_u32(&mut self) -> Result<Option<u32>, String> {
        if self.present()? {
            self.u32().map(Some)
        } else {
            Ok(None)
        }
    }

    fn end(&self) -> Result<(), String> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(format!("{} bytes after its last field", self.0.len()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile(minor: u32) -> Profile {
        Profile {
            implementation: "cpython".into(),
            version: format!("3.{minor}.1"),
            cache_tag: format!("cpython-3{minor}"),
            magic: [minor as u8, 0x0d, 0x0d, 0x0a],
            source_hash: if minor >= 11 {
                SourceHash::SipHash13
            } else {
                SourceHash::SipHash24
            },
        }
    }

    fn records() -> Vec<Record> {
        let code = b"marshal bytes, or something like them";
        vec![
            Record::Profile(profile(12)),
            Record::Entry {
                profile: 0,
                entry: EntryRow {
                    key: Key([1; 32]),
                    optimize: 2,
                    raw_size: code.len() as u64,
                    checksum: *blake3::hash(code).as_bytes(),
                    data: zstd::bulk::compress(code, 3).unwrap(),
                    warnings: Some("2: SyntaxWarning: \"is\" with a literal ✓".into()),
                    created: 1_700_000_000,
                    last_used: -1,
                },
            },
            Record::Profile(profile(9)),
            Record::Failure {
                profile: 1,
                failure: FailureRow {
                    key: Key([2; 32]),
                    optimize: 0,
                    failure: StoredFailure {
                        error_type: "SyntaxError".into(),
                        message: "invalid syntax".into(),
                        line: Some(3),
                        col: None,
                    },
                    created: 5,
                    last_used: i64::MAX,
                },
            },
            Record::Entry {
                profile: 0,
                entry: EntryRow {
                    key: Key([3; 32]),
                    optimize: 0,
                    raw_size: 0,
                    checksum: [9; 32],
                    data: Vec::new(),
                    warnings: None,
                    created: 0,
                    last_used: 0,
                },
            },
        ]
    }

    fn write(records: &[Record]) -> Vec<u8> {
        let mut writer = Writer::new(Vec::new()).unwrap();
        for record in records {
            match record {
                Record::Profile(profile) => {
                    writer.profile(profile).unwrap();
                }
                Record::Entry { profile, entry } => writer.entry(*profile, entry).unwrap(),
                Record::Failure { profile, failure } => {
                    writer.failure(*profile, failure).unwrap();
                }
            }
        }
        let (archive, bytes) = writer.finish().unwrap();
        assert_eq!(bytes, archive.len() as u64);
        archive
    }

    fn read(archive: &[u8]) -> Result<Vec<Record>, FormatError> {
        let mut reader = Reader::open(archive)?;
        let mut records = Vec::new();
        while let Some(record) = reader.next_record()? {
            records.push(record);
        }
        assert_eq!(reader.bytes_read(), archive.len() as u64);
        Ok(records)
    }

    #[test]
    fn records_round_trip() {
        let archive = write(&records());
        assert!(archive.starts_with(b"RCACHEX\0\x01\0\0\0"));
        assert_eq!(read(&archive).unwrap(), records());
        assert_eq!(check(archive.as_slice()).unwrap(), archive.len() as u64);
        assert_eq!(read(&write(&[])).unwrap(), []);
    }

    #[test]
    fn every_flipped_byte_and_every_truncation_is_refused() {
        let archive = write(&records());
        for at in 0..archive.len() {
            for flip in [0x01, 0x80, 0xff] {
                let mut damaged = archive.clone();
                damaged[at] ^= flip;
                assert!(check(damaged.as_slice()).is_err(), "byte {at} ^ {flip:#x}");
            }
        }
        for length in 0..archive.len() {
            assert!(check(&archive[..length]).is_err(), "{length} bytes");
        }
        let mut longer = archive.clone();
        longer.push(0);
        assert!(matches!(
            check(longer.as_slice()),
            Err(FormatError::Corrupt(why)) if why.contains("after its trailer")
        ));
    }

    #[test]
    fn foreign_and_newer_files_are_told_apart() {
        for foreign in [&b""[..], b"RCACHE", b"SQLite format 3\0 and more"] {
            assert!(matches!(check(foreign), Err(FormatError::NotAnArchive)));
        }
        let mut newer = write(&records());
        newer[8..12].copy_from_slice(&99u32.to_le_bytes());
        let err = check(newer.as_slice()).unwrap_err();
        assert!(matches!(err, FormatError::TooNew { found: 99 }));
        assert_eq!(
            err.to_string(),
            "was written by a newer rcache (format 99, this rcache reads up to 1)"
        );
    }

    #[test]
    fn a_writer_names_only_profiles_it_wrote() {
        let mut writer = Writer::new(Vec::new()).unwrap();
        let Record::Entry { entry, .. } = &records()[1] else {
            unreachable!()
        };
        assert!(writer.entry(0, entry).is_err());
        assert_eq!(writer.profile(&profile(12)).unwrap(), 0);
        writer.entry(0, entry).unwrap();
        assert!(writer.entry(1, entry).is_err());
    }
}
