//! Registry versions in object storage (a real S3-compatible server, `moto`, on loopback)
//! shared by two replicas: an apply on one is served by the other; two applies racing for one
//! version: one wins, the other is told to plan again and serves the winner's version; with
//! the store unreachable, serving goes on from the version held and an apply is UNAVAILABLE.

use std::time::{Duration, Instant};

use quiver_integration_tests::moto::Moto;
use quiver_integration_tests::{Clients, ManualClock, TestServer, manifests};
use quiver_proto::v1;

use super::consistency::T;
use super::fixture::{MANIFEST, TestRow, batch};
use super::online::get_request;

const BUCKET: &str = "quiver-registry";

async fn replica(moto: &Moto, poll: Duration) -> anyhow::Result<TestServer> {
    let options = moto.options();
    TestServer::start_with(tempfile::tempdir()?, ManualClock::new(T), move |o| {
        o.registry_store = Some(format!("s3://{BUCKET}/prod"));
        o.registry_poll_interval = poll;
        o.files.object_store_options = options;
    })
    .await
}

fn service(name: &str) -> v1::get_online_features_request::Selector {
    v1::get_online_features_request::Selector::FeatureService(name.into())
}

/// Writes the fixture's project with `ttl` under the replica's directory; its manifests.
fn project(server: &TestServer, ttl: &str) -> anyhow::Result<Vec<v1::ManifestFile>> {
    project_with(server, ttl, "")
}

/// Like [`project`], with `extra` manifest objects after the fixture's.
fn project_with(
    server: &TestServer,
    ttl: &str,
    extra: &str,
) -> anyhow::Result<Vec<v1::ManifestFile>> {
    project_in(&server.path("repo"), ttl, extra)
}

/// The fixture's project in `dir`.
fn project_in(
    dir: &std::path::Path,
    ttl: &str,
    extra: &str,
) -> anyhow::Result<Vec<v1::ManifestFile>> {
    let row = TestRow {
        user_id: 1,
        event_ts: T,
        created_ts: T,
        a: 1,
        b: None,
        s: String::new(),
    };
    quiver_integration_tests::write_parquet(&dir.join("data/stats.parquet"), &[batch(&[row])?])?;
    std::fs::write(
        dir.join("features.yaml"),
        MANIFEST.replace("TTL", ttl) + extra,
    )?;
    manifests(dir)
}

/// The registry version `clients`' replica serves (the base of a plan).
async fn served_version(clients: &mut Clients, files: &[v1::ManifestFile]) -> anyhow::Result<u64> {
    let plan = clients
        .registry
        .plan(v1::PlanRequest {
            manifests: files.to_vec(),
        })
        .await?;
    Ok(plan.into_inner().base_version)
}

async fn apply(
    clients: &mut Clients,
    files: &[v1::ManifestFile],
    expected: u64,
) -> Result<v1::ApplyResponse, tonic::Status> {
    let request = v1::ApplyRequest {
        manifests: files.to_vec(),
        expected_version: Some(expected),
        force: true,
        tag: String::new(),
    };
    Ok(clients.registry.apply(request).await?.into_inner())
}

