//! The online store on a Redis Cluster or Valkey cluster ([`RedisStore`]), so that several
//! stateless Quiver replicas serve the same online rows. `quiver serve --online-store
//! redis+cluster://HOST:PORT[,HOST:PORT]` selects it (`rediss+cluster://` with TLS, see
//! [`ClusterUrl`]); RocksDB stays the embedded default.
//!
//! # Layout
//!
//! - One key per (view, entity): `q{<hex of the encoded join key parts>}<view name>`. The
//!   braces are a hash tag: every view's row of one entity lives in one slot. The value is
//!   the online row layout of `quiver-online` (format byte 1), byte for byte what RocksDB
//!   stores.
//! - `quiver:newest:<view name>`: the newest event written online, 8 bytes little-endian.
//! - `quiver:watermark:<view>/<fingerprint>` and `quiver:lease:<name>`: how replicas share
//!   materialization (`coordination`).
//!
//! # Rules
//!
//! - The ordering rule is applied by the Redis Function library `quiver` (`quiver.lua`,
//!   loaded with `FUNCTION LOAD REPLACE` on every primary when the store opens, and again
//!   when a write finds a primary without it), atomically
//!   per key and exactly at every i64 (compared in 32-bit halves).
//! - Reads are one pipeline per call, split by the client per node (one round trip each).
//! - TTL stays a read-time rule: keys never expire, unless `expire_after_ttl=true` (then a
//!   row expires when it leaves its view's TTL, and reads it would have answered
//!   OUTSIDE_MAX_AGE answer NOT_FOUND). `maxmemory-policy` must be `noeviction` on every
//!   primary (checked at open): an evicted row would silently read as NOT_FOUND.
//! - Durability: with `replicas=N` in the URL every write waits (`WAIT`) until N replicas of
//!   each primary it wrote to have it, else fails UNAVAILABLE; with 0 (the default) it is the
//!   primaries' own persistence. Redis Cluster can still lose acknowledged writes on a
//!   failover: treat it as rebuildable from the offline data (materialize again).

mod coordination;
mod error;
mod gate;
mod url;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use quiver_core::ResolvedView;
use quiver_core::online_store::{Lease, OnlineStore, StoredRows, WriteStats};
use quiver_core::semantics::LogPosition;
use quiver_core::value::{KeyValue, Row};
use quiver_online::keys::{check_key, encode_key};
use quiver_online::{blocking, decode_row, encode_rows};
use redis::cluster::{ClusterClient, ClusterClientBuilder, ClusterConnection};
use redis::cluster_routing::{
    AggregateOp, MultipleNodeRoutingInfo, ResponsePolicy, Route, RoutingInfo,
    SingleNodeRoutingInfo, SlotAddr,
};

pub use error::{Error, Result};
pub use url::ClusterUrl;

/// The Function library with the ordering rule.
const FUNCTIONS: &str = include_str!("quiver.lua");
/// A write to at most this many slots waits for replicas per slot; a larger one, on every
/// primary.
const MAX_ROUTED_WAITS: usize = 8;

type CoreResult<T> = quiver_core::Result<T>;

/// Online rows in a Redis Cluster. A handle (clones share the connections); the inherent
/// methods block on the network, and the [`OnlineStore`] methods run them on the blocking
/// pool.
#[derive(Clone, Debug)]
pub struct RedisStore {
    shared: Arc<Shared>,
}

impl std::ops::Deref for RedisStore {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.shared
    }
}

