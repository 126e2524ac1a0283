//! Where a remote cache lives, parsed from `--remote URL`, and how it is
//! shown: never with its password.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use url::Url;

/// One remote cache, by kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// `http://` or `https://`: objects at `<base>/ac/<key>`.
    Http(Url),
    /// `redis://`: one key per entry, with an optional
    /// expiry (`?ttl=30d`).
    Redis { url: Url, ttl: Option<Duration> },
    /// `file://`: objects at `<dir>/ac/<key>` on a shared mount.
    Dir(PathBuf),
}

impl Location {
    /// Parses one `--remote` value.
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let url =
            Url::parse(text).with_context(|| format!("`{}` is not a URL", redact_text(text)))?;
        match url.scheme() {
            "http" | "https" => {
                if url.host_str().is_none_or(str::is_empty) {
                    bail!("remote `{}` names no host", Redacted(&url));
                }
                Ok(Self::Http(url))
            }
            "rediss" => bail!(
                "remote `{}`: redis over TLS (rediss://) is not supported; use an https remote or a TLS tunnel",
                Redacted(&url)
            ),
            "redis" => {
                let (url, ttl) = split_ttl(url)?;
                Ok(Self::Redis { url, ttl })
            }
            "file" => match url.to_file_path() {
                Ok(path) => Ok(Self::Dir(path)),
                Err(()) => bail!("remote `{url}` is not a local directory"),
            },
            other => bail!(
                "remote `{}`: unknown scheme `{other}` (http, https, redis or file)",
                Redacted(&url)
            ),
        }
    }

    /// The URL as shown in messages and `rcache config`: credentials and
    /// query are left out.
    pub fn display(&self) -> String {
        match self {
            Self::Http(url) | Self::Redis { url, .. } => Redacted(url).to_string(),
            Self::Dir(path) => format!("file://{}", path.display()),
        }
    }
}

/// A URL without its password.
struct Redacted<'a>(&'a Url);

impl std::fmt::Display for Redacted<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut url = self.0.clone();
        if url.password().is_some() {
            let _ = url.set_password(Some("***"));
        }
        url.set_query(None);
        f.write_str(url.as_str().trim_end_matches('/'))
    }
}

/// Best effort for text that is not even a URL: drop anything between
/// `//` and `@`, where a password would be.
fn redact_text(text: &str) -> String {
    match (text.find("//"), text.rfind('@')) {
        (Some(start), Some(at)) if start + 2 < at => {
            format!("{}***{}", &text[..start + 2], &text[at..])
        }
        _ => text.to_owned(),
    }
}

/// Takes rcache's `ttl` out of a redis URL's query, leaving the client's.
fn split_ttl(mut url: Url) -> anyhow::Result<(Url, Option<Duration>)> {
    let mut ttl = None;
    let mut kept = Vec::new();
    for (name, value) in url.query_pairs() {
        if name == "ttl" {
            let parsed = humantime::parse_duration(&value)
                .or_else(|_| value.parse::<u64>().map(Duration::from_secs))
                .ok()
                .filter(|ttl| ttl.as_secs() > 0);
            match parsed {
                Some(parsed) => ttl = Some(parsed),
                None => bail!(
                    "remote `{}`: `ttl={value}` is not a duration of a second or more (`3600`, `7d`)",
                    Redacted(&url)
                ),
            }
        } else {
            kept.push((name.into_owned(), value.into_owned()));
        }
    }
    if kept.is_empty() {
        url.set_query(None);
    } else {
        url.query_pairs_mut().clear().extend_pairs(kept);
    }
    Ok((url, ttl))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_and_their_display() {
        let http = Location::parse("https://ci:s3cret@cache.example.com/rcache/").unwrap();
        assert_eq!(http.display(), "https://ci:***@cache.example.com/rcache");
        let redis = Location::parse("redis://:pw@127.0.0.1:6379/2?ttl=7d").unwrap();
        let Location::Redis { url, ttl } = &redis else {
            panic!("{redis:?}");
        };
        assert_eq!(url.as_str(), "redis://:pw@127.0.0.1:6379/2");
        assert_eq!(*ttl, Some(Duration::from_secs(7 * 86400)));
        assert_eq!(redis.display(), "redis://:***@127.0.0.1:6379/2");
        assert_eq!(
            Location::parse("file:///mnt/cache").unwrap(),
            Location::Dir(PathBuf::from("/mnt/cache"))
        );
    }

    #[test]
    fn bad_urls_are_refused_without_their_password() {
        for bad in [
            "ftp://u:hunter2@host/x",
            "cache.example.com",
            "redis://h/?ttl=soon",
            "http://u:hunter2@/x",
        ] {
            let message = format!("{:#}", Location::parse(bad).unwrap_err());
            assert!(!message.contains("hunter2"), "{message}");
        }
        let message = format!("{:#}", Location::parse("s3://bucket").unwrap_err());
        assert!(message.contains("unknown scheme `s3`"), "{message}");
    }
}
