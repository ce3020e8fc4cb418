//! What one backend is: a URL identity ([`BackendUrl`]), the live state that
//! goes with it ([`AppTarget`]), and how both ride inside Pingora's `Backend`.
//!
//! Discovery creates targets, name resolution fills in their address, the
//! health check and the proxy read them, status shows them.
//!
//! Stepping around Pingora: `Backend` is identified by `(addr, weight)` alone
//! and ignores `ext`, yet every Heroku app sits behind the same router IP:port.
//! Put the real address in `addr` and two apps would collapse into one backend
//! with one health record. So `Backend.addr` holds an *identity address*, a
//! synthetic IPv6 address in the discard-only prefix `100::/64` (RFC 6666)
//! numbered per URL and never connected to, and `ext` holds the
//! `Arc<AppTarget>` with the URL, Host, SNI and the resolved address that
//! connections really use. Equal URL, equal backend; different URL, different
//! backend, whatever their hostnames resolve to.
//!
//! Pingora's `Backend` identity also includes the weight, so an app scaled
//! from 2 to 3 dynos would become a new backend with a fresh, healthy record.
//! Health is therefore keyed by [`health_key`] (the target's number alone),
//! which Pingora's `HealthRegistry` accepts as its equivalence key: health,
//! ejection and admission all stay with the app across weight changes.
//!
//! Files: this one is the identity and the live state; `admission.rs` is
//! when a target may take traffic (first check, rise/fall, passive
//! ejection, slow start, a restart after a release); `drain.rs` closes the
//! upgraded connections of a target that leaves.

mod admission;
mod drain;
mod latency;

pub use admission::{CheckOutcome, FULL_SHARE, RAMP_FLOOR};
pub use drain::UpgradedConnection;
pub use latency::PeakEwma;

pub use crate::values::BackendUrl;

use crate::config::UpstreamSettings;
use crate::metrics::TargetMetrics;
use arc_swap::ArcSwapOption;
use pingora::lb::Backend;
use pingora::prelude::HttpPeer;
use pingora::protocols::l4::socket::SocketAddr as PingoraAddr;
use std::net::{Ipv6Addr, SocketAddr, SocketAddrV6};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

/// Counters the proxy keeps per backend, for status and metrics.
#[derive(Debug, Default)]
pub struct TargetCounters {
    /// Requests sent to this backend (each try counts once).
    pub requests: AtomicU64,
    /// Responses with a 5xx status from this backend.
    pub responses_5xx: AtomicU64,
    /// Connections that could not be made.
    pub connect_failures: AtomicU64,
}

/// One backend app and its live state, shared by discovery, the health check,
/// the proxy and status through `Backend.ext`.
///
/// Besides Pingora's health flag (rise/fall over active checks), a target
/// takes traffic only when it is *admitted* (Pingora starts new backends
/// healthy; we wait for their first passing check), not *ejected* (failures
/// seen on live traffic take it out at once, until active checks pass again)
/// and not *draining* (`admission.rs`).
#[derive(Debug)]
pub struct AppTarget {
    /// Number given by discovery, unique per URL for the life of the process;
    /// the identity address and the connection-pool group are derived from it.
    id: u64,
    url: BackendUrl,
    /// The Heroku app name, or the hostname in static mode.
    name: String,
    /// The URL as text, made once: the access line of every request names it.
    url_text: String,
    host_header: String,
    /// `host_header` as a header value, made once: each request clones it
    /// (a reference count) instead of copying and checking the text again.
    host_value: http::HeaderValue,
    /// Where connections go; `None` until the hostname first resolves.
    /// Written by discovery's resolver, read on the request path without a lock.
    addr: ArcSwapOption<SocketAddr>,
    pub counters: TargetCounters,
    pub metrics: TargetMetrics,
    /// Set by the first passing check; read on the request path.
    admitted: AtomicBool,
    /// Set by passive ejection, cleared after `rise` passing checks.
    ejected: AtomicBool,
    /// Failures in a row on live traffic: 5xx answers and read timeouts.
    consecutive_5xx: AtomicU32,
    /// The ejection cap kept this target in, and that was logged; cleared by
    /// its next good answer, so each run of failures is logged once.
    cap_logged: AtomicBool,
    /// Written by checks, read by status; never touched on the request path.
    health: Mutex<admission::HealthRecord>,
    /// Slow start: when the ramp to a full share began (`time::monotonic_ms`;
    /// 0: at full share), and the credit round robin spends on it.
    ramp_since_ms: AtomicU64,
    ramp_credit: AtomicU32,
    /// Admission starts a slow start; off for the targets of the very first
    /// discovery round (nothing else is warm either, as HAProxy's slowstart
    /// does not apply at startup).
    ramp_on_admission: AtomicBool,
    /// No new requests: restarting after a release without preboot (back
    /// after `rise` passing checks), or leaving the pipeline.
    draining: AtomicBool,
    /// Upgraded connections in flight, closed `drain_timeout` after the
    /// target leaves.
    upgraded: Mutex<drain::UpgradedSet>,
    /// Latency to the first response byte, for the `peak_ewma` policy.
    pub latency: PeakEwma,
    /// Its weight (web dynos) in the current member set, for its cap.
    weight: AtomicUsize,
    /// Requests at this backend now (see `selection::InFlight`).
    in_flight: AtomicUsize,
    /// This target's sticky-cookie token, computed on first use (`sticky.rs`).
    sticky_token: OnceLock<String>,
    /// Least connections' stride-scheduler pass (`selection.rs`).
    stride_pass: AtomicU64,
}

