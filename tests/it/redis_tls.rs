//! The online store over TLS (`rediss+cluster://`) to a cluster whose nodes speak only TLS,
//! as an ACL user: rows written and read back, through a client certificate and through the
//! CA alone; a client that does not trust the nodes' CA, a plain-text client, or a wrong
//! password is refused, with the password in no message.

use quiver_core::online_store::OnlineStore;
use quiver_core::value::KeyValue;
use quiver_integration_tests::Block;
use quiver_integration_tests::certs::TestPki;
use quiver_integration_tests::redis_cluster::{NodeTls, RedisCluster};
use quiver_redis::RedisStore;

use super::redis_online::{row, view};

#[test]
fn a_tls_cluster_serves_an_acl_user_that_trusts_its_ca() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let pki = TestPki::create(dir.path())?;
    let cluster = RedisCluster::start_tls(
        3,
        NodeTls {
            ca: pki.ca.clone(),
            cert: pki.server_cert.clone(),
            key: pki.server_key.clone(),
        },
    )?;
    for port in &cluster.ports {
        let set = cluster.cli(
            *port,
            &[
                "ACL", "SETUSER", "quiver", "on", ">s3cret", "~*", "&*", "+@all",
            ],
        )?;
        anyhow::ensure!(set == "OK", "ACL SETUSER: {set}");
    }
    let ca = pki.ca.display().to_string();
    let (cert, key) = (pki.client_cert.display(), pki.client_key.display());
    let url = cluster.url().replace("://", "://quiver:s3cret@");
    let with_certificate = format!("{url}?ca_file={ca}&cert_file={cert}&key_file={key}");
    let ca_only = format!("{url}?ca_file={ca}");

    let store = RedisStore::open(&with_certificate)?;
    let rows: Vec<_> = (0..200).map(|id| row(id, 10 * id, None, id)).collect();
    assert_eq!(
        store
            .write_rows(&view(), rows.clone(), true)
            .block()?
            .written,
        200
    );
    let keys: Vec<Vec<KeyValue>> = (0..200).map(|id| vec![KeyValue::Int64(id)]).collect();
    let read = RedisStore::open(&ca_only)?
        .read_rows(&view(), &keys)
        .block()?;
    assert!(
        read.iter()
            .enumerate()
            .all(|(id, row)| row.as_ref().is_some_and(|r| r.event_ts == 10 * id as i64)),
        "every row read back over TLS"
    );

    let other = TestPki::create(&dir.path().join("other"))?;
    let refused = [
        (
            format!("{url}?ca_file={}", other.ca.display()),
            "invalid peer certificate",
        ),
        (url.replace("rediss+", "redis+"), "failed to connect"),
        (
            format!("{}?ca_file={ca}", url.replace("s3cret", "wrong")),
            "authentication failed",
        ),
    ];
    for (url, says) in refused {
        let error = RedisStore::open(&url).expect_err(&url).to_string();
        assert!(error.to_lowercase().contains(says), "{url}: {error}");
        assert!(
            !error.contains("s3cret") && !error.contains("wrong"),
            "{error}"
        );
    }
    Ok(())
}
