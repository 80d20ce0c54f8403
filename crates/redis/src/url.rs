//! `--online-store` URLs of a Redis Cluster or Valkey cluster:
//! `redis+cluster://[USER:PASSWORD@]HOST:PORT[,HOST:PORT...][?replicas=N&timeout_ms=MS]`, or
//! `rediss+cluster://...` for TLS to every node (`tls-cluster yes`), with
//! `ca_file=PATH` (the CA that signed the nodes' certificates; default: the system's roots)
//! and, where the nodes require client certificates, `cert_file=PATH&key_file=PATH` (paths
//! without `@`: the credentials end at the URL's last `@`).
//!
//! - the hosts are seed nodes: the client learns the rest of the cluster from them;
//! - `USER:PASSWORD` authenticate as an ACL user (percent-encoding is not decoded: pass the
//!   URL through the `QUIVER_ONLINE_STORE` environment variable to keep it out of `ps`);
//! - `replicas` (default 0): a durable write returns only once this many replicas of every
//!   primary acknowledged it (`WAIT`); 0 leaves durability to the primaries' own persistence;
//! - `timeout_ms` (default 1000): connect and response timeout of every command;
//! - `max_connections` (default 64): cluster connections in use at once (each a socket per
//!   node); a call beyond waits up to `timeout_ms`, then fails RESOURCE_EXHAUSTED;
//! - `expire_after_ttl` (default false): a row written for a view with a TTL expires in
//!   Redis when it leaves the TTL (event time + TTL), which frees memory but turns reads
//!   that would be OUTSIDE_MAX_AGE into NOT_FOUND.

use std::time::Duration;

use crate::error::{Error, Result};

const SCHEME: &str = "redis+cluster://";
const TLS_SCHEME: &str = "rediss+cluster://";

/// A parsed `redis+cluster://` URL.
#[derive(Clone, PartialEq, Eq)]
pub struct ClusterUrl {
    /// `HOST:PORT` of each seed node.
    pub nodes: Vec<String>,
    pub username: Option<String>,
    pub password: Option<String>,
    pub replicas: u32,
    pub timeout: Duration,
    /// TLS to every node (`rediss+cluster://`), with these files.
    pub tls: Option<TlsFiles>,
    /// Rows expire in Redis once out of their view's TTL (`expire_after_ttl=true`).
    pub expire_after_ttl: bool,
    /// Cluster connections in use at once (`max_connections`).
    pub max_connections: usize,
}

/// The PEM files of TLS to the cluster (paths the operator gave in the URL).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsFiles {
    /// The CA of the nodes' certificates; `None`: the system's roots.
    pub ca_file: Option<String>,
    /// A client certificate and its key, for nodes that require one.
    pub client: Option<(String, String)>,
}

impl std::fmt::Debug for ClusterUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterUrl")
            .field("nodes", &self.nodes)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("replicas", &self.replicas)
            .field("timeout", &self.timeout)
            .field("tls", &self.tls)
            .field("expire_after_ttl", &self.expire_after_ttl)
            .field("max_connections", &self.max_connections)
            .finish()
    }
}

