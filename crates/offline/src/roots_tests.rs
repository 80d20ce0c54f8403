//! Path confinement: each way out of a root is refused, and a refusal does not tell whether
//! the path outside exists.

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use quiver_core::ErrorCode;

use super::*;

struct Fixture {
    _dir: tempfile::TempDir,
    /// The root: `a.parquet`, `sub/b.parquet`, `sub/.hidden.parquet`, `notes.txt`, an
    /// `exports/` directory, a symlink loop `loop -> .`, `out_link -> <outside>` and
    /// `file_link -> <outside>/secret.parquet`, `in_link -> a.parquet`.
    root: PathBuf,
    /// Beside the root: `secret.parquet`, `dir/x.parquet`.
    outside: PathBuf,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("root");
    let outside = dir.path().join("outside");
    for d in [root.join("sub"), root.join("exports"), outside.join("dir")] {
        std::fs::create_dir_all(d).expect("mkdir");
    }
    for f in [
        root.join("a.parquet"),
        root.join("sub/b.parquet"),
        root.join("sub/.hidden.parquet"),
        root.join("notes.txt"),
        outside.join("secret.parquet"),
        outside.join("dir/x.parquet"),
    ] {
        std::fs::write(f, b"x").expect("write");
    }
    symlink(&root, root.join("loop")).expect("symlink");
    symlink(&outside, root.join("out_link")).expect("symlink");
    symlink(outside.join("secret.parquet"), root.join("file_link")).expect("symlink");
    symlink(root.join("a.parquet"), root.join("in_link.parquet")).expect("symlink");
    Fixture {
        _dir: dir,
        root,
        outside,
    }
}

fn roots(dirs: &[&Path]) -> Roots {
    let dirs: Vec<PathBuf> = dirs.iter().map(|d| d.to_path_buf()).collect();
    Roots::new("a labels root", "--labels-root", &dirs).expect("roots")
}

fn names(root: &Path, files: &[PathBuf]) -> Vec<String> {
    let root = root.canonicalize().expect("canonical");
    files
        .iter()
        .map(|p| {
            p.strip_prefix(&root)
                .map(|r| r.to_string_lossy().into_owned())
                .unwrap_or_else(|_| format!("OUTSIDE {}", p.display()))
        })
        .collect()
}

