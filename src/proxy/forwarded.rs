//! Which client a request comes from, and which of its `X-Forwarded-*`
//! headers to believe. Input: the TCP peer, the request head and the trusted
//! hops (`DYNO`, `trusted_proxies`). Output: a [`ClientView`] that
//! `upstream_request_filter` turns into the hop headers, `response_filter`
//! reads for the client's scheme and host (the sticky cookie's `Secure`,
//! `redirects.rs`), the status page judges as the caller (`status/access.rs`),
//! and the access line shows as `fwd`.
//!
//! Trust is per header, not per peer, because hops set different headers.
//! Heroku's router appends the client it saw to `X-Forwarded-For` (earlier
//! entries are whatever the client sent) and sets `X-Forwarded-Proto`/`-Port`,
//! but never `X-Forwarded-Host`: it passes a client's own through, so behind
//! it that header is the client's word (host-header injection into reset
//! links and cached redirects). A proxy listed in `trusted_proxies` (a CDN,
//! a same-host proxy) does set it. So:
//!
//! | hop | `X-Forwarded-For` | `-Proto`, `-Port` | `-Host` |
//! |---|---|---|---|
//! | Heroku's router (on a dyno, every peer) | kept, peer appended | kept | from `Host`, unless the client the router names is a trusted proxy |
//! | a peer in `trusted_proxies` (off a dyno) | kept, peer appended | kept | kept |
//! | anyone else | replaced by the peer | `http`, our port | from `Host` |
//!
//! The client (`fwd`, and the caller the status page judges) is the last
//! `X-Forwarded-For` entry a trusted hop appended; entries that are
//! themselves trusted proxies are skipped, as nginx's `real_ip_recursive`
//! does, so the client is the first hop nobody trusted. `X-Request-Id` is
//! `hop_headers.rs`.

use super::hop_headers::{
    forwarded_for, X_FORWARDED_FOR, X_FORWARDED_HOST, X_FORWARDED_PORT, X_FORWARDED_PROTO,
};
pub use crate::values::IpCidr;
use http::header::{AsHeaderName, HeaderName, HOST};
use http::{HeaderMap, HeaderValue};
use pingora::http::RequestHeader;
use std::net::IpAddr;
use std::sync::Arc;

/// The hops whose `X-Forwarded-*` headers are believed, each for the
/// headers it really sets.
#[derive(Debug, Clone, Default)]
pub struct TrustedHops {
    /// On a dyno: every peer is Heroku's router.
    behind_heroku_router: bool,
    /// `trusted_proxies`: proxies that set every `X-Forwarded-*`.
    ranges: Vec<IpCidr>,
}

/// What the TCP peer of a connection is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Hop {
    /// Heroku's router: `X-Forwarded-For`, `-Proto`, `-Port` are its own.
    HerokuRouter,
    /// A proxy in `trusted_proxies`: every `X-Forwarded-*` is its own.
    TrustedProxy,
    /// Anyone else: nothing it says about itself is believed.
    Client,
}

impl TrustedHops {
    /// `ranges` from `trusted_proxies`; `behind_heroku_router` when `DYNO` is set.
    pub fn new(ranges: Vec<IpCidr>, behind_heroku_router: bool) -> Self {
        TrustedHops {
            behind_heroku_router,
            ranges,
        }
    }

    /// What a TCP peer at `peer` is.
    pub(super) fn hop(&self, peer: IpAddr) -> Hop {
        if self.behind_heroku_router {
            Hop::HerokuRouter
        } else if self.is_trusted_proxy(peer) {
            Hop::TrustedProxy
        } else {
            Hop::Client
        }
    }

    /// Whether `ip` is a proxy in `trusted_proxies`.
    pub fn is_trusted_proxy(&self, ip: IpAddr) -> bool {
        self.ranges.iter().any(|range| range.contains(ip))
    }

    /// Whether a peer's `X-Forwarded-For`, `-Proto` and `-Port` are believed.
    pub fn trusts(&self, peer: IpAddr) -> bool {
        self.hop(peer) != Hop::Client
    }
}

/// The TCP peer of a connection, looked up once per connection and carried
/// across its keep-alive requests (each lookup is a `getpeername` call).
#[derive(Debug, Clone, PartialEq)]
pub(super) struct ConnectionPeer {
    text: Arc<str>,
    /// `text` as the `X-Forwarded-For` an untrusted client's requests get.
    header: HeaderValue,
    hop: Hop,
}