impl AppTarget {
    pub fn new(id: u64, url: BackendUrl, name: String) -> Self {
        let host_header = url.host_header();
        // A parsed URL's host and port are valid header text; an empty value
        // (never expected) would make the app's router answer 400, not crash us.
        let host_value = http::HeaderValue::from_str(&host_header)
            .unwrap_or_else(|_| http::HeaderValue::from_static(""));
        let url_text = url.to_string();
        let metrics = TargetMetrics::new(&name);
        // An IP literal needs no resolution.
        let addr = url.ip().map(|ip| Arc::new(SocketAddr::new(ip, url.port())));
        AppTarget {
            id,
            url,
            name,
            url_text,
            host_header,
            host_value,
            addr: ArcSwapOption::new(addr),
            counters: TargetCounters::default(),
            metrics,
            admitted: AtomicBool::new(false),
            ejected: AtomicBool::new(false),
            consecutive_5xx: AtomicU32::new(0),
            cap_logged: AtomicBool::new(false),
            health: Mutex::new(admission::HealthRecord::default()),
            ramp_since_ms: AtomicU64::new(0),
            ramp_credit: AtomicU32::new(0),
            ramp_on_admission: AtomicBool::new(true),
            draining: AtomicBool::new(false),
            upgraded: Mutex::new(drain::UpgradedSet::default()),
            latency: PeakEwma::default(),
            weight: AtomicUsize::new(1),
            in_flight: AtomicUsize::new(0),
            sticky_token: OnceLock::new(),
            stride_pass: AtomicU64::new(0),
        }
    }

    pub fn id(&self) -> u64 {
        self.id
    }

    pub fn url(&self) -> &BackendUrl {
        &self.url
    }

