//! A real Redis Cluster for the online store tests: `redis-server` processes (Debian's
//! `redis-server`, installed by `scripts/setup`) in cluster mode on free loopback ports, joined
//! with `redis-cli --cluster create`, stopped when dropped.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

/// A running cluster of primaries (no replicas).
#[derive(Debug)]
pub struct RedisCluster {
    children: Vec<Child>,
    pub ports: Vec<u16>,
    /// The nodes' working directory (cluster configuration files).
    dir: tempfile::TempDir,
}

impl RedisCluster {
    /// Starts `primaries` (at least 3, as Redis Cluster requires) and waits until the
    /// cluster serves every slot.
    pub fn start(primaries: usize) -> Result<RedisCluster> {
        let mut cluster = RedisCluster {
            children: Vec::new(),
            ports: Vec::new(),
            dir: tempfile::tempdir()?,
        };
        for _ in 0..primaries {
            let port = free_port()?;
            let child = Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--cluster-enabled", "yes"])
                .args(["--cluster-config-file", &format!("nodes-{port}.conf")])
                .args(["--save", "", "--appendonly", "no"])
                .args(["--maxmemory-policy", "noeviction"])
                .arg("--dir")
                .arg(cluster.dir.path())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .context("cannot start redis-server; install it with `apt-get install redis-server` (scripts/setup does)")?;
            cluster.children.push(child);
            cluster.ports.push(port);
        }
        for port in &cluster.ports {
            wait_until(
                || Ok(cluster.cli(*port, &["PING"])? == "PONG"),
                "redis-server up",
            )?;
        }
        let nodes: Vec<String> = cluster
            .ports
            .iter()
            .map(|port| format!("127.0.0.1:{port}"))
            .collect();
        let created = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&nodes)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()?;
        anyhow::ensure!(
            created.status.success(),
            "redis-cli --cluster create failed: {}",
            String::from_utf8_lossy(&created.stdout)
        );
        for port in &cluster.ports {
            wait_until(
                || {
                    Ok(cluster
                        .cli(*port, &["CLUSTER", "INFO"])?
                        .contains("cluster_state:ok"))
                },
                "cluster_state:ok",
            )?;
        }
        Ok(cluster)
    }

    /// The `--online-store` URL, seeded with the first node.
    pub fn url(&self) -> String {
        format!("redis+cluster://127.0.0.1:{}", self.ports[0])
    }

    /// `redis-cli -p PORT ARGS...`, its output trimmed.
    pub fn cli(&self, port: u16, args: &[&str]) -> Result<String> {
        let output = Command::new("redis-cli")
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
