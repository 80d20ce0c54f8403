//! Files the server touches: no request reads or writes outside the configured roots, and a
//! refusal does not tell whether a path outside them exists.

use std::os::unix::fs::symlink;
use std::path::Path;

use arrow_flight::FlightDescriptor;
use arrow_flight::flight_service_client::FlightServiceClient;
use quiver_integration_tests::{
    Clients, ManualClock, TestServer, apply, export_to_end as export, write_parquet,
};
use quiver_proto::prost::Message;
use quiver_proto::v1;
use quiver_server::FileRoots;

use super::fixture::{MANIFEST, TestRow, batch, setup};

const T0: i64 = 1_800_000_000_000_000;

fn rows() -> Vec<TestRow> {
    (0..10)
        .map(|i| TestRow {
            user_id: i,
            event_ts: T0 + i * 1_000_000,
            created_ts: T0 + i * 1_000_000,
            a: i,
            b: Some(i as f64),
            s: format!("r{i}"),
        })
        .collect()
}

/// A server whose roots are subdirectories of its temp dir (`labels/`, `repo/`, exports in
/// `data/exports`), with `outside/secret.parquet` (a readable Parquet file) and
/// `outside/victim` next to them, outside every root.
async fn confined() -> anyhow::Result<(TestServer, Clients)> {
    let dir = tempfile::tempdir()?;
    let root = dir.path().to_path_buf();
    for d in ["labels", "repo", "outside"] {
        std::fs::create_dir_all(root.join(d))?;
    }
    write_parquet(&root.join("outside/secret.parquet"), &[batch(&rows())?])?;
    std::fs::write(root.join("outside/victim"), b"precious")?;
    let files = FileRoots {
        labels_roots: vec![root.join("labels")],
        source_roots: vec![root.join("repo")],
        ..FileRoots::defaults(&root.join("data"), root.clone())
    };
    let server = TestServer::start_with(dir, ManualClock::new(T0), |o| o.files = files).await?;
    let mut clients = server.clients().await?;
    setup(&server, &mut clients, &rows(), "0").await?;
    write_parquet(&server.path("labels/labels.parquet"), &[batch(&rows())?])?;
    Ok((server, clients))
}

fn request(labels: &str, out: &str) -> v1::ExportRequest {
    v1::ExportRequest {
        selector: Some(v1::export_request::Selector::FeatureService("model".into())),
        labels_path: labels.into(),
        output_path: out.into(),
        full_names: true,
        ..Default::default()
    }
}

async fn refused(clients: &mut Clients, request: v1::ExportRequest) -> tonic::Status {
    match export(clients, request).await {
        Ok(done) => tonic::Status::unknown(format!("accepted: {done:?}")),
        Err(status) => status,
    }
}