impl ConnectionPeer {
    pub(super) fn new(ip: IpAddr, hops: &TrustedHops) -> Self {
        let text = ip.to_canonical().to_string();
        ConnectionPeer {
            header: HeaderValue::from_str(&text)
                .unwrap_or_else(|_| HeaderValue::from_static("unknown")),
            text: Arc::from(text),
            hop: hops.hop(ip),
        }
    }
}

/// The client as this request describes it, after deciding whom to believe.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct ClientView {
    /// The request came through a trusted hop: its `X-Forwarded-For`,
    /// `-Proto` and `-Port` are kept.
    pub trusted: bool,
    /// The request's `X-Forwarded-Host` was set by a trusted proxy and is kept.
    pub host_trusted: bool,
    /// The client's address for the access line (`fwd`) and the status
    /// page: the first `X-Forwarded-For` entry from the right that is not a
    /// trusted proxy, when a trusted hop sent the header; else the peer.
    pub client: Option<Arc<str>>,
    /// The scheme the client used: `https` only when a trusted hop says so.
    pub scheme: &'static str,
    /// The host the client asked for, port kept: a trusted proxy's
    /// `X-Forwarded-Host`, else the request's `Host` (kept as the header
    /// value it came in, so `X-Forwarded-Host` reuses it without a copy).
    host: Option<HeaderValue>,
    peer: Option<ConnectionPeer>,
}

impl ClientView {
    pub(super) fn of(
        request: &RequestHeader,
        peer: Option<&ConnectionPeer>,
        hops: &TrustedHops,
    ) -> ClientView {
        let hop = peer.map_or(Hop::Client, |peer| peer.hop);
        let peer_text = peer.map(|peer| Arc::clone(&peer.text));
        let peer = peer.cloned();
        let own_host = || {
            first_value(request, &HOST).or_else(|| {
                let authority = request.uri.authority()?;
                HeaderValue::from_str(authority.as_str()).ok()
            })
        };
        if hop == Hop::Client {
            return ClientView {
                trusted: false,
                host_trusted: false,
                client: peer_text,
                scheme: "http",
                host: own_host(),
                peer,
            };
        }
        let entries: Vec<&str> = request
            .headers
            .get_all(X_FORWARDED_FOR)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|list| list.split(','))
            .map(str::trim)
            .filter(|entry| !entry.is_empty())
            .collect();
        let is_proxy = |entry: &str| entry_ip(entry).is_some_and(|ip| hops.is_trusted_proxy(ip));
        // The router sets no X-Forwarded-Host: one is believed only when the
        // client the router names is itself a trusted proxy (a CDN in front).
        let host_trusted = match hop {
            Hop::TrustedProxy => true,
            _ => entries.last().is_some_and(|named| is_proxy(named)),
        };
        // Walk left past trusted proxies: the first entry nobody trusted is
        // the client (all trusted: the leftmost).
        let client = entries
            .iter()
            .rev()
            .find(|entry| !is_proxy(entry))
            .or(entries.first())
            .map(|entry| Arc::from(*entry));
        let https = first_entry(request, X_FORWARDED_PROTO)
            .is_some_and(|proto| proto.eq_ignore_ascii_case("https"));
        let forwarded_host = host_trusted
            .then(|| first_value(request, &X_FORWARDED_HOST))
            .flatten();
        ClientView {
            trusted: true,
            host_trusted,
            client: client.or(peer_text),
            scheme: if https { "https" } else { "http" },
            host: forwarded_host.or_else(own_host),
            peer,
        }
    }

    /// The host the client asked for (see the field).
    pub(super) fn host(&self) -> Option<&str> {
        self.host.as_ref().and_then(|host| host.to_str().ok())
    }

    /// The client's IP address, when `client` is one (an `X-Forwarded-For`
    /// entry may carry a port, brackets, or be garbage).
    pub(super) fn client_ip(&self) -> Option<IpAddr> {
        self.client.as_deref().and_then(entry_ip)
    }

    /// Set this hop's `X-Forwarded-*` on the upstream request, by the table
    /// in the module doc: what a trusted hop sent is kept and filled in
    /// where missing, everything else is replaced by what we saw.
    pub(super) fn set_headers(
        &self,
        incoming: &HeaderMap,
        upstream: &mut HeaderMap,
        listen_port: &HeaderValue,
    ) -> pingora::Result<()> {
        let forwarded = if self.trusted {
            forwarded_for(
                incoming.get_all(X_FORWARDED_FOR).iter(),
                self.peer.as_ref().map(|peer| &*peer.text),
            )
            .map(header_value)
            .transpose()?
        } else {
            self.peer.as_ref().map(|peer| peer.header.clone())
        };
        match forwarded {
            Some(value) => {
                upstream.insert(X_FORWARDED_FOR, value);
            }
            None => {
                upstream.remove(X_FORWARDED_FOR);
            }
        }
        if !(self.trusted && incoming.contains_key(X_FORWARDED_PROTO)) {
            upstream.insert(X_FORWARDED_PROTO, HeaderValue::from_static("http"));
        }
        if !(self.trusted && incoming.contains_key(X_FORWARDED_PORT)) {
            upstream.insert(X_FORWARDED_PORT, listen_port.clone());
        }
        if !(self.host_trusted && incoming.contains_key(X_FORWARDED_HOST)) {
            match &self.host {
                Some(host) => {
                    upstream.insert(X_FORWARDED_HOST, host.clone());
                }
                None => {
                    upstream.remove(X_FORWARDED_HOST);
                }
            }
        }
        Ok(())
    }
}

