//! Offline path through the server: export metadata, Flight DoGet/DoPut with pyarrow, errors.

use quiver_integration_tests::TestServer;
use quiver_proto::v1;

use super::fixture::{TestRow, setup};

const T0: i64 = 1_800_000_000_000_000;

fn rows() -> Vec<TestRow> {
    (0..50)
        .map(|i| TestRow {
            user_id: i % 10,
            event_ts: T0 + i * 1_000_000,
            created_ts: T0 + i * 1_000_000,
            a: i,
            b: Some(i as f64),
            s: format!("r{i}"),
        })
        .collect()
}

#[tokio::test]
async fn export_writes_parquet_with_provenance_metadata() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let mut clients = server.clients().await?;
    setup(&server, &mut clients, &rows(), "0").await?;
    let labels = server.path("repo/data/stats.parquet");
    let out = server.path("data/exports/train.parquet");
    let request = v1::ExportRequest {
        selector: Some(v1::export_request::Selector::FeatureService("model".into())),
        labels_path: labels.to_string_lossy().into_owned(),
        output_path: "train.parquet".into(),
        full_names: true,
        ..Default::default()
    };
    let mut stream = clients
        .offline
        .export_training_data(request.clone())
        .await?
        .into_inner();
    let mut last = None;
    while let Some(progress) = futures::StreamExt::next(&mut stream).await {
        last = Some(progress?);
    }
    let last = last.ok_or_else(|| anyhow::anyhow!("no progress"))?;
    assert!(last.done);
    assert_eq!(last.rows, 50);
    let file = std::fs::File::open(&out)?;
    let builder = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)?;
    let kv: std::collections::HashMap<String, String> = builder
        .metadata()
        .file_metadata()
        .key_value_metadata()
        .map(|kv| {
            kv.iter()
                .map(|e| (e.key.clone(), e.value.clone().unwrap_or_default()))
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(
        kv.get("quiver.feature_service").map(String::as_str),
        Some("model")
    );
    assert_eq!(kv.get("quiver.rows").map(String::as_str), Some("50"));
    assert!(kv.contains_key("quiver.fingerprint"), "{kv:?}");
    assert!(
        kv.get("quiver.labels")
            .is_some_and(|l| l.ends_with("stats.parquet"))
    );
    let names: Vec<String> = builder
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    assert!(names.contains(&"stats__a".to_string()), "{names:?}");

    // Without full names, the label table's own `a`, `b`, `s` collide with the features.
    let mut colliding = request;
    colliding.full_names = false;
    colliding.overwrite = true;
    let status = match clients.offline.export_training_data(colliding).await {
        Err(status) => status,
        Ok(response) => {
            let mut stream = response.into_inner();
            let mut error = None;
            while let Some(item) = futures::StreamExt::next(&mut stream).await {
                if let Err(e) = item {
                    error = Some(e);
                }
            }
            error.ok_or_else(|| anyhow::anyhow!("collision accepted"))?
        }
    };
    assert_eq!(
        status.code(),
        tonic::Code::InvalidArgument,
        "{}",
        status.message()
    );
    server.stop().await?;
    Ok(())
}

#[tokio::test]
async fn pyarrow_flight_reads_the_export_and_uploads_labels() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let mut clients = server.clients().await?;
    setup(&server, &mut clients, &rows(), "0").await?;
    let url = server.url.replace("http://", "grpc://");
    let stdout = quiver_integration_tests::run_python("flight_client.py", vec![url]).await?;
    let summary: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap_or("{}"))?;
    assert_eq!(summary["rows"], 4);
    assert_eq!(summary["a"], serde_json::json!([9, 0, null, 49]));
    assert_eq!(summary["empty_rows"], 0, "an empty upload exports 0 rows");
    server.stop().await?;
    Ok(())
}

#[tokio::test]
async fn entity_less_retrieval_returns_every_row_in_the_window() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let mut clients = server.clients().await?;
    setup(&server, &mut clients, &rows(), "0").await?;
    let out = server.path("data/exports/range.parquet");
    let request = v1::ExportRequest {
        selector: Some(v1::export_request::Selector::Features(v1::FeatureRefs {
            refs: vec!["stats:a".into()],
        })),
        output_path: "range.parquet".into(),
        // Rows are one second apart from T0: [T0 + 10 s, T0 + 20 s) holds rows 10..=19.
        start_micros: T0 + 10_000_000,
        end_micros: T0 + 20_000_000,
        ..Default::default()
    };
    let summary = quiver_integration_tests::export_to_end(&mut clients, request).await?;
    assert_eq!(summary.rows, 10);
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
        std::fs::File::open(&out)?,
    )?
    .build()?;
    let mut a = Vec::new();
    for batch in reader {
        let batch = batch?;
        let column = batch
            .column_by_name("a")
            .and_then(|c| {
                c.as_any()
                    .downcast_ref::<arrow::array::Int64Array>()
                    .cloned()
            })
            .ok_or_else(|| anyhow::anyhow!("column a"))?;
        a.extend(column.values().iter().copied());
    }
    a.sort_unstable();
    assert_eq!(a, (10..20).collect::<Vec<i64>>());
    server.stop().await?;
    Ok(())
}
