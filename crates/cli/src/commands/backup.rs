//! `quiver backup --out DIR` (through a running server) and `quiver restore --from DIR
//! --data-dir NEW` (offline, no server).
//!
//! A backup directory holds the files the server streamed (`rocksdb/...`, `offline/...`) and,
//! written last, `quiver-backup.json`: every file with its size and SHA-256, the registry
//! version and the time. A directory without it is an interrupted backup, which restore
//! refuses.

use std::io::Write;
use std::path::{Component, Path, PathBuf};

use anyhow::{Context, Result, bail};
use futures::StreamExt;
use quiver_core::fingerprint::hex;
use quiver_proto::v1;
use serde::{Deserialize, Serialize};
use sha2::Digest;

use crate::ServerArg;
use crate::client::connect;

const MANIFEST: &str = "quiver-backup.json";

#[derive(Debug, clap::Args)]
pub(crate) struct BackupArgs {
    /// Directory to write the backup into (must not exist, or be empty).
    #[arg(long)]
    out: PathBuf,
    #[command(flatten)]
    server: ServerArg,
}

#[derive(Debug, clap::Args)]
pub(crate) struct RestoreArgs {
    /// A directory written by `quiver backup`.
    #[arg(long)]
    from: PathBuf,
    /// The new data directory (must not exist, or be empty); serve it with
    /// `quiver serve --data-dir`.
    #[arg(long)]
    data_dir: PathBuf,
}

#[derive(Debug, Serialize, Deserialize)]
struct Manifest {
    registry_version: u64,
    started_at_micros: i64,
    files: Vec<ManifestFile>,
}

#[derive(Debug, Serialize, Deserialize)]
struct ManifestFile {
    path: String,
    size: u64,
    sha256: String,
}

pub(crate) async fn backup(args: BackupArgs) -> Result<()> {
    ensure_empty(&args.out, "--out")?;
    let clients = connect(&args.server).await?;
    let mut admin = v1::admin_service_client::AdminServiceClient::new(clients.channel);
    let mut stream = admin.backup(v1::BackupRequest {}).await?.into_inner();
    let mut writer = FileWriter::default();
    let mut files = Vec::new();
    while let Some(message) = stream.next().await {
        match message?.item {
            Some(v1::backup_response::Item::Chunk(chunk)) => {
                if let Some(done) = writer.write(&args.out, chunk)? {
                    files.push(done);
                }
            }
            Some(v1::backup_response::Item::Summary(summary)) => {
                let manifest = Manifest {
                    registry_version: summary.registry_version,
                    started_at_micros: summary.started_at_micros,
                    files,
                };
                if manifest.files.len() as u64 != summary.files {
                    bail!(
                        "the server announced {} files and sent {}",
                        summary.files,
                        manifest.files.len()
                    );
                }
                let path = args.out.join(MANIFEST);
                std::fs::write(&path, serde_json::to_vec_pretty(&manifest)?)
                    .with_context(|| format!("cannot write {}", path.display()))?;
                println!(
                    "Backed up {} files ({:.1} MiB), registry version {}, to {}",
                    manifest.files.len(),
                    summary.bytes as f64 / (1 << 20) as f64,
                    manifest.registry_version,
                    args.out.display()
                );
                return Ok(());
            }
            None => bail!("the server sent an empty backup message"),
        }
    }
    bail!(
        "the backup stream ended before its summary; the backup in {} is incomplete",
        args.out.display()
    )
}

pub(crate) fn restore(args: RestoreArgs) -> Result<()> {
    let manifest_path = args.from.join(MANIFEST);
    let manifest: Manifest =
        serde_json::from_slice(&std::fs::read(&manifest_path).with_context(|| {
            format!(
                "{} is not a complete backup: cannot read {}",
                args.from.display(),
                manifest_path.display()
            )
        })?)
        .with_context(|| format!("invalid {}", manifest_path.display()))?;
    ensure_empty(&args.data_dir, "--data-dir")?;
    for file in &manifest.files {
        let relative = safe_relative(&file.path)?;
        let (from, to) = (args.from.join(&relative), args.data_dir.join(&relative));
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let (size, digest) = copy_hashed(&from, &to)?;
        if size != file.size || digest != file.sha256 {
            bail!(
                "{} does not match the backup manifest (damaged or changed); remove {} and \
                 restore from another backup",
                from.display(),
                args.data_dir.display()
            );
        }
    }
    let data_dir = args.data_dir.clone();
    let version = quiver_server::backup::verify_data_dir(&data_dir)
        .with_context(|| format!("the restored {} does not open", data_dir.display()))?;
    println!(
        "Restored {} files into {} (registry version {version}); serve it with `quiver serve --data-dir {}`",
        manifest.files.len(),
        args.data_dir.display(),
        args.data_dir.display()
    );
    Ok(())
}