/// What every handle of one [`RedisStore`] shares.
pub struct Shared {
    client: ClusterClient,
    idle: Mutex<Vec<ClusterConnection>>,
    /// Connections in use at once, at most `max_connections`.
    gate: gate::Gate,
    url: ClusterUrl,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// Connects to the cluster at `url`, checks that no primary evicts keys and loads the
    /// Function library on every primary.
    pub fn open(url: &str) -> Result<RedisStore> {
        let url = ClusterUrl::parse(url)?;
        let mut builder = ClusterClientBuilder::new(url.node_urls())
            .connection_timeout(url.timeout)
            .response_timeout(url.timeout);
        if let Some(username) = &url.username {
            builder = builder.username(username);
        }
        if let Some(password) = &url.password {
            builder = builder.password(password);
        }
        if let Some(files) = &url.tls {
            builder = builder.certs(tls_certificates(files)?);
        }
        let client = builder
            .build()
            .map_err(Error::redis("configure the client"))?;
        let store = RedisStore {
            shared: Arc::new(Shared {
                client,
                idle: Mutex::new(Vec::new()),
                gate: gate::Gate::new(url.max_connections),
                url,
            }),
        };
        store.with_connection(|connection| {
            check_no_eviction(connection)?;
            load_functions(connection).map_err(Error::redis("load the quiver Function library"))
        })?;
        tracing::info!(nodes = ?store.url.nodes, replicas = store.url.replicas, "opened the redis cluster online store");
        Ok(store)
    }

    /// Runs `f` on an idle connection (or a new one); the connection is reused only after
    /// success, since a failed command may leave it mid-answer. A failure the cluster is
    /// expected to recover from (a redirection after slots moved, a node down during a
    /// failover, a dropped connection) is retried twice, after 50 and 250 ms, on a new
    /// connection (which learns the slots anew); idle connections, whose slot maps may be
    /// as stale, are dropped. Every caller may be repeated: reads, writes under the
    /// ordering rule (a repeated row is a tie, written again), the watermark's
    /// compare-and-set, lease calls for one holder.
    fn with_connection<T>(
        &self,
        mut f: impl FnMut(&mut ClusterConnection) -> Result<T>,
    ) -> Result<T> {
        let mut backoff = [50, 250].into_iter();
        loop {
            match self.attempt(&mut f) {
                Err(error) if error.is_transient() => match backoff.next() {
                    Some(ms) => {
                        tracing::debug!(%error, "retrying on a new redis connection");
                        self.idle_pool().clear();
                        std::thread::sleep(std::time::Duration::from_millis(ms));
                    }
                    None => return Err(error),
                },
                other => return other,
            }
        }
    }

    fn attempt<T>(&self, f: &mut impl FnMut(&mut ClusterConnection) -> Result<T>) -> Result<T> {
        let _pass = self.gate.enter(self.url.timeout)?;
        let idle = self.idle_pool().pop();
        let mut connection = match idle {
            Some(connection) => connection,
            None => self
                .client
                .get_connection()
                .map_err(Error::redis("connect"))?,
        };
        let result = f(&mut connection);
        if result.is_ok() {
            let mut idle = self.idle_pool();
            if idle.len() < self.url.max_connections {
                idle.push(connection);
            }
        }
        result
    }