/// A header value we built from the request's own (visible ASCII) text.
fn header_value(text: String) -> pingora::Result<HeaderValue> {
    HeaderValue::try_from(text).map_err(|_| {
        pingora::Error::explain(
            pingora::ErrorType::InvalidHTTPHeader,
            "a forwarded header value with a byte a header cannot carry",
        )
    })
}

/// [`first_entry`] as a header value: the value itself when it is that one
/// entry (no copy, the usual case), else a copy of the entry.
fn first_value(request: &RequestHeader, name: &HeaderName) -> Option<HeaderValue> {
    let value = request.headers.get(name)?;
    let whole = value.as_bytes();
    let single =
        !whole.is_empty() && !whole.contains(&b',') && whole.iter().all(u8::is_ascii_graphic);
    if single {
        return Some(value.clone());
    }
    HeaderValue::from_str(first_entry(request, name)?).ok()
}

/// The IP address of an `X-Forwarded-For` entry: `203.0.113.7`,
/// `203.0.113.7:52100`, `2001:db8::1` or `[2001:db8::1]:443`.
fn entry_ip(entry: &str) -> Option<IpAddr> {
    let entry = entry.trim();
    if let Ok(ip) = entry.parse::<IpAddr>() {
        return Some(ip.to_canonical());
    }
    let host = match entry.strip_prefix('[') {
        Some(rest) => rest.split_once(']')?.0,
        None => entry.rsplit_once(':')?.0,
    };
    host.parse::<IpAddr>().ok().map(|ip| ip.to_canonical())
}

