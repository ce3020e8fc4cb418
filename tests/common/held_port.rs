//! Loopback listeners that keep their port while they are down. A fixture that refuses
//! connections for a while (a backend whose dyno crashed, the Platform API unreachable) and then
//! serves again on the same port must not let the port go in between: another test or process
//! could bind it, and the fixture could not come back.
//!
//! So the socket stays bound and only stops listening. On Linux `shutdown(SHUT_RD)` on a
//! listener moves it back to the CLOSE state (resetting the connections it had not accepted
//! yet) but keeps its bind; a bound socket that does not listen answers a SYN with RST, so
//! clients see "connection refused"; and `listen()` on the same socket serves the port again.
//! Three details make the port stay ours (each checked by experiment on Linux 6.x):
//! - The kernel keeps the bind across the shutdown only when `bind()` named the port; bound
//!   to port 0, the port is released. So a first socket binds port 0 to find a free port and a
//!   second one binds that port by number before the first closes, both with `SO_REUSEPORT`
//!   for that moment only (cleared before `listen()`, so nobody can join the port later).
//!   The first socket can outlive its close for a moment, when another thread is spawning a
//!   child process (the child holds a copy of every descriptor until it execs); the
//!   `listen()` then fails with "address in use", and `bind_loopback` starts over.
//! - `SO_REUSEADDR` is on while the socket listens, as for std's listeners: the connections it
//!   accepted and closed first wait in TIME_WAIT on the port, and a `listen()` without it
//!   fails with "address in use" because of them. (The first `listen()` goes without it and
//!   sets it just after: in between nothing is accepted, and until then a socket that does not
//!   listen yet shares its port with no other `SO_REUSEADDR` socket binding it by number, such
//!   as a balancer started on a port that was free a moment before.)
//! - `SO_REUSEADDR` is off while the socket is down: with it, any other socket with
//!   `SO_REUSEADDR` (std's and Tokio's listeners have it) could bind the port and listen.

use std::io;
use std::net::{Ipv4Addr, Shutdown, SocketAddr};

use socket2::{Domain, Protocol, SockRef, Socket, Type};

/// Connections a listener queues before they are accepted.
const BACKLOG: i32 = 1024;

/// How many times `bind_loopback` tries, starting over when the hand-over of a port failed.
const BIND_ATTEMPTS: u32 = 20;

/// A listening socket on 127.0.0.1, on a port the kernel picked, that keeps the port for its
/// whole life, up or down. Non-blocking, for `tokio::net::TcpListener::from_std`; dropping it
/// frees the port.
pub fn bind_loopback() -> std::net::TcpListener {
    let mut errors = Vec::new();
    for _ in 0..BIND_ATTEMPTS {
        match try_bind_loopback() {
            Ok(listener) => return listener,
            Err(e) => {
                println!("held_port: starting over after a failed hand-over: {e}");
                errors.push(e.to_string());
            }
        }
    }
    panic!("no held listener on 127.0.0.1 in {BIND_ATTEMPTS} attempts: {errors:?}");
}

/// One attempt of `bind_loopback`; fails when the first socket still held the port at `listen()`
/// (or, rarely, another socket took it).
fn try_bind_loopback() -> io::Result<std::net::TcpListener> {
    let finder = reuse_port_socket()?;
    finder.bind(&SocketAddr::from((Ipv4Addr::LOCALHOST, 0)).into())?;
    let addr = finder.local_addr()?;
    let socket = reuse_port_socket()?;
    socket.bind(&addr)?;
    drop(finder);
    socket.set_reuse_port(false)?;
    socket.listen(BACKLOG)?;
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

/// A held listener that is down: still bound, not listening. Connects to its port are refused
/// and no other socket can bind the port.
#[derive(Debug)]
pub struct DownListener(std::net::TcpListener);

/// Take `listener` down: first out of Tokio's reactor (which would otherwise keep, for good, the
/// hang-up the shutdown reports and spin its accept loop once it listens again), then no longer
/// listening. Connections it had accepted are the caller's to close.
pub fn take_down(listener: tokio::net::TcpListener) -> io::Result<DownListener> {
    let listener = listener.into_std()?;
    let socket = SockRef::from(&listener);
    socket.set_reuse_address(false)?;
    socket.shutdown(Shutdown::Read)?;
    Ok(DownListener(listener))
}

impl DownListener {
    /// The address it holds.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.local_addr()
    }

    /// Listen again on the same port, as a new Tokio listener (call it inside a runtime).
    pub fn listen(self) -> io::Result<tokio::net::TcpListener> {
        // With SO_REUSEADDR, so that the TIME_WAIT leftovers of its earlier connections do
        // not stand in the way.
        let socket = SockRef::from(&self.0);
        socket.set_reuse_address(true)?;
        socket.listen(BACKLOG)?;
        self.0.set_nonblocking(true)?;
        tokio::net::TcpListener::from_std(self.0)
    }
}

/// A TCP socket for 127.0.0.1 with `SO_REUSEPORT`, for the hand-over in `bind_loopback`.
fn reuse_port_socket() -> io::Result<Socket> {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_port(true)?;
    Ok(socket)
}
