//! Which client a request comes from, and whose `X-Forwarded-*` headers to
//! believe. Input: the TCP peer, the request head and the trusted hops
//! (`trusted_proxies`, `DYNO`). Output: a [`ClientView`] that
//! `upstream_request_filter` turns into the hop headers, `response_filter`
//! reads for the client's scheme and host (the sticky cookie's `Secure`,
//! `redirects.rs`), and the access line shows as `fwd`.
//!
//! Heroku's router appends the client it saw to `X-Forwarded-For` (earlier
//! entries are whatever the client sent) and sets `X-Forwarded-Proto`/`-Port`,
//! never `-Host`. On a dyno the only way in is the router, so every peer is
//! believed; elsewhere only peers in `trusted_proxies` are. A believed hop's
//! headers are kept and its last `X-Forwarded-For` entry is the client; anyone
//! else's are replaced by what the balancer saw itself. `X-Request-Id` is
//! `hop_headers.rs`.

use super::hop_headers::forwarded_for;
pub use crate::values::IpCidr;
use pingora::http::RequestHeader;
use std::net::IpAddr;
use std::sync::Arc;

/// The peers whose `X-Forwarded-*` headers are believed.
#[derive(Debug, Clone, Default)]
pub struct TrustedHops {
    /// On a dyno: every peer is Heroku's router.
    every_peer: bool,
    ranges: Vec<IpCidr>,
}

impl TrustedHops {
    /// `ranges` from `trusted_proxies`; `behind_heroku_router` when `DYNO` is set.
    pub fn new(ranges: Vec<IpCidr>, behind_heroku_router: bool) -> Self {
        TrustedHops {
            every_peer: behind_heroku_router,
            ranges,
        }
    }

    pub fn trusts(&self, peer: IpAddr) -> bool {
        self.every_peer || self.ranges.iter().any(|range| range.contains(peer))
    }
}

/// The TCP peer of a connection, looked up once per connection and carried
/// across its keep-alive requests (each lookup is a `getpeername` call).
#[derive(Debug, Clone)]
pub(super) struct ConnectionPeer {
    text: Arc<str>,
    trusted: bool,
}

impl ConnectionPeer {
    pub(super) fn new(ip: IpAddr, hops: &TrustedHops) -> Self {
        ConnectionPeer {
            text: Arc::from(ip.to_canonical().to_string()),
            trusted: hops.trusts(ip),
        }
    }
}

/// The client as this request describes it, after deciding whom to believe.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct ClientView {
    /// The request's `X-Forwarded-*` came from a trusted hop and are kept.
    pub trusted: bool,
    /// The client's address for the access line (`fwd`): the last
    /// `X-Forwarded-For` entry a trusted hop sent, else the peer.
    pub client: Option<Arc<str>>,
    /// The scheme the client used: `https` only when a trusted hop says so.
    pub scheme: &'static str,
    /// The host the client asked for, port kept: a trusted hop's
    /// `X-Forwarded-Host`, else the request's `Host`.
    pub host: Option<String>,
    peer: Option<Arc<str>>,
}

