//! Object storage: view sources, label tables and exports in S3 (a real S3-compatible server,
//! `moto`, on loopback) are read and written as local files are: the same export from the
//! same rows, byte for byte in its columns; and a missing bucket, refused credentials, a URL
//! outside the roots or a non-Parquet object give errors that say so.

use std::path::PathBuf;

use arrow::compute::concat_batches;
use arrow::record_batch::RecordBatch;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use quiver_integration_tests::moto::Moto;
use quiver_integration_tests::{
    Clients, ManualClock, TestServer, apply, export_to_end as export, write_parquet,
};
use quiver_proto::v1;
use quiver_server::FileRoots;

use super::fixture::{MANIFEST, TestRow, batch, labels, materialize};

const T0: i64 = 1_800_000_000_000_000;
const SECOND: i64 = 1_000_000;
const BUCKET: &str = "quiver-it";

/// Ten users with four rows each, one second apart; every third `b` is null.
fn rows() -> Vec<TestRow> {
    (0..40)
        .map(|i| TestRow {
            user_id: i % 10,
            event_ts: T0 + (i / 10) * SECOND,
            created_ts: T0 + (i / 10) * SECOND,
            a: i,
            b: (i % 3 != 0).then_some(i as f64 / 4.0),
            s: format!("row {i}"),
        })
        .collect()
}

/// Label tables `a` (users 0..12 at T0 + 1.5 s) and `b` (at T0 + 10 s): two unknown users.
fn label_tables() -> anyhow::Result<[(&'static str, RecordBatch); 2]> {
    Ok([
        ("a.parquet", labels(12, T0 + 3 * SECOND / 2)?),
        ("b.parquet", labels(12, T0 + 10 * SECOND)?),
    ])
}

/// A server whose sources, labels and exports are under `s3://quiver-it/` (`features/`,
/// `labels/`, `exports/`) on `endpoint`, with the local `repo/` as a second source root.
async fn s3_server(options: Vec<(String, String)>) -> anyhow::Result<(TestServer, Clients)> {
    let dir = tempfile::tempdir()?;
    let root = dir.path().to_path_buf();
    std::fs::create_dir_all(root.join("repo"))?;
    let url = |prefix: &str| PathBuf::from(format!("s3://{BUCKET}/{prefix}"));
    let files = FileRoots {
        source_roots: vec![root.join("repo"), url("features")],
        labels_roots: vec![url("labels")],
        export_dir: url("exports"),
        object_store_options: options,
    };
    let server = TestServer::start_with(dir, ManualClock::new(T0), |o| o.files = files).await?;
    let clients = server.clients().await?;
    Ok((server, clients))
}

async fn apply_source(
    server: &TestServer,
    clients: &mut Clients,
    source: &str,
) -> anyhow::Result<v1::ApplyResponse> {
    let dir = server.path("repo");
    let manifest = MANIFEST
        .replace("TTL", "0")
        .replace("data/stats.parquet", source);
    std::fs::write(dir.join("features.yaml"), manifest)?;
    apply(clients, &dir, false).await
}

fn request(labels: &str, out: &str, overwrite: bool) -> v1::ExportRequest {
    v1::ExportRequest {
        selector: Some(v1::export_request::Selector::FeatureService("model".into())),
        labels_path: labels.into(),
        output_path: out.into(),
        full_names: true,
        overwrite,
        ..Default::default()
    }
}

fn read(bytes: Vec<u8>) -> anyhow::Result<RecordBatch> {
    let reader = ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::from(bytes))?.build()?;
    let batches: Vec<RecordBatch> = reader.collect::<Result<_, _>>()?;
    let schema = batches
        .first()
        .map(|b| b.schema())
        .ok_or_else(|| anyhow::anyhow!("empty"))?;
    Ok(concat_batches(&schema, &batches)?)
}

#[tokio::test]
async fn s3_sources_labels_and_exports_match_local_files() -> anyhow::Result<()> {
    let moto = Moto::start()?;
    moto.create_bucket(BUCKET)?;
    let all = rows();
    let halves = [&all[..20], &all[20..]];
    for (i, half) in halves.iter().enumerate() {
        let key = format!("features/stats/part-{i}.parquet");
        moto.put_parquet(BUCKET, &key, &[batch(half)?])?;
    }
    // Skipped by a prefix listing: markers, hidden files, other prefixes.
    moto.put(BUCKET, "features/stats/_SUCCESS", b"")?;
    moto.put(BUCKET, "features/stats/.part-9.parquet", b"partial")?;
    moto.put(BUCKET, "features/stats_old/part-0.parquet", b"not parquet")?;
    for (name, table) in label_tables()? {
        moto.put_parquet(BUCKET, &format!("labels/{name}"), &[table])?;
    }

    let (remote, mut remote_clients) = s3_server(moto.options()).await?;
    // Plan and apply read the footers remotely.
    apply_source(
        &remote,
        &mut remote_clients,
        "s3://quiver-it/features/stats",
    )
    .await?;
    let remote_glob = format!("s3://{BUCKET}/labels/*.parquet");
    let done = export(
        &mut remote_clients,
        request(&remote_glob, "train.parquet", false),
    )
    .await?;
    assert_eq!(done.rows, 24);
    let exported = moto
        .get(BUCKET, "exports/train.parquet")
        .await?
        .ok_or_else(|| anyhow::anyhow!("no exported object"))?;
    let exported = read(exported)?;

    // The same rows and labels as local files, on a server without object storage.
    let local = TestServer::start_in(tempfile::tempdir()?, ManualClock::new(T0)).await?;
    let mut local_clients = local.clients().await?;
    for (i, half) in halves.iter().enumerate() {
        write_parquet(
            &local.path(&format!("repo/data/stats/part-{i}.parquet")),
            &[batch(half)?],
        )?;
    }
    for (name, table) in label_tables()? {
        write_parquet(&local.path(&format!("labels/{name}")), &[table])?;
    }
    apply_source(&local, &mut local_clients, "data/stats").await?;
    let glob = local
        .path("labels/*.parquet")
        .to_string_lossy()
        .into_owned();
    export(&mut local_clients, request(&glob, "train.parquet", false)).await?;
    let expected = read(std::fs::read(local.path("data/exports/train.parquet"))?)?;

    assert_eq!(exported.schema().fields(), expected.schema().fields());
    assert_eq!(exported.columns(), expected.columns());
    // Not vacuous: the known users at both label times have their features.
    let a = exported
        .column_by_name("stats__a")
        .ok_or_else(|| anyhow::anyhow!("no stats__a"))?;
    assert_eq!(a.len() - a.null_count(), 20);

    // The object exists now: refused unless overwriting.
    let again = export(
        &mut remote_clients,
        request(&remote_glob, "train.parquet", false),
    )
    .await;
    let status = again
        .err()
        .ok_or_else(|| anyhow::anyhow!("replaced without overwrite"))?;
    assert_eq!(status.code(), tonic::Code::AlreadyExists, "{status:?}");
    assert!(status.message().contains("overwrite"), "{status:?}");
    export(
        &mut remote_clients,
        request(&remote_glob, "train.parquet", true),
    )
    .await?;

    // Materialization scans the objects too.
    materialize(&mut remote_clients, T0, T0 + 10 * SECOND).await?;
    Ok(())
}

