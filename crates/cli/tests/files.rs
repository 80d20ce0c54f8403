//! Files the server touches, black-box through the `quiver` binary: overwrite and read
//! attempts outside the configured roots (absolute, `..`, symlink, existence oracle), and the
//! default export that keeps a user's paths on the client.

mod support;

use std::os::unix::fs::symlink;
use std::path::PathBuf;
use std::process::{Output, Stdio};

use support::{ServerProcess, project, serve, text};

/// `<tmp>/project` (the demo project, the one source and labels root), `<tmp>/data` (the data
/// directory), `<tmp>/outside` (a Parquet file and a victim file, outside every root).
struct Setup {
    dir: tempfile::TempDir,
    server: ServerProcess,
}

impl Setup {
    fn path(&self, relative: &str) -> PathBuf {
        self.dir.path().join(relative)
    }

    fn quiver(&self, args: &[&str]) -> Output {
        self.server.quiver(args)
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        let _ = self.server.child.kill();
        let _ = self.server.child.wait();
    }
}

fn start() -> Setup {
    let dir = tempfile::tempdir().expect("tempdir");
    let project_dir = dir.path().join("project");
    project(&project_dir);
    let outside = dir.path().join("outside");
    std::fs::create_dir_all(&outside).expect("mkdir");
    std::fs::copy(
        project_dir.join("data/labels.parquet"),
        outside.join("labels.parquet"),
    )
    .expect("copy");
    std::fs::write(outside.join("victim"), b"precious").expect("victim");
    let root = project_dir.to_str().expect("utf-8");
    let server = ServerProcess::start_with(
        &dir.path().join("data"),
        &["--source-root", root, "--labels-root", root],
    );
    let setup = Setup { dir, server };
    let features = setup.path("project/features");
    let applied = setup.quiver(&["apply", "-f", features.to_str().expect("utf-8")]);
    assert!(applied.status.success(), "{}", text(&applied));
    setup
}

fn refused(output: &Output, needle: &str) -> String {
    let all = text(output);
    assert!(!output.status.success(), "accepted:\n{all}");
    assert!(all.contains(needle), "`{needle}` not in:\n{all}");
    assert!(!all.to_lowercase().contains("internal"), "{all}");
    all
}

fn export(setup: &Setup, labels: &str, out: &str, extra: &[&str]) -> Output {
    let mut args = vec!["export", "--service", "driver_model", "--labels", labels];
    args.extend(["--out", out]);
    args.extend(extra);
    setup.quiver(&args)
}

#[test]
fn server_side_exports_cannot_overwrite_files_outside_the_export_dir() {
    let setup = start();
    let labels = setup.path("project/data/labels.parquet");
    let labels = labels.to_str().expect("utf-8");
    let victim = setup.path("outside/victim");
    let current = setup.path("data/rocksdb/CURRENT");
    let before = std::fs::read(&current).expect("CURRENT");
    symlink(setup.path("outside"), setup.path("data/exports/out")).expect("symlink");
    for out in [
        victim.to_str().expect("utf-8"),
        current.to_str().expect("utf-8"),
        "../rocksdb/CURRENT",
        "out/victim",
    ] {
        let output = export(&setup, labels, out, &["--server-side", "--overwrite"]);
        refused(&output, "output_path");
    }
    assert_eq!(std::fs::read(&victim).expect("victim"), b"precious");
    assert_eq!(std::fs::read(&current).expect("CURRENT"), before);

    // In the export dir: written, then kept unless --overwrite.
    let output = export(&setup, labels, "train.parquet", &["--server-side"]);
    assert!(output.status.success(), "{}", text(&output));
    assert!(setup.path("data/exports/train.parquet").exists());
    let again = export(&setup, labels, "train.parquet", &["--server-side"]);
    refused(&again, "--overwrite");
    let replaced = export(
        &setup,
        labels,
        "train.parquet",
        &["--server-side", "--overwrite"],
    );
    assert!(replaced.status.success(), "{}", text(&replaced));
    std::fs::create_dir(setup.path("data/exports/adir")).expect("mkdir");
    refused(
        &export(&setup, labels, "adir", &["--server-side"]),
        "is a directory",
    );
    refused(
        &export(&setup, labels, "no/such/dir.parquet", &["--server-side"]),
        "does not exist",
    );
}

#[test]
fn server_side_label_paths_do_not_reveal_files_outside_the_roots() {
    let setup = start();
    let exists = setup.path("outside/labels.parquet");
    let missing = setup.path("outside/absent.parquet");
    let (exists, missing) = (exists.to_str().expect("p"), missing.to_str().expect("p"));
    let a = refused(
        &export(&setup, exists, "a.parquet", &["--server-side"]),
        "InvalidArgument",
    );
    let b = refused(
        &export(&setup, missing, "b.parquet", &["--server-side"]),
        "InvalidArgument",
    );
    assert_eq!(
        a.replace(exists, "PATH").replace("a.parquet", "OUT"),
        b.replace(missing, "PATH").replace("b.parquet", "OUT"),
        "the answer tells whether the file exists"
    );
    assert!(!a.contains("driver_id"), "the schema leaked: {a}");
    refused(
        &export(
            &setup,
            "../outside/labels.parquet",
            "c.parquet",
            &["--server-side"],
        ),
        "InvalidArgument",
    );
    // A source outside the source roots is refused at plan, naming the flag.
    let manifests = setup.path("manifests");
    std::fs::create_dir_all(&manifests).expect("mkdir");
    let manifest = std::fs::read_to_string(setup.path("project/features/driver.yaml"))
        .expect("manifest")
        .replace("data/driver_stats.parquet", exists);
    std::fs::write(manifests.join("driver.yaml"), manifest).expect("write");
    let plan = setup.quiver(&["plan", "-f", manifests.to_str().expect("utf-8")]);
    refused(&plan, "--source-root");
}

#[test]
fn the_default_export_keeps_local_paths_on_the_client() {
    let setup = start();
    // The labels and the output are outside every server root: read and written here.
    let labels = setup.path("outside/labels.parquet");
    let out = setup.path("outside/train.parquet");
    let output = export(
        &setup,
        labels.to_str().expect("p"),
        out.to_str().expect("p"),
        &[],
    );
    assert!(output.status.success(), "{}", text(&output));
    assert!(
        text(&output).contains("Exported 50 rows"),
        "{}",
        text(&output)
    );
    assert!(out.exists());
    let exports: Vec<_> = std::fs::read_dir(setup.path("data/exports"))
        .expect("export dir")
        .collect();
    assert!(exports.is_empty(), "the server wrote {exports:?}");
}

#[test]
fn a_missing_root_stops_the_server_with_its_option_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let output = serve(&data, &["--labels-root", "/no/such/quiver/dir"])
        .stderr(Stdio::piped())
        .output()
        .expect("quiver serve runs");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--labels-root"), "{stderr}");
}
