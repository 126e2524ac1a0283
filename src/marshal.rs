//! Rewriting the filename inside marshalled code, without Python.
//!
//! The store keeps code compiled under a placeholder filename
//! ([`crate::key::Key::placeholder_filename`]). In a marshal stream that
//! name is written once, as the first `co_filename` (every later use is a
//! back-reference to it), so replacing that one string record with the real
//! path's record gives the bytes CPython writes when compiling at the real
//! path. Tested over every standard-library file of 3.8–3.13.

/// Marshal type codes of strings (Python/marshal.c).
const TYPE_SHORT_ASCII: u8 = b'z';
const TYPE_SHORT_ASCII_INTERNED: u8 = b'Z';
const TYPE_ASCII: u8 = b'a';
const TYPE_ASCII_INTERNED: u8 = b'A';
const TYPE_UNICODE: u8 = b'u';
const TYPE_INTERNED: u8 = b't';
/// Set on a record the stream refers back to later.
const FLAG_REF: u8 = 0x80;

/// Replaces the one string record holding `placeholder` (ASCII, under 256
/// bytes) with a record holding `filename`, given as the bytes of an OS path.
/// Returns `None` when the placeholder is not found exactly once as a
/// record, in which case the caller must compile at the real path instead.
pub fn rewrite_filename(code: &[u8], placeholder: &str, filename: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(code.len() + filename.len());
    rewrite_filename_into(code, placeholder, filename, &mut out).then_some(out)
}

/// [`rewrite_filename`], appending to `out` (which a caller can reuse);
/// returns false, with `out` unspecified, when the placeholder is not found.
pub fn rewrite_filename_into(
    code: &[u8],
    placeholder: &str,
    filename: &[u8],
    out: &mut Vec<u8>,
) -> bool {
    let needle = placeholder.as_bytes();
    debug_assert!(placeholder.is_ascii() && needle.len() < 256);
    // memchr's SIMD search: the whole stream must be scanned to prove the
    // placeholder occurs once, and this runs for every pyc written.
    let mut found = memchr::memmem::find_iter(code, needle);
    let Some(at) = found.next() else {
        return false;
    };
    if found.next().is_some() || at < 2 {
        return false;
    }
    let (kind, len) = (code[at - 2], code[at - 1]);
    let flag = kind & FLAG_REF;
    let interned = match kind & !FLAG_REF {
        TYPE_SHORT_ASCII => false,
        TYPE_SHORT_ASCII_INTERNED => true,
        _ => return false,
    };
    if usize::from(len) != needle.len() {
        return false;
    }
    out.reserve(code.len() + filename.len());
    out.extend_from_slice(&code[..at - 2]);
    write_string_record(out, filename, interned, flag);
    out.extend_from_slice(&code[at + needle.len()..]);
    true
}

/// Writes `path` as marshal writes the `str` Python makes of it
/// (`os.fsdecode`: UTF-8, undecodable bytes as lone surrogates).
fn write_string_record(out: &mut Vec<u8>, path: &[u8], interned: bool, flag: u8) {
    if path.is_ascii() {
        if let Ok(len) = u8::try_from(path.len()) {
            let kind = if interned {
                TYPE_SHORT_ASCII_INTERNED
            } else {
                TYPE_SHORT_ASCII
            };
            out.push(kind | flag);
            out.push(len);
        } else {
            let kind = if interned {
                TYPE_ASCII_INTERNED
            } else {
                TYPE_ASCII
            };
            out.push(kind | flag);
            out.extend_from_slice(&(path.len() as u32).to_le_bytes());
        }
        out.extend_from_slice(path);
        return;
    }
    let encoded = surrogatepass_utf8(path);
    out.push(
        if interned {
            TYPE_INTERNED
        } else {
            TYPE_UNICODE
        } | flag,
    );
    out.extend_from_slice(&(encoded.len() as u32).to_le_bytes());
    out.extend_from_slice(&encoded);
}

/// The UTF-8 bytes, with "surrogatepass", of the `str` that
/// `os.fsdecode(path)` gives on a UTF-8 system: each byte that is not part
/// of valid UTF-8 becomes the lone surrogate U+DC80..U+DCFF.
fn surrogatepass_utf8(path: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(path.len() + 8);
    for chunk in path.utf8_chunks() {
        out.extend_from_slice(chunk.valid().as_bytes());
        for &byte in chunk.invalid() {
            let point = 0xDC00 + u32::from(byte);
            out.push(0xE0 | (point >> 12) as u8);
            out.push(0x80 | ((point >> 6) & 0x3F) as u8);
            out.push(0x80 | (point & 0x3F) as u8);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const PLACEHOLDER: &str = "<rcache-0123>";

    fn stream(kind: u8) -> Vec<u8> {
        let mut code = vec![0xe3, 1, 2];
        code.push(kind);
        code.push(PLACEHOLDER.len() as u8);
        code.extend_from_slice(PLACEHOLDER.as_bytes());
        code.extend_from_slice(&[0x72, 5, 0, 0, 0]);
        code
    }

    #[test]
    fn short_ascii_keeps_its_flag() {
        let out = rewrite_filename(&stream(b'z' | FLAG_REF), PLACEHOLDER, b"/src/a.py").unwrap();
        assert_eq!(&out[..5], &[0xe3, 1, 2, b'z' | FLAG_REF, 9]);
        assert_eq!(&out[5..14], b"/src/a.py");
        assert_eq!(&out[14..], &[0x72, 5, 0, 0, 0]);
    }

    #[test]
    fn long_paths_use_the_four_byte_length() {
        let path = vec![b'x'; 300];
        let out = rewrite_filename(&stream(b'Z'), PLACEHOLDER, &path).unwrap();
        assert_eq!(out[3], b'A');
        assert_eq!(&out[4..8], &300u32.to_le_bytes());
    }

    #[test]
    fn non_ascii_and_undecodable_paths_are_utf8_with_surrogates() {
        let out =
            rewrite_filename(&stream(b'z' | FLAG_REF), PLACEHOLDER, b"/\xc3\xa9\xff").unwrap();
        assert_eq!(out[3], b'u' | FLAG_REF);
        assert_eq!(&out[4..8], &6u32.to_le_bytes());
        assert_eq!(&out[8..14], b"/\xc3\xa9\xed\xb3\xbf");
    }

    #[test]
    fn placeholder_must_be_one_string_record() {
        let mut twice = stream(b'z');
        twice.extend_from_slice(PLACEHOLDER.as_bytes());
        assert!(rewrite_filename(&twice, PLACEHOLDER, b"/a.py").is_none());
        assert!(rewrite_filename(&[1, 2, 3], PLACEHOLDER, b"/a.py").is_none());
        let mut wrong_kind = stream(b'z');
        wrong_kind[3] = b's';
        assert!(rewrite_filename(&wrong_kind, PLACEHOLDER, b"/a.py").is_none());
    }
}
