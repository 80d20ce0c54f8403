//! `quiver serve`'s options for the files requests may touch: the export directory, the
//! labels roots and the source roots (see ARCHITECTURE.md, "Files the server touches").

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use quiver_server::FileRoots;

use crate::config::ConfigFile;

#[derive(Debug, Default, clap::Args)]
pub(crate) struct FileRootsArgs {
    /// Directory server-side exports are written to (`quiver export --server-side --out` is
    /// relative to it), or an object storage prefix (`s3://bucket/exports`)
    /// [default: <data-dir>/exports].
    #[arg(long, env = "QUIVER_EXPORT_DIR")]
    export_dir: Option<PathBuf>,
    /// Directory or object storage prefix (`s3://bucket/labels`) the server may read label
    /// tables from by path (repeatable; env: a colon-separated list) [default: none, label
    /// tables are uploaded].
    #[arg(
        long = "labels-root",
        env = "QUIVER_LABELS_ROOTS",
        value_delimiter = ':'
    )]
    labels_roots: Vec<PathBuf>,
    /// Directory or object storage prefix (`s3://bucket/features`) manifest `parquet:`
    /// sources must lie under (repeatable; env: a colon-separated list) [default: the
    /// working directory of `quiver serve`].
    #[arg(
        long = "source-root",
        env = "QUIVER_SOURCE_ROOTS",
        value_delimiter = ':'
    )]
    source_roots: Vec<PathBuf>,
    /// An option of the object storage clients, KEY=VALUE, applied after the environment's
    /// AWS_*, GOOGLE_* and AZURE_* variables (repeatable): aws_endpoint, aws_region,
    /// aws_allow_http, aws_access_key_id, google_service_account, azure_storage_account_name,
    /// timeout, connect_timeout, ...
    #[arg(long = "object-store-option", value_name = "KEY=VALUE", value_parser = key_value)]
    object_store_options: Vec<(String, String)>,
}

fn key_value(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.trim().is_empty() => {
            Ok((key.trim().to_string(), value.to_string()))
        }
        _ => Err(format!(
            "`{text}` is not KEY=VALUE (for example aws_region=eu-west-1)"
        )),
    }
}

/// Roots split at `:` (the list separator) put back together where a URL was split:
/// `s3`, `//bucket/prefix` is `s3://bucket/prefix`.
fn rejoin_urls(parts: Vec<PathBuf>) -> Vec<PathBuf> {
    let mut joined: Vec<PathBuf> = Vec::with_capacity(parts.len());
    for part in parts {
        let text = part.to_string_lossy();
        if let Some(scheme) = joined.last().and_then(|p| p.to_str())
            && !scheme.is_empty()
            && scheme.bytes().all(|b| b.is_ascii_alphanumeric())
            && text.starts_with("//")
        {
            let url = format!("{scheme}:{text}");
            joined.pop();
            joined.push(PathBuf::from(url));
        } else {
            joined.push(part);
        }
    }
    joined
}

impl FileRootsArgs {
    /// Flags and env first, then the config file, then the defaults.
    pub(crate) fn resolve(self, file: &ConfigFile, data_dir: &Path) -> Result<FileRoots> {
        let working_dir = std::env::current_dir().context("the working directory")?;
        let defaults = FileRoots::defaults(data_dir, working_dir);
        let or = |given: Vec<PathBuf>, configured: &Option<Vec<PathBuf>>, default: Vec<PathBuf>| {
            if !given.is_empty() {
                given
            } else {
                configured.clone().unwrap_or(default)
            }
        };
        Ok(FileRoots {
            export_dir: self
                .export_dir
                .or_else(|| file.export_dir.clone())
                .unwrap_or(defaults.export_dir),
            labels_roots: or(
                rejoin_urls(self.labels_roots),
                &file.labels_roots,
                defaults.labels_roots,
            ),
            source_roots: or(
                rejoin_urls(self.source_roots),
                &file.source_roots,
                defaults.source_roots,
            ),
            object_store_options: if self.object_store_options.is_empty() {
                file.object_store_options
                    .clone()
                    .map(|o| o.into_iter().collect())
                    .unwrap_or_default()
            } else {
                self.object_store_options
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_win_over_the_config_file_which_wins_over_defaults() {
        let data_dir = Path::new("/srv/quiver");
        let none = FileRootsArgs::default()
            .resolve(&ConfigFile::default(), data_dir)
            .expect("defaults");
        assert_eq!(none.export_dir, data_dir.join("exports"));
        assert!(none.labels_roots.is_empty());
        assert_eq!(none.source_roots, [std::env::current_dir().expect("cwd")]);
        let file = ConfigFile {
            labels_roots: Some(vec!["/from/file".into()]),
            source_roots: Some(vec!["/src/file".into()]),
            ..ConfigFile::default()
        };
        let args = FileRootsArgs {
            export_dir: Some("/out".into()),
            labels_roots: vec!["/a".into(), "/b".into()],
            source_roots: Vec::new(),
            object_store_options: Vec::new(),
        };
        let roots = args.resolve(&file, data_dir).expect("resolve");
        assert_eq!(roots.export_dir, PathBuf::from("/out"));
        assert_eq!(
            roots.labels_roots,
            [PathBuf::from("/a"), PathBuf::from("/b")]
        );
        assert_eq!(roots.source_roots, [PathBuf::from("/src/file")]);
    }

    #[test]
    fn urls_split_at_the_list_separator_are_joined_again() {
        let parts = ["s3", "//bucket/features", "/local", "gs", "//b", "s3"];
        let joined = rejoin_urls(parts.iter().map(PathBuf::from).collect());
        let want = ["s3://bucket/features", "/local", "gs://b", "s3"];
        assert_eq!(joined, want.iter().map(PathBuf::from).collect::<Vec<_>>());
        assert_eq!(
            key_value("aws_region=eu-west-1"),
            Ok(("aws_region".into(), "eu-west-1".into()))
        );
        assert!(key_value("no-equals").is_err() && key_value("=x").is_err());
    }

    #[test]
    fn object_storage_roots_survive_the_flag_parser() {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            roots: FileRootsArgs,
        }
        let cli = <Cli as clap::Parser>::try_parse_from([
            "quiver",
            "--source-root",
            "s3://bucket/features",
            "--source-root",
            "/local:gs://other/prefix",
            "--labels-root",
            "s3://bucket/labels",
            "--export-dir",
            "s3://bucket/exports",
            "--object-store-option",
            "aws_endpoint=http://127.0.0.1:9000",
        ])
        .expect("parse");
        let roots = cli
            .roots
            .resolve(&ConfigFile::default(), Path::new("/srv/quiver"))
            .expect("resolve");
        let paths = |list: &[&str]| list.iter().map(PathBuf::from).collect::<Vec<_>>();
        assert_eq!(
            roots.source_roots,
            paths(&["s3://bucket/features", "/local", "gs://other/prefix"])
        );
        assert_eq!(roots.labels_roots, paths(&["s3://bucket/labels"]));
        assert_eq!(roots.export_dir, PathBuf::from("s3://bucket/exports"));
        assert_eq!(
            roots.object_store_options,
            [(
                "aws_endpoint".to_string(),
                "http://127.0.0.1:9000".to_string()
            )]
        );
    }
}
