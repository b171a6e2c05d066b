//! Direct TLS: with `TLS_CERT_FILE` and `TLS_KEY_FILE` the gateway speaks only
//! TLS, and a client that trusts the certificate gets `https://` and `wss://`.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs, dead_code)]

#[path = "api/helpers.rs"]
mod helpers;

use chat_shared::domain::Role;
use futures_util::StreamExt;
use helpers::SECRET;
use rustls::pki_types::{CertificateDer, ServerName};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// A self-signed certificate for `localhost`, written as PEM files.
struct Certificate {
    dir: tempfile::TempDir,
    der: CertificateDer<'static>,
}

impl Certificate {
    fn generate() -> Self {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("cert.pem"), cert.pem()).unwrap();
        std::fs::write(dir.path().join("key.pem"), key.serialize_pem()).unwrap();
        Self {
            dir,
            der: cert.der().clone(),
        }
    }

    fn connector(&self) -> TlsConnector {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.der.clone()).unwrap();
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        TlsConnector::from(Arc::new(config))
    }
}

struct Gateway {
    child: Child,
    port: u16,
    _data: tempfile::TempDir,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(cert: &Certificate) -> Gateway {
    let port = chat_testkit::free_port();
    let data = tempfile::tempdir().unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_chat-gateway"))
        .env_clear()
        .env("GATEWAY_ADDR", format!("127.0.0.1:{port}"))
        .env("DATA_DIR", data.path())
        .env("JWT_SECRET", SECRET)
        .env("RUST_LOG", "warn")
        .env("TLS_CERT_FILE", cert.dir.path().join("cert.pem"))
        .env("TLS_KEY_FILE", cert.dir.path().join("key.pem"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    Gateway {
        child,
        port,
        _data: data,
    }
}

async fn tls_stream(
    cert: &Certificate,
    port: u16,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(("127.0.0.1", port)).await?;
    cert.connector()
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
}

/// `GET path` over TLS; the status line.
async fn https_get(cert: &Certificate, port: u16, path: &str) -> std::io::Result<String> {
    let mut tls = tls_stream(cert, port).await?;
    tls.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await?;
    let mut reply = Vec::new();
    tls.read_to_end(&mut reply).await?;
    Ok(String::from_utf8_lossy(&reply)
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned())
}

#[tokio::test]
async fn with_a_certificate_the_gateway_serves_https_and_wss_only() {
    let cert = Certificate::generate();
    let gateway = start(&cert);
    let port = gateway.port;
    let status = helpers::eventually("the gateway answers /readyz over TLS", &mut || {
        let cert = &cert;
        async move { https_get(cert, port, "/readyz").await.ok() }
    })
    .await;
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");

    // A WebSocket session over TLS gets its `hello`.
    let token = helpers::claims("pat-tls", Role::Patient, 600);
    let token = chat_shared::auth::TokenSigner::hs256(&secrecy::SecretString::from(SECRET))
        .sign(&token)
        .unwrap();
    let tls = tls_stream(&cert, port).await.unwrap();
    let (mut ws, _) = tokio_tungstenite::client_async(
        format!("wss://localhost:{port}/ws?access_token={token}"),
        tls,
    )
    .await
    .unwrap();
    let first = tokio::time::timeout(Duration::from_secs(10), ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(
        first.to_text().unwrap().contains(r#""type":"hello""#),
        "{first:?}"
    );

    // Plain HTTP on the same port gets no HTTP answer.
    let mut plain = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    plain
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(5), plain.read(&mut buf))
        .await
        .unwrap()
        .unwrap_or(0);
    assert!(!String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
}

#[test]
fn a_key_without_a_certificate_or_an_unreadable_file_is_a_configuration_error() {
    let cert = Certificate::generate();
    for (var, value, named) in [
        (
            "TLS_KEY_FILE",
            cert.dir.path().join("key.pem"),
            "TLS_CERT_FILE",
        ),
        (
            "TLS_CERT_FILE",
            cert.dir.path().join("missing.pem"),
            "TLS_CERT_FILE",
        ),
    ] {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_chat-gateway"));
        cmd.env_clear()
            .env("JWT_SECRET", SECRET)
            .env("DATA_DIR", cert.dir.path())
            .env(var, &value);
        if var == "TLS_CERT_FILE" {
            cmd.env("TLS_KEY_FILE", cert.dir.path().join("key.pem"));
        }
        let out = cmd.output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
        assert!(stderr.contains(named), "{stderr}");
    }
}
