//! HTTP(S) remotes: `GET`/`PUT <base>/ac/<key>` (ccache's `bazel` layout),
//! which nginx with WebDAV, bazel-remote and WebDAV build caches serve as
//! they are. One ureq agent keeps a few keep-alive connections that the
//! fetch threads share.
//!
//! Credentials, first found wins: the URL's own (`https://user:pass@…`),
//! `RCACHE_REMOTE_TOKEN` (a bearer token), `RCACHE_REMOTE_USER` with
//! `RCACHE_REMOTE_PASSWORD`, then the host's entry in `~/.netrc` (or
//! `$NETRC`), as curl and pip read it. None of them is ever printed.
//!
//! `https://` servers are verified against the system's certificates (as
//! curl does: a company CA installed on the machine is trusted, and
//! `SSL_CERT_FILE` / `SSL_CERT_DIR` point elsewhere), through
//! rustls-platform-verifier.

use std::time::Duration;

use base64::Engine as _;
use url::Url;

use super::Backend;
use crate::env_vars;
use crate::key::Key;

/// The largest object accepted: far above any module's code.
const MAX_OBJECT: u64 = 256 << 20;

pub struct Http {
    agent: ureq::Agent,
    /// `<base>/ac/`, without credentials.
    objects: Url,
    /// The `Authorization` header, if any.
    authorization: Option<String>,
}

impl Http {
    pub fn new(base: &Url, connections: usize, timeout: Duration) -> Self {
        let mut objects = base.clone();
        let authorization = authorization(&objects);
        let _ = objects.set_username("");
        let _ = objects.set_password(None);
        objects.set_query(None);
        let path = format!("{}/ac/", objects.path().trim_end_matches('/'));
        objects.set_path(&path);
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(timeout.min(Duration::from_secs(5))))
            .timeout_global(Some(timeout))
            .max_idle_connections(connections)
            .max_idle_connections_per_host(connections)
            .user_agent(concat!("rcache/", env!("CARGO_PKG_VERSION")))
            .tls_config(
                ureq::tls::TlsConfig::builder()
                    .root_certs(ureq::tls::RootCerts::PlatformVerifier)
                    .build(),
            )
            .build()
            .new_agent();
        Self {
            agent,
            objects,
            authorization,
        }
    }

    fn url(&self, key: &Key) -> String {
        format!("{}{}", self.objects, key.to_hex())
    }
}

impl Backend for Http {
    fn get(&self, key: &Key) -> Result<Option<Vec<u8>>, String> {
        let mut request = self.agent.get(self.url(key));
        if let Some(value) = &self.authorization {
            request = request.header("Authorization", value);
        }
        let mut response = request.call().map_err(|err| request_failed("GET", &err))?;
        match response.status().as_u16() {
            200 => response
                .body_mut()
                .with_config()
                .limit(MAX_OBJECT)
                .read_to_vec()
                .map(Some)
                .map_err(|err| request_failed("GET", &err)),
            404 => Ok(None),
            status => Err(status_failed("GET", status)),
        }
    }

    fn put(&self, key: &Key, object: &[u8]) -> Result<(), String> {
        let mut request = self.agent.put(self.url(key));
        if let Some(value) = &self.authorization {
            request = request.header("Authorization", value);
        }
        let response = request
            .header("Content-Type", "application/octet-stream")
            .send(object)
            .map_err(|err| request_failed("PUT", &err))?;
        match response.status().as_u16() {
            200..=299 => Ok(()),
            status => Err(status_failed("PUT", status)),
        }
    }

    fn has(&self, key: &Key) -> Result<bool, String> {
        let mut request = self.agent.head(self.url(key));
        if let Some(value) = &self.authorization {
            request = request.header("Authorization", value);
        }
        let response = request.call().map_err(|err| request_failed("HEAD", &err))?;
        match response.status().as_u16() {
            200 => Ok(true),
            404 => Ok(false),
            status => Err(status_failed("HEAD", status)),
        }
    }
}

