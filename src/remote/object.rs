//! The bytes of one remote object, and the checks a fetched one must pass
//! before anything trusts it.
//!
//! ```text
//! {"format":"rcache-object-1","key":…,"source":…,"kind":"code",…}\n<zstd marshal bytes>
//! ```
//! One JSON header line (readable with `curl`), then the compressed code
//! exactly as the store keeps it. The header names the key, the blake3 of
//! the source, the interpreter's cache tag and magic number and the level:
//! a fetched object is used only when those re-derive the key it was asked
//! for (so another object's bytes, another interpreter's or another
//! rcache's are refused), and its code decompresses to the size and
//! checksum it declares and names its own key as `co_filename`.

use serde::{Deserialize, Serialize};

use crate::key::{ContentHash, Key, KeyContext};
use crate::store::{NewEntry, NewFailure, StoredFailure};

/// The header's `format`; bump when the layout changes.
const FORMAT: &str = "rcache-object-1";
/// Headers are small; a first line longer than this is not one.
const MAX_HEADER: usize = 64 * 1024;

/// What an object holds, as its header line says.
#[derive(Debug, Serialize, Deserialize)]
struct Header {
    format: String,
    /// The entry's key, hex.
    key: String,
    /// blake3 of the source bytes, hex.
    source: String,
    cache_tag: String,
    /// The interpreter's magic number, hex.
    magic: String,
    optimize: u8,
    #[serde(flatten)]
    body: Body,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum Body {
    /// Compiled code follows the header line.
    Code {
        raw_size: u64,
        /// blake3 of the marshal bytes, hex.
        checksum: String,
        warnings: Option<String>,
    },
    /// The source does not compile; nothing follows.
    Failure {
        error_type: String,
        message: String,
        line: Option<u32>,
        col: Option<u32>,
    },
}

/// A checked object, ready for the local store.
#[derive(Debug)]
pub enum Fetched {
    Code(NewEntry),
    Failure(NewFailure),
}

/// What the asker expects of the object for one key.
#[derive(Debug, Clone, Copy)]
pub struct Wanted {
    pub key: Key,
    /// blake3 of the source the key was made from.
    pub source: ContentHash,
    pub optimize: u8,
}

/// The object for compiled code `entry` of the source hashing to `source`.
pub fn encode_code(context: &KeyContext<'_>, source: &ContentHash, entry: &NewEntry) -> Vec<u8> {
    let header = Header {
        body: Body::Code {
            raw_size: entry.raw_size as u64,
            checksum: hex(&entry.checksum),
            warnings: entry.warnings.clone(),
        },
        ..header(context, source, &entry.key, entry.optimize)
    };
    let mut object = header_line(&header);
    object.extend_from_slice(&entry.data);
    object
}

/// The object for a source that does not compile.
pub fn encode_failure(
    context: &KeyContext<'_>,
    source: &ContentHash,
    failure: &NewFailure,
) -> Vec<u8> {
    let stored = &failure.failure;
    header_line(&Header {
        body: Body::Failure {
            error_type: stored.error_type.clone(),
            message: stored.message.clone(),
            line: stored.line,
            col: stored.col,
        },
        ..header(context, source, &failure.key, failure.optimize)
    })
}

/// Checks `object`, fetched for `wanted`, and returns what it holds for the
/// store's profile `profile_id`; `Err` says why it is refused.
pub fn decode(
    object: &[u8],
    context: &KeyContext<'_>,
    wanted: &Wanted,
    profile_id: i64,
) -> Result<Fetched, String> {
    let end = memchr::memchr(b'\n', &object[..object.len().min(MAX_HEADER)])
        .ok_or("not an rcache object (no header line)")?;
    let header: Header = serde_json::from_slice(&object[..end])
        .map_err(|err| format!("not an rcache object ({err})"))?;
    if header.format != FORMAT {
        return Err(format!(
            "an object of format `{}`, not `{FORMAT}`",
            header.format
        ));
    }
    let source = parse_hex::<32>(&header.source).map(ContentHash);
    let magic = parse_hex::<4>(&header.magic);
    let derived = source.zip(magic).map(|(source, magic)| {
        let context = KeyContext {
            cache_tag: &header.cache_tag,
            magic,
        };
        context.key(header.optimize, &source)
    });
    if header.key != wanted.key.to_hex() || derived != Some(wanted.key) {
        return Err("the object of another key (or interpreter, or level)".to_owned());
    }
    if header.cache_tag != context.cache_tag || magic != Some(context.magic) {
        return Err(format!("code for `{}`", header.cache_tag));
    }
    let data = &object[end + 1..];
    match header.body {
        Body::Code {
            raw_size,
            checksum,
            warnings,
        } => {
            let checksum = parse_hex::<32>(&checksum).ok_or("a malformed checksum")?;
            let entry = NewEntry::checked(
                wanted.key,
                profile_id,
                header.optimize,
                raw_size,
                checksum,
                data.to_vec(),
                warnings,
            )?;
            Ok(Fetched::Code(entry))
        }
        Body::Failure {
            error_type,
            message,
            line,
            col,
        } if data.is_empty() => Ok(Fetched::Failure(NewFailure {
            key: wanted.key,
            profile_id,
            optimize: header.optimize,
            failure: StoredFailure {
                error_type,
                message,
                line,
                col,
            },
        })),
        Body::Failure { .. } => Err("a failure with bytes after it".to_owned()),
    }
}

fn header(context: &KeyContext<'_>, source: &ContentHash, key: &Key, optimize: u8) -> Header {
    Header {
        format: FORMAT.to_owned(),
        key: key.to_hex(),
        source: hex(&source.0),
        cache_tag: context.cache_tag.to_owned(),
        magic: hex(&context.magic),
        optimize,
        body: Body::Failure {
            error_type: String::new(),
            message: String::new(),
            line: None,
            col: None,
        },
    }
}

fn header_line(header: &Header) -> Vec<u8> {
    let mut line = serde_json::to_vec(header).expect("a header always serializes");
    line.push(b'\n');
    line
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut text, byte| {
        let _ = write!(text, "{byte:02x}");
        text
    })
}

