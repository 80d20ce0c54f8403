//! Confinement of the paths a request names: every file the server reads or writes for a
//! request lies under a directory the operator configured (a [`Roots`]).
//!
//! A request path is checked lexically first (no NUL, no `..`, an absolute path must start
//! with a root), so a path outside the roots is refused with the same message whether it
//! exists or not; only then is the file system consulted, and what it resolves to (symlinks
//! included) must still lie under the same root, or the same refusal follows. Directory walks
//! never descend into a symlinked directory, and are bounded in depth and in entries.

use std::ffi::OsStr;
use std::path::{Component, Path, PathBuf};

use crate::data_file::DataFile;
use crate::error::{Error, Result};
use crate::object::{ObjectStores, is_url};
pub(crate) use remote::RemoteRoot;
pub(crate) use remote::RemoteTarget;
pub(crate) use remote::list as list_objects;
pub(crate) use remote::list_async as list_objects_async;

/// Deepest directory level a walk descends to.
const MAX_DEPTH: usize = 32;
/// Most directory entries one walk looks at.
const MAX_ENTRIES: usize = 1_000_000;

/// A set of directories, given and canonical, and of object storage prefixes
/// (`s3://bucket/prefix`), and how to tell a user about them.
#[derive(Debug, Clone)]
pub struct Roots {
    /// What the roots are, for messages: "a labels root", "the export directory".
    what: &'static str,
    /// The server option that adds one ("--labels-root").
    flag: &'static str,
    dirs: Vec<Root>,
    remote: Vec<RemoteRoot>,
}

#[derive(Debug, Clone)]
struct Root {
    /// As configured, made absolute.
    given: PathBuf,
    /// With every symlink resolved.
    canonical: PathBuf,
}

/// A file an export may write: under the export directory, and replaced only if asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputFile {
    /// The file, or the object's URL.
    pub path: PathBuf,
    pub overwrite: bool,
    /// Set when the file is an object in object storage.
    pub(crate) remote: Option<RemoteTarget>,
}

impl Roots {
    /// Roots at `dirs`, which must exist; `what` and `flag` name them in messages. Object
    /// storage URLs among them use clients configured from the environment alone.
    pub fn new(what: &'static str, flag: &'static str, dirs: &[PathBuf]) -> Result<Roots> {
        Roots::open(what, flag, dirs, &ObjectStores::default())
    }

    /// Roots at `locations`: directories, which must exist, and object storage URLs
    /// (`s3://bucket/prefix`, `gs://...`, `az://...`), whose clients come from `stores` (the
    /// store is not contacted here).
    pub fn open(
        what: &'static str,
        flag: &'static str,
        locations: &[PathBuf],
        stores: &ObjectStores,
    ) -> Result<Roots> {
        let mut roots = Vec::new();
        let mut remote = Vec::new();
        for dir in locations {
            if let Some(url) = dir.to_str().filter(|s| is_url(s)) {
                remote.push(RemoteRoot::open(flag, url, stores)?);
                continue;
            }
            let given = std::path::absolute(dir).map_err(|e| Error::io(dir, e))?;
            let canonical = given.canonicalize().map_err(|e| Error::io(&given, e))?;
            if !canonical.is_dir() {
                return Err(Error::io(
                    &given,
                    std::io::Error::other(format!("{what} must be a directory")),
                ));
            }
            roots.push(Root { given, canonical });
        }
        Ok(Roots {
            what,
            flag,
            dirs: roots,
            remote,
        })
    }

