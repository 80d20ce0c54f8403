//! Bounds that take time or connections to see, black-box: Flight tickets expire and are
//! counted, the server advertises its HTTP/2 stream limit, and an export whose client goes away
//! stops and leaves no file.

use std::time::Duration;

use arrow_flight::flight_service_client::FlightServiceClient;
use arrow_flight::{FlightDescriptor, Ticket};
use futures::StreamExt;
use quiver_integration_tests::{Clients, TestServer, export_to_end, write_parquet};
use quiver_proto::prost::Message;
use quiver_proto::v1;
use quiver_server::Limits;

use super::fixture::{TestRow, setup};

const T0: i64 = 1_800_000_000_000_000;

async fn started(limits: Limits) -> anyhow::Result<(TestServer, Clients)> {
    let server = TestServer::start_limited(limits).await?;
    let mut clients = server.clients().await?;
    let row = TestRow {
        user_id: 1,
        event_ts: T0,
        created_ts: T0,
        a: 1,
        b: None,
        s: String::new(),
    };
    setup(&server, &mut clients, &[row], "0").await?;
    Ok((server, clients))
}

/// `n` label rows (user ids 0..n at T0 + 1) written to `repo/<name>.parquet`; its path.
fn labels(server: &TestServer, name: &str, n: i64) -> anyhow::Result<String> {
    let batch = super::fixture::labels(n, T0 + 1)?;
    let path = server.path(&format!("repo/{name}.parquet"));
    write_parquet(&path, &[batch])?;
    Ok(path.to_string_lossy().into_owned())
}

fn export_request(labels: String, output: &str) -> v1::ExportRequest {
    v1::ExportRequest {
        selector: Some(v1::export_request::Selector::FeatureService("model".into())),
        labels_path: labels,
        output_path: output.into(),
        ..Default::default()
    }
}

#[tokio::test]
async fn flight_tickets_are_counted_and_expire() -> anyhow::Result<()> {
    let (server, clients) = started(Limits {
        max_flight_tickets: 1,
        flight_ticket_ttl: Duration::from_secs(1),
        ..Limits::default()
    })
    .await?;
    let mut flight = FlightServiceClient::new(clients.channel.clone());
    let cmd = export_request(labels(&server, "labels", 3)?, "").encode_to_vec();
    let info = || FlightDescriptor::new_cmd(cmd.clone());
    let ticket = |info: arrow_flight::FlightInfo| -> anyhow::Result<Ticket> {
        info.endpoint
            .first()
            .and_then(|e| e.ticket.clone())
            .ok_or_else(|| anyhow::anyhow!("no ticket"))
    };

    let first = ticket(flight.get_flight_info(info()).await?.into_inner())?;
    let status = flight
        .get_flight_info(info())
        .await
        .expect_err("a second parked export");
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    assert!(
        status.message().contains("(--max-flight-tickets)")
            && status.message().contains("--flight-ticket-ttl"),
        "{status:?}"
    );

    // After the ttl the ticket is gone, and no longer counts.
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    let status = flight.do_get(first).await.expect_err("expired ticket");
    assert_eq!(status.code(), tonic::Code::NotFound, "{status:?}");
    let second = ticket(flight.get_flight_info(info()).await?.into_inner())?;
    let mut stream = flight.do_get(second).await?.into_inner();
    let mut messages = 0;
    while let Some(data) = stream.next().await {
        data?;
        messages += 1;
    }
    assert!(messages >= 2, "schema and at least one batch: {messages}");
    Ok(())
}

#[tokio::test]
async fn the_server_advertises_its_http2_stream_limit() -> anyhow::Result<()> {
    let (server, _clients) = started(Limits {
        max_concurrent_streams: 3,
        ..Limits::default()
    })
    .await?;
    let addr = server
        .url
        .strip_prefix("http://")
        .ok_or_else(|| anyhow::anyhow!("url {}", server.url))?;
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let (_send, mut connection) = h2::client::handshake(tcp).await?;
    // Drive the connection until the server's SETTINGS frame has been applied (bounded).
    for _ in 0..100 {
        if connection.max_concurrent_send_streams() == 3 {
            return Ok(());
        }
        let _ = tokio::time::timeout(Duration::from_millis(20), &mut connection).await;
    }
    anyhow::bail!(
        "the server advertised {} concurrent streams, not 3",
        connection.max_concurrent_send_streams()
    )
}

#[tokio::test]
async fn an_export_whose_client_goes_away_stops_and_leaves_no_file() -> anyhow::Result<()> {
    let (server, mut clients) = started(Limits::default()).await?;
    let many = labels(&server, "many", 2_000_000)?;
    let exports = server.path("data/exports");
    let mut stream = clients
        .offline
        .export_training_data(export_request(many, "gone.parquet"))
        .await?
        .into_inner();
    let first = stream
        .next()
        .await
        .ok_or_else(|| anyhow::anyhow!("no progress"))??;
    anyhow::ensure!(
        !first.done,
        "the export finished before the first progress report; use more labels"
    );
    drop(stream);
    // The temporary file goes once the aborted writer is dropped; the export never lands.
    let mut left = Vec::new();
    for _ in 0..300 {
        left = std::fs::read_dir(&exports)?
            .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect::<Result<Vec<_>, _>>()?;
        if left.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(left.is_empty(), "left in the export dir: {left:?}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!exports.join("gone.parquet").exists());
    // The server serves on.
    let small = labels(&server, "few", 3)?;
    let done = export_to_end(&mut clients, export_request(small, "after.parquet")).await?;
    assert_eq!(done.rows, 3);
    Ok(())
}
