//! The app's own URLs in its answers, turned into the client's, like nginx's
//! `proxy_redirect default` and `proxy_cookie_domain`. Input: the response
//! head in `response_filter`, the backend's URL (`AppTarget`) and the
//! client's scheme and host (`forwarded.rs`). Output: the head with
//! `Location`, `Content-Location` and `Refresh` (its `url=`) pointing at the
//! client's origin where they named the backend's, and no `Set-Cookie`
//! `Domain` naming the backend's host.
//!
//! Behind the balancer an app sees its own hostname as `Host` (Heroku's
//! router picks the app by it) and Heroku sets no `X-Forwarded-Host`, so a
//! redirect built from `Host` sends the browser to `app.herokuapp.com`,
//! around the balancer. Only URLs whose authority is the backend's own host
//! and port (scheme `http`, `https`, or none as in `//host/path`) change;
//! relative URLs and other hosts pass. A cookie's `Domain` naming the
//! backend is dropped, not rewritten: the cookie then belongs to exactly the
//! host the browser asked, which is always right, while the client's host
//! may be an IP address or carry a port (neither is a valid `Domain`) and
//! comes from the client. Turned off by `rewrite_redirects: false`.

use crate::backend::BackendUrl;
use http::header::{HeaderName, CONTENT_LOCATION, LOCATION, REFRESH, SET_COOKIE};
use http::HeaderValue;
use pingora::http::ResponseHeader;
use pingora::Result;

/// Turns the backend's origin into the client's, for one response.
pub(super) struct Rewrite<'a> {
    backend: &'a BackendUrl,
    client_scheme: &'a str,
    /// The host the client asked for (port kept); without it URLs stay.
    client_host: Option<&'a str>,
}

impl<'a> Rewrite<'a> {
    pub(super) fn new(
        backend: &'a BackendUrl,
        client_scheme: &'a str,
        client_host: Option<&'a str>,
    ) -> Self {
        Rewrite {
            backend,
            client_scheme,
            client_host,
        }
    }

    /// `url` at the client's origin, if it names the backend's; None leaves it.
    pub(super) fn url(&self, url: &str) -> Option<String> {
        let client_host = self.client_host?;
        let (scheme, rest) = split_scheme(url)?;
        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(end);
        if !self.is_backend(authority) {
            return None;
        }
        Some(match scheme {
            Some(_) => format!("{}://{client_host}{tail}", self.client_scheme),
            None => format!("//{client_host}{tail}"),
        })
    }

    /// A `Refresh` value (`5; url=https://…`) with its URL rewritten as [`Self::url`].
    pub(super) fn refresh(&self, value: &str) -> Option<String> {
        let (_, params) = value.split_once([';', ','])?;
        let params = params.trim_start();
        let name = params.get(..3)?;
        if !name.eq_ignore_ascii_case("url") {
            return None;
        }
        let after_name = params[3..].trim_start().strip_prefix('=')?.trim_start();
        let (url, quote) = match after_name.chars().next() {
            Some(quote @ ('"' | '\'')) => {
                let inner = &after_name[1..];
                (&inner[..inner.find(quote).unwrap_or(inner.len())], true)
            }
            _ => (after_name.trim_end(), false),
        };
        let rewritten = self.url(url)?;
        let start = value.len() - after_name.len() + usize::from(quote);
        let end = start + url.len();
        Some(format!("{}{rewritten}{}", &value[..start], &value[end..]))
    }