    /// The URL as text (`https://host[:port]`).
    pub fn url_text(&self) -> &str {
        &self.url_text
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn host_header(&self) -> &str {
        &self.host_header
    }

    /// The `Host` header value sent upstream.
    pub fn host_value(&self) -> &http::HeaderValue {
        &self.host_value
    }

    /// The resolved address, if the hostname has resolved.
    pub fn addr(&self) -> Option<SocketAddr> {
        self.addr.load().as_deref().copied()
    }

    /// Record a new resolution; returns the previous address.
    pub fn set_addr(&self, addr: SocketAddr) -> Option<SocketAddr> {
        self.addr.swap(Some(Arc::new(addr))).as_deref().copied()
    }

    /// The synthetic address that stands for this target inside Pingora.
    pub fn identity_addr(&self) -> SocketAddr {
        let id = self.id;
        let ip = Ipv6Addr::new(
            0x0100,
            0,
            0,
            0,
            (id >> 48) as u16,
            (id >> 32) as u16,
            (id >> 16) as u16,
            id as u16,
        );
        SocketAddr::V6(SocketAddrV6::new(ip, self.url.port(), 0, 0))
    }

    /// A Pingora `Backend` for this target with `weight` (at least 1: Pingora
    /// panics on all-zero weights).
    pub fn backend(self: &Arc<Self>, weight: usize) -> Backend {
        let mut backend = Backend {
            addr: PingoraAddr::Inet(self.identity_addr()),
            weight: weight.max(1),
            ext: Default::default(),
        };
        backend.ext.insert(Arc::clone(self));
        backend
    }

    /// The target a `Backend` made by [`AppTarget::backend`] carries.
    /// (See also [`health_key`].)
    pub fn of(backend: &Backend) -> Option<&Arc<AppTarget>> {
        backend.ext.get::<Arc<AppTarget>>()
    }

    /// Count one request sent to this target.
    pub fn count_request(&self) {
        self.counters.requests.fetch_add(1, Ordering::Relaxed);
    }

    /// Its weight in the current member set (web dynos), at least 1.
    pub fn weight(&self) -> usize {
        self.weight.load(Ordering::Relaxed).max(1)
    }

    /// Record its weight in a new member set (`selection.rs`).
    pub(crate) fn set_weight(&self, weight: usize) {
        self.weight.store(weight, Ordering::Relaxed);
    }

    /// Requests at this backend now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// The in-flight counter itself, for `selection::InFlight` only.
    pub(crate) fn in_flight_counter(&self) -> &AtomicUsize {
        &self.in_flight
    }

    /// The stride scheduler's pass, for `selection.rs` only.
    pub(crate) fn stride_pass(&self) -> &AtomicU64 {
        &self.stride_pass
    }

    /// The sticky token, made by `make` the first time.
    pub(crate) fn sticky_token(&self, make: impl FnOnce() -> String) -> &str {
        self.sticky_token.get_or_init(make)
    }

    /// Whether selection may pick this target (Pingora's health aside):
    /// resolved, admitted by a first passing check, not ejected, not draining.
    pub fn routable(&self) -> bool {
        self.admitted.load(Ordering::Relaxed)
            && !self.ejected.load(Ordering::Relaxed)
            && !self.draining.load(Ordering::Relaxed)
            && self.addr.load().is_some()
    }

    pub fn is_admitted(&self) -> bool {
        self.admitted.load(Ordering::Relaxed)
    }

    pub fn is_ejected(&self) -> bool {
        self.ejected.load(Ordering::Relaxed)
    }

    /// The peer to connect to, with this app's SNI and the upstream timeouts;
    /// `None` while the hostname has not resolved.
    pub fn peer(&self, upstream: &UpstreamSettings) -> Option<HttpPeer> {
        let addr = self.addr()?;
        let mut peer = HttpPeer::new(addr, self.url.is_tls(), self.url.sni().to_string());
        // One connection pool per app: apps behind one router address must
        // never share a pooled connection (Host and SNI differ per app).
        peer.group_key = self.id;
        let options = &mut peer.options;
        options.connection_timeout = Some(upstream.connect_timeout);
        options.total_connection_timeout = Some(upstream.connect_timeout);
        options.read_timeout = Some(upstream.first_byte_timeout);
        options.idle_timeout = Some(upstream.idle_timeout);
        Some(peer)
    }
}

/// The key Pingora's `HealthRegistry` tracks a backend's health under: the
/// app's number, so one app's health survives a change of weight. A
/// `Backend` without a target (never made here) falls back to its own hash.
pub fn health_key(backend: &Backend) -> u64 {
    match AppTarget::of(backend) {
        Some(target) => target.id(),
        None => {
            use std::hash::{BuildHasher, BuildHasherDefault};
            BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default()
                .hash_one(backend)
                | 1 << 63
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_literals_have_no_sni_and_need_no_resolution() {
        let url = BackendUrl::parse("http://[::1]:9000").expect("v6 parses");
        assert_eq!(url.sni(), "");
        assert_eq!(url.host_header(), "[::1]:9000");
        let target = AppTarget::new(1, url, "local".into());
        assert_eq!(target.addr(), Some("[::1]:9000".parse().expect("addr")));
    }

    #[test]
    fn two_urls_on_the_same_address_stay_two_backends() {
        let one = Arc::new(AppTarget::new(
            1,
            BackendUrl::parse("https://one.test").expect("url"),
            "one".into(),
        ));
        let two = Arc::new(AppTarget::new(
            2,
            BackendUrl::parse("https://two.test").expect("url"),
            "two".into(),
        ));
        let router: SocketAddr = "127.0.0.1:443".parse().expect("addr");
        one.set_addr(router);
        two.set_addr(router);
        let (a, b) = (one.backend(1), two.backend(1));
        assert_ne!(a, b, "same router address, different apps");
        let mut set = std::collections::BTreeSet::new();
        set.insert(a.clone());
        set.insert(b);
        assert_eq!(set.len(), 2);
        assert_eq!(AppTarget::of(&a).map(|t| t.name()), Some("one"));
    }

    #[test]
    fn health_is_keyed_by_the_app_not_by_its_weight() {
        let target = Arc::new(AppTarget::new(
            3,
            BackendUrl::parse("https://shop.test").expect("url"),
            "shop".into(),
        ));
        let (two, three) = (target.backend(2), target.backend(3));
        assert_ne!(two, three, "Pingora tells the weights apart");
        assert_eq!(health_key(&two), health_key(&three));
        let other = Arc::new(AppTarget::new(
            4,
            BackendUrl::parse("https://other.test").expect("url"),
            "other".into(),
        ));
        assert_ne!(health_key(&two), health_key(&other.backend(2)));
    }

    #[test]
    fn zero_weight_becomes_one() {
        let target = Arc::new(AppTarget::new(
            7,
            BackendUrl::parse("http://a.test").expect("url"),
            "a".into(),
        ));
        assert_eq!(target.backend(0).weight, 1);
    }
}
