//! Authentication and roles through real gRPC clients: static tokens (reloaded without a
//! restart), roles, scopes, JWTs, the recorded applier, and the loopback-only default.

use std::path::Path;
use std::time::{Duration, Instant};

use quiver_integration_tests::{ManualClock, TestServer};
use quiver_proto::v1;
use quiver_server::auth::jwt::JwtOptions;
use quiver_server::auth::tokens::TokensFile;
use quiver_server::auth::{Role, Scope};
use tonic::Code;

use super::fixture::{self, TestRow};
use super::online::push_request;

const T0: i64 = 1_800_000_000_000_000;

struct Tokens {
    reader: String,
    writer: String,
    admin: String,
    scoped: String,
}

fn tokens_file(path: &Path) -> anyhow::Result<Tokens> {
    let mut file = TokensFile::default();
    let scope = Scope {
        services: ["other".to_string()].into(),
        views: Default::default(),
    };
    let tokens = Tokens {
        reader: file.create("ana", Role::Reader, Scope::default())?,
        writer: file.create("ci", Role::Writer, Scope::default())?,
        admin: file.create("ops", Role::Admin, Scope::default())?,
        scoped: file.create("team-b", Role::Reader, scope)?,
    };
    file.write(path)?;
    Ok(tokens)
}

async fn start_with_tokens() -> anyhow::Result<(TestServer, Tokens)> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("tokens.yaml");
    let tokens = tokens_file(&path)?;
    let server = TestServer::start_with(dir, ManualClock::new(T0), |o| {
        o.auth.tokens_file = Some(path);
    })
    .await?;
    Ok((server, tokens))
}

fn list() -> v1::ListObjectsRequest {
    v1::ListObjectsRequest {
        kind: v1::ObjectKind::FeatureView as i32,
    }
}

fn code<T: std::fmt::Debug>(result: Result<T, tonic::Status>) -> (Code, String) {
    match result {
        Ok(v) => panic!("expected an error, got {v:?}"),
        Err(status) => (status.code(), status.message().to_string()),
    }
}

fn row() -> TestRow {
    TestRow {
        user_id: 1,
        event_ts: T0 - 10,
        created_ts: T0 - 10,
        a: 7,
        b: Some(1.5),
        s: "x".into(),
    }
}

#[tokio::test]
async fn calls_need_a_valid_token_and_the_right_role() -> anyhow::Result<()> {
    let (server, tokens) = start_with_tokens().await?;
    let mut admin = server.connect(Some(&tokens.admin), None).await?;
    fixture::setup(&server, &mut admin, &[row()], "1h").await?;

    let mut anonymous = server.clients().await?;
    let (c, m) = code(anonymous.registry.list_objects(list()).await);
    assert_eq!(c, Code::Unauthenticated, "{m}");
    assert!(m.contains("Bearer"), "{m}");
    let mut stranger = server.connect(Some("qvr_not-a-token"), None).await?;
    assert_eq!(
        code(stranger.registry.list_objects(list()).await).0,
        Code::Unauthenticated
    );

    // Health stays open to anyone.
    let mut health = tonic_health::pb::health_client::HealthClient::new(anonymous.channel.clone());
    health
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await?;

    let mut reader = server.connect(Some(&tokens.reader), None).await?;
    reader.registry.list_objects(list()).await?;
    let (c, m) = code(reader.online.push(push_request(&[row()])).await);
    assert_eq!(c, Code::PermissionDenied);
    assert!(
        m.contains("Push needs role `writer`") && m.contains("`ana`"),
        "{m}"
    );
    let (c, m) = code(
        reader
            .registry
            .apply(v1::ApplyRequest {
                manifests: quiver_integration_tests::manifests(&server.path("repo"))?,
                expected_version: None,
                force: true,
                tag: String::new(),
            })
            .await,
    );
    assert_eq!(c, Code::PermissionDenied);
    assert!(m.contains("needs role `admin`"), "{m}");

    let mut writer = server.connect(Some(&tokens.writer), None).await?;
    let pushed = writer
        .online
        .push(push_request(&[row()]))
        .await?
        .into_inner();
    assert_eq!(pushed.rows, 1);
    let view = admin
        .registry
        .get_object(v1::GetObjectRequest {
            kind: v1::ObjectKind::FeatureView as i32,
            name: "stats".into(),
        })
        .await?
        .into_inner()
        .object
        .ok_or_else(|| anyhow::anyhow!("no object"))?;
    assert_eq!(view.applied_by, "ops");
    server.stop().await?;
    Ok(())
}