    fn idle_pool(&self) -> std::sync::MutexGuard<'_, Vec<ClusterConnection>> {
        // The pool holds no invariant a panic could break.
        self.idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Waits until `replicas=` replicas of each primary that holds one of `keys` have this
    /// connection's writes (`WAIT` counts one connection's writes on one node, so it goes to
    /// the same node connections the writes went through). Up to [`MAX_ROUTED_WAITS`] slots
    /// it is sent per slot (a slot's node, as the client routed the writes); beyond, every
    /// primary is asked, which a batch spread over the cluster writes to anyway.
    fn wait_for_replicas<K: AsRef<[u8]>>(
        &self,
        connection: &mut ClusterConnection,
        keys: &[K],
    ) -> Result<()> {
        if self.url.replicas == 0 {
            return Ok(());
        }
        // Half the response timeout, so that WAIT answers (with the count it got) before the
        // socket gives up on it.
        let timeout_ms = u64::try_from(self.url.timeout.as_millis() / 2)
            .unwrap_or(u64::MAX)
            .max(1);
        let wait = redis::cmd("WAIT")
            .arg(self.url.replicas)
            .arg(timeout_ms)
            .clone();
        let routes: std::collections::HashSet<Route> = keys
            .iter()
            .map(|key| Route::with_key(key, SlotAddr::Master))
            .collect();
        let routings: Vec<RoutingInfo> = if routes.len() <= MAX_ROUTED_WAITS {
            routes
                .into_iter()
                .map(|route| RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(route)))
                .collect()
        } else {
            vec![RoutingInfo::MultiNode((
                MultipleNodeRoutingInfo::AllMasters,
                Some(ResponsePolicy::Aggregate(AggregateOp::Min)),
            ))]
        };
        for routing in routings {
            let answer = connection
                .route_command(&wait, routing)
                .map_err(Error::redis("wait for replicas"))?;
            let acknowledged: i64 =
                redis::from_redis_value(answer).map_err(|_| Error::Protocol("WAIT"))?;
            if acknowledged < i64::from(self.url.replicas) {
                return Err(Error::Replicas {
                    acknowledged,
                    wanted: self.url.replicas,
                });
            }
        }
        Ok(())
    }

    /// The stored rows of `keys` (as [`redis_keys`] makes them): one pipeline.
    fn read(&self, keys: &[Vec<u8>]) -> CoreResult<StoredRows> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::cluster::cluster_pipe();
        for key in keys {
            pipe.get(key);
        }
        let stored: Vec<Option<Vec<u8>>> = self.with_connection(|connection| {
            pipe.query(connection)
                .map_err(Error::redis("read online rows"))
        })?;
        stored
            .into_iter()
            .map(|bytes| match bytes {
                None => Ok(None),
                Some(bytes) => Ok(Some(Arc::new(decode_row(&bytes)?))),
            })
            .collect()
    }

    fn write(
        &self,
        view: &ResolvedView,
        rows: &[Row],
        origin: Option<&LogPosition>,
    ) -> CoreResult<WriteStats> {
        let encoded = encode_rows(view, rows, origin)?;
        if encoded.is_empty() {
            return Ok(WriteStats::default());
        }
        let mut pipe = redis::cluster::cluster_pipe();
        let mut newest = i64::MIN;
        let mut written_keys = Vec::with_capacity(encoded.len() + 1);
        for row in &encoded {
            let key = redis_key(&view.name, &row.key);
            let put = pipe
                .cmd("FCALL")
                .arg("quiver_put")
                .arg(1)
                .arg(&key)
                .arg(&row.value);
            if self.url.expire_after_ttl && view.ttl > 0 {
                // Milliseconds since the epoch when the row leaves the TTL; at least 1 (a
                // time in the past deletes the key at once).
                put.arg((row.order.0.saturating_add(view.ttl) / 1_000).max(1));
            }
            written_keys.push(key);
            newest = newest.max(row.order.0);
        }
        // A row the rule skipped is not newer than the stored one, whose event time was
        // raised when it was written: raising by every offered row gives the same maximum.
        // It feeds freshness metrics only, so no `WAIT` is spent on its node alone.
        pipe.cmd("FCALL")
            .arg("quiver_max")
            .arg(1)
            .arg(newest_key(&view.name))
            .arg(&newest.to_le_bytes()[..])
            .ignore();
        let written: Vec<i64> = self.with_connection(|connection| {
            // The ordering rule makes a second write of a row a no-op or a tie.
            let written = with_functions(connection, |c| pipe.query(c))
                .map_err(Error::redis("write online rows"))?;
            self.wait_for_replicas(connection, &written_keys)?;
            Ok(written)
        })?;
        let written = written.iter().filter(|w| **w == 1).count() as u64;
        let stats = WriteStats {
            written,
            skipped_older: rows.len() as u64 - written,
        };
        tracing::debug!(feature_view = %view.name, rows = rows.len(), written, "wrote online rows to redis");
        Ok(stats)
    }
}

