//! TLS and mutual TLS on the one port, certificate reload, and Python clients (grpcio and
//! pyarrow.flight over `grpc+tls`) with a bearer token.

use std::time::{Duration, Instant};

use quiver_integration_tests::certs::TestPki;
use quiver_integration_tests::{ManualClock, TestServer};
use quiver_proto::v1;
use quiver_server::auth::tokens::TokensFile;
use quiver_server::auth::{Role, Scope};
use quiver_server::tls::TlsOptions;

fn list() -> v1::ListObjectsRequest {
    v1::ListObjectsRequest {
        kind: v1::ObjectKind::FeatureView as i32,
    }
}

async fn start_tls(
    pki: &TestPki,
    mutual: bool,
    dir: tempfile::TempDir,
) -> anyhow::Result<TestServer> {
    let tls = TlsOptions {
        cert: pki.server_cert.clone(),
        key: pki.server_key.clone(),
        client_ca: mutual.then(|| pki.ca.clone()),
    };
    TestServer::start_with(dir, ManualClock::new(0), |o| o.tls = Some(tls)).await
}

#[tokio::test]
async fn tls_serves_clients_that_trust_the_ca_and_reloads_a_new_certificate() -> anyhow::Result<()>
{
    let dir = tempfile::tempdir()?;
    let pki = TestPki::create(&dir.path().join("pki"))?;
    let server = start_tls(&pki, false, dir).await?;
    let mut clients = server.connect(None, Some(pki.client_tls(false)?)).await?;
    clients.registry.list_objects(list()).await?;

    // Plain HTTP/2 to the TLS port gets no answer.
    let plain = server.url.replace("https://", "http://");
    let channel = tonic::transport::Channel::from_shared(plain)?
        .connect()
        .await;
    if let Ok(channel) = channel {
        let mut client = v1::registry_service_client::RegistryServiceClient::new(channel);
        assert!(client.list_objects(list()).await.is_err());
    }

    // A certificate from a new CA replaces the old one without a restart.
    let renewed = TestPki::create(&server.path("pki2"))?;
    std::fs::copy(&renewed.server_key, &pki.server_key)?;
    std::fs::copy(&renewed.server_cert, &pki.server_cert)?;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let attempt = async {
            let mut c = server
                .connect(None, Some(renewed.client_tls(false)?))
                .await?;
            c.registry.list_objects(list()).await?;
            anyhow::Ok(())
        };
        match attempt.await {
            Ok(()) => break,
            Err(e) => {
                anyhow::ensure!(
                    Instant::now() < deadline,
                    "new certificate never served: {e:#}"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    server.stop().await?;
    Ok(())
}

#[tokio::test]
async fn mutual_tls_refuses_clients_without_a_certificate() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let pki = TestPki::create(&dir.path().join("pki"))?;
    let server = start_tls(&pki, true, dir).await?;
    let mut with = server.connect(None, Some(pki.client_tls(true)?)).await?;
    with.registry.list_objects(list()).await?;
    let endpoint = tonic::transport::Channel::from_shared(server.url.clone())?
        .tls_config(pki.client_tls(false)?)?;
    let refused = match endpoint.connect().await {
        Err(_) => true,
        Ok(channel) => v1::registry_service_client::RegistryServiceClient::new(channel)
            .list_objects(list())
            .await
            .is_err(),
    };
    assert!(refused, "a client without a certificate was served");
    server.stop().await?;
    Ok(())
}

#[tokio::test]
async fn python_grpcio_and_pyarrow_flight_use_tls_and_tokens() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let pki = TestPki::create(&dir.path().join("pki"))?;
    let tokens = dir.path().join("tokens.yaml");
    let mut file = TokensFile::default();
    let token = file.create("notebook", Role::Reader, Scope::default())?;
    file.write(&tokens)?;
    let tls = TlsOptions {
        cert: pki.server_cert.clone(),
        key: pki.server_key.clone(),
        client_ca: None,
    };
    let server = TestServer::start_with(dir, ManualClock::new(0), |o| {
        o.tls = Some(tls);
        o.auth.tokens_file = Some(tokens);
    })
    .await?;
    server
        .connect(Some(&token), Some(pki.client_tls(false)?))
        .await?;
    let ca = pki.ca.to_string_lossy().into_owned();
    let args = vec![server.url.clone(), ca, token];
    let stdout = quiver_integration_tests::run_python("secure_client.py", args).await?;
    assert!(
        stdout.contains("grpcio: ok") && stdout.contains("flight: ok"),
        "{stdout}"
    );
    server.stop().await?;
    Ok(())
}