fn parse_hex<const N: usize>(text: &str) -> Option<[u8; N]> {
    if text.len() != 2 * N {
        return None;
    }
    let mut bytes = [0; N];
    for (index, byte) in bytes.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(2 * index..2 * index + 2)?, 16).ok()?;
    }
    Some(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONTEXT: KeyContext<'static> = KeyContext {
        cache_tag: "cpython-312",
        magic: [0xcb, 0x0d, 0x0d, 0x0a],
    };

    fn wanted(source: &[u8], optimize: u8) -> Wanted {
        let source = ContentHash::of(source);
        Wanted {
            key: CONTEXT.key(optimize, &source),
            source,
            optimize,
        }
    }

    fn code_object(wanted: &Wanted) -> Vec<u8> {
        let code = format!("marshal bytes naming {}", wanted.key.placeholder_filename());
        let entry = NewEntry::compressed(
            wanted.key,
            1,
            wanted.optimize,
            code.as_bytes(),
            Some("w".into()),
        );
        encode_code(&CONTEXT, &wanted.source, &entry)
    }

    #[test]
    fn code_and_failures_round_trip() {
        let wanted = wanted(b"x = 1\n", 0);
        let Ok(Fetched::Code(entry)) = decode(&code_object(&wanted), &CONTEXT, &wanted, 7) else {
            panic!("refused");
        };
        assert_eq!((entry.key, entry.profile_id), (wanted.key, 7));
        assert_eq!(entry.warnings.as_deref(), Some("w"));
        let failure = NewFailure {
            key: wanted.key,
            profile_id: 1,
            optimize: 0,
            failure: StoredFailure {
                error_type: "SyntaxError".into(),
                message: "invalid syntax".into(),
                line: Some(1),
                col: None,
            },
        };
        let object = encode_failure(&CONTEXT, &wanted.source, &failure);
        let Ok(Fetched::Failure(back)) = decode(&object, &CONTEXT, &wanted, 7) else {
            panic!("refused");
        };
        assert_eq!(back.failure, failure.failure);
    }

    #[test]
    fn wrong_objects_are_refused() {
        let wanted = wanted(b"x = 1\n", 0);
        let object = code_object(&wanted);
        let refused = |object: &[u8], asked: &Wanted| decode(object, &CONTEXT, asked, 1).is_err();
        // Another key's object, the same source at another level, another
        // interpreter, a cut body, flipped bytes, junk, nothing.
        assert!(refused(&object, &self::wanted(b"x = 2\n", 0)));
        assert!(refused(&object, &self::wanted(b"x = 1\n", 1)));
        let other = KeyContext {
            cache_tag: "cpython-313",
            ..CONTEXT
        };
        assert!(decode(&object, &other, &wanted, 1).is_err());
        assert!(refused(&object[..object.len() - 3], &wanted));
        let mut flipped = object.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert!(refused(&flipped, &wanted));
        assert!(refused(b"<html>500</html>", &wanted));
        assert!(refused(b"", &wanted));
    }
}