/// Keys of a small read are checked and encoded on the caller's task; every call to the
/// cluster runs on the blocking pool (the client is synchronous).
#[async_trait::async_trait]
impl OnlineStore for RedisStore {
    async fn read_rows(
        &self,
        view: &ResolvedView,
        keys: &[Vec<KeyValue>],
    ) -> CoreResult<StoredRows> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let store = self.clone();
        if keys.len() > quiver_online::INLINE_KEYS {
            // Many keys: checked and encoded on the blocking pool too.
            let (view, keys) = (view.clone(), keys.to_vec());
            return blocking(move || store.read(&redis_keys(&view, &keys)?)).await;
        }
        let keys = redis_keys(view, keys)?;
        blocking(move || store.read(&keys)).await
    }

    /// Every write already waited for the configured replicas (`WAIT` acknowledges the
    /// writes of one connection, so it is sent on the connection that wrote).
    async fn write_rows_at(
        &self,
        view: &ResolvedView,
        rows: Vec<Row>,
        origin: Option<&LogPosition>,
        _durable: bool,
    ) -> CoreResult<WriteStats> {
        let (store, view) = (self.clone(), view.clone());
        let origin = origin.cloned();
        blocking(move || store.write(&view, &rows, origin.as_ref())).await
    }

    async fn sync(&self) -> CoreResult<()> {
        Ok(())
    }

    async fn newest_event(&self, view: &str) -> CoreResult<Option<i64>> {
        let (store, key) = (self.clone(), newest_key(view));
        blocking(move || store.get_i64(&key, "read a view's newest event")).await
    }

    async fn watermark(&self, view: &ResolvedView) -> CoreResult<Option<i64>> {
        let (store, view) = (self.clone(), view.clone());
        blocking(move || store.read_watermark(&view)).await
    }

    async fn advance_watermark(
        &self,
        view: &ResolvedView,
        start: i64,
        end: i64,
    ) -> CoreResult<bool> {
        let (store, view) = (self.clone(), view.clone());
        blocking(move || store.advance(&view, start, end)).await
    }

    async fn acquire_lease(&self, name: &str, holder: &str, ttl: Duration) -> CoreResult<Lease> {
        let (store, name, holder) = (self.clone(), name.to_string(), holder.to_string());
        blocking(move || store.lease(&name, &holder, ttl)).await
    }

    async fn renew_lease(&self, name: &str, holder: &str, ttl: Duration) -> CoreResult<bool> {
        let (store, name, holder) = (self.clone(), name.to_string(), holder.to_string());
        blocking(move || store.renew(&name, &holder, ttl)).await
    }

    async fn release_lease(&self, name: &str, holder: &str) -> CoreResult<()> {
        let (store, name, holder) = (self.clone(), name.to_string(), holder.to_string());
        blocking(move || store.release(&name, &holder)).await
    }

    async fn put_record(&self, name: &str, bytes: &[u8], ttl: Duration) -> CoreResult<()> {
        let (store, name, bytes) = (self.clone(), name.to_string(), bytes.to_vec());
        blocking(move || store.put(&name, &bytes, ttl)).await
    }

    async fn record(&self, name: &str) -> CoreResult<Option<Vec<u8>>> {
        let (store, name) = (self.clone(), name.to_string());
        blocking(move || store.get(&name)).await
    }

    fn backend(&self) -> &'static str {
        "redis-cluster"
    }
}

/// The Redis keys of `keys`, each checked against the view's join keys.
fn redis_keys(view: &ResolvedView, keys: &[Vec<KeyValue>]) -> CoreResult<Vec<Vec<u8>>> {
    keys.iter()
        .map(|key| {
            check_key(view, key)?;
            Ok(redis_key(&view.name, &encode_key(&view.name, key)))
        })
        .collect()
}

impl RedisStore {
    /// One Function call (`FCALL ...`) on `key`, then `WAIT` for the configured replicas.
    fn call_function<T: redis::FromRedisValue>(
        &self,
        call: &redis::Cmd,
        key: &[u8],
        action: &'static str,
    ) -> Result<T> {
        self.with_connection(|connection| {
            let answer =
                with_functions(connection, |c| call.query(c)).map_err(Error::redis(action))?;
            self.wait_for_replicas(connection, &[key])?;
            Ok(answer)
        })
    }
}

/// Runs `f`, and once more after loading the Function library when a primary lacks it (it
/// was added to the cluster, or its functions flushed, after the store opened). `f` must be
/// safe to repeat.
fn with_functions<T>(
    connection: &mut ClusterConnection,
    mut f: impl FnMut(&mut ClusterConnection) -> redis::RedisResult<T>,
) -> redis::RedisResult<T> {
    match f(connection) {
        Err(error) if error.to_string().contains("Function not found") => {
            tracing::warn!(%error, "a primary lacks the quiver functions: loading them");
            load_functions(connection)?;
            f(connection)
        }
        other => other,
    }
}