/// The first comma-separated entry of the first `name` header, trimmed, if
/// it is visible ASCII and not empty (proxies that append put the original
/// client's value first).
fn first_entry(request: &RequestHeader, name: impl AsHeaderName) -> Option<&str> {
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
            hops,
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
        assert_eq!(seen.host(), Some("shop.example.com"));

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
        assert_eq!(bare.host(), Some("lb.example.com:8443"));
    }

    #[test]
    fn an_untrusted_client_is_its_peer_on_plain_http_at_its_host() {
        let seen = view(&ROUTER_HEADERS, "127.0.0.1", &TrustedHops::default());
        assert!(!seen.trusted);
        assert_eq!(seen.client.as_deref(), Some("127.0.0.1"));
        assert_eq!(seen.scheme, "http");
        assert_eq!(seen.host(), Some("lb.example.com"));
    }

    #[test]
    fn untrusted_forwarded_headers_are_replaced_and_trusted_ones_kept() {
        let incoming = request(&ROUTER_HEADERS);
        let untrusted = view(&ROUTER_HEADERS, "127.0.0.1", &TrustedHops::default());
        let mut upstream = incoming.headers.clone();
        untrusted
            .set_headers(
                &incoming.headers,
                &mut upstream,
                &HeaderValue::from_static("8080"),
            )
            .expect("valid headers");
        let get = |headers: &HeaderMap, name: &str| {
            let values: Vec<_> = headers.get_all(name).iter().cloned().collect();
            assert_eq!(values.len(), 1, "{name}: {values:?}");
            values[0].to_str().map(str::to_string).expect("ASCII")
        };
        assert_eq!(get(&upstream, "x-forwarded-for"), "127.0.0.1");
        assert_eq!(get(&upstream, "x-forwarded-proto"), "http");
        assert_eq!(get(&upstream, "x-forwarded-port"), "8080");
        assert_eq!(get(&upstream, "x-forwarded-host"), "lb.example.com");

        let set = |view: &ClientView| {
            let mut upstream = incoming.headers.clone();
            view.set_headers(
                &incoming.headers,
                &mut upstream,
                &HeaderValue::from_static("8080"),
            )
            .expect("valid headers");
            upstream
        };
        // A proxy in trusted_proxies sets all four: all kept.
        let proxy = TrustedHops::new(vec![cidr("10.0.0.0/8")], false);
        let upstream = set(&view(&ROUTER_HEADERS, "10.0.0.2", &proxy));
        assert_eq!(
            get(&upstream, "x-forwarded-for"),
            "198.51.100.9, 203.0.113.7, 10.0.0.2"
        );
        assert_eq!(get(&upstream, "x-forwarded-proto"), "https");
        assert_eq!(get(&upstream, "x-forwarded-port"), "443");
        assert_eq!(get(&upstream, "x-forwarded-host"), "shop.example.com");

        // Heroku's router sets For, Proto and Port, never Host: a client's
        // X-Forwarded-Host behind it is replaced by the Host it asked for.
        let router = TrustedHops::new(Vec::new(), true);
        let upstream = set(&view(&ROUTER_HEADERS, "10.0.0.2", &router));
        assert_eq!(
            get(&upstream, "x-forwarded-for"),
            "198.51.100.9, 203.0.113.7, 10.0.0.2"
        );
        assert_eq!(get(&upstream, "x-forwarded-proto"), "https");
        assert_eq!(get(&upstream, "x-forwarded-port"), "443");
        assert_eq!(get(&upstream, "x-forwarded-host"), "lb.example.com");
    }

    #[test]
    fn behind_the_router_only_a_trusted_proxy_in_front_of_it_sets_the_host() {
        // A CDN at 198.51.100.9 in front of Heroku's router: the router
        // appended it, so its X-Forwarded-Host is believed, and the client
        // is the entry before it.
        let hops = TrustedHops::new(vec![cidr("198.51.100.0/24")], true);
        let cdn = [
            ("Host", "lb.example.com"),
            ("X-Forwarded-For", "203.0.113.7, 198.51.100.9"),
            ("X-Forwarded-Host", "www.shop.example"),
            ("X-Forwarded-Proto", "https"),
        ];
        let seen = view(&cdn, "10.1.2.3", &hops);
        assert!(seen.host_trusted);
        assert_eq!(seen.host(), Some("www.shop.example"));
        assert_eq!(seen.client.as_deref(), Some("203.0.113.7"));
        assert_eq!(seen.client_ip(), Some(ip("203.0.113.7")));
        // The same headers from a client the router names directly.
        let direct = [
            ("Host", "lb.example.com"),
            ("X-Forwarded-For", "198.51.100.9, 203.0.113.7"),
            ("X-Forwarded-Host", "evil.example"),
        ];
        let seen = view(&direct, "10.1.2.3", &hops);
        assert!(!seen.host_trusted);
        assert_eq!(seen.host(), Some("lb.example.com"));
        assert_eq!(seen.client.as_deref(), Some("203.0.113.7"));
    }

    #[test]
    fn the_client_is_the_first_entry_from_the_right_that_no_one_trusts() {
        let hops = TrustedHops::new(vec![cidr("127.0.0.1"), cidr("10.0.0.0/8")], false);
        let chain = [("X-Forwarded-For", "203.0.113.9, 10.0.0.7")];
        let seen = view(&chain, "127.0.0.1", &hops);
        assert_eq!(seen.client.as_deref(), Some("203.0.113.9"));
        // Every entry trusted: the leftmost is the best we know.
        let all = [("X-Forwarded-For", "10.0.0.8, 10.0.0.7")];
        assert_eq!(
            view(&all, "127.0.0.1", &hops).client.as_deref(),
            Some("10.0.0.8")
        );
        // Ports and brackets are read; garbage is no address.
        for (entry, expected) in [
            ("203.0.113.9:52100", Some("203.0.113.9")),
            ("[2001:db8::1]:443", Some("2001:db8::1")),
            ("2001:db8::1", Some("2001:db8::1")),
            ("unknown", None),
        ] {
            assert_eq!(entry_ip(entry), expected.map(ip), "{entry}");
        }
    }
}