#[tokio::test]
async fn object_storage_failures_name_their_cause() -> anyhow::Result<()> {
    let moto = Moto::start()?;
    moto.create_bucket(BUCKET)?;
    moto.put_parquet(BUCKET, "features/stats/part-0.parquet", &[batch(&rows())?])?;
    moto.put_parquet(BUCKET, "labels/a.parquet", &[labels(3, T0)?])?;
    moto.put(BUCKET, "labels/bad.parquet", b"not parquet")?;
    moto.put(BUCKET, "labels/empty.parquet", b"")?;
    // `a%b.parquet`: a URL parser would decode the `%`.
    moto.put_parquet(BUCKET, "labels/odd/a%25b.parquet", &[labels(3, T0)?])?;
    let (server, mut clients) = s3_server(moto.options()).await?;

    // A prefix with no object, and a URL outside every root: apply says which.
    let missing = apply_source(&server, &mut clients, "s3://quiver-it/features/none/").await;
    let status = format!("{:?}", missing.err());
    assert!(status.contains("matches no Parquet file"), "{status}");
    let outside = apply_source(&server, &mut clients, "s3://quiver-it/secret/x.parquet").await;
    let status = format!("{:?}", outside.err());
    assert!(status.contains("not under a source root"), "{status}");

    apply_source(&server, &mut clients, "s3://quiver-it/features/stats").await?;
    for (labels_path, want) in [
        (
            "s3://quiver-it/labels/none/*.parquet",
            "matches no Parquet file",
        ),
        (
            "s3://quiver-it/features/stats/part-0.parquet",
            "not under a labels root",
        ),
        (
            "s3://quiver-it/labels/bad.parquet",
            "not a readable Parquet file",
        ),
        (
            "s3://quiver-it/labels/empty.parquet",
            "not a readable Parquet file",
        ),
        ("s3://quiver-it/labels/odd/*.parquet", "rename it"),
        (
            "s3://other-bucket/labels/a.parquet",
            "not under a labels root",
        ),
    ] {
        let status = export(&mut clients, request(labels_path, "x.parquet", true))
            .await
            .err()
            .ok_or_else(|| anyhow::anyhow!("{labels_path} accepted"))?;
        assert_eq!(
            status.code(),
            tonic::Code::InvalidArgument,
            "{labels_path}: {status:?}"
        );
        assert!(status.message().contains(want), "{labels_path}: {status:?}");
        assert!(
            status.message().contains("labels_path"),
            "{labels_path}: {status:?}"
        );
    }

    // A root in a bucket that does not exist.
    let dir = tempfile::tempdir()?;
    std::fs::create_dir_all(dir.path().join("repo"))?;
    let files = FileRoots {
        source_roots: vec![
            dir.path().join("repo"),
            PathBuf::from("s3://no-such-bucket/f"),
        ],
        object_store_options: moto.options(),
        ..FileRoots::defaults(&dir.path().join("data"), dir.path().to_path_buf())
    };
    let nobucket = TestServer::start_with(dir, ManualClock::new(T0), |o| o.files = files).await?;
    let mut nobucket_clients = nobucket.clients().await?;
    let refused = apply_source(&nobucket, &mut nobucket_clients, "s3://no-such-bucket/f/x").await;
    let status = format!("{:?}", refused.err());
    assert!(status.contains("s3://no-such-bucket/f/x"), "{status}");
    assert!(status.contains("the bucket does not exist"), "{status}");

    // Credentials the store does not know.
    let refusing = Moto::start_refusing()?;
    let (denied, mut denied_clients) = s3_server(refusing.options()).await?;
    // A glob lists (a GET, whose error body names the cause; a HEAD's has none).
    let source = "s3://quiver-it/features/stats/*.parquet";
    let refused = apply_source(&denied, &mut denied_clients, source).await;
    let status = format!("{:?}", refused.err());
    assert!(
        status.contains("access refused: check the server's credentials"),
        "{status}"
    );
    assert!(status.contains("InvalidAccessKeyId"), "{status}");
    Ok(())
}
