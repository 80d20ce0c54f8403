//! `--online-store` URLs of a Redis Cluster or Valkey cluster:
//! `redis+cluster://[USER:PASSWORD@]HOST:PORT[,HOST:PORT...][?replicas=N&timeout_ms=MS]`.
//!
//! - the hosts are seed nodes: the client learns the rest of the cluster from them;
//! - `USER:PASSWORD` authenticate as an ACL user (percent-encoding is not decoded: pass the
//!   URL through the `QUIVER_ONLINE_STORE` environment variable to keep it out of `ps`);
//! - `replicas` (default 0): a durable write returns only once this many replicas of every
//!   primary acknowledged it (`WAIT`); 0 leaves durability to the primaries' own persistence;
//! - `timeout_ms` (default 1000): connect and response timeout of every command.

use std::time::Duration;

use crate::error::{Error, Result};

const SCHEME: &str = "redis+cluster://";

/// A parsed `redis+cluster://` URL.
#[derive(Clone, PartialEq, Eq)]
pub struct ClusterUrl {
    /// `HOST:PORT` of each seed node.
    pub nodes: Vec<String>,
    pub username: Option<String>,
    pub password: Option<String>,
    pub replicas: u32,
    pub timeout: Duration,
}

impl std::fmt::Debug for ClusterUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterUrl")
            .field("nodes", &self.nodes)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("replicas", &self.replicas)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl ClusterUrl {
    pub fn parse(url: &str) -> Result<ClusterUrl> {
        let rest = url.strip_prefix(SCHEME).ok_or_else(|| {
            invalid(format!(
                "`{}` is not a {SCHEME}HOST:PORT[,HOST:PORT] URL",
                redact(url)
            ))
        })?;
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
        };
        for pair in query.split('&').filter(|pair| !pair.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            match name {
                "replicas" => parsed.replicas = number(name, value)?,
                "timeout_ms" => match number::<u32>(name, value)? {
                    0 => return Err(invalid("`timeout_ms` must be at least 1".into())),
                    ms => parsed.timeout = Duration::from_millis(u64::from(ms)),
                },
                other => {
                    return Err(invalid(format!(
                        "unknown parameter `{other}` (known: replicas, timeout_ms)"
                    )));
                }
            }
        }
        Ok(parsed)
    }

    /// The seed nodes as `redis://` URLs for the client.
    pub(crate) fn node_urls(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|node| format!("redis://{node}"))
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
        ] {
            let error = ClusterUrl::parse(url).expect_err(url).to_string();
            assert!(error.contains(says), "{url}: {error}");
        }
        for url in [
            "redis://u:pw@h:1",
            "redis+cluster://user:pa?ss@h",
            "redis+cluster://u:12?x@h:1?tls=1",
            "redis+cluster://u:p@ss?@h:1?timeout_ms=0",
        ] {
            let error = ClusterUrl::parse(url).expect_err(url).to_string();
            assert!(
                !error.contains("pw") && !error.contains("ss") && !error.contains("12"),
                "{error}"
            );
        }
        let url = ClusterUrl::parse("redis+cluster://u:p?w@d@h:1?replicas=2").expect("parse");
        assert_eq!((url.password.as_deref(), url.replicas), (Some("p?w@d"), 2));
    }
}