impl ClusterUrl {
    pub fn parse(url: &str) -> Result<ClusterUrl> {
        let (rest, tls) = match url.strip_prefix(TLS_SCHEME) {
            Some(rest) => (rest, true),
            None => (
                url.strip_prefix(SCHEME).ok_or_else(|| {
                    invalid(format!(
                        "`{}` is not a {SCHEME}HOST:PORT[,HOST:PORT] URL (or {TLS_SCHEME}...)",
                        redact(url)
                    ))
                })?,
                false,
            ),
        };
        // Credentials end at the last `@` (a password may hold `?` or `@`).
        let (credentials, rest) = match rest.rsplit_once('@') {
            Some((credentials, rest)) => (Some(credentials), rest),
            None => (None, rest),
        };
        let (hosts, query) = rest.split_once('?').unwrap_or((rest, ""));
        let hosts = hosts.trim_end_matches('/');
        let (username, password) = match credentials {
            None => (None, None),
            Some(credentials) => match credentials.split_once(':') {
                Some((user, password)) => (non_empty(user), Some(password.to_string())),
                None => (non_empty(credentials), None),
            },
        };
        let nodes: Vec<String> = hosts.split(',').map(str::to_string).collect();
        for node in &nodes {
            let port = node.rsplit_once(':').map(|(_, port)| port.parse::<u16>());
            if !matches!(port, Some(Ok(_))) {
                return Err(invalid(format!("node `{node}` is not HOST:PORT")));
            }
        }
        let mut parsed = ClusterUrl {
            nodes,
            username,
            password,
            replicas: 0,
            timeout: Duration::from_millis(1000),
            tls: tls.then(TlsFiles::default),
            expire_after_ttl: false,
            max_connections: crate::gate::DEFAULT_MAX_CONNECTIONS,
        };
        let (mut cert_file, mut key_file) = (None, None);
        for pair in query.split('&').filter(|pair| !pair.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            match name {
                "replicas" => parsed.replicas = number(name, value)?,
                "timeout_ms" => match number::<u32>(name, value)? {
                    0 => return Err(invalid("`timeout_ms` must be at least 1".into())),
                    ms => parsed.timeout = Duration::from_millis(u64::from(ms)),
                },
                "max_connections" => match number::<usize>(name, value)? {
                    0 => return Err(invalid("`max_connections` must be at least 1".into())),
                    n => parsed.max_connections = n,
                },
                "expire_after_ttl" => {
                    parsed.expire_after_ttl = match value {
                        "true" | "1" => true,
                        "false" | "0" => false,
                        _ => {
                            return Err(invalid(format!(
                                "`expire_after_ttl={value}` must be true or false"
                            )));
                        }
                    }
                }
                "ca_file" | "cert_file" | "key_file" if !tls => {
                    return Err(invalid(format!(
                        "`{name}` is a TLS parameter: use {TLS_SCHEME}..."
                    )));
                }
                "ca_file" => {
                    if let Some(files) = &mut parsed.tls {
                        files.ca_file = Some(path(name, value)?);
                    }
                }
                "cert_file" => cert_file = Some(path(name, value)?),
                "key_file" => key_file = Some(path(name, value)?),
                other => {
                    return Err(invalid(format!(
                        "unknown parameter `{other}` (known: replicas, timeout_ms, max_connections, expire_after_ttl, and with TLS ca_file, cert_file, key_file)"
                    )));
                }
            }
        }
        match (cert_file, key_file, &mut parsed.tls) {
            (Some(cert), Some(key), Some(files)) => files.client = Some((cert, key)),
            (None, None, _) => {}
            _ => {
                return Err(invalid(
                    "`cert_file` and `key_file` go together: give both for a client certificate"
                        .into(),
                ));
            }
        }
        Ok(parsed)
    }

    /// The seed nodes as `redis://` (or `rediss://`) URLs for the client.
    pub(crate) fn node_urls(&self) -> Vec<String> {
        let scheme = if self.tls.is_some() {
            "rediss"
        } else {
            "redis"
        };
        self.nodes
            .iter()
            .map(|node| format!("{scheme}://{node}"))
            .collect()
    }
}

fn non_empty(text: &str) -> Option<String> {
    (!text.is_empty()).then(|| text.to_string())
}

fn number<T: std::str::FromStr>(name: &str, value: &str) -> Result<T> {
    value
        .parse()
        .map_err(|_| invalid(format!("`{name}={value}` is not a whole number")))
}

fn path(name: &str, value: &str) -> Result<String> {
    if value.is_empty() {
        return Err(invalid(format!("`{name}` needs a file path")));
    }
    Ok(value.to_string())
}

fn invalid(message: String) -> Error {
    Error::Url(message)
}

