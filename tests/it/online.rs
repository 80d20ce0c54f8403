//! Online path: statuses and TTL bounds, write ordering under concurrency, bad requests,
//! acknowledged pushes across a restart.

use quiver_integration_tests::{Clients, TestServer, int64_column, named, timestamp_column};
use quiver_proto::v1;

use super::fixture::{TestRow, materialize, setup};

const HOUR: i64 = 3_600_000_000;
const T0: i64 = 1_800_000_000_000_000;

fn row(user_id: i64, event_ts: i64, created_ts: i64, a: i64) -> TestRow {
    TestRow {
        user_id,
        event_ts,
        created_ts,
        a,
        b: Some(a as f64 / 2.0),
        s: format!("s{a}"),
    }
}

pub(super) fn get_request(ids: Vec<i64>) -> v1::GetOnlineFeaturesRequest {
    v1::GetOnlineFeaturesRequest {
        selector: Some(v1::get_online_features_request::Selector::FeatureService(
            "model".into(),
        )),
        entities: vec![named("user_id", int64_column(ids))],
        ..Default::default()
    }
}

/// (status, a) per entity, read from feature `a`.
pub(super) async fn read_a(
    clients: &mut Clients,
    ids: Vec<i64>,
) -> anyhow::Result<Vec<(i32, Option<i64>)>> {
    let response = clients
        .online
        .get_online_features(get_request(ids))
        .await?
        .into_inner();
    a_of(&response)
}

/// (status, a) per entity of a response, from feature `a`.
pub(super) fn a_of(
    response: &v1::GetOnlineFeaturesResponse,
) -> anyhow::Result<Vec<(i32, Option<i64>)>> {
    let a = response
        .features
        .iter()
        .find(|f| f.name == "a")
        .ok_or_else(|| anyhow::anyhow!("no feature a"))?;
    let values = quiver_proto::convert::column_to_values(
        a.values
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("no values"))?,
        quiver_core::types::ValueType::scalar(quiver_core::types::ScalarType::Int64),
        "a",
    )?;
    Ok(a.statuses
        .iter()
        .zip(values)
        .map(|(s, v)| {
            (
                *s,
                if let quiver_core::value::Value::Int64(x) = v {
                    Some(x)
                } else {
                    None
                },
            )
        })
        .collect())
}

#[tokio::test]
async fn statuses_follow_ttl_bounds_inclusively() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let mut clients = server.clients().await?;
    let mut null_b = row(4, T0, T0, 4);
    null_b.b = None;
    let rows = vec![
        row(1, T0, T0, 1),                // fresh: event = now
        row(2, T0 - 2 * HOUR, T0, 2),     // exactly now - ttl: still fresh
        row(3, T0 - 2 * HOUR - 1, T0, 3), // one microsecond older: outside max age
        null_b,                           // fresh row, b null
        row(6, T0 + 1, T0, 6),            // after now: not materialized up to T0
    ];
    setup(&server, &mut clients, &rows, "2h").await?;
    materialize(&mut clients, 0, T0 + 1).await?;
    server.clock.set(T0);
    let response = clients
        .online
        .get_online_features(get_request(vec![1, 2, 3, 4, 5, 6]))
        .await?
        .into_inner();
    let status = |name: &str| {
        response
            .features
            .iter()
            .find(|f| f.name == name)
            .map(|f| f.statuses.clone())
            .unwrap_or_default()
    };
    use v1::FeatureStatus::{NotFound, NullValue, OutsideMaxAge, Present};
    let p = |s: v1::FeatureStatus| s as i32;
    assert_eq!(
        status("a"),
        vec![
            p(Present),
            p(Present),
            p(OutsideMaxAge),
            p(Present),
            p(NotFound),
            p(NotFound)
        ]
    );
    assert_eq!(
        status("b"),
        vec![
            p(Present),
            p(Present),
            p(OutsideMaxAge),
            p(NullValue),
            p(NotFound),
            p(NotFound)
        ]
    );
    assert_eq!(response.views[0].event_timestamps[..2], [T0, T0 - 2 * HOUR]);
    assert_eq!(response.feature_service, "model");
    assert!(!response.fingerprint.is_empty());
    server.stop().await?;
    Ok(())
}

