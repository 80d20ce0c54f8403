//! A real Redis Cluster for the online store tests: `redis-server` processes (Debian's
//! `redis-server`, installed by `scripts/setup`) in cluster mode on free loopback ports, joined
//! with `redis-cli --cluster create`, stopped when dropped.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

/// A running cluster: its nodes' processes and ports (primaries first, as created).
#[derive(Debug)]
pub struct RedisCluster {
    children: Vec<Child>,
    pub ports: Vec<u16>,
    /// The nodes' working directory (cluster configuration files).
    dir: tempfile::TempDir,
    /// TLS on every port, the cluster bus and replication (then no plain port).
    tls: Option<NodeTls>,
}

/// PEM files of a TLS cluster: the CA, and the certificate and key of every node (and of
/// `redis-cli`).
#[derive(Debug, Clone)]
pub struct NodeTls {
    pub ca: std::path::PathBuf,
    pub cert: std::path::PathBuf,
    pub key: std::path::PathBuf,
}

impl RedisCluster {
    /// Starts `primaries` (at least 3, as Redis Cluster requires) and waits until the
    /// cluster serves every slot.
    pub fn start(primaries: usize) -> Result<RedisCluster> {
        Self::start_with_replicas(primaries, 0)
    }

    /// Starts `primaries` with `replicas` replicas each; a primary that stops answering for
    /// a second fails over to its replica (`cluster-node-timeout 1000`).
    pub fn start_with_replicas(primaries: usize, replicas: usize) -> Result<RedisCluster> {
        Self::launch(primaries, replicas, None)
    }

    /// Starts `primaries` that speak only TLS (clients, cluster bus, replication) and ask
    /// clients for a certificate signed by the CA (`tls-auth-clients optional`: without
    /// one, a client must still trust the nodes' certificates).
    pub fn start_tls(primaries: usize, tls: NodeTls) -> Result<RedisCluster> {
        Self::launch(primaries, 0, Some(tls))
    }

    fn launch(primaries: usize, replicas: usize, tls: Option<NodeTls>) -> Result<RedisCluster> {
        let mut cluster = RedisCluster {
            children: Vec::new(),
            ports: Vec::new(),
            dir: tempfile::tempdir()?,
            tls,
        };
        for _ in 0..primaries * (1 + replicas) {
            cluster.spawn_node()?;
        }
        let nodes: Vec<String> = cluster.ports.iter().map(|p| node(*p)).collect();
        let created = cluster
            .redis_cli()
            .args(["--cluster", "create"])
            .args(&nodes)
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .stdin(Stdio::null())
            .output()?;
        anyhow::ensure!(
            created.status.success(),
            "redis-cli --cluster create failed: {}",
            String::from_utf8_lossy(&created.stdout)
        );
        for port in cluster.ports.clone() {
            cluster.wait_for_ok(port)?;
            wait_until(
                || {
                    let info = cluster.cli(port, &["INFO", "replication"])?;
                    Ok(info.contains("role:master") || info.contains("master_link_status:up"))
                },
                "replicas in sync",
            )?;
        }
        Ok(cluster)
    }

