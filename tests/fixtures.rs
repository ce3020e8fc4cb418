//! Self-tests of shared fixtures the other tests trust (the fake Platform API has its own,
//! `fake_heroku_api.rs`). The plain backend (`common/backend.rs`): tests stop it and start it
//! again to play a crashed dyno, so while it is down connects to its port must be refused yet
//! the port stay its own, stopping must cut its open keep-alive connections, and once up
//! again it must serve on the same port. The raw client (`common/raw_client.rs`): it must read
//! back-to-back answers of every framing one by one, and give up on answers too large or too
//! slow.

mod common;

use std::io::ErrorKind;
use std::time::{Duration, Instant};

use common::backend::TestBackend;
use common::raw_backend::RawServer;
use common::raw_client::{RawConnection, MAX_HEAD};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// A fresh connection to `backend`, which must be listening.
async fn connect(backend: &TestBackend) -> RawConnection {
    RawConnection::connect(backend.port())
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

/// Send a keep-alive GET of `path` on `connection`; whether `backend` answered it with 200.
async fn answered_on(connection: &mut RawConnection, path: &str, backend: &TestBackend) -> bool {
    let request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
    if connection.send(request.as_bytes()).await.is_err() {
        return false;
    }
    matches!(
        connection.read_response().await,
        Ok(answer) if answer.status == 200 && answer.body == backend.name().as_bytes()
    )
}

/// A stopped backend refuses connects and no other socket can bind its port, until `listen_again` serves there again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_backend_refuses_connections_but_keeps_its_port_until_it_listens_again() {
    let backend = TestBackend::start("held").await;
    for round in 1..=3 {
        // The backend closes this connection first when it stops, so its side
        // waits in TIME_WAIT on the port when it listens again.
        let mut stream = connect(&backend).await;
        assert!(
            answered_on(&mut stream, &format!("/round/{round}"), &backend).await,
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
            answered_on(&mut fresh, &format!("/again/{round}"), &backend).await,
            "round {round}: no answer after listening again"
        );
    }
    assert_eq!(backend.count_to("/round/"), 3);
    assert_eq!(backend.count_to("/again/"), 3);
}

/// Stopping a backend ends its open keep-alive connections, which stay dead once it listens again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_a_backend_cuts_its_open_keep_alive_connections() {
    let backend = TestBackend::start("cut").await;
    let mut kept = connect(&backend).await;
    assert!(answered_on(&mut kept, "/first", &backend).await);
    assert!(
        answered_on(&mut kept, "/second", &backend).await,
        "the connection was not kept alive"
    );

    backend.stop_listening().await;
    assert!(
        kept.closed_by_peer().await,
        "the open connection outlived the stop"
    );

    backend.listen_again().await;
    assert!(
        !answered_on(&mut kept, "/third", &backend).await,
        "a connection cut by the stop answered again"
    );
    let mut fresh = connect(&backend).await;
    assert!(answered_on(&mut fresh, "/fresh", &backend).await);
    assert_eq!(backend.count_to("/third"), 0);
    assert_eq!(backend.connection_count(), 2);
}

/// A raw server that writes `bytes` on every connection as soon as it is accepted, then
/// keeps it open for a second (or closes it at once when `close` is set).
async fn writing(bytes: &'static [u8], close: bool) -> RawServer {
    RawServer::start(move |mut stream| async move {
        let _ = stream.write_all(bytes).await;
        if !close {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    })
    .await
}

/// Back-to-back answers of every framing (100, chunked, 204, 304, Content-Length, to the close) are read one by one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_raw_client_reads_back_to_back_answers_of_every_framing() {
    let server = writing(
        b"HTTP/1.1 100 Continue\r\n\r\n\
          HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Kind: chunked\r\n\r\n\
          5;ext=1\r\nhello\r\n7\r\n, world\r\n0\r\nX-Trailer: t\r\n\r\n\
          HTTP/1.1 204 No Content\r\nX-Kind: empty\r\n\r\n\
          HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n\
          HTTP/1.1 404 Not Found\r\ncontent-length: 4\r\n\r\nnope\
          HTTP/1.0 200 OK\r\nX-Kind: to-the-close\r\n\r\nuntil the end",
        true,
    )
    .await;
    let mut client = RawConnection::connect(server.addr().port())
        .await
        .expect("connect to the raw server");
    let mut got = Vec::new();
    for _ in 0..6 {
        let answer = client.read_response().await.expect("one whole answer");
        got.push((
            answer.status,
            answer.header("x-kind").unwrap_or("-").to_string(),
            answer.body_text(),
        ));
    }
    let want = [
        (100, "-", ""),
        (200, "chunked", "hello, world"),
        (204, "empty", ""),
        (304, "-", ""),
        (404, "-", "nope"),
        (200, "to-the-close", "until the end"),
    ];
    let want: Vec<(u16, String, String)> = want
        .iter()
        .map(|(status, kind, body)| (*status, kind.to_string(), body.to_string()))
        .collect();
    assert_eq!(got, want);
    let after = client.read_response().await;
    assert!(after.is_err(), "an answer after the close: {after:?}");
}

/// A head over `MAX_HEAD` is an error, and so is an answer that does not come within the timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_raw_client_gives_up_on_answers_too_large_or_too_slow() {
    let huge: &'static [u8] = Box::leak(
        format!(
            "HTTP/1.1 200 OK\r\nX-Big: {}\r\n\r\n",
            "b".repeat(MAX_HEAD + 1)
        )
        .into_bytes()
        .into_boxed_slice(),
    );
    let server = writing(huge, false).await;
    let mut client = RawConnection::connect(server.addr().port())
        .await
        .expect("connect to the raw server");
    let answer = client.read_response().await;
    assert!(
        answer.as_ref().is_err_and(|e| e.contains("longer than")),
        "{:?}",
        answer.map(|a| a.status)
    );

    let silent = writing(b"", false).await;
    let mut client = RawConnection::connect(silent.addr().port())
        .await
        .expect("connect to the raw server")
        .with_timeout(Duration::from_millis(200));
    let started = Instant::now();
    let answer = client.read_response().await;
    let took = started.elapsed();
    assert!(
        answer.as_ref().is_err_and(|e| e.contains("within")),
        "{answer:?}"
    );
    assert!(took < Duration::from_secs(2), "gave up after {took:?}");
}