impl ClientView {
    pub(super) fn of(request: &RequestHeader, peer: Option<&ConnectionPeer>) -> ClientView {
        let trusted = peer.is_some_and(|peer| peer.trusted);
        let peer = peer.map(|peer| Arc::clone(&peer.text));
        let own_host = || {
            first_entry(request, "host")
                .map(str::to_string)
                .or_else(|| request.uri.authority().map(|a| a.as_str().to_string()))
        };
        if !trusted {
            return ClientView {
                trusted,
                client: peer.clone(),
                scheme: "http",
                host: own_host(),
                peer,
            };
        }
        let last_forwarded = request
            .headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|list| list.split(','))
            .map(str::trim)
            .rfind(|entry| !entry.is_empty());
        let https = first_entry(request, "x-forwarded-proto")
            .is_some_and(|proto| proto.eq_ignore_ascii_case("https"));
        ClientView {
            trusted,
            client: last_forwarded.map(Arc::from).or_else(|| peer.clone()),
            scheme: if https { "https" } else { "http" },
            host: first_entry(request, "x-forwarded-host")
                .map(str::to_string)
                .or_else(own_host),
            peer,
        }
    }

    /// Set this hop's `X-Forwarded-*` on the upstream request. Trusted: the
    /// peer appended to `X-Forwarded-For`, the hop's `-Proto`/`-Port`/`-Host`
    /// kept and filled in where missing. Untrusted: all four replaced by the
    /// peer, `http`, our port and the `Host` the client sent.
    pub(super) fn set_headers(
        &self,
        incoming: &RequestHeader,
        upstream: &mut RequestHeader,
        listen_port: &http::HeaderValue,
    ) -> pingora::Result<()> {
        let forwarded = if self.trusted {
            forwarded_for(
                incoming.headers.get_all("x-forwarded-for").iter(),
                self.peer.as_deref(),
            )
        } else {
            self.peer.as_deref().map(str::to_string)
        };
        match forwarded {
            Some(value) => upstream.insert_header("X-Forwarded-For", value)?,
            None => {
                upstream.remove_header("x-forwarded-for");
            }
        }
        let keep = |name: &str| self.trusted && incoming.headers.contains_key(name);
        if !keep("x-forwarded-proto") {
            upstream.insert_header("X-Forwarded-Proto", http::HeaderValue::from_static("http"))?;
        }
        if !keep("x-forwarded-port") {
            upstream.insert_header("X-Forwarded-Port", listen_port.clone())?;
        }
        if !keep("x-forwarded-host") {
            match &self.host {
                Some(host) => upstream.insert_header("X-Forwarded-Host", host.as_str())?,
                None => {
                    upstream.remove_header("x-forwarded-host");
                }
            }
        }
        Ok(())
    }
}