    /// Starts one more node (not yet in the cluster) and returns its port.
    fn spawn_node(&mut self) -> Result<u16> {
        let port = free_port()?;
        let mut command = Command::new("redis-server");
        match &self.tls {
            None => command.args(["--port", &port.to_string()]),
            Some(tls) => command
                .args(["--port", "0", "--tls-port", &port.to_string()])
                .args(["--tls-cluster", "yes", "--tls-replication", "yes"])
                .args(["--tls-auth-clients", "optional"])
                .arg("--tls-cert-file")
                .arg(&tls.cert)
                .arg("--tls-key-file")
                .arg(&tls.key)
                .arg("--tls-ca-cert-file")
                .arg(&tls.ca),
        };
        let child = command
            .args(["--bind", "127.0.0.1"])
            .args(["--cluster-enabled", "yes"])
            .args(["--cluster-config-file", &format!("nodes-{port}.conf")])
            .args(["--cluster-node-timeout", "1000"])
            .args(["--save", "", "--appendonly", "no"])
            .args(["--maxmemory-policy", "noeviction"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot start redis-server; install it with `apt-get install redis-server` (scripts/setup does)")?;
        self.children.push(child);
        self.ports.push(port);
        wait_until(
            || Ok(self.cli(port, &["PING"])? == "PONG"),
            "redis-server up",
        )?;
        Ok(port)
    }

    /// Waits until the node on `port` sees every slot served.
    pub fn wait_for_ok(&self, port: u16) -> Result<()> {
        wait_until(
            || {
                Ok(self
                    .cli(port, &["CLUSTER", "INFO"])?
                    .contains("cluster_state:ok"))
            },
            "cluster_state:ok",
        )
    }

    /// Adds an empty primary to the cluster and returns its port.
    pub fn add_primary(&mut self) -> Result<u16> {
        let port = self.spawn_node()?;
        let added = self
            .redis_cli()
            .args(["--cluster", "add-node", &node(port), &node(self.ports[0])])
            .stdin(Stdio::null())
            .output()?;
        anyhow::ensure!(
            added.status.success(),
            "redis-cli --cluster add-node failed: {}",
            String::from_utf8_lossy(&added.stdout)
        );
        wait_until(
            || {
                let checked = self
                    .redis_cli()
                    .args(["--cluster", "check", &node(self.ports[0])])
                    .stdin(Stdio::null())
                    .output()?;
                Ok(checked.status.success()
                    && !String::from_utf8_lossy(&checked.stdout).contains("[ERR]"))
            },
            "every node agreeing on the new one",
        )?;
        self.wait_for_ok(port)?;
        Ok(port)
    }

    /// Moves slots (and their keys) so that every primary, empty ones too, serves a share:
    /// `redis-cli --cluster rebalance --cluster-use-empty-masters`.
    pub fn rebalance(&self) -> Result<()> {
        let moved = self
            .redis_cli()
            .args(["--cluster", "rebalance", &node(self.ports[0])])
            .args(["--cluster-use-empty-masters", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()?;
        let out = String::from_utf8_lossy(&moved.stdout);
        anyhow::ensure!(
            moved.status.success() && !out.contains("ERR"),
            "redis-cli --cluster rebalance failed: {out}"
        );
        Ok(())
    }

    /// The ports of the nodes that are primaries now (per `CLUSTER NODES` on `via`).
    pub fn primaries(&self, via: u16) -> Result<Vec<u16>> {
        let nodes = self.cli(via, &["CLUSTER", "NODES"])?;
        Ok(nodes
            .lines()
            .filter(|line| line.contains("master") && !line.contains("fail"))
            .filter_map(|line| line.split_whitespace().nth(1))
            .filter_map(|addr| addr.split('@').next()?.rsplit(':').next()?.parse().ok())
            .collect())
    }

    /// Kills the node on `port` (SIGKILL).
    pub fn kill(&mut self, port: u16) -> Result<()> {
        let index = self
            .ports
            .iter()
            .position(|p| *p == port)
            .context("no such node")?;
        self.children[index].kill()?;
        self.children[index].wait()?;
        Ok(())
    }

    /// The `--online-store` URL, seeded with the first node (`rediss+cluster://` without
    /// its TLS parameters on a TLS cluster).
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() {
            "rediss"
        } else {
            "redis"
        };
        format!("{scheme}+cluster://127.0.0.1:{}", self.ports[0])
    }

    /// `redis-cli -p PORT ARGS...`, its output trimmed.
    /// `redis-cli`, with the cluster's TLS files when it has them.
    fn redis_cli(&self) -> Command {
        let mut command = Command::new("redis-cli");
        if let Some(tls) = &self.tls {
            command
                .arg("--tls")
                .arg("--cacert")
                .arg(&tls.ca)
                .arg("--cert")
                .arg(&tls.cert)
                .arg("--key")
                .arg(&tls.key);
        }
        command
    }

    pub fn cli(&self, port: u16, args: &[&str]) -> Result<String> {
        let output = self
            .redis_cli()
            .args(["-h", "127.0.0.1", "-p", &port.to_string()])
            .args(args)
            .stdin(Stdio::null())
            .output()?;
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
    }

    /// Deletes every key matching `pattern` on every node (as a failover that lost them
    /// would); returns how many.
    pub fn delete_matching(&self, pattern: &str) -> Result<usize> {
        let mut deleted = 0;
        for port in &self.ports {
            let keys = self.cli(*port, &["--scan", "--pattern", pattern])?;
            for key in keys.lines().filter(|k| !k.is_empty()) {
                anyhow::ensure!(self.cli(*port, &["DEL", key])? == "1", "DEL {key}");
                deleted += 1;
            }
        }
        Ok(deleted)
    }

    /// Keys held by the node on `port`.
    pub fn keys_on(&self, port: u16) -> Result<u64> {
        Ok(self.cli(port, &["DBSIZE"])?.parse()?)
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn node(port: u16) -> String {
    format!("127.0.0.1:{port}")
}

/// A free loopback port whose cluster bus port (port + 10000) is free too.
fn free_port() -> Result<u16> {
    for _ in 0..100 {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        if port < 55_000 && TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
            return Ok(port);
        }
    }
    anyhow::bail!("no free port pair for a redis cluster node")
}

fn wait_until(mut ready: impl FnMut() -> Result<bool>, what: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ready().unwrap_or(false) {
        anyhow::ensure!(
            Instant::now() < deadline,
            "redis cluster: no {what} in 30 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}
