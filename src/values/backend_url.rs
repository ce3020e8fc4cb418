//! [`BackendUrl`]: what identifies one backend app, `http[s]://host[:port]`,
//! as configuration parses it (`LB_BACKENDS`) and discovery reads it (an
//! app's `web_url`), with the `Host` header and TLS server name it implies.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr};

/// A backend's identity: scheme, host and port of its URL. Paths, queries and
/// credentials are refused, since a backend is a whole site (an app).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BackendUrl {
    tls: bool,
    /// Lower-cased; IPv6 literals without brackets.
    host: String,
    port: u16,
}

impl BackendUrl {
    /// Parse `http[s]://host[:port][/]`. Heroku's `web_url` ends in `/`, which is accepted.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let raw = raw.trim();
        let lower = raw.to_ascii_lowercase();
        let (tls, rest) = if lower.starts_with("https://") {
            (true, &raw["https://".len()..])
        } else if lower.starts_with("http://") {
            (false, &raw["http://".len()..])
        } else {
            return Err("a backend URL starts with http:// or https://".to_string());
        };
        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(end);
        if !(tail.is_empty() || tail == "/") {
            return Err(
                "a backend URL has no path, query or fragment (only a trailing /)".to_string(),
            );
        }
        if authority.contains('@') {
            return Err("a backend URL carries no user or password".to_string());
        }
        let (host, port) = split_host_port(authority)?;
        let port = match port {
            Some(port) => port,
            None if tls => 443,
            None => 80,
        };
        Ok(BackendUrl {
            tls,
            host: host.to_ascii_lowercase(),
            port,
        })
    }

    pub fn is_tls(&self) -> bool {
        self.tls
    }

    pub fn host(&self) -> &str {
        &self.host
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    fn default_port(&self) -> u16 {
        if self.tls {
            443
        } else {
            80
        }
    }

    /// The host as an IP address, when the URL names one.
    pub fn ip(&self) -> Option<IpAddr> {
        self.host.parse().ok()
    }

    /// The `Host` header for this backend: its host, with the port unless it
    /// is the scheme's default. Heroku's router picks the app by it.
    pub fn host_header(&self) -> String {
        let host = match self.ip() {
            Some(IpAddr::V6(_)) => format!("[{}]", self.host),
            _ => self.host.clone(),
        };
        if self.port == self.default_port() {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }

    /// The TLS server name: the hostname; empty for an IP literal, which has no SNI.
    pub fn sni(&self) -> &str {
        if self.ip().is_some() {
            ""
        } else {
            &self.host
        }
    }
}

impl fmt::Display for BackendUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls { "https" } else { "http" };
        write!(f, "{scheme}://{}", self.host_header())
    }
}

fn split_host_port(authority: &str) -> Result<(&str, Option<u16>), String> {
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest
            .split_once(']')
            .ok_or_else(|| "unclosed [ in the IPv6 address".to_string())?;
        host.parse::<Ipv6Addr>()
            .map_err(|_| format!("'{host}' is not an IPv6 address"))?;
        match after {
            "" => (host, None),
            _ => match after.strip_prefix(':') {
                Some(port) => (host, Some(port)),
                None => return Err("unexpected text after the IPv6 address".to_string()),
            },
        }
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Err("the URL has no host".to_string());
    }
    if !authority.starts_with('[')
        && !host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_')
    {
        return Err(format!("'{host}' is not a valid hostname"));
    }
    let port = match port {
        Some(raw) => match raw.parse::<u16>() {
            Ok(port) if port > 0 => Some(port),
            _ => return Err(format!("'{raw}' is not a port number (1-65535)")),
        },
        None => None,
    };
    Ok((host, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_heroku_web_url_parses_to_host_and_default_port() {
        let url =
            BackendUrl::parse("https://shop-1a2b3c4d5e6f.herokuapp.com/").expect("web_url parses");
        assert!(url.is_tls());
        assert_eq!(url.host(), "shop-1a2b3c4d5e6f.herokuapp.com");
        assert_eq!(url.port(), 443);
        assert_eq!(url.host_header(), "shop-1a2b3c4d5e6f.herokuapp.com");
        assert_eq!(url.sni(), "shop-1a2b3c4d5e6f.herokuapp.com");
        assert_eq!(url.to_string(), "https://shop-1a2b3c4d5e6f.herokuapp.com");
    }

    #[test]
    fn a_non_default_port_is_kept_in_host() {
        let url = BackendUrl::parse("HTTP://App.Test:8080").expect("parses");
        assert_eq!(url.host_header(), "app.test:8080");
        assert_eq!(url.to_string(), "http://app.test:8080");
    }

    #[test]
    fn malformed_urls_are_refused_with_a_reason() {
        for bad in [
            "ftp://x.test",
            "http://",
            "http://:80",
            "http://a.test:0",
            "http://a.test:99999",
            "http://a.test/path",
            "http://user@a.test",
            "http://a b.test",
            "a.test",
        ] {
            assert!(BackendUrl::parse(bad).is_err(), "{bad} should be refused");
        }
    }
}