/// The first comma-separated entry of the first `name` header, trimmed, if
/// it is visible ASCII and not empty (proxies that append put the original
/// client's value first).
fn first_entry<'a>(request: &'a RequestHeader, name: &str) -> Option<&'a str> {
    let value = request.headers.get(name)?.to_str().ok()?;
    let first = value.split(',').next()?.trim();
    (!first.is_empty()).then_some(first)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr(raw: &str) -> IpCidr {
        IpCidr::parse(raw).unwrap_or_else(|e| panic!("{raw}: {e}"))
    }

    fn ip(raw: &str) -> IpAddr {
        raw.parse().expect("a test IP")
    }

    fn request(headers: &[(&str, &str)]) -> RequestHeader {
        let mut request = RequestHeader::build("GET", b"/", None).expect("a request head");
        for (name, value) in headers {
            request
                .append_header(name.to_string(), *value)
                .expect("a valid header");
        }
        request
    }

    fn view(headers: &[(&str, &str)], peer_ip: &str, hops: &TrustedHops) -> ClientView {
        ClientView::of(
            &request(headers),
            Some(&ConnectionPeer::new(ip(peer_ip), hops)),
        )
    }

    const ROUTER_HEADERS: [(&str, &str); 5] = [
        ("Host", "lb.example.com"),
        ("X-Forwarded-For", "198.51.100.9, 203.0.113.7"),
        ("X-Forwarded-Proto", "https"),
        ("X-Forwarded-Port", "443"),
        ("X-Forwarded-Host", "shop.example.com"),
    ];

    #[test]
    fn ranges_parse_addresses_and_prefixes_and_say_what_is_wrong() {
        assert_eq!(cidr("10.1.2.3/8").to_string(), "10.0.0.0/8");
        assert_eq!(cidr(" 127.0.0.1 ").to_string(), "127.0.0.1/32");
        assert_eq!(cidr("2001:db8::1/32").to_string(), "2001:db8::/32");
        assert_eq!(cidr("::ffff:10.0.0.1/32").to_string(), "10.0.0.1/32");
        assert_eq!(cidr("0.0.0.0/0").to_string(), "0.0.0.0/0");
        for bad in [
            "",
            "10.0.0.0/33",
            "::/129",
            "10.0.0/8",
            "example.com",
            "10.0.0.0/x",
        ] {
            let error = IpCidr::parse(bad).expect_err(bad);
            assert!(error.contains("CIDR"), "{bad}: {error}");
        }
    }

    #[test]
    fn a_range_contains_its_addresses_ipv4_mapped_ones_included() {
        let range = cidr("10.0.0.0/8");
        assert!(range.contains(ip("10.255.0.1")));
        assert!(range.contains(ip("::ffff:10.0.0.1")));
        assert!(!range.contains(ip("11.0.0.1")));
        assert!(!range.contains(ip("::a00:1")), "IPv6 is not IPv4");
        assert!(cidr("0.0.0.0/0").contains(ip("203.0.113.7")));
        assert!(cidr("2001:db8::/32").contains(ip("2001:db8:1::5")));
        assert!(!cidr("2001:db8::/32").contains(ip("2001:db9::5")));
    }

    #[test]
    fn on_a_dyno_every_peer_is_trusted_elsewhere_only_listed_ones() {
        let listed = TrustedHops::new(vec![cidr("10.0.0.0/8")], false);
        assert!(listed.trusts(ip("10.1.1.1")));
        assert!(!listed.trusts(ip("127.0.0.1")));
        assert!(!TrustedHops::default().trusts(ip("127.0.0.1")));
        assert!(TrustedHops::new(Vec::new(), true).trusts(ip("203.0.113.7")));
    }

    #[test]
    fn a_trusted_hop_names_the_client_by_its_last_forwarded_entry() {
        let hops = TrustedHops::new(vec![cidr("10.0.0.0/8")], false);
        let seen = view(&ROUTER_HEADERS, "10.0.0.2", &hops);
        assert!(seen.trusted);
        assert_eq!(seen.client.as_deref(), Some("203.0.113.7"));
        assert_eq!(seen.scheme, "https");
        assert_eq!(seen.host.as_deref(), Some("shop.example.com"));

        // Several lines: the last entry of the last line.
        let lines = [
            ("X-Forwarded-For", "1.1.1.1"),
            ("X-Forwarded-For", "2.2.2.2, "),
        ];
        assert_eq!(
            view(&lines, "10.0.0.2", &hops).client.as_deref(),
            Some("2.2.2.2")
        );
        // Nothing forwarded: the peer; no X-Forwarded-Host: the Host.
        let bare = view(&[("Host", "lb.example.com:8443")], "10.0.0.2", &hops);
        assert_eq!(bare.client.as_deref(), Some("10.0.0.2"));
        assert_eq!(bare.scheme, "http");
        assert_eq!(bare.host.as_deref(), Some("lb.example.com:8443"));
    }

    #[test]
    fn an_untrusted_client_is_its_peer_on_plain_http_at_its_host() {
        let seen = view(&ROUTER_HEADERS, "127.0.0.1", &TrustedHops::default());
        assert!(!seen.trusted);
        assert_eq!(seen.client.as_deref(), Some("127.0.0.1"));
        assert_eq!(seen.scheme, "http");
        assert_eq!(seen.host.as_deref(), Some("lb.example.com"));
    }

    #[test]
    fn untrusted_forwarded_headers_are_replaced_and_trusted_ones_kept() {
        let incoming = request(&ROUTER_HEADERS);
        let untrusted = view(&ROUTER_HEADERS, "127.0.0.1", &TrustedHops::default());
        let mut upstream = incoming.clone();
        untrusted
            .set_headers(
                &incoming,
                &mut upstream,
                &http::HeaderValue::from_static("8080"),
            )
            .expect("valid headers");
        let get = |request: &RequestHeader, name: &str| {
            let values: Vec<_> = request.headers.get_all(name).iter().cloned().collect();
            assert_eq!(values.len(), 1, "{name}: {values:?}");
            values[0].to_str().map(str::to_string).expect("ASCII")
        };
        assert_eq!(get(&upstream, "x-forwarded-for"), "127.0.0.1");
        assert_eq!(get(&upstream, "x-forwarded-proto"), "http");
        assert_eq!(get(&upstream, "x-forwarded-port"), "8080");
        assert_eq!(get(&upstream, "x-forwarded-host"), "lb.example.com");

        let hops = TrustedHops::new(Vec::new(), true);
        let trusted = view(&ROUTER_HEADERS, "10.0.0.2", &hops);
        let mut upstream = incoming.clone();
        trusted
            .set_headers(
                &incoming,
                &mut upstream,
                &http::HeaderValue::from_static("8080"),
            )
            .expect("valid headers");
        assert_eq!(
            get(&upstream, "x-forwarded-for"),
            "198.51.100.9, 203.0.113.7, 10.0.0.2"
        );
        assert_eq!(get(&upstream, "x-forwarded-proto"), "https");
        assert_eq!(get(&upstream, "x-forwarded-port"), "443");
        assert_eq!(get(&upstream, "x-forwarded-host"), "shop.example.com");
    }
}