#[tokio::test]
async fn a_scoped_token_reads_only_its_services() -> anyhow::Result<()> {
    let (server, tokens) = start_with_tokens().await?;
    let mut admin = server.connect(Some(&tokens.admin), None).await?;
    fixture::setup(&server, &mut admin, &[row()], "1h").await?;
    let mut scoped = server.connect(Some(&tokens.scoped), None).await?;
    let request = |selector| v1::GetOnlineFeaturesRequest {
        selector: Some(selector),
        entities: vec![quiver_integration_tests::named(
            "user_id",
            quiver_integration_tests::int64_column(vec![1]),
        )],
        ..Default::default()
    };
    let service = v1::get_online_features_request::Selector::FeatureService("model".into());
    let (c, m) = code(
        scoped
            .online
            .get_online_features(request(service.clone()))
            .await,
    );
    assert_eq!(c, Code::PermissionDenied);
    assert!(m.contains("not scoped to feature service `model`"), "{m}");
    let refs = v1::get_online_features_request::Selector::Features(v1::FeatureRefs {
        refs: vec!["stats:a".into()],
    });
    assert_eq!(
        code(scoped.online.get_online_features(request(refs)).await).0,
        Code::PermissionDenied
    );
    let mut reader = server.connect(Some(&tokens.reader), None).await?;
    reader.online.get_online_features(request(service)).await?;
    server.stop().await?;
    Ok(())
}

#[tokio::test]
async fn tokens_added_to_the_file_work_without_a_restart() -> anyhow::Result<()> {
    let (server, _tokens) = start_with_tokens().await?;
    let path = server.path("tokens.yaml");
    let mut file = TokensFile::read_or_empty(&path)?;
    let late = file.create("late", Role::Reader, Scope::default())?;
    file.write(&path)?;
    let mut clients = server.connect(Some(&late), None).await?;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match clients.registry.list_objects(list()).await {
            Ok(_) => break,
            Err(status) if status.code() == Code::Unauthenticated => {
                anyhow::ensure!(Instant::now() < deadline, "new token never accepted");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(status) => anyhow::bail!("unexpected {status}"),
        }
    }
    // A broken file keeps the last good set.
    std::fs::write(&path, "tokens: [broken")?;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    clients.registry.list_objects(list()).await?;
    server.stop().await?;
    Ok(())
}

const SECRET: &[u8] = b"a shared secret of enough length!";

fn jwt(claims: serde_json::Value, secret: &[u8]) -> anyhow::Result<String> {
    let key = jsonwebtoken::EncodingKey::from_secret(secret)?;
    Ok(jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &key,
    )?)
}

#[tokio::test]
async fn jwts_are_verified_for_signature_time_issuer_and_audience() -> anyhow::Result<()> {
    let server = TestServer::start_with(tempfile::tempdir()?, ManualClock::new(T0), |o| {
        o.auth.jwt = Some(JwtOptions {
            hs256_secret: Some(SECRET.to_vec()),
            issuer: "https://idp.example".into(),
            audience: "quiver".into(),
            role_claim: "role".into(),
            ..Default::default()
        });
    })
    .await?;
    let now = chrono::Utc::now().timestamp();
    let claims = |exp: i64, iss: &str, aud: &str| serde_json::json!({"sub": "svc-ranker", "role": "reader", "exp": exp, "iss": iss, "aud": aud});
    let good = jwt(claims(now + 600, "https://idp.example", "quiver"), SECRET)?;
    let mut clients = server.connect(Some(&good), None).await?;
    clients.registry.list_objects(list()).await?;
    let (c, m) = code(clients.online.push(push_request(&[row()])).await);
    assert_eq!(c, Code::PermissionDenied, "{m}");
    assert!(m.contains("`svc-ranker`"), "{m}");
    for (label, token) in [
        (
            "expired",
            jwt(claims(now - 600, "https://idp.example", "quiver"), SECRET)?,
        ),
        (
            "badly signed",
            jwt(
                claims(now + 600, "https://idp.example", "quiver"),
                b"another secret, equally long!!!!",
            )?,
        ),
        (
            "wrong issuer",
            jwt(claims(now + 600, "https://evil.example", "quiver"), SECRET)?,
        ),
        (
            "wrong audience",
            jwt(claims(now + 600, "https://idp.example", "other"), SECRET)?,
        ),
    ] {
        let mut clients = server.connect(Some(&token), None).await?;
        let (c, m) = code(clients.registry.list_objects(list()).await);
        assert_eq!(c, Code::Unauthenticated, "{label}: {m}");
    }
    server.stop().await?;
    Ok(())
}

#[tokio::test]
async fn without_auth_only_loopback_is_served() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let listener = tokio::net::TcpListener::bind("0.0.0.0:0").await?;
    let data = dir.path().join("data");
    let files = quiver_server::FileRoots::defaults(&data, dir.path().to_path_buf());
    let options = quiver_server::ServerOptions::new(
        data,
        std::sync::Arc::new(quiver_server::SystemClock),
        files,
    );
    let token = tokio_util::sync::CancellationToken::new();
    let error = quiver_server::serve(listener, token, options)
        .await
        .expect_err("refused without auth");
    let message = error.to_string();
    assert!(
        message.contains("--insecure-no-auth") && message.contains("--auth-file"),
        "{message}"
    );
    Ok(())
}