pub(super) fn push_request(rows: &[TestRow]) -> v1::PushRequest {
    use quiver_core::types::{ScalarType, ValueType};
    use quiver_core::value::Value;
    let col = |values: Vec<Value>, t: ScalarType| {
        quiver_proto::convert::values_to_column(&values, ValueType::scalar(t))
    };
    v1::PushRequest {
        target: Some(v1::push_request::Target::FeatureView("stats".into())),
        columns: vec![
            named(
                "user_id",
                int64_column(rows.iter().map(|r| r.user_id).collect()),
            ),
            named(
                "event_timestamp",
                timestamp_column(rows.iter().map(|r| r.event_ts).collect()),
            ),
            named(
                "created",
                timestamp_column(rows.iter().map(|r| r.created_ts).collect()),
            ),
            named(
                "a",
                col(
                    rows.iter().map(|r| Value::Int64(r.a)).collect(),
                    ScalarType::Int64,
                ),
            ),
            named(
                "b",
                col(
                    rows.iter()
                        .map(|r| r.b.map(Value::Float64).unwrap_or(Value::Null))
                        .collect(),
                    ScalarType::Float64,
                ),
            ),
            named(
                "s",
                col(
                    rows.iter().map(|r| Value::String(r.s.clone())).collect(),
                    ScalarType::String,
                ),
            ),
        ],
        mode: v1::PushMode::OnlineAndOffline as i32,
    }
}