/// The `Authorization` header for `url`, from the first source that has
/// credentials for it.
fn authorization(url: &Url) -> Option<String> {
    let var = |name: &str| std::env::var(name).ok();
    credentials(url, var, || netrc::Netrc::new().ok())
}

/// [`authorization`] with the environment (`var`) and the netrc file
/// (`netrc`, read only when needed) given.
fn credentials(
    url: &Url,
    var: impl Fn(&str) -> Option<String>,
    netrc: impl FnOnce() -> Option<netrc::Netrc>,
) -> Option<String> {
    let basic = |user: &str, password: &str| {
        let pair = format!("{user}:{password}");
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(pair)
        )
    };
    if !url.username().is_empty() || url.password().is_some() {
        let decode = |text: &str| {
            percent_encoding::percent_decode_str(text)
                .decode_utf8_lossy()
                .into_owned()
        };
        return Some(basic(
            &decode(url.username()),
            &decode(url.password().unwrap_or_default()),
        ));
    }
    let var = |name| var(name).filter(|value| !value.is_empty());
    if let Some(token) = var(env_vars::RCACHE_REMOTE_TOKEN) {
        return Some(format!("Bearer {token}"));
    }
    if let Some(user) = var(env_vars::RCACHE_REMOTE_USER) {
        let password = var(env_vars::RCACHE_REMOTE_PASSWORD).unwrap_or_default();
        return Some(basic(&user, &password));
    }
    let netrc = netrc()?;
    let host = url.host_str()?;
    let entry = netrc
        .hosts
        .get(host)
        .or_else(|| netrc.hosts.get("default"))?;
    Some(basic(&entry.login, &entry.password))
}

fn request_failed(method: &str, err: &ureq::Error) -> String {
    let reason = match err {
        ureq::Error::Timeout(_) => "timed out".to_owned(),
        ureq::Error::ConnectionFailed => "connection refused or failed".to_owned(),
        ureq::Error::HostNotFound => "host not found".to_owned(),
        ureq::Error::Io(io) => io.to_string(),
        other => other.to_string(),
    };
    format!("{method}: {reason}")
}

fn status_failed(method: &str, status: u16) -> String {
    format!("{method}: HTTP {status}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(url: &str, vars: &[(&str, &str)], netrc: &str) -> Option<String> {
        let url = Url::parse(url).unwrap();
        let var = |name: &str| {
            vars.iter()
                .find(|(key, _)| *key == name)
                .map(|(_, value)| (*value).to_owned())
        };
        credentials(&url, var, || netrc.parse().ok())
    }

    #[test]
    fn credentials_come_from_the_url_then_the_environment_then_netrc() {
        // "ci:s3cret" and "me:p@ss" in base64.
        let netrc = "machine cache.example.com login ci password s3cret\n";
        let token = [("RCACHE_REMOTE_TOKEN", "tok")];
        let user = [
            ("RCACHE_REMOTE_USER", "ci"),
            ("RCACHE_REMOTE_PASSWORD", "s3cret"),
        ];
        assert_eq!(
            header("https://me:p%40ss@cache.example.com/", &token, netrc).as_deref(),
            Some("Basic bWU6cEBzcw==")
        );
        assert_eq!(
            header("https://cache.example.com/", &token, netrc).as_deref(),
            Some("Bearer tok")
        );
        assert_eq!(
            header("https://cache.example.com/", &user, "").as_deref(),
            Some("Basic Y2k6czNjcmV0")
        );
        assert_eq!(
            header(
                "https://cache.example.com/",
                &[("RCACHE_REMOTE_TOKEN", "")],
                netrc
            )
            .as_deref(),
            Some("Basic Y2k6czNjcmV0")
        );
        assert_eq!(header("https://other.example.com/", &[], netrc), None);
        assert_eq!(header("https://other.example.com/", &[], ""), None);
    }
}
