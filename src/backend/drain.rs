//! Draining a target that leaves (uncoupled, in maintenance, scaled to
//! zero): it takes no new request from the moment discovery knows, requests
//! in flight finish, and upgraded connections (WebSockets) get
//! `drain_timeout` before they are closed.
//!
//! Input: the upstream socket of each upgraded connection, from the proxy
//! (`connected_to_upstream` and the 101 answer), and the removal from
//! discovery (`discovery/mod.rs`). Output: those connections shut down when
//! the drain timeout passes.
//!
//! Pingora's proxy task owns an upgraded connection until one side closes
//! it, and nothing outside that task can end it: a quiet WebSocket would
//! stay open as long as its peers keep it. So the proxy hands over a
//! duplicate of the upstream socket's descriptor, and shutting that socket
//! down ends the proxy task's reads at once; the client's connection then
//! closes as after any upstream close.

use super::AppTarget;
use log::info;
use std::fmt;
use std::os::fd::OwnedFd;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// The upgraded connections in flight to one target.
#[derive(Default)]
pub(super) struct UpgradedSet {
    next_id: u64,
    open: Vec<(u64, OwnedFd)>,
}

impl fmt::Debug for UpgradedSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "UpgradedSet({} open)", self.open.len())
    }
}

/// An upgraded connection registered on its target; dropping it (the
/// request ended) forgets it and closes the duplicate descriptor.
#[derive(Debug)]
pub struct UpgradedConnection {
    target: Arc<AppTarget>,
    id: u64,
}

impl Drop for UpgradedConnection {
    fn drop(&mut self) {
        let mut set = self
            .target
            .upgraded
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        set.open.retain(|(id, _)| *id != self.id);
    }
}

impl AppTarget {
    /// Keep `socket` (a duplicate of an upgraded connection's upstream
    /// socket) until the connection ends, to close it if this target leaves.
    pub fn register_upgraded(self: &Arc<Self>, socket: OwnedFd) -> UpgradedConnection {
        let mut set = self.upgraded.lock().unwrap_or_else(|p| p.into_inner());
        set.next_id += 1;
        let id = set.next_id;
        set.open.push((id, socket));
        UpgradedConnection {
            target: Arc::clone(self),
            id,
        }
    }

    /// Upgraded connections open now.
    pub fn upgraded_count(&self) -> usize {
        self.upgraded
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .open
            .len()
    }

    /// Shut every upgraded connection's upstream socket down; returns how
    /// many there were.
    pub fn close_upgraded(&self) -> usize {
        let open =
            std::mem::take(&mut self.upgraded.lock().unwrap_or_else(|p| p.into_inner()).open);
        let count = open.len();
        for (_, socket) in open {
            // Our own descriptor of the socket: shutting it down ends the
            // proxy task's reads; dropping it closes only the duplicate.
            let _ = std::net::TcpStream::from(socket).shutdown(std::net::Shutdown::Both);
        }
        count
    }

    /// This target left: no new request from now on; its upgraded
    /// connections are closed after `timeout` (at once for zero).
    pub fn drain(self: &Arc<Self>, timeout: Duration) {
        self.start_leaving();
        if self.upgraded_count() == 0 {
            return;
        }
        let target = Arc::clone(self);
        let close = async move {
            tokio::time::sleep(timeout).await;
            let closed = target.close_upgraded();
            if closed > 0 {
                info!(
                    "backend app={} url={} drained: closed {closed} upgraded connection(s) \
                     after drain_timeout={timeout:?}",
                    target.name(),
                    target.url()
                );
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(close);
            }
            // No runtime (never on the request path): close at once.
            Err(_) => {
                self.close_upgraded();
            }
        }
    }

    /// Whether this target is leaving or restarting.
    pub fn is_leaving(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::BackendUrl;
    use std::io::Read;
    use std::net::{TcpListener, TcpStream};

    #[test]
    fn closing_shuts_the_shared_socket_down_and_forgets_it() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let client = TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
        let (mut server, _) = listener.accept().expect("accept");
        let target = Arc::new(AppTarget::new(
            21,
            BackendUrl::parse("http://drain.test").expect("url"),
            "drain".into(),
        ));
        let duplicate = OwnedFd::from(client.try_clone().expect("dup"));
        let registered = target.register_upgraded(duplicate);
        assert_eq!(target.upgraded_count(), 1);
        assert_eq!(target.close_upgraded(), 1);
        // The peer sees the close although `client` itself is still open.
        let mut buf = [0u8; 1];
        assert_eq!(server.read(&mut buf).expect("read"), 0);
        drop(registered);
        assert_eq!(target.upgraded_count(), 0);
        drop(client);
    }

    #[test]
    fn a_connection_that_ends_is_forgotten() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let client = TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
        let target = Arc::new(AppTarget::new(
            22,
            BackendUrl::parse("http://ends.test").expect("url"),
            "ends".into(),
        ));
        let registered = target.register_upgraded(OwnedFd::from(client));
        drop(registered);
        assert_eq!(target.upgraded_count(), 0);
        assert_eq!(target.close_upgraded(), 0);
    }
}