/// The PEM files of `rediss+cluster://` read into the client's form.
fn tls_certificates(files: &url::TlsFiles) -> Result<redis::TlsCertificates> {
    let read = |path: &String, what: &str| {
        std::fs::read(path).map_err(|error| {
            Error::Config(format!(
                "cannot read the {what} `{path}` of --online-store: {error}"
            ))
        })
    };
    Ok(redis::TlsCertificates {
        root_cert: files
            .ca_file
            .as_ref()
            .map(|path| read(path, "ca_file"))
            .transpose()?,
        client_tls: files
            .client
            .as_ref()
            .map(|(cert, key)| {
                Ok::<_, Error>(redis::ClientTlsConfig {
                    client_cert: read(cert, "cert_file")?,
                    client_key: read(key, "key_file")?,
                })
            })
            .transpose()?,
    })
}

/// Loads the Function library on every primary (`FUNCTION LOAD` is routed to all of them).
fn load_functions(connection: &mut ClusterConnection) -> redis::RedisResult<()> {
    redis::cmd("FUNCTION")
        .arg("LOAD")
        .arg("REPLACE")
        .arg(FUNCTIONS)
        .exec(connection)
}

/// Refuses a cluster where some primary may evict keys: an evicted row would read as
/// NOT_FOUND, silently.
fn check_no_eviction(connection: &mut ClusterConnection) -> Result<()> {
    let routing = RoutingInfo::MultiNode((
        MultipleNodeRoutingInfo::AllMasters,
        Some(ResponsePolicy::CombineArrays),
    ));
    let answer = connection
        .route_command(
            redis::cmd("CONFIG").arg("GET").arg("maxmemory-policy"),
            routing,
        )
        .map_err(Error::redis("read maxmemory-policy"))?;
    let pairs: Vec<String> =
        redis::from_redis_value(answer).map_err(|_| Error::Protocol("CONFIG GET"))?;
    let policies: Vec<&String> = pairs.iter().skip(1).step_by(2).collect();
    if policies.is_empty() {
        return Err(Error::Protocol("CONFIG GET maxmemory-policy"));
    }
    match policies
        .iter()
        .find(|policy| policy.as_str() != "noeviction")
    {
        Some(policy) => Err(Error::Config(format!(
            "a primary has maxmemory-policy `{policy}`; Quiver needs `noeviction` on every primary (an evicted row would read as NOT_FOUND): CONFIG SET maxmemory-policy noeviction"
        ))),
        None => Ok(()),
    }
}

/// `q{<hex of the key parts>}<view>` from the online key layout (`[1][u16 name length]
/// [name][parts]`): the entity's parts are the hash tag, so an entity's views share a slot.
fn redis_key(view: &str, encoded: &[u8]) -> Vec<u8> {
    let parts = encoded.get(3 + view.len()..).unwrap_or_default();
    let mut key = Vec::with_capacity(3 + parts.len() * 2 + view.len());
    key.extend_from_slice(b"q{");
    for byte in parts {
        key.extend_from_slice(format!("{byte:02x}").as_bytes());
    }
    key.push(b'}');
    key.extend_from_slice(view.as_bytes());
    key
}

fn newest_key(view: &str) -> String {
    format!("quiver:newest:{view}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entity_has_one_hash_tag_for_all_its_views() {
        let key = [KeyValue::Int64(7), KeyValue::String("a}b".into())];
        let trips = redis_key("trips", &encode_key("trips", &key));
        let spend = redis_key("spend", &encode_key("spend", &key));
        let tag = |key: &[u8]| {
            let text = String::from_utf8(key.to_vec()).expect("hex is text");
            let (start, end) = (text.find('{').expect("{"), text.find('}').expect("}"));
            text[start + 1..end].to_string()
        };
        assert_eq!(tag(&trips), tag(&spend));
        assert!(trips.ends_with(b"}trips"));
        // Another entity, another tag.
        let other = redis_key("trips", &encode_key("trips", &[KeyValue::Int64(8)]));
        assert_ne!(tag(&other), tag(&trips));
    }
}