    /// A `Set-Cookie` value without its `Domain` attribute when that names the
    /// backend's host (any case, leading dot or not); the other bytes stay as
    /// they came. None leaves it.
    pub(super) fn set_cookie(&self, value: &[u8]) -> Option<Vec<u8>> {
        let host = self.backend.host().as_bytes();
        let mut kept: Option<Vec<u8>> = None;
        let mut from = 0;
        // Attributes follow the first `;`; each is cut with its leading `;`.
        let mut starts: Vec<usize> = value
            .iter()
            .enumerate()
            .filter_map(|(at, byte)| (*byte == b';').then_some(at))
            .collect();
        starts.push(value.len());
        for pair in starts.windows(2) {
            let (start, end) = (pair[0], pair[1]);
            let attribute = value[start + 1..end].trim_ascii();
            let Some(equals) = attribute.iter().position(|byte| *byte == b'=') else {
                continue;
            };
            let (name, domain) = (attribute[..equals].trim_ascii(), &attribute[equals + 1..]);
            let domain = domain.trim_ascii();
            let domain = domain.strip_prefix(b".").unwrap_or(domain);
            if name.eq_ignore_ascii_case(b"domain") && domain.eq_ignore_ascii_case(host) {
                let out = kept.get_or_insert_with(|| Vec::with_capacity(value.len()));
                out.extend_from_slice(&value[from..start]);
                from = end;
            }
        }
        let mut out = kept?;
        out.extend_from_slice(&value[from..]);
        Some(out)
    }

    /// Whether `authority` (`host[:port]`) is the backend's: its host, and its
    /// port, which may be left out when it is the default of the backend's scheme.
    fn is_backend(&self, authority: &str) -> bool {
        if authority.contains('@') {
            return false;
        }
        let (host, port) = match authority.strip_prefix('[') {
            Some(rest) => match rest.split_once(']') {
                Some((host, after)) => (host, after.strip_prefix(':')),
                None => return false,
            },
            None => match authority.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            },
        };
        let host = host.strip_suffix('.').unwrap_or(host);
        let default_port = if self.backend.is_tls() { 443 } else { 80 };
        let port_matches = match port.filter(|port| !port.is_empty()) {
            None => self.backend.port() == default_port,
            Some(port) => port.parse::<u16>().ok() == Some(self.backend.port()),
        };
        port_matches && host.eq_ignore_ascii_case(self.backend.host())
    }

    /// Apply every rewrite to a response head.
    pub(super) fn response(&self, response: &mut ResponseHeader) -> Result<()> {
        // Most answers carry none of the four: one pass over the names
        // costs less than four lookups.
        let rewritten = [LOCATION, CONTENT_LOCATION, REFRESH, SET_COOKIE];
        if !response.headers.keys().any(|name| rewritten.contains(name)) {
            return Ok(());
        }
        let as_url = |value: &HeaderValue| {
            let url = self.url(value.to_str().ok()?)?;
            HeaderValue::from_str(&url).ok()
        };
        rewrite_each(response, (LOCATION, "Location"), as_url)?;
        rewrite_each(response, (CONTENT_LOCATION, "Content-Location"), as_url)?;
        rewrite_each(response, (REFRESH, "Refresh"), |value| {
            let refresh = self.refresh(value.to_str().ok()?)?;
            HeaderValue::from_str(&refresh).ok()
        })?;
        rewrite_each(response, (SET_COOKIE, "Set-Cookie"), |value| {
            HeaderValue::from_bytes(&self.set_cookie(value.as_bytes())?).ok()
        })
    }
}

/// `http://` or `https://` (any case) → Some(scheme); `//` → None; else not absolute.
fn split_scheme(url: &str) -> Option<(Option<&str>, &str)> {
    for scheme in ["http", "https"] {
        let prefix_len = scheme.len() + 3;
        let matches = url.len() > prefix_len
            && url
                .get(..scheme.len())
                .is_some_and(|s| s.eq_ignore_ascii_case(scheme))
            && url.get(scheme.len()..prefix_len) == Some("://");
        if matches {
            return Some((Some(scheme), &url[prefix_len..]));
        }
    }
    url.strip_prefix("//").map(|rest| (None, rest))
}