/// The URL without its password, for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(start), Some(at)) if at > start => format!("{}***{}", &url[..start + 3], &url[at..]),
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_with_credentials_nodes_and_parameters() {
        let url = ClusterUrl::parse(
            "redis+cluster://quiver:s3cret@10.0.0.1:7000,10.0.0.2:7001?replicas=1&timeout_ms=250",
        )
        .expect("parse");
        assert_eq!(url.nodes, ["10.0.0.1:7000", "10.0.0.2:7001"]);
        assert_eq!(url.username.as_deref(), Some("quiver"));
        assert_eq!(url.password.as_deref(), Some("s3cret"));
        assert_eq!((url.replicas, url.timeout), (1, Duration::from_millis(250)));
        assert!(!url.expire_after_ttl);
        let expiring = ClusterUrl::parse("redis+cluster://h:1?expire_after_ttl=true");
        assert!(expiring.expect("parse").expire_after_ttl);
        assert!(!format!("{url:?}").contains("s3cret"));
        let plain = ClusterUrl::parse("redis+cluster://127.0.0.1:7000/").expect("parse");
        assert_eq!(
            (plain.username, plain.password, plain.replicas),
            (None, None, 0)
        );
    }

    #[test]
    fn bad_urls_say_what_is_wrong_without_the_password() {
        for (url, says) in [
            ("redis://127.0.0.1:7000", "is not a redis+cluster://"),
            ("redis+cluster://127.0.0.1", "is not HOST:PORT"),
            ("redis+cluster://h:1?replicas=x", "not a whole number"),
            ("redis+cluster://h:1?tls=1", "unknown parameter `tls`"),
            ("redis+cluster://h:1?ca_file=/ca.pem", "is a TLS parameter"),
            ("rediss+cluster://h:1?cert_file=/c.pem", "go together"),
            ("rediss+cluster://h:1?ca_file=", "needs a file path"),
            (
                "redis+cluster://h:1?expire_after_ttl=yes",
                "must be true or false",
            ),
            ("redis+cluster://h:1?max_connections=0", "at least 1"),
        ] {
            let error = ClusterUrl::parse(url).expect_err(url).to_string();
            assert!(error.contains(says), "{url}: {error}");
        }
        for (url, password) in [
            ("redis://u:pw@h:1", "pw"),
            ("redis+cluster://user:pa?ss@h", "pa?ss"),
            ("redis+cluster://u:12?x@h:1?tls=1", "12"),
            ("redis+cluster://u:p@ss?@h:1?timeout_ms=0", "p@ss"),
            ("rediss+cluster://u:zz9@h:1?cert_file=/c.pem", "zz9"),
        ] {
            let error = ClusterUrl::parse(url).expect_err(url).to_string();
            assert!(!error.contains(password), "{error}");
        }
        let url = ClusterUrl::parse("redis+cluster://u:p?w@d@h:1?replicas=2").expect("parse");
        assert_eq!((url.password.as_deref(), url.replicas), (Some("p?w@d"), 2));
    }

    #[test]
    fn tls_urls_name_their_files() {
        let url = ClusterUrl::parse(
            "rediss+cluster://h:1,h:2?ca_file=/ca.pem&cert_file=/c.pem&key_file=/c.key",
        )
        .expect("parse");
        assert_eq!(url.node_urls(), ["rediss://h:1", "rediss://h:2"]);
        let files = url.tls.expect("tls");
        assert_eq!(files.ca_file.as_deref(), Some("/ca.pem"));
        assert_eq!(files.client, Some(("/c.pem".into(), "/c.key".into())));
        let system_roots = ClusterUrl::parse("rediss+cluster://h:1").expect("parse");
        assert_eq!(system_roots.tls, Some(TlsFiles::default()));
        let plain = ClusterUrl::parse("redis+cluster://h:1").expect("parse");
        assert_eq!(
            (plain.tls.clone(), plain.node_urls()),
            (None, vec!["redis://h:1".to_string()])
        );
    }
}