fn text(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

fn message(error: &Error) -> String {
    match error {
        Error::InvalidArgument { field, message } => format!("{field}: {message}"),
        other => format!("unexpected {other:?}"),
    }
}

#[test]
fn files_dirs_and_globs_resolve_under_the_root_in_path_order() {
    let f = fixture();
    let r = roots(&[&f.root]);
    // A directory walk skips hidden files, does not enter the loop or the link out, keeps a
    // symlinked file that stays inside.
    let all = r.files("labels_path", &text(&f.root)).expect("dir");
    assert_eq!(
        names(&f.root, &all),
        ["a.parquet", "in_link.parquet", "sub/b.parquet"]
    );
    let relative = r.files("labels_path", "sub").expect("relative dir");
    assert_eq!(names(&f.root, &relative), ["sub/b.parquet"]);
    let glob = r.files("labels_path", "*.parquet").expect("glob");
    assert_eq!(names(&f.root, &glob), ["a.parquet", "in_link.parquet"]);
    let deep = r.files("labels_path", "**/b.parquet").expect("glob");
    assert_eq!(names(&f.root, &deep), ["sub/b.parquet"]);
    let file = r.files("labels_path", "./a.parquet").expect("file");
    assert_eq!(names(&f.root, &file), ["a.parquet"]);
    assert!(
        r.files("labels_path", "missing.parquet")
            .expect("none")
            .is_empty()
    );
    assert!(r.files("labels_path", "[").is_err());
}

#[test]
fn escapes_are_refused_alike_whether_the_target_exists_or_not() {
    let f = fixture();
    let r = roots(&[&f.root]);
    let exists = r
        .files("labels_path", &text(&f.outside.join("secret.parquet")))
        .expect_err("outside");
    let missing = r
        .files("labels_path", &text(&f.outside.join("nothing.parquet")))
        .expect_err("outside");
    assert_eq!(exists.code(), ErrorCode::InvalidArgument);
    assert_eq!(
        message(&exists).replace("secret", "X"),
        message(&missing).replace("nothing", "X")
    );
    assert!(message(&exists).contains("--labels-root"), "{exists}");
    for escape in ["../outside/secret.parquet", "sub/../../outside", "a\0b"] {
        let error = r.files("labels_path", escape).expect_err(escape);
        assert_eq!(error.code(), ErrorCode::InvalidArgument, "{escape}");
    }
    // Through symlinks inside the root: a directory link, a file link, a glob under a link.
    for escape in [
        "out_link/secret.parquet",
        "file_link",
        "out_link/*.parquet",
        "out_link",
    ] {
        let error = r.files("labels_path", escape).expect_err(escape);
        assert!(
            message(&error).contains("is not under a labels root"),
            "{error}"
        );
    }
    let none = Roots::none("a labels root", "--labels-root");
    let error = none
        .files("labels_path", "a.parquet")
        .expect_err("no roots");
    assert!(
        message(&error).contains("configured to read no such files"),
        "{error}"
    );
}

#[test]
fn the_second_root_serves_relative_paths_it_holds() {
    let f = fixture();
    let r = roots(&[&f.root, &f.outside]);
    let found = r
        .files("labels_path", "secret.parquet")
        .expect("second root");
    assert_eq!(found.len(), 1);
    assert!(found[0].ends_with("outside/secret.parquet"), "{found:?}");
}

#[test]
fn output_files_stay_in_the_export_dir_and_replace_only_when_asked() {
    let f = fixture();
    let r = Roots::new(
        "the export directory",
        "--export-dir",
        &[f.root.join("exports")],
    )
    .expect("roots");
    let out = r
        .output_file("output_path", "train.parquet", false)
        .expect("new file");
    let exports = f.root.join("exports").canonicalize().expect("canonical");
    assert_eq!(out.path, exports.join("train.parquet"));
    assert!(!out.overwrite);
    std::fs::write(&out.path, b"x").expect("write");
    let exists = r
        .output_file("output_path", "train.parquet", false)
        .expect_err("exists");
    assert_eq!(exists.code(), ErrorCode::AlreadyExists);
    assert!(r.output_file("output_path", "train.parquet", true).is_ok());
    let absolute = text(&f.root.join("exports/new.parquet"));
    assert!(r.output_file("output_path", &absolute, false).is_ok());
    std::fs::create_dir(f.root.join("exports/d")).expect("mkdir");
    for (bad, want) in [
        ("d", "is a directory"),
        ("d/", "names a directory"),
        ("nope/x.parquet", "does not exist"),
        ("../a.parquet", "contains `..`"),
        ("x\0.parquet", "NUL"),
        ("", "empty"),
    ] {
        let error = r.output_file("output_path", bad, true).expect_err(bad);
        assert_eq!(error.code(), ErrorCode::InvalidArgument, "{bad}: {error}");
        assert!(message(&error).contains(want), "{bad}: {error}");
    }
    symlink(&f.outside, f.root.join("exports/out")).expect("symlink");
    let outside_targets = [
        text(&f.outside.join("victim.parquet")),
        text(&f.outside.join("secret.parquet")),
        "out/victim.parquet".to_string(),
        "out/secret.parquet".to_string(),
    ];
    let messages: Vec<String> = outside_targets
        .iter()
        .map(|t| message(&r.output_file("output_path", t, true).expect_err(t)))
        .collect();
    for m in &messages {
        assert!(m.contains("is not under the export directory"), "{m}");
    }
    assert_eq!(
        messages[0].replace("victim", "X"),
        messages[1].replace("secret", "X")
    );
}