/// Replace each `name` value that `rewrite` changes, keeping their order;
/// a head without one is left alone. The name comes parsed (looked up on
/// every response) and as written (for the rare rewrite).
fn rewrite_each(
    response: &mut ResponseHeader,
    (name, written): (HeaderName, &'static str),
    rewrite: impl Fn(&HeaderValue) -> Option<HeaderValue>,
) -> Result<()> {
    let values = response.headers.get_all(&name);
    let rewritten: Vec<Option<HeaderValue>> = values.iter().map(&rewrite).collect();
    if rewritten.iter().all(Option::is_none) {
        return Ok(());
    }
    let kept: Vec<HeaderValue> = values
        .iter()
        .zip(rewritten)
        .map(|(old, new)| new.unwrap_or_else(|| old.clone()))
        .collect();
    response.remove_header(&name);
    for value in kept {
        response.append_header(written, value)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backend(url: &str) -> BackendUrl {
        BackendUrl::parse(url).unwrap_or_else(|e| panic!("{url}: {e}"))
    }

    const CLIENT: Option<&str> = Some("lb.example.com");

    #[test]
    fn urls_naming_the_backend_move_to_the_client_origin() {
        let app = backend("https://shop-1.herokuapp.com");
        let rewrite = Rewrite::new(&app, "https", CLIENT);
        for (from, to) in [
            (
                "https://shop-1.herokuapp.com/next?a=1#f",
                "https://lb.example.com/next?a=1#f",
            ),
            // The app may not know it is served over https.
            (
                "http://shop-1.herokuapp.com/next",
                "https://lb.example.com/next",
            ),
            ("HTTPS://Shop-1.HerokuApp.com", "https://lb.example.com"),
            (
                "https://shop-1.herokuapp.com:443/x",
                "https://lb.example.com/x",
            ),
            (
                "https://shop-1.herokuapp.com./x",
                "https://lb.example.com/x",
            ),
            ("//shop-1.herokuapp.com/x", "//lb.example.com/x"),
            ("https://shop-1.herokuapp.com?q", "https://lb.example.com?q"),
        ] {
            assert_eq!(rewrite.url(from).as_deref(), Some(to), "{from}");
        }
    }

    #[test]
    fn relative_urls_and_other_hosts_and_ports_stay() {
        let app = backend("https://shop-1.herokuapp.com");
        let rewrite = Rewrite::new(&app, "https", CLIENT);
        for url in [
            "/next",
            "next",
            "?a=1",
            "https://shop-2.herokuapp.com/next",
            "https://shop-1.herokuapp.com.evil.example/next",
            "https://evil.example/shop-1.herokuapp.com",
            "https://shop-1.herokuapp.com:8443/x",
            "https://user@shop-1.herokuapp.com/x",
            "ftp://shop-1.herokuapp.com/x",
            "https://",
            "",
        ] {
            assert_eq!(rewrite.url(url), None, "{url}");
        }
        // Without the client's host there is nothing to point at.
        let blind = Rewrite::new(&app, "https", None);
        assert_eq!(blind.url("https://shop-1.herokuapp.com/x"), None);
    }

    #[test]
    fn a_non_default_port_must_match() {
        let app = backend("http://app-fh.test:8081");
        let rewrite = Rewrite::new(&app, "http", Some("127.0.0.1:9000"));
        assert_eq!(
            rewrite.url("http://app-fh.test:8081/next").as_deref(),
            Some("http://127.0.0.1:9000/next")
        );
        assert_eq!(rewrite.url("http://app-fh.test/next"), None);
        assert_eq!(rewrite.url("http://app-fh.test:8082/next"), None);

        let v6 = backend("http://[::1]:8081");
        let rewrite = Rewrite::new(&v6, "http", CLIENT);
        assert_eq!(
            rewrite.url("http://[::1]:8081/x").as_deref(),
            Some("http://lb.example.com/x")
        );
        assert_eq!(rewrite.url("http://[::2]:8081/x"), None);
    }

    #[test]
    fn refresh_keeps_its_delay_and_quotes() {
        let app = backend("https://shop-1.herokuapp.com");
        let rewrite = Rewrite::new(&app, "https", CLIENT);
        for (from, to) in [
            (
                "0; url=https://shop-1.herokuapp.com/next",
                "0; url=https://lb.example.com/next",
            ),
            (
                "5;URL='https://shop-1.herokuapp.com/a'",
                "5;URL='https://lb.example.com/a'",
            ),
            (
                "5; Url = \"http://shop-1.herokuapp.com/\"",
                "5; Url = \"https://lb.example.com/\"",
            ),
        ] {
            assert_eq!(rewrite.refresh(from).as_deref(), Some(to), "{from}");
        }
        for value in [
            "5",
            "5; url=/next",
            "0; url=https://other.example/",
            "0; x=1",
        ] {
            assert_eq!(rewrite.refresh(value), None, "{value}");
        }
    }

    #[test]
    fn a_cookie_domain_naming_the_backend_is_dropped_and_others_stay() {
        let app = backend("https://shop-1.herokuapp.com");
        let rewrite = Rewrite::new(&app, "https", CLIENT);
        let cut = |value: &str| {
            rewrite
                .set_cookie(value.as_bytes())
                .map(|bytes| String::from_utf8(bytes).expect("ASCII in, ASCII out"))
        };
        assert_eq!(
            cut("s=1; Domain=shop-1.herokuapp.com; Path=/").as_deref(),
            Some("s=1; Path=/")
        );
        assert_eq!(
            cut("s=1;domain=.SHOP-1.herokuapp.com").as_deref(),
            Some("s=1")
        );
        assert_eq!(
            cut("s=1; Path=/; Domain = shop-1.herokuapp.com ; Secure").as_deref(),
            Some("s=1; Path=/; Secure")
        );
        for value in [
            "s=1; Domain=herokuapp.com",
            "s=1; Domain=example.org; Path=/",
            "s=1; Path=/",
            "Domain=shop-1.herokuapp.com",
            "s=1; Domainx=shop-1.herokuapp.com",
        ] {
            assert_eq!(cut(value), None, "{value}");
        }
        // Bytes that are not UTF-8 survive.
        let raw = b"s=\xe9t\xe9; Domain=shop-1.herokuapp.com; Path=/";
        assert_eq!(
            rewrite.set_cookie(raw).as_deref(),
            Some(&b"s=\xe9t\xe9; Path=/"[..])
        );
    }

    #[test]
    fn a_response_head_is_rewritten_in_place_and_in_order() {
        let app = backend("http://app-fh.test:8081");
        let rewrite = Rewrite::new(&app, "http", Some("127.0.0.1:9000"));
        let mut head = ResponseHeader::build(302, None).expect("a head");
        for (name, value) in [
            ("Location", "http://app-fh.test:8081/next"),
            ("Content-Location", "/same"),
            ("Set-Cookie", "a=1; Domain=app-fh.test"),
            ("Set-Cookie", "b=2; Domain=other.test"),
            ("Set-Cookie", "c=3; Domain=.app-fh.test; Path=/"),
            ("Refresh", "1; url=http://app-fh.test:8081/r"),
        ] {
            head.append_header(name, value).expect("a valid header");
        }
        rewrite.response(&mut head).expect("rewritten");
        let all = |name: &str| -> Vec<&str> {
            head.headers
                .get_all(name)
                .iter()
                .map(|value| value.to_str().expect("ASCII"))
                .collect()
        };
        assert_eq!(all("location"), ["http://127.0.0.1:9000/next"]);
        assert_eq!(all("content-location"), ["/same"]);
        assert_eq!(
            all("set-cookie"),
            ["a=1", "b=2; Domain=other.test", "c=3; Path=/"]
        );
        assert_eq!(all("refresh"), ["1; url=http://127.0.0.1:9000/r"]);
    }
}