fn text(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

#[tokio::test]
async fn exports_never_write_outside_the_export_dir() -> anyhow::Result<()> {
    let (server, mut clients) = confined().await?;
    let victim = server.path("outside/victim");
    symlink(server.path("outside"), server.path("data/exports/link"))?;
    let escapes = [
        text(&victim),
        text(&server.path("data/rocksdb/CURRENT")),
        "../rocksdb/CURRENT".to_string(),
        "../../outside/victim".to_string(),
        "link/victim".to_string(),
        "link/new.parquet".to_string(),
    ];
    for out in &escapes {
        let mut attempt = request("labels.parquet", out);
        attempt.overwrite = true;
        let status = refused(&mut clients, attempt).await;
        assert_eq!(
            status.code(),
            tonic::Code::InvalidArgument,
            "{out}: {status:?}"
        );
        assert!(
            status.message().contains("output_path"),
            "{out}: {status:?}"
        );
    }
    assert_eq!(std::fs::read(&victim)?, b"precious");
    assert!(!server.path("outside/new.parquet").exists());
    let current = std::fs::read(server.path("data/rocksdb/CURRENT"))?;
    assert!(current.starts_with(b"MANIFEST-"), "CURRENT was replaced");

    // Malformed outputs are the client's error, never INTERNAL.
    std::fs::create_dir(server.path("data/exports/adir"))?;
    for (out, want) in [
        ("adir", "is a directory"),
        ("missing/train.parquet", "does not exist"),
        ("tr\0ain.parquet", "NUL"),
    ] {
        let status = refused(&mut clients, request("labels.parquet", out)).await;
        assert_eq!(
            status.code(),
            tonic::Code::InvalidArgument,
            "{out}: {status:?}"
        );
        assert!(status.message().contains(want), "{out}: {status:?}");
    }

    // Inside the export dir: written once; replaced only when the request says so.
    let done = export(&mut clients, request("labels.parquet", "train.parquet")).await?;
    assert_eq!(done.rows, 10);
    let path = server.path("data/exports/train.parquet");
    let first = std::fs::read(&path)?;
    let status = refused(&mut clients, request("labels.parquet", "train.parquet")).await;
    assert_eq!(status.code(), tonic::Code::AlreadyExists, "{status:?}");
    assert!(status.message().contains("overwrite"), "{status:?}");
    assert_eq!(std::fs::read(&path)?, first);
    let mut again = request("labels.parquet", "train.parquet");
    again.overwrite = true;
    again.full_names = false;
    let status = refused(&mut clients, again.clone()).await;
    assert_eq!(
        status.code(),
        tonic::Code::InvalidArgument,
        "collision: {status:?}"
    );
    again.full_names = true;
    again.timestamp_column = "created".into();
    export(&mut clients, again).await?;
    assert_ne!(std::fs::read(&path)?, first, "overwrite replaced the file");
    server.stop().await?;
    Ok(())
}

#[tokio::test]
async fn label_paths_outside_the_labels_roots_are_refused_alike() -> anyhow::Result<()> {
    let (server, mut clients) = confined().await?;
    let exists = text(&server.path("outside/secret.parquet"));
    let missing = text(&server.path("outside/absent.parquet"));
    let a = refused(&mut clients, request(&exists, "a.parquet")).await;
    let b = refused(&mut clients, request(&missing, "b.parquet")).await;
    assert_eq!(a.code(), tonic::Code::InvalidArgument, "{a:?}");
    assert_eq!(a.code(), b.code());
    assert_eq!(
        a.message().replace(&exists, "PATH"),
        b.message().replace(&missing, "PATH"),
        "the refusal tells whether the file exists"
    );
    assert!(a.message().contains("--labels-root"), "{a:?}");
    // Through `..`, a symlink to the file, a symlink to its directory, a glob through it.
    symlink(
        server.path("outside/secret.parquet"),
        server.path("labels/secret.parquet"),
    )?;
    symlink(server.path("outside"), server.path("labels/out"))?;
    for labels in [
        "../outside/secret.parquet",
        "secret.parquet",
        "out/secret.parquet",
        "out",
        "out/*.parquet",
    ] {
        let status = refused(&mut clients, request(labels, "x.parquet")).await;
        assert_eq!(
            status.code(),
            tonic::Code::InvalidArgument,
            "{labels}: {status:?}"
        );
        assert!(
            !status.message().contains("user_id"),
            "schema leaked: {status:?}"
        );
    }
    // The same through Flight, which never writes.
    let mut flight = FlightServiceClient::new(clients.channel.clone());
    let cmd = request(&exists, "").encode_to_vec();
    let status = flight
        .get_flight_info(FlightDescriptor::new_cmd(cmd))
        .await
        .err()
        .ok_or_else(|| anyhow::anyhow!("flight read a file outside the roots"))?;
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    server.stop().await?;
    Ok(())
}

#[tokio::test]
async fn label_files_that_are_not_parquet_and_symlink_loops() -> anyhow::Result<()> {
    let (server, mut clients) = confined().await?;
    std::fs::write(server.path("labels/notes.parquet"), b"not parquet")?;
    let status = refused(&mut clients, request("notes.parquet", "x.parquet")).await;
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().contains("not a readable Parquet file"),
        "{status:?}"
    );
    // A directory with symlink loops is walked without following them, promptly.
    std::fs::create_dir_all(server.path("labels/tree/a"))?;
    symlink(
        server.path("labels/tree"),
        server.path("labels/tree/a/loop"),
    )?;
    symlink(
        server.path("labels/tree/a"),
        server.path("labels/tree/back"),
    )?;
    write_parquet(&server.path("labels/tree/a/l.parquet"), &[batch(&rows())?])?;
    let started = std::time::Instant::now();
    let done = export(&mut clients, request("tree", "tree.parquet")).await?;
    assert_eq!(done.rows, 10);
    let glob = export(&mut clients, request("tree/**/*.parquet", "glob.parquet")).await?;
    assert_eq!(glob.rows, 10);
    assert!(started.elapsed() < std::time::Duration::from_secs(20));
    server.stop().await?;
    Ok(())
}

#[tokio::test]
async fn sources_outside_the_source_roots_are_refused_at_apply_alike() -> anyhow::Result<()> {
    let (server, mut clients) = confined().await?;
    let exists = text(&server.path("outside/secret.parquet"));
    let missing = text(&server.path("outside/absent.parquet"));
    let mut messages = Vec::new();
    for parquet in [&exists, &missing] {
        let dir = server.path("repo2");
        std::fs::create_dir_all(&dir)?;
        let manifest = MANIFEST
            .replace("TTL", "0")
            .replace("data/stats.parquet", parquet);
        std::fs::write(dir.join("features.yaml"), manifest)?;
        let status = apply(&mut clients, &dir, false)
            .await
            .err()
            .and_then(|e| e.downcast::<tonic::Status>().ok())
            .ok_or_else(|| anyhow::anyhow!("a source outside the roots was applied"))?;
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
        assert!(status.message().contains("--source-root"), "{status:?}");
        assert!(status.message().contains("stats_source"), "{status:?}");
        messages.push(status.message().replace(parquet.as_str(), "PATH"));
    }
    assert_eq!(messages[0], messages[1]);
    server.stop().await?;
    Ok(())
}
