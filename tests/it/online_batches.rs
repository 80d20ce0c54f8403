//! Reads of 1, 100 and 1,000 entities (the in-memory path and the batched MultiGet path)
//! with present, missing, stale and null values mixed, against an independent reference
//! computed from the rows written.

use quiver_core::types::{ScalarType, ValueType};
use quiver_core::value::Value;
use quiver_integration_tests::TestServer;
use quiver_proto::v1;

use super::fixture::{TestRow, materialize, setup};
use super::online::get_request;

const HOUR: i64 = 3_600_000_000;
const T0: i64 = 1_800_000_000_000_000;
const USERS: i64 = 1_500;

/// User `u`'s row by `u % 4`: fresh, older than the 2 h TTL, fresh with `b` null, or none.
fn rows() -> Vec<TestRow> {
    (0..USERS)
        .filter(|u| u % 4 != 3)
        .map(|u| TestRow {
            user_id: u,
            // On both sides of the TTL bound: exactly 2 h old is fresh, 1 µs more is not.
            event_ts: match (u % 4, u % 8) {
                (1, _) => T0 - 2 * HOUR - 1 - (u % 3),
                (_, 4) => T0 - 2 * HOUR,
                _ => T0 - (u % 100) * 60_000_000,
            },
            created_ts: T0 - 2 * HOUR - 10_000,
            a: u * 10,
            b: (u % 4 != 2).then_some(u as f64 / 4.0),
            s: format!("user {u}"),
        })
        .collect()
}

/// The reference: per feature (a, b, s) the status and value served for `user` at `T0`, the
/// served event time (0 when none is stored) and whether a row is stored.
fn expected(rows: &[TestRow], user: i64) -> ([(i32, Value); 3], i64, bool) {
    use v1::FeatureStatus::{NotFound, NullValue, OutsideMaxAge, Present};
    let Some(row) = rows.iter().find(|r| r.user_id == user) else {
        let none = (NotFound as i32, Value::Null);
        return ([none.clone(), none.clone(), none], 0, false);
    };
    if row.event_ts < T0 - 2 * HOUR {
        let stale = (OutsideMaxAge as i32, Value::Null);
        return ([stale.clone(), stale.clone(), stale], row.event_ts, true);
    }
    let b = match row.b {
        Some(b) => (Present as i32, Value::Float64(b)),
        None => (NullValue as i32, Value::Null),
    };
    let a = (Present as i32, Value::Int64(row.a));
    let s = (Present as i32, Value::String(row.s.clone()));
    ([a, b, s], row.event_ts, true)
}

fn feature(
    response: &v1::GetOnlineFeaturesResponse,
    name: &str,
) -> anyhow::Result<Vec<(i32, Value)>> {
    let column = response
        .features
        .iter()
        .find(|f| f.name == name)
        .ok_or_else(|| anyhow::anyhow!("no feature {name}"))?;
    let value_type = match name {
        "a" => ScalarType::Int64,
        "b" => ScalarType::Float64,
        _ => ScalarType::String,
    };
    let values = quiver_proto::convert::column_to_values(
        column
            .values
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("no values"))?,
        ValueType::scalar(value_type),
        name,
    )?;
    Ok(column.statuses.iter().copied().zip(values).collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_of_1_100_and_1000_match_the_reference() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let mut clients = server.clients().await?;
    let rows = rows();
    setup(&server, &mut clients, &rows, "2h").await?;
    materialize(&mut clients, 0, T0 + 1).await?;
    server.clock.set(T0);
    for (batch, seed) in [(1usize, 11u64), (1, 12), (100, 13), (1_000, 14)] {
        // Scrambled ids, some repeated, some never written (>= USERS).
        let ids: Vec<i64> = (0..batch as u64)
            .map(|i| ((i * 7919 + seed * 104_729) % (USERS as u64 + 200)) as i64)
            .collect();
        let response = clients
            .online
            .get_online_features(get_request(ids.clone()))
            .await?
            .into_inner();
        let served = [
            feature(&response, "a")?,
            feature(&response, "b")?,
            feature(&response, "s")?,
        ];
        let view = response
            .views
            .first()
            .ok_or_else(|| anyhow::anyhow!("no view"))?;
        for (i, id) in ids.iter().enumerate() {
            let (values, event_ts, found) = expected(&rows, *id);
            for (f, want) in values.iter().enumerate() {
                assert_eq!(
                    &served[f][i], want,
                    "batch {batch}, row {i} (user {id}), feature {f}"
                );
            }
            assert_eq!(
                view.event_timestamps[i], event_ts,
                "batch {batch}, user {id}"
            );
            assert_eq!(view.found[i], found, "batch {batch}, user {id}");
        }
        assert_eq!(view.found.len(), batch);
        // Echo, the benchmark's baseline, answers as if every row had the first row's key:
        // the same response as a read of that key repeated.
        let first = vec![ids[0]; batch];
        let mut echo = clients.online.echo(get_request(ids)).await?.into_inner();
        let mut repeated = clients
            .online
            .get_online_features(get_request(first))
            .await?
            .into_inner();
        echo.served_at_micros = 0;
        repeated.served_at_micros = 0;
        assert_eq!(echo, repeated, "batch {batch}");
    }
    server.stop().await?;
    Ok(())
}