    /// No root: every path is refused.
    pub fn none(what: &'static str, flag: &'static str) -> Roots {
        Roots {
            what,
            flag,
            dirs: Vec::new(),
            remote: Vec::new(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.dirs.is_empty() && self.remote.is_empty()
    }

    /// The canonical root directories.
    pub fn dirs(&self) -> impl Iterator<Item = &Path> {
        self.dirs.iter().map(|r| r.canonical.as_path())
    }

    /// The refusal of a path outside every root: the same whether the path exists or not.
    pub(crate) fn outside(&self, field: &str, request: &str) -> Error {
        let message = if self.is_empty() {
            format!(
                "`{request}` is refused: the server is configured to read no such files (server option `{flag}`)",
                flag = self.flag
            )
        } else {
            format!(
                "`{request}` is not under {what}; name a path under it (server option `{flag}`)",
                what = self.what,
                flag = self.flag
            )
        };
        Error::invalid(field, message)
    }

    /// The root `path` lies under lexically, and `path` made absolute on its canonical form.
    fn lexical(&self, field: &str, request: &str) -> Result<(&Root, PathBuf)> {
        let path = checked(field, request)?;
        if path.is_absolute() {
            for root in &self.dirs {
                for base in [&root.given, &root.canonical] {
                    if let Ok(rest) = path.strip_prefix(base) {
                        return Ok((root, root.canonical.join(rest).components().collect()));
                    }
                }
            }
            return Err(self.outside(field, request));
        }
        // Relative: under the first root where the path (or a glob's directory) exists.
        let probe = literal_prefix(&path);
        let root = self
            .dirs
            .iter()
            .find(|r| r.canonical.join(&probe).symlink_metadata().is_ok())
            .or(self.dirs.first())
            .ok_or_else(|| self.outside(field, request))?;
        Ok((root, root.canonical.join(path).components().collect()))
    }

    /// `path` with its symlinks resolved, if that lies under `root`; `None` if nothing is
    /// there. A dangling symlink counts as outside.
    fn resolved(
        &self,
        root: &Root,
        path: &Path,
        field: &str,
        request: &str,
    ) -> Result<Option<PathBuf>> {
        if path.symlink_metadata().is_err() {
            return Ok(None);
        }
        match path.canonicalize() {
            Ok(real) if real.starts_with(&root.canonical) => Ok(Some(real)),
            _ => Err(self.outside(field, request)),
        }
    }

    /// Blocking: the files a read location names, local ([`Roots::files`]) or in object
    /// storage (an object, a prefix or a glob).
    pub(crate) fn locate(&self, field: &str, request: &str) -> Result<Vec<DataFile>> {
        if self.is_remote(request) {
            return self.remote_files(field, request);
        }
        Ok(self
            .files(field, request)?
            .into_iter()
            .map(DataFile::Local)
            .collect())
    }

    /// The local files a read location names: a file, a directory (its `*.parquet` files, searched
    /// recursively, hidden and `_` names skipped) or a glob, sorted by path. A location that
    /// names nothing gives no file; the caller decides whether that is an error.
    pub fn files(&self, field: &str, request: &str) -> Result<Vec<PathBuf>> {
        let (root, path) = self.lexical(field, request)?;
        let mut walk = Walk {
            root,
            field,
            request,
            entries: 0,
            files: Vec::new(),
        };
        if request.contains(['*', '?', '[']) {
            let prefix = literal_prefix(&path);
            let rest = path.strip_prefix(&prefix).unwrap_or(&path);
            let pattern = glob::Pattern::new(&rest.to_string_lossy()).map_err(|e| {
                Error::invalid(
                    field,
                    format!("`{request}` is not a valid glob pattern: {e}"),
                )
            })?;
            let depth = if rest.to_string_lossy().contains("**") {
                MAX_DEPTH
            } else {
                rest.components().count()
            };
            if let Some(dir) = self.resolved(root, &prefix, field, request)?
                && dir.is_dir()
            {
                walk.glob(&dir, &dir, &pattern, depth)?;
            }
        } else if let Some(real) = self.resolved(root, &path, field, request)? {
            if real.is_dir() {
                walk.dir(&real, MAX_DEPTH)?;
            } else if real.is_file() {
                walk.files.push(real);
            }
        }
        let mut files = walk.files;
        sort_paths(&mut files);
        Ok(files)
    }

    /// The file an export writes for `request`, a path relative to the first root (or an
    /// absolute path under it). Its directory must exist; an existing file is replaced only
    /// with `overwrite`, and a directory never.
    pub fn output_file(&self, field: &str, request: &str, overwrite: bool) -> Result<OutputFile> {
        if self.is_remote(request) {
            return self.remote_output(field, request, overwrite);
        }
        if request.ends_with('/') {
            return Err(Error::invalid(
                field,
                format!("`{request}` names a directory; name a Parquet file"),
            ));
        }
        let (root, path) = self.lexical(field, request)?;
        let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
            return Err(Error::invalid(
                field,
                format!("`{request}` names no file; name a Parquet file"),
            ));
        };
        let Some(real_parent) = self.resolved(root, parent, field, request)? else {
            return Err(Error::invalid(
                field,
                format!(
                    "the directory of `{request}` does not exist in {}; create it first or name a file directly in it",
                    self.what
                ),
            ));
        };
        if !real_parent.is_dir() {
            return Err(Error::invalid(
                field,
                format!("the parent of `{request}` is not a directory"),
            ));
        }
        let path = real_parent.join(name);
        match path.symlink_metadata() {
            Ok(meta) if meta.is_dir() => Err(Error::invalid(
                field,
                format!("`{request}` is a directory; name a Parquet file"),
            )),
            Ok(_) if !overwrite => Err(Error::AlreadyExists {
                field: field.to_string(),
                message: format!(
                    "`{request}` exists; set `overwrite` to replace it (`quiver export --overwrite`)"
                ),
            }),
            _ => Ok(OutputFile {
                path,
                overwrite,
                remote: None,
            }),
        }
    }
}

/// `request` as a path, refused if it is empty, holds a NUL byte or a `..` component.
fn checked(field: &str, request: &str) -> Result<PathBuf> {
    if request.is_empty() {
        return Err(Error::invalid(field, "the path is empty; name a file"));
    }
    if request.contains('\0') {
        return Err(Error::invalid(field, "the path contains a NUL byte"));
    }
    let path = PathBuf::from(request);
    if path.components().any(|c| c == Component::ParentDir) {
        return Err(Error::invalid(
            field,
            format!("`{request}` contains `..`; name the path without it"),
        ));
    }
    Ok(path)
}

/// The leading components of `path` that hold no glob character.
fn literal_prefix(path: &Path) -> PathBuf {
    path.components()
        .take_while(|c| !c.as_os_str().to_string_lossy().contains(['*', '?', '[']))
        .collect()
}

/// A bounded walk under one root that does not follow symlinked directories.
struct Walk<'a> {
    root: &'a Root,
    field: &'a str,
    request: &'a str,
    entries: usize,
    files: Vec<PathBuf>,
}

