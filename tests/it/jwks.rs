//! ES256 JWTs verified against the issuer's JWKS fetched from a URL (a loopback HTTP server
//! here, standing in for an OIDC provider): a rotated key is picked up without a restart.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use quiver_integration_tests::{ManualClock, TestServer};
use quiver_proto::v1;
use quiver_server::auth::jwks::JwksSource;
use quiver_server::auth::jwt::JwtOptions;
use tonic::Code;

const T0: i64 = 1_800_000_000_000_000;

/// An ES256 signing key and its public JWK under `kid`.
struct Key {
    kid: String,
    encoding: jsonwebtoken::EncodingKey,
    jwk: serde_json::Value,
}

fn key(kid: &str) -> anyhow::Result<Key> {
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let raw = pair.public_key_raw();
    anyhow::ensure!(raw.len() == 65 && raw[0] == 4, "uncompressed P-256 point");
    Ok(Key {
        kid: kid.into(),
        encoding: jsonwebtoken::EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes())?,
        jwk: serde_json::json!({
            "kty": "EC", "crv": "P-256", "kid": kid, "alg": "ES256", "use": "sig",
            "x": URL_SAFE_NO_PAD.encode(&raw[1..33]),
            "y": URL_SAFE_NO_PAD.encode(&raw[33..]),
        }),
    })
}

/// A token for `sub` with role `reader`, signed by `signer` but naming `kid`.
fn token(signer: &Key, kid: &str) -> anyhow::Result<String> {
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    header.kid = Some(kid.into());
    let claims = serde_json::json!({
        "sub": "svc-ranker", "role": "reader", "iss": "https://idp.example", "aud": "quiver",
        "exp": chrono::Utc::now().timestamp() + 600,
    });
    Ok(jsonwebtoken::encode(&header, &claims, &signer.encoding)?)
}

/// Serves `body` (changeable) to every HTTP request on a loopback port; the URL.
fn serve_jwks(body: Arc<Mutex<String>>) -> anyhow::Result<String> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let url = format!("http://{}/.well-known/jwks.json", listener.local_addr()?);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut request = Vec::new();
            let mut buf = [0u8; 1024];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => request.extend_from_slice(&buf[..n]),
                }
            }
            let body = body.lock().map(|b| b.clone()).unwrap_or_default();
            let response = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(response.as_bytes());
        }
    });
    Ok(url)
}

fn jwks(keys: &[&Key]) -> String {
    serde_json::json!({"keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>()}).to_string()
}

async fn list(server: &TestServer, token: &str) -> Result<(), tonic::Status> {
    let mut clients = server
        .connect(Some(token), None)
        .await
        .map_err(|e| tonic::Status::unknown(e.to_string()))?;
    clients
        .registry
        .list_objects(v1::ListObjectsRequest::default())
        .await
        .map(|_| ())
}

/// A server that verifies JWTs against the JWKS at `url` (a start error ends its task).
async fn start(url: &str) -> anyhow::Result<TestServer> {
    TestServer::start_with(tempfile::tempdir()?, ManualClock::new(T0), |o| {
        o.auth.jwt = Some(JwtOptions {
            jwks: Some(JwksSource::Url(url.to_string())),
            issuer: "https://idp.example".into(),
            audience: "quiver".into(),
            role_claim: "role".into(),
            ..Default::default()
        });
    })
    .await
}

#[tokio::test]
async fn es256_tokens_verify_against_a_jwks_url_and_rotated_keys_are_fetched() -> anyhow::Result<()>
{
    let (old, new) = (key("2026-11")?, key("2026-12")?);
    let body = Arc::new(Mutex::new(jwks(&[&old])));
    let url = serve_jwks(Arc::clone(&body))?;
    let server = start(&url).await?;
    list(&server, &token(&old, &old.kid)?).await?;
    let forged = token(&new, &old.kid)?;
    let status = list(&server, &forged)
        .await
        .expect_err("signed by another key");
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    let rotated = token(&new, &new.kid)?;
    let status = list(&server, &rotated)
        .await
        .expect_err("not published yet");
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");

    // The issuer publishes the new key; the unknown `kid` made the server fetch again soon.
    *body.lock().map_err(|_| anyhow::anyhow!("poisoned"))? = jwks(&[&old, &new]);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match list(&server, &rotated).await {
            Ok(()) => break,
            Err(status) if Instant::now() < deadline => {
                assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(status) => anyhow::bail!("the rotated key was never fetched: {status:?}"),
        }
    }
    list(&server, &token(&old, &old.kid)?).await?;
    server.stop().await?;
    Ok(())
}

#[tokio::test]
async fn a_jwks_url_that_cannot_be_fetched_refuses_to_start() -> anyhow::Result<()> {
    // A port nothing listens on (bound, then closed).
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    for url in [
        format!("http://127.0.0.1:{port}/jwks"),
        "http://idp.example/jwks".to_string(),
    ] {
        let started = start(&url).await?;
        // The server task ends with the error; `stop` reports it.
        let error = started
            .stop()
            .await
            .err()
            .ok_or_else(|| anyhow::anyhow!("{url}: served"))?;
        let error = format!("{error:#}");
        assert!(
            error.contains("cannot fetch the JWKS") || error.contains("--jwt-jwks-url"),
            "{url}: {error}"
        );
    }
    Ok(())
}
