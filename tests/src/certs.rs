//! Test certificates: a CA, a server certificate for `localhost` and `127.0.0.1`, and a client
//! certificate, all signed by the CA and written as PEM files.

use std::path::{Path, PathBuf};

use anyhow::Result;
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};

/// PEM files of one test PKI.
#[derive(Debug, Clone)]
pub struct TestPki {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

fn leaf(
    names: Vec<String>,
    issuer: &Issuer<'_, KeyPair>,
    dir: &Path,
    stem: &str,
) -> Result<(PathBuf, PathBuf)> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(names)?;
    params.distinguished_name = distinguished_name(stem);
    let cert = params.signed_by(&key, issuer)?;
    let (cert_path, key_path) = (
        dir.join(format!("{stem}.pem")),
        dir.join(format!("{stem}.key")),
    );
    std::fs::write(&cert_path, cert.pem())?;
    std::fs::write(&key_path, key.serialize_pem())?;
    Ok((cert_path, key_path))
}

/// A subject of its own per certificate: with rcgen's shared default, a leaf's subject equals
/// its issuer's and OpenSSL-based clients (grpcio) take it for self-signed.
fn distinguished_name(common_name: &str) -> rcgen::DistinguishedName {
    let mut name = rcgen::DistinguishedName::new();
    name.push(rcgen::DnType::CommonName, common_name);
    name
}

impl TestPki {
    /// A new CA and certificates under `dir`.
    pub fn create(dir: &Path) -> Result<TestPki> {
        std::fs::create_dir_all(dir)?;
        let ca_key = KeyPair::generate()?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.distinguished_name = distinguished_name("Quiver test CA");
        let ca_cert = ca_params.self_signed(&ca_key)?;
        let ca = dir.join("ca.pem");
        std::fs::write(&ca, ca_cert.pem())?;
        let issuer = Issuer::new(ca_params, ca_key);
        let names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
        let (server_cert, server_key) = leaf(names, &issuer, dir, "server")?;
        let (client_cert, client_key) = leaf(vec!["client".into()], &issuer, dir, "client")?;
        Ok(TestPki {
            ca,
            server_cert,
            server_key,
            client_cert,
            client_key,
        })
    }

    /// Client TLS trusting the CA, optionally presenting the client certificate.
    pub fn client_tls(&self, with_identity: bool) -> Result<tonic::transport::ClientTlsConfig> {
        let ca = tonic::transport::Certificate::from_pem(std::fs::read(&self.ca)?);
        let mut tls = tonic::transport::ClientTlsConfig::new()
            .ca_certificate(ca)
            .domain_name("localhost");
        if with_identity {
            tls = tls.identity(tonic::transport::Identity::from_pem(
                std::fs::read(&self.client_cert)?,
                std::fs::read(&self.client_key)?,
            ));
        }
        Ok(tls)
    }
}