impl Walk<'_> {
    /// The entries of `dir`: (path, is a real directory, is a file or a symlink to one under
    /// the root).
    fn entries(&mut self, dir: &Path) -> Result<Vec<(PathBuf, bool, bool)>> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
            self.entries += 1;
            if self.entries > MAX_ENTRIES {
                return Err(Error::invalid(
                    self.field,
                    format!(
                        "`{}` spans more than {MAX_ENTRIES} directory entries; name a smaller directory or a narrower glob",
                        self.request
                    ),
                ));
            }
            let entry = entry.map_err(|e| Error::io(dir, e))?;
            let path = entry.path();
            let kind = entry.file_type().map_err(|e| Error::io(&path, e))?;
            let is_file = if kind.is_symlink() {
                // A symlinked file counts if it stays under the root; a symlinked directory
                // is never followed.
                path.canonicalize()
                    .is_ok_and(|real| real.starts_with(&self.root.canonical) && real.is_file())
            } else {
                kind.is_file()
            };
            out.push((path, kind.is_dir(), is_file));
        }
        Ok(out)
    }

    fn dir(&mut self, dir: &Path, depth: usize) -> Result<()> {
        for (path, is_dir, is_file) in self.entries(dir)? {
            let name = path.file_name().and_then(OsStr::to_str);
            if name.is_none_or(|n| n.starts_with(['.', '_'])) {
                continue;
            }
            if is_dir && depth > 0 {
                self.dir(&path, depth - 1)?;
            } else if is_file && is_data_file(&path) {
                self.files.push(path);
            }
        }
        Ok(())
    }

    fn glob(
        &mut self,
        base: &Path,
        dir: &Path,
        pattern: &glob::Pattern,
        depth: usize,
    ) -> Result<()> {
        let options = glob::MatchOptions {
            require_literal_separator: true,
            ..glob::MatchOptions::new()
        };
        for (path, is_dir, is_file) in self.entries(dir)? {
            if is_dir && depth > 1 {
                self.glob(base, &path, pattern, depth - 1)?;
            } else if is_file
                && let Ok(relative) = path.strip_prefix(base)
                && pattern.matches_path_with(relative, options)
            {
                self.files.push(path);
            }
        }
        Ok(())
    }
}

/// `*.parquet`, skipping hidden and temporary files (`.name.tmp`, `_SUCCESS`, ...).
pub(crate) fn is_data_file(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.ends_with(".parquet") && !n.starts_with(['.', '_']))
}

/// Sorts by the path as a string (the order DataFusion also uses for its file groups).
pub(crate) fn sort_paths(files: &mut [PathBuf]) {
    files.sort_by(|a, b| a.to_string_lossy().cmp(&b.to_string_lossy()));
}

#[path = "object_roots.rs"]
mod remote;

#[cfg(test)]
#[path = "roots_tests.rs"]
mod tests;
