//! Content keys: what identifies one compile result in the store.
//!
//! A key is blake3 over everything that changes the bytecode CPython makes
//! from a source, and nothing else: path, mtime and checkout never enter it,
//! so the same content anywhere shares one entry. The source enters through
//! its own blake3 hash, its [`ContentHash`]: that hash does not depend on the
//! interpreter, so the store can remember it per file (`sources` table) and
//! key an unchanged file for any interpreter without reading it.

use std::fmt;

/// Bump when the meaning of stored bytes changes for the same inputs (the
/// way the worker compiles, the placeholder filename), so old entries are
/// never taken for new ones.
pub const KEY_VERSION: u32 = 2;

/// A 32-byte blake3 content key.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key(pub [u8; 32]);

/// blake3 of a source's bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ContentHash(pub [u8; 32]);

impl ContentHash {
    pub fn of(source: &[u8]) -> Self {
        Self(*blake3::hash(source).as_bytes())
    }
}

impl fmt::Debug for ContentHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "ContentHash({})",
            blake3::Hash::from_bytes(self.0).to_hex()
        )
    }
}

/// What of an interpreter enters the key: its cache tag and magic number.
#[derive(Debug, Clone, Copy)]
pub struct KeyContext<'a> {
    /// `sys.implementation.cache_tag`, e.g. `cpython-312`.
    pub cache_tag: &'a str,
    /// `importlib.util.MAGIC_NUMBER`, the first 4 bytes of every pyc.
    pub magic: [u8; 4],
}

impl KeyContext<'_> {
    /// The key of the source hashing to `content`, compiled at optimization
    /// level `optimize`.
    pub fn key(&self, optimize: u8, content: &ContentHash) -> Key {
        let mut hasher = blake3::Hasher::new();
        hasher.update(&KEY_VERSION.to_le_bytes());
        // Length-prefix the variable-size field so no two inputs collide.
        hasher.update(&(self.cache_tag.len() as u64).to_le_bytes());
        hasher.update(self.cache_tag.as_bytes());
        hasher.update(&self.magic);
        hasher.update(&[optimize]);
        hasher.update(&content.0);
        Key(*hasher.finalize().as_bytes())
    }
}

impl Key {
    /// Lower-case hex, as shown to users and used in placeholders.
    pub fn to_hex(&self) -> String {
        blake3::Hash::from_bytes(self.0).to_hex().to_string()
    }

    /// The `co_filename` stored code is compiled under. It cannot occur in
    /// the source (it names the hash of that very source), so the one marshal
    /// record holding it can be found and rewritten to a real path later.
    pub fn placeholder_filename(&self) -> String {
        format!("<rcache-{}>", self.to_hex())
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Key({})", self.to_hex())
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl TryFrom<&[u8]> for Key {
    type Error = std::array::TryFromSliceError;

    fn try_from(bytes: &[u8]) -> Result<Self, Self::Error> {
        Ok(Key(bytes.try_into()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONTEXT: KeyContext<'static> = KeyContext {
        cache_tag: "cpython-312",
        magic: [0xcb, 0x0d, 0x0d, 0x0a],
    };

    fn key(context: KeyContext<'_>, optimize: u8, source: &[u8]) -> Key {
        context.key(optimize, &ContentHash::of(source))
    }

    #[test]
    fn same_inputs_same_key() {
        assert_eq!(key(CONTEXT, 0, b"x = 1\n"), key(CONTEXT, 0, b"x = 1\n"));
    }

    #[test]
    fn every_input_changes_the_key() {
        let base = key(CONTEXT, 0, b"x = 1\n");
        assert_ne!(base, key(CONTEXT, 1, b"x = 1\n"));
        assert_ne!(base, key(CONTEXT, 0, b"x = 2\n"));
        let other_tag = KeyContext {
            cache_tag: "cpython-311",
            ..CONTEXT
        };
        assert_ne!(base, key(other_tag, 0, b"x = 1\n"));
        let other_magic = KeyContext {
            magic: [0xa7, 0x0d, 0x0d, 0x0a],
            ..CONTEXT
        };
        assert_ne!(base, key(other_magic, 0, b"x = 1\n"));
    }

    #[test]
    fn placeholder_is_ascii_and_short() {
        let placeholder = key(CONTEXT, 0, b"").placeholder_filename();
        assert!(placeholder.is_ascii());
        assert!(placeholder.len() < 256, "fits a short-ascii marshal record");
    }
}
