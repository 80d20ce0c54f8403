//! `quiver serve`'s options for the files requests may touch: the export directory, the
//! labels roots and the source roots (see ARCHITECTURE.md, "Files the server touches").

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use quiver_server::FileRoots;

use crate::config::ConfigFile;

#[derive(Debug, Default, clap::Args)]
pub(crate) struct FileRootsArgs {
    /// Directory server-side exports are written to (`quiver export --server-side --out` is
    /// relative to it) [default: <data-dir>/exports].
    #[arg(long, env = "QUIVER_EXPORT_DIR")]
    export_dir: Option<PathBuf>,
    /// Directory the server may read label tables from by path (repeatable; env: a
    /// colon-separated list) [default: none, label tables are uploaded].
    #[arg(
        long = "labels-root",
        env = "QUIVER_LABELS_ROOTS",
        value_delimiter = ':'
    )]
    labels_roots: Vec<PathBuf>,
    /// Directory manifest `parquet:` sources must lie under (repeatable; env: a
    /// colon-separated list) [default: the working directory of `quiver serve`].
    #[arg(
        long = "source-root",
        env = "QUIVER_SOURCE_ROOTS",
        value_delimiter = ':'
    )]
    source_roots: Vec<PathBuf>,
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
            labels_roots: or(self.labels_roots, &file.labels_roots, defaults.labels_roots),
            source_roots: or(self.source_roots, &file.source_roots, defaults.source_roots),
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
        };
        let roots = args.resolve(&file, data_dir).expect("resolve");
        assert_eq!(roots.export_dir, PathBuf::from("/out"));
        assert_eq!(
            roots.labels_roots,
            [PathBuf::from("/a"), PathBuf::from("/b")]
        );
        assert_eq!(roots.source_roots, [PathBuf::from("/src/file")]);
    }
}
