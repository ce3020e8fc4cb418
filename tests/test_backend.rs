//! Self-test of the plain test backend (`tests/common/backend.rs`): other tests stop a backend
//! and start it again to play a crashed dyno, and trust that while it is down connects to its
//! port are refused yet the port stays its own, that stopping cuts its open keep-alive
//! connections, and that once up again it serves on the same port.

mod common;

use std::io::ErrorKind;
use std::time::Duration;

use common::backend::TestBackend;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long a raw read here may take.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Write a keep-alive GET of `path` on `stream`, then read until the answer
/// names `backend` (its body); false when the connection ends or nothing comes in time.
async fn answered_on(stream: &mut TcpStream, path: &str, backend: &str) -> bool {
    let request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
    if stream.write_all(request.as_bytes()).await.is_err() {
        return false;
    }
    let read = async {
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        while !String::from_utf8_lossy(&seen).ends_with(backend) && seen.len() < 65536 {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return false,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
        }
        seen.starts_with(b"HTTP/1.1 200")
    };
    tokio::time::timeout(READ_TIMEOUT, read)
        .await
        .unwrap_or(false)
}

/// A fresh connection to `backend`, which must be listening.
async fn connect(backend: &TestBackend) -> TcpStream {
    TcpStream::connect(backend.addr())
        .await
        .unwrap_or_else(|e| panic!("connect to {}: {e}", backend.url()))
}

/// Whether the peer ends `stream` (EOF or reset) within `READ_TIMEOUT`.
async fn ended(stream: &mut TcpStream) -> bool {
    let mut buf = [0u8; 1024];
    matches!(
        tokio::time::timeout(READ_TIMEOUT, stream.read(&mut buf)).await,
        Ok(Ok(0) | Err(_))
    )
}

/// A stopped backend refuses connects and keeps its port from every other socket; after
/// `listen_again` it answers on that port, round after round.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_backend_refuses_connections_but_keeps_its_port_until_it_listens_again() {
    let backend = TestBackend::start("held").await;
    for round in 1..=3 {
        // The backend closes this connection first when it stops, so its side
        // waits in TIME_WAIT on the port when it listens again.
        let mut stream = connect(&backend).await;
        assert!(
            answered_on(&mut stream, &format!("/round/{round}"), backend.name()).await,
            "round {round}: no answer before stopping"
        );

        backend.stop_listening().await;
        let refused = TcpStream::connect(backend.addr()).await;
        assert_eq!(
            refused.as_ref().map_err(std::io::Error::kind).err(),
            Some(ErrorKind::ConnectionRefused),
            "round {round}: a connect to a stopped backend: {refused:?}"
        );
        // std's and Tokio's listeners set SO_REUSEADDR, the case that can share a port.
        for other in [
            std::net::TcpListener::bind(backend.addr()).map(drop),
            tokio::net::TcpListener::bind(backend.addr())
                .await
                .map(drop),
        ] {
            assert_eq!(
                other.as_ref().map_err(std::io::Error::kind).err(),
                Some(ErrorKind::AddrInUse),
                "round {round}: another socket bound the stopped backend's port: {other:?}"
            );
        }

        backend.listen_again().await;
        let mut fresh = connect(&backend).await;
        assert!(
            answered_on(&mut fresh, &format!("/again/{round}"), backend.name()).await,
            "round {round}: no answer after listening again"
        );
    }
    assert_eq!(backend.count_to("/round/"), 3);
    assert_eq!(backend.count_to("/again/"), 3);
}

/// Stopping a backend ends its open keep-alive connections at once, and they stay dead after
/// it listens again, while new connections are served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_a_backend_cuts_its_open_keep_alive_connections() {
    let backend = TestBackend::start("cut").await;
    let mut kept = connect(&backend).await;
    assert!(answered_on(&mut kept, "/first", backend.name()).await);
    assert!(
        answered_on(&mut kept, "/second", backend.name()).await,
        "the connection was not kept alive"
    );

    backend.stop_listening().await;
    assert!(
        ended(&mut kept).await,
        "the open connection outlived the stop"
    );

    backend.listen_again().await;
    assert!(
        !answered_on(&mut kept, "/third", backend.name()).await,
        "a connection cut by the stop answered again"
    );
    let mut fresh = connect(&backend).await;
    assert!(answered_on(&mut fresh, "/fresh", backend.name()).await);
    assert_eq!(backend.count_to("/third"), 0);
    assert_eq!(backend.connection_count(), 2);
}