/// Writes streamed chunks, one file at a time, hashing as it goes.
#[derive(Default)]
struct FileWriter {
    current: Option<(String, std::fs::File, sha2::Sha256, u64)>,
}

impl FileWriter {
    /// Appends `chunk`; on a file's last chunk checks size and hash and returns its entry.
    fn write(&mut self, out: &Path, chunk: v1::BackupFileChunk) -> Result<Option<ManifestFile>> {
        let (path, file, hasher, size) = match &mut self.current {
            Some(current) if current.0 == chunk.path => current,
            _ => {
                let relative = safe_relative(&chunk.path)?;
                let target = out.join(relative);
                if let Some(parent) = target.parent() {
                    std::fs::create_dir_all(parent)?;
                }
                let file = std::fs::File::create_new(&target)
                    .with_context(|| format!("cannot create {}", target.display()))?;
                self.current
                    .insert((chunk.path.clone(), file, sha2::Sha256::new(), 0))
            }
        };
        file.write_all(&chunk.data)?;
        hasher.update(&chunk.data);
        *size += chunk.data.len() as u64;
        if !chunk.last {
            return Ok(None);
        }
        file.sync_all()?;
        let digest = hex(&hasher.clone().finalize());
        if *size != chunk.size || digest != chunk.sha256 {
            bail!("{path} arrived damaged (size or SHA-256 differs from the server's)");
        }
        let done = ManifestFile {
            path: path.clone(),
            size: *size,
            sha256: digest,
        };
        self.current = None;
        Ok(Some(done))
    }
}

/// A relative path without `..`, absolute parts or prefixes: a backup names its files, it
/// never places them outside its directory.
fn safe_relative(path: &str) -> Result<PathBuf> {
    let relative = PathBuf::from(path);
    let safe = !path.is_empty()
        && relative
            .components()
            .all(|c| matches!(c, Component::Normal(_)));
    if !safe {
        bail!("refusing the backup path `{path}`: not a plain relative path");
    }
    Ok(relative)
}

fn ensure_empty(dir: &Path, flag: &str) -> Result<()> {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                bail!(
                    "{flag} {} is not empty; give a new directory",
                    dir.display()
                );
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create {flag} {}", dir.display())),
        Err(e) => Err(e).with_context(|| format!("cannot read {flag} {}", dir.display())),
    }
}

/// Copies `from` to the new file `to` (synced), a chunk at a time; returns size and SHA-256.
fn copy_hashed(from: &Path, to: &Path) -> Result<(u64, String)> {
    let mut source =
        std::fs::File::open(from).with_context(|| format!("cannot read {}", from.display()))?;
    let mut target =
        std::fs::File::create_new(to).with_context(|| format!("cannot create {}", to.display()))?;
    let (mut hasher, mut size) = (sha2::Sha256::new(), 0u64);
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let n = std::io::Read::read(&mut source, &mut buffer)
            .with_context(|| format!("cannot read {}", from.display()))?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
        target.write_all(&buffer[..n])?;
        size += n as u64;
    }
    target.sync_all()?;
    Ok((size, hex(&hasher.finalize())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_relative_paths_are_accepted() {
        assert!(safe_relative("rocksdb/000012.sst").is_ok());
        assert!(safe_relative("offline/stats@2/a.parquet").is_ok());
        for bad in ["", "/etc/passwd", "../x", "a/../../x", "./a", "a/./b/.."] {
            assert!(safe_relative(bad).is_err(), "{bad}");
        }
    }
}
