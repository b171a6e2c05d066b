//! `--healthcheck`: the container `HEALTHCHECK` of our runtime images, which
//! have no shell and no curl. The binary asks its own `/healthz` and exits 0
//! when it answers 200.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How long the whole probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// Whether the server listening on `addr` answers `GET /healthz` with 200.
/// A wildcard listen address (`0.0.0.0`, `::`) is probed on loopback.
pub async fn healthz(addr: SocketAddr) -> Result<(), String> {
    let target = match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv4Addr::LOCALHOST.into(), addr.port())
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv6Addr::LOCALHOST.into(), addr.port())
        }
        _ => addr,
    };
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(target)
            .await
            .map_err(|e| format!("connecting to {target}: {e}"))?;
        // One fixed request; `Connection: close` makes the server end the reply.
        let request =
            format!("GET /healthz HTTP/1.1\r\nHost: {target}\r\nConnection: close\r\n\r\n");
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|e| format!("writing to {target}: {e}"))?;
        let mut head = [0u8; 12];
        stream
            .read_exact(&mut head)
            .await
            .map_err(|e| format!("reading from {target}: {e}"))?;
        match &head[..] {
            b"HTTP/1.1 200" | b"HTTP/1.0 200" => Ok(()),
            other => Err(format!(
                "{target} answered {:?}",
                String::from_utf8_lossy(other)
            )),
        }
    };
    tokio::time::timeout(PROBE_TIMEOUT, exchange)
        .await
        .map_err(|_| format!("{target} did not answer within {PROBE_TIMEOUT:?}"))?
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    async fn server(reply: &'static [u8]) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 256];
            let _ = s.read(&mut buf).await;
            let _ = s.write_all(reply).await;
        });
        addr
    }

    #[tokio::test]
    async fn a_200_is_healthy() {
        let addr = server(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok").await;
        assert_eq!(healthz(addr).await, Ok(()));
    }

    #[tokio::test]
    async fn anything_else_is_not() {
        let addr = server(b"HTTP/1.1 503 Service Unavailable\r\n\r\n").await;
        assert!(healthz(addr).await.is_err());
    }

    #[tokio::test]
    async fn nobody_listening_is_not() {
        let port = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        assert!(healthz(SocketAddr::from(([127, 0, 0, 1], port)))
            .await
            .is_err());
    }
}