#[tokio::test]
async fn pushes_never_let_an_older_event_win() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let mut clients = server.clients().await?;
    setup(&server, &mut clients, &[row(99, T0 - HOUR, T0, 0)], "0").await?;
    // Out of order: newest first, then older ones; a tie on event time broken by created.
    for r in [
        row(1, T0, T0, 10),
        row(1, T0 - 5, T0, 11),
        row(1, T0, T0 - 1, 12),
        row(1, T0, T0 + 1, 13),
        row(1, T0 - 1, T0 + 9, 14),
    ] {
        clients.online.push(push_request(&[r])).await?;
    }
    assert_eq!(
        read_a(&mut clients, vec![1]).await?,
        vec![(v1::FeatureStatus::Present as i32, Some(13))]
    );

    // Concurrent pushes to one key: 16 writers, each with its own event times.
    let mut tasks = Vec::new();
    for writer in 0..16i64 {
        let mut online = clients.online.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..10i64 {
                let event = T0 + 1_000 + (i * 16 + writer) * 7 % 160;
                online
                    .push(push_request(&[row(2, event, T0, event - T0)]))
                    .await?;
            }
            anyhow::Ok(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    let max_event = (0..16i64)
        .flat_map(|w| (0..10i64).map(move |i| T0 + 1_000 + (i * 16 + w) * 7 % 160))
        .max()
        .unwrap_or(0);
    assert_eq!(
        read_a(&mut clients, vec![2]).await?,
        vec![(v1::FeatureStatus::Present as i32, Some(max_event - T0))]
    );
    server.stop().await?;
    Ok(())
}

#[tokio::test]
async fn bad_requests_are_refused_with_the_field_named() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let mut clients = server.clients().await?;
    setup(&server, &mut clients, &[row(1, T0, T0, 1)], "0").await?;
    materialize(&mut clients, 0, T0 + 1).await?;

    let mut wrong_type = get_request(vec![]);
    wrong_type.entities = vec![named(
        "user_id",
        v1::Column {
            values: Some(v1::column::Values::StringValues(v1::StringValues {
                values: vec!["1".into()],
            })),
            nulls: vec![],
        },
    )];
    let refs = |refs: &[&str]| v1::GetOnlineFeaturesRequest {
        selector: Some(v1::get_online_features_request::Selector::Features(
            v1::FeatureRefs {
                refs: refs.iter().map(|r| r.to_string()).collect(),
            },
        )),
        entities: vec![named("user_id", int64_column(vec![1]))],
        ..Default::default()
    };
    let mut bad_fingerprint = get_request(vec![1]);
    bad_fingerprint.expected_fingerprint = "0000".into();
    let mut unknown_key = get_request(vec![1]);
    unknown_key
        .entities
        .push(named("driver_id", int64_column(vec![1])));
    let mut duplicate_key = get_request(vec![1]);
    duplicate_key
        .entities
        .push(named("user_id", int64_column(vec![2])));
    let table = [
        (duplicate_key, tonic::Code::InvalidArgument, "given twice"),
        (wrong_type, tonic::Code::InvalidArgument, "entities.user_id"),
        (refs(&["nope:a"]), tonic::Code::NotFound, "nope"),
        (refs(&["stats:zzz"]), tonic::Code::InvalidArgument, "zzz"),
        (refs(&["stats@7:a"]), tonic::Code::NotFound, "version 7"),
        (
            bad_fingerprint,
            tonic::Code::FailedPrecondition,
            "fingerprint",
        ),
        (unknown_key, tonic::Code::InvalidArgument, "driver_id"),
    ];
    for (request, code, needle) in table {
        let status = clients
            .online
            .get_online_features(request)
            .await
            .expect_err(needle);
        assert_eq!(status.code(), code, "{needle}: {}", status.message());
        assert!(
            status.message().contains(needle),
            "{needle}: {}",
            status.message()
        );
    }
    let ok = clients
        .online
        .get_online_features(refs(&["stats:a", "stats@1:s"]))
        .await?
        .into_inner();
    assert_eq!(ok.features.len(), 2);

    // A push with an unknown column or a missing timestamp writes nothing.
    let mut unknown_column = push_request(&[row(1, T0 + 5, T0, 50)]);
    unknown_column
        .columns
        .push(named("colour", int64_column(vec![1])));
    let mut missing_ts = push_request(&[row(1, T0 + 5, T0, 50)]);
    missing_ts.columns.retain(|c| c.name != "event_timestamp");
    let mut wrong_feature_type = push_request(&[row(1, T0 + 5, T0, 50)]);
    wrong_feature_type.columns[3] = named("a", timestamp_column(vec![5]));
    let mut duplicate_column = push_request(&[row(1, T0 + 5, T0, 50)]);
    duplicate_column
        .columns
        .push(named("a", int64_column(vec![51])));
    for (request, needle) in [
        (duplicate_column, "given twice"),
        (unknown_column, "colour"),
        (missing_ts, "event_timestamp"),
        (wrong_feature_type, "columns.a"),
    ] {
        let status = clients.online.push(request).await.expect_err(needle);
        assert_eq!(
            status.code(),
            tonic::Code::InvalidArgument,
            "{}",
            status.message()
        );
        assert!(
            status.message().contains(needle),
            "{needle}: {}",
            status.message()
        );
    }
    server.clock.set(T0 + 10);
    assert_eq!(
        read_a(&mut clients, vec![1]).await?,
        vec![(v1::FeatureStatus::Present as i32, Some(1))]
    );
    server.stop().await?;
    Ok(())
}

#[tokio::test]
async fn acknowledged_pushes_survive_a_restart() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let mut clients = server.clients().await?;
    setup(&server, &mut clients, &[row(1, T0, T0, 1)], "0").await?;
    let rows: Vec<TestRow> = (0..200).map(|i| row(1_000 + i, T0 + i, T0, i)).collect();
    for chunk in rows.chunks(50) {
        clients.online.push(push_request(chunk)).await?;
    }
    let (dir, clock) = server.stop().await?;
    let server = TestServer::start_in(dir, clock).await?;
    let mut clients = server.clients().await?;
    server.clock.set(T0 + 1_000);
    let got = read_a(&mut clients, (1_000..1_200).collect()).await?;
    let want: Vec<(i32, Option<i64>)> = (0..200)
        .map(|i| (v1::FeatureStatus::Present as i32, Some(i)))
        .collect();
    assert_eq!(got, want);
    server.stop().await?;
    Ok(())
}
