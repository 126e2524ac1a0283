//! Starts an interpreter once to learn its [`Profile`].

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use siphasher::sip::{SipHasher13, SipHasher24};
use std::hash::Hasher;

use super::{Error, Profile, SUPPORTED, SourceHash, parse_major_minor};

const PROBE_SCRIPT: &str = include_str!("probe.py");
/// The bytes `probe.py` hashes with `_imp.source_hash`.
const PROBE_VECTOR: &[u8] = b"rcache source_hash probe";

/// Runs `python -S -s -c probe.py` and checks the interpreter is supported.
/// Returns the profile and the interpreter's own `sys.executable`.
pub fn probe(executable: &Path) -> Result<(Profile, PathBuf), Error> {
    tracing::debug!(executable = %executable.display(), "probing interpreter");
    let output = Command::new(executable)
        .args(["-S", "-s", "-c", PROBE_SCRIPT])
        .env_clear()
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdin(Stdio::null())
        .output()
        .map_err(|source| Error::Spawn {
            path: executable.to_owned(),
            source,
        })?;
    if !output.status.success() {
        return Err(Error::ProbeFailed {
            path: executable.to_owned(),
            status: output.status.to_string(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        });
    }
    parse(executable, &String::from_utf8_lossy(&output.stdout))
}

fn parse(executable: &Path, stdout: &str) -> Result<(Profile, PathBuf), Error> {
    let field = |name: &str| {
        stdout.lines().find_map(|line| {
            line.strip_prefix(name)
                .and_then(|rest| rest.strip_prefix('='))
                .map(str::to_owned)
        })
    };
    let unsupported = |what: String| Error::Unsupported {
        path: executable.to_owned(),
        what,
    };
    let implementation = field("implementation").unwrap_or_default();
    let version = field("version").unwrap_or_default();
    if implementation.is_empty() {
        return Err(unsupported(
            "not a Python interpreter (it printed no profile)".to_owned(),
        ));
    }
    if implementation != "cpython" {
        let name = if implementation == "unknown" {
            "Python"
        } else {
            &implementation
        };
        return Err(unsupported(format!("{name} {version}").trim().to_owned()));
    }
    let (major, minor) =
        parse_major_minor(&version).ok_or_else(|| unsupported(format!("version `{version}`")))?;
    let (want_major, oldest, newest) = SUPPORTED;
    if major != want_major || minor < oldest || minor > newest {
        return Err(unsupported(format!("CPython {version}")));
    }
    let incomplete = || unsupported(format!("CPython {version} with an incomplete importlib"));
    let magic = field("magic")
        .and_then(|hex| decode_hex(&hex))
        .and_then(|bytes| <[u8; 4]>::try_from(bytes).ok())
        .ok_or_else(incomplete)?;
    let raw_magic: u64 = field("raw_magic")
        .and_then(|value| value.parse().ok())
        .ok_or_else(incomplete)?;
    let digest = field("source_hash")
        .and_then(|hex| decode_hex(&hex))
        .ok_or_else(incomplete)?;
    let source_hash = identify_source_hash(raw_magic, &digest).ok_or_else(|| {
        unsupported(format!(
            "CPython {version} whose `_imp.source_hash` is neither SipHash-1-3 nor SipHash-2-4"
        ))
    })?;
    let own_executable = field("executable")
        .filter(|path| !path.is_empty())
        .map_or_else(|| executable.to_owned(), PathBuf::from);
    let cache_tag = field("cache_tag")
        .filter(|tag| !tag.is_empty())
        .ok_or_else(incomplete)?;
    let profile = Profile {
        implementation,
        version,
        cache_tag,
        magic,
        source_hash,
    };
    Ok((profile, own_executable))
}

/// Which SipHash variant, keyed as CPython keys it, gives `digest`.
fn identify_source_hash(raw_magic: u64, digest: &[u8]) -> Option<SourceHash> {
    let candidates: [(SourceHash, u64); 2] = [
        (SourceHash::SipHash13, {
            let mut hasher = SipHasher13::new_with_keys(raw_magic, 0);
            hasher.write(PROBE_VECTOR);
            hasher.finish()
        }),
        (SourceHash::SipHash24, {
            let mut hasher = SipHasher24::new_with_keys(raw_magic, 0);
            hasher.write(PROBE_VECTOR);
            hasher.finish()
        }),
    ];
    candidates
        .into_iter()
        .find(|(_, value)| value.to_le_bytes().as_slice() == digest)
        .map(|(algorithm, _)| algorithm)
}

fn decode_hex(hex: &str) -> Option<Vec<u8>> {
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    (0..hex.len())
        .step_by(2)
        .map(|at| u8::from_str_radix(hex.get(at..at + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Output of the probe on CPython 3.11.7 and 3.8.18 here.
    #[test]
    fn recognises_both_siphash_variants() {
        let digest = decode_hex("88ba8dae7a46cb72").unwrap();
        assert_eq!(
            identify_source_hash(168_627_623, &digest),
            Some(SourceHash::SipHash13)
        );
        let digest = decode_hex("a1628cb8a634cda7").unwrap();
        assert_eq!(
            identify_source_hash(168_627_541, &digest),
            Some(SourceHash::SipHash24)
        );
    }

    #[test]
    fn refuses_python_2() {
        let out = "implementation=unknown\nversion=2.7.18\nexecutable=/x\ncache_tag=\n";
        let err = parse(Path::new("/x"), out).unwrap_err();
        assert!(err.to_string().contains("is Python 2.7.18"), "{err}");
    }

    #[test]
    fn refuses_pypy_and_3_7() {
        let out = "implementation=pypy\nversion=3.10.14\n";
        assert!(
            parse(Path::new("/x"), out)
                .unwrap_err()
                .to_string()
                .contains("pypy 3.10.14")
        );
        let out = "implementation=cpython\nversion=3.7.16\n";
        assert!(
            parse(Path::new("/x"), out)
                .unwrap_err()
                .to_string()
                .contains("CPython 3.7.16")
        );
    }
}