async fn wait_for_version(
    clients: &mut Clients,
    files: &[v1::ManifestFile],
    version: u64,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while served_version(clients, files).await? != version {
        anyhow::ensure!(
            Instant::now() < deadline,
            "version {version} not served in 10 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

#[tokio::test]
async fn replicas_share_registry_versions_in_object_storage() -> anyhow::Result<()> {
    let moto = Moto::start()?;
    moto.create_bucket(BUCKET)?;
    let a = replica(&moto, Duration::from_millis(100)).await?;
    // B learns of new versions only when an apply of its own collides with one.
    let b = replica(&moto, Duration::from_secs(3_600)).await?;
    let (mut on_a, mut on_b) = (a.clients().await?, b.clients().await?);
    let (files_a, files_b) = (project(&a, "2h")?, project(&b, "2h")?);

    // A applies version 1; B, started before, does not serve it yet (no read asked).
    assert_eq!(apply(&mut on_a, &files_a, 0).await?.registry_version, 1);
    assert_eq!(served_version(&mut on_b, &files_b).await?, 0);

    // B applies against version 0: version 1 exists, so B is told to plan again, and then
    // serves version 1.
    let lost = apply(&mut on_b, &project(&b, "4h")?, 0)
        .await
        .expect_err("lost");
    assert_eq!(lost.code(), tonic::Code::FailedPrecondition, "{lost:?}");
    assert!(lost.message().contains("plan again"), "{lost:?}");
    assert_eq!(served_version(&mut on_b, &files_b).await?, 1);
    on_b.online
        .get_online_features(get_request(vec![1]))
        .await?;

    // A adds a feature service (version 2). B does not poll, but a read naming the new
    // service makes it look at the store at once, and it answers.
    let extra = "---\nkind: FeatureService\nname: model_b\nfeatures: [{view: stats}]\n";
    let files_a = project_with(&a, "2h", extra)?;
    assert_eq!(apply(&mut on_a, &files_a, 1).await?.registry_version, 2);
    let mut request = get_request(vec![1]);
    request.selector = Some(service("model_b"));
    let answer = on_b.online.get_online_features(request.clone()).await?;
    assert_eq!(answer.into_inner().feature_service_version, 1);
    // A name nobody applied is still NOT_FOUND (and looks again at most once a second).
    request.selector = Some(service("nobody"));
    let unknown = on_b.online.get_online_features(request).await;
    assert_eq!(unknown.expect_err("unknown").code(), tonic::Code::NotFound);

    // B creates version 3, which A (polling) serves.
    let files_b = project_with(&b, "4h", extra)?;
    assert_eq!(apply(&mut on_b, &files_b, 2).await?.registry_version, 3);
    wait_for_version(&mut on_a, &files_a, 3).await?;

    // The store goes away: both keep serving version 3; an apply is UNAVAILABLE.
    drop(moto);
    on_a.online
        .get_online_features(get_request(vec![1]))
        .await?;
    let down = apply(&mut on_a, &project(&a, "5h")?, 3)
        .await
        .expect_err("down");
    assert_eq!(down.code(), tonic::Code::Unavailable, "{down:?}");
    on_b.online
        .get_online_features(get_request(vec![1]))
        .await?;
    a.stop().await?;
    b.stop().await?;
    Ok(())
}

/// A replica on the registry in moto, reading sources and labels under `dir`, with its
/// uploads also in `uploads` (a URL) when given.
async fn over_shared(
    moto: &Moto,
    dir: &std::path::Path,
    uploads: Option<String>,
) -> anyhow::Result<TestServer> {
    let (options, dir) = (moto.options(), dir.to_path_buf());
    TestServer::start_with(tempfile::tempdir()?, ManualClock::new(T), move |o| {
        o.registry_store = Some(format!("s3://{BUCKET}/prod"));
        o.files.object_store_options = options;
        o.files.source_roots.push(dir.clone());
        o.files.labels_roots.push(dir);
        o.upload_dir = uploads;
    })
    .await
}

/// Applies the fixture's project (in `dir`) through `applier`; returns once `others` serve
/// it.
async fn applied(
    dir: &std::path::Path,
    applier: &mut Clients,
    others: &[&Clients],
) -> anyhow::Result<()> {
    let files = project_in(&dir.join("repo"), "2h", "")?;
    assert_eq!(apply(applier, &files, 0).await?.registry_version, 1);
    for other in others {
        wait_for_version(&mut (*other).clone(), &files, 1).await?;
    }
    Ok(())
}

/// DoGet of `ticket` on `clients`: the rows, concatenated.
async fn redeem(
    clients: &Clients,
    ticket: arrow_flight::Ticket,
) -> Result<arrow::array::RecordBatch, arrow_flight::error::FlightError> {
    use arrow_flight::flight_service_client::FlightServiceClient;
    use futures::TryStreamExt;
    let stream = FlightServiceClient::new(clients.channel.clone())
        .do_get(ticket)
        .await
        .map_err(|status| arrow_flight::error::FlightError::Tonic(Box::new(status)))?
        .into_inner()
        .map_err(|status| arrow_flight::error::FlightError::Tonic(Box::new(status)));
    let batches: Vec<arrow::array::RecordBatch> =
        arrow_flight::decode::FlightRecordBatchStream::new_from_flight_data(stream)
            .try_collect()
            .await?;
    let schema = batches
        .first()
        .map(|b| b.schema())
        .ok_or_else(|| arrow_flight::error::FlightError::ProtocolError("no batch".into()))?;
    Ok(arrow::compute::concat_batches(&schema, &batches)?)
}

/// Replicas sharing a registry hand out self-contained Flight tickets: a ticket from
/// GetFlightInfo on A is redeemed on B (and again on A), with the same rows.
#[tokio::test]
async fn a_flight_ticket_from_one_replica_is_redeemed_on_another() -> anyhow::Result<()> {
    use arrow_flight::flight_service_client::FlightServiceClient;
    use quiver_proto::prost::Message;

    let moto = Moto::start()?;
    moto.create_bucket(BUCKET)?;
    let shared = tempfile::tempdir()?;
    let a = over_shared(&moto, shared.path(), None).await?;
    let b = over_shared(&moto, shared.path(), None).await?;
    let (mut on_a, on_b) = (a.clients().await?, b.clients().await?);
    applied(shared.path(), &mut on_a, &[&on_b]).await?;
    let labels = shared.path().join("labels.parquet");
    quiver_integration_tests::write_parquet(&labels, &[super::fixture::labels(5, T + 1)?])?;
    let cmd = v1::ExportRequest {
        selector: Some(v1::export_request::Selector::FeatureService("model".into())),
        labels_path: labels.to_string_lossy().into_owned(),
        ..Default::default()
    }
    .encode_to_vec();

    let info = FlightServiceClient::new(on_a.channel.clone())
        .get_flight_info(arrow_flight::FlightDescriptor::new_cmd(cmd.clone()))
        .await?
        .into_inner();
    let ticket = info
        .endpoint
        .first()
        .and_then(|e| e.ticket.clone())
        .ok_or_else(|| anyhow::anyhow!("no ticket"))?;
    assert_eq!(ticket.ticket.as_ref(), cmd.as_slice(), "the request itself");
    let metadata = String::from_utf8(info.app_metadata.to_vec())?;
    assert!(
        metadata.contains("quiver.feature_service") && !metadata.contains("quiver.profile_id"),
        "{metadata}"
    );
    let mut answers = Vec::new();
    for clients in [&on_b, &on_a] {
        answers.push(redeem(clients, ticket.clone()).await?);
    }
    assert_eq!(answers[0].num_rows(), 5);
    assert_eq!(answers[0], answers[1], "the same rows from B and from A");
    a.stop().await?;
    b.stop().await?;
    Ok(())
}

/// With `--upload-dir` (object storage here), a label table uploaded (DoPut) to A is joined
/// by B: a ticket naming the upload is redeemed on B with A's rows. A replica without it
/// does not find the upload (NOT_FOUND): the shared store is what B read.
#[tokio::test]
async fn an_upload_to_one_replica_is_joined_on_another() -> anyhow::Result<()> {
    use arrow_flight::FlightClient;
    use futures::TryStreamExt;
    use quiver_proto::prost::Message;

    let moto = Moto::start()?;
    moto.create_bucket(BUCKET)?;
    let shared = tempfile::tempdir()?;
    let uploads = Some(format!("s3://{BUCKET}/uploads"));
    let a = over_shared(&moto, shared.path(), uploads.clone()).await?;
    let b = over_shared(&moto, shared.path(), uploads).await?;
    let c = over_shared(&moto, shared.path(), None).await?;
    let (mut on_a, on_b, on_c) = (a.clients().await?, b.clients().await?, c.clients().await?);
    applied(shared.path(), &mut on_a, &[&on_b, &on_c]).await?;
    let mut flight_a = FlightClient::new(on_a.plain.clone());
    let mut upload = async |rows: i64| -> anyhow::Result<()> {
        let descriptor =
            arrow_flight::FlightDescriptor::new_path(vec!["labels".into(), "train".into()]);
        let data = arrow_flight::encode::FlightDataEncoderBuilder::new()
            .with_flight_descriptor(Some(descriptor))
            .build(futures::stream::iter([Ok(super::fixture::labels(
                rows,
                T + 1,
            )?)]));
        flight_a.do_put(data).await?.try_collect::<Vec<_>>().await?;
        Ok(())
    };
    upload(5).await?;
    let ticket = arrow_flight::Ticket::new(
        v1::ExportRequest {
            selector: Some(v1::export_request::Selector::FeatureService("model".into())),
            labels_upload: "train".into(),
            ..Default::default()
        }
        .encode_to_vec(),
    );
    let on_a_rows = redeem(&on_a, ticket.clone()).await?;
    assert_eq!(on_a_rows.num_rows(), 5);
    assert_eq!(
        redeem(&on_b, ticket.clone()).await?,
        on_a_rows,
        "B joins A's upload"
    );
    // A replaces the upload: B joins the new table, not the copy it loaded before.
    upload(3).await?;
    let replaced = redeem(&on_b, ticket.clone()).await?;
    assert_eq!(replaced.num_rows(), 3, "B joins the new upload");
    let missing = redeem(&on_c, ticket)
        .await
        .expect_err("C does not share uploads");
    let text = missing.to_string();
    assert!(
        text.contains("NotFound") || text.contains("not found"),
        "{text}"
    );
    for server in [a, b, c] {
        server.stop().await?;
    }
    Ok(())
}
