//! The value types configuration parses and the layers above use: a
//! backend's URL identity, the balancing policy, a cookie name, an IP range.
//!
//! They live below everything else, so that `config` depends on nothing
//! above it and `src/` reads top-down without an import circle: main → proxy
//! → status → discovery → health → selection/sticky → backend → config →
//! values. Pure types and parsing; no I/O, no Pingora.

mod backend_url;
mod ip_cidr;

pub use backend_url::BackendUrl;
pub use ip_cidr::IpCidr;

/// The balancing policy (`LB_POLICY`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    RoundRobin,
    LeastConnections,
    /// Power of two choices by peak-EWMA latency × load (Finagle, Linkerd).
    PeakEwma,
}

impl Policy {
    /// Accepted spellings, for config errors.
    pub const NAMES: &'static [&'static str] = &["round_robin", "least_connections", "peak_ewma"];

    pub fn parse(raw: &str) -> Result<Self, String> {
        match raw.trim().to_ascii_lowercase().replace('-', "_").as_str() {
            "round_robin" => Ok(Policy::RoundRobin),
            "least_connections" => Ok(Policy::LeastConnections),
            "peak_ewma" => Ok(Policy::PeakEwma),
            _ => Err(format!(
                "'{raw}' is not a policy; expected one of {}",
                Self::NAMES.join(", ")
            )),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Policy::RoundRobin => "round_robin",
            Policy::LeastConnections => "least_connections",
            Policy::PeakEwma => "peak_ewma",
        }
    }
}

/// Whether `name` is a valid cookie name (an RFC 6265 token).
pub fn valid_cookie_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}
