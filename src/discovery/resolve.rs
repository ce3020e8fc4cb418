//! Name resolution for backend hostnames, run in the background by discovery
//! and never on the request path.
//!
//! Heroku apps share the router's IP addresses and those change, so names are
//! resolved again every `resolve_interval`, not once at boot. Pins
//! (`LB_RESOLVE`, like curl's `--resolve`) replace DNS for chosen hostnames,
//! for staging and tests. A lookup that fails keeps the last good address (a
//! DNS hiccup should not take a working app away); a name that has never
//! resolved leaves its backend unavailable. Callers log the outcome.

use crate::backend::BackendUrl;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

/// How long one lookup may take.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);

/// Resolves backend URLs to socket addresses. Cheap to clone (discovery
/// hands one to each concurrent lookup): the pins are shared, not copied,
/// which with 1,000 pinned apps was a million map entries per round.
#[derive(Debug, Clone)]
pub struct NameResolver {
    pins: Arc<HashMap<String, IpAddr>>,
    /// Off in unit tests: a name without a pin fails at once, never asking
    /// the system resolver (no test depends on this machine's DNS).
    system_dns: bool,
}

impl NameResolver {
    /// A resolver that answers pinned hostnames from `pins` and others from the system resolver.
    pub fn new(pins: HashMap<String, IpAddr>) -> Self {
        NameResolver {
            pins: Arc::new(pins),
            system_dns: true,
        }
    }

    /// A resolver that knows only `pins` and IP literals: for unit tests.
    #[cfg(test)]
    pub(crate) fn offline(pins: HashMap<String, IpAddr>) -> Self {
        NameResolver {
            pins: Arc::new(pins),
            system_dns: false,
        }
    }

    /// The address to connect to for `url`: its IP literal, its pin, or the
    /// first address DNS gives (IPv4 preferred, as Heroku's router answers on IPv4).
    pub async fn resolve(&self, url: &BackendUrl) -> Result<SocketAddr, String> {
        if let Some(ip) = url.ip() {
            return Ok(SocketAddr::new(ip, url.port()));
        }
        if let Some(ip) = self.pins.get(url.host()) {
            return Ok(SocketAddr::new(*ip, url.port()));
        }
        if !self.system_dns {
            return Err(format!("{} is not pinned (system DNS off)", url.host()));
        }
        let lookup = tokio::net::lookup_host((url.host(), url.port()));
        let addrs: Vec<SocketAddr> = match tokio::time::timeout(LOOKUP_TIMEOUT, lookup).await {
            Ok(Ok(addrs)) => addrs.collect(),
            Ok(Err(e)) => return Err(format!("lookup of {} failed: {e}", url.host())),
            Err(_) => {
                return Err(format!(
                    "lookup of {} timed out after {LOOKUP_TIMEOUT:?}",
                    url.host()
                ))
            }
        };
        addrs
            .iter()
            .find(|addr| addr.is_ipv4())
            .or_else(|| addrs.first())
            .copied()
            .ok_or_else(|| format!("{} has no address", url.host()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn pins_and_ip_literals_skip_dns() {
        let mut pins = HashMap::new();
        pins.insert("app.test".to_string(), "127.0.0.9".parse().expect("ip"));
        let resolver = NameResolver::new(pins);
        let pinned = BackendUrl::parse("https://app.test:8443").expect("url");
        assert_eq!(
            resolver.resolve(&pinned).await,
            Ok("127.0.0.9:8443".parse().expect("addr"))
        );
        let literal = BackendUrl::parse("http://127.0.0.1:81").expect("url");
        assert_eq!(
            resolver.resolve(&literal).await,
            Ok("127.0.0.1:81".parse().expect("addr"))
        );
    }

    #[tokio::test]
    async fn an_unknown_name_is_an_error_not_a_panic() {
        let resolver = NameResolver::offline(HashMap::new());
        let url = BackendUrl::parse("http://no-such-host.invalid").expect("url");
        assert!(resolver.resolve(&url).await.is_err());
    }
}
