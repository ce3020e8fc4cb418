//! Paging and conditional requests in the fake Platform API: `Range: id ..; max=N` read into one
//! page of a list, answered 206 with `Next-Range` while more remain (or 200 when none do), the
//! page-size cap a test can force, and `ETag`/`If-None-Match` answered 304 when nothing changed.

use bytes::Bytes;
use hyper::StatusCode;
use serde_json::Value;

use super::model::{derived_uuid, State};
use super::routing::{Answer, RecordedRequest};
use super::FakeHerokuApi;

/// Items in a list page when the request names no `max` (Heroku's default).
pub const DEFAULT_PAGE_SIZE: usize = 200;
/// Largest `max` a `Range` header may ask for (Heroku's limit); larger values are clamped.
pub const MAX_PAGE_SIZE: usize = 1000;

const ZERO_UUID: &str = "00000000-0000-0000-0000-000000000000";

impl FakeHerokuApi {
    /// Forces list pages to at most `cap` items, whatever `Range` asks for.
    pub fn set_page_size_cap(&self, cap: usize) {
        assert!(cap > 0, "a page size cap must be at least 1");
        self.state().page_size_cap = Some(cap);
    }

    /// Removes the page size cap.
    pub fn clear_page_size_cap(&self) {
        self.state().page_size_cap = None;
    }
}

/// Adds `ETag` (a hash of the body and paging headers); answers 304 when `If-None-Match` names
/// it. A 304 keeps `ETag`, `Next-Range` and `Content-Range`, as Rack's conditional GET does.
pub(super) fn with_etag(answer: Answer, if_none_match: Option<&str>) -> Answer {
    if !answer.status.is_success() {
        return answer;
    }
    let etag = format!(
        "\"{}\"",
        &derived_uuid(&(&answer.body[..], &answer.headers)).replace('-', "")
    );
    let matches = if_none_match.is_some_and(|value| {
        value
            .split(',')
            .map(str::trim)
            .any(|tag| tag == "*" || tag.trim_start_matches("W/") == etag)
    });
    let answer = answer.header("etag", etag);
    if matches {
        Answer {
            status: StatusCode::NOT_MODIFIED,
            body: Bytes::new(),
            ..answer
        }
    } else {
        answer
    }
}

/// A parsed `Range: id [\]]<start>..[<end>]; max=N; order=asc|desc` (the end bound is ignored).
struct RangeSpec {
    start: Option<String>,
    exclusive: bool,
    max: usize,
    descending: bool,
}

fn parse_range(value: &str) -> Option<RangeSpec> {
    let mut parts = value.split(';').map(str::trim).filter(|p| !p.is_empty());
    let bounds = parts.next()?;
    let (attribute, bounds) = bounds.split_once(' ').unwrap_or((bounds, ".."));
    if attribute != "id" {
        return None;
    }
    let (start, _end) = bounds.trim().split_once("..")?;
    let (exclusive, start) = match start.strip_prefix(']') {
        Some(start) => (true, start),
        None => (false, start),
    };
    let mut spec = RangeSpec {
        start: (!start.is_empty()).then(|| start.to_string()),
        exclusive,
        max: DEFAULT_PAGE_SIZE,
        descending: false,
    };
    for param in parts {
        match param.split_once('=').map(|(k, v)| (k.trim(), v.trim())) {
            Some(("max", n)) => spec.max = n.parse().ok().filter(|n| *n > 0)?,
            Some(("order", "desc")) => spec.descending = true,
            Some(("order", "asc")) => spec.descending = false,
            _ => return None,
        }
    }
    spec.max = spec.max.min(MAX_PAGE_SIZE);
    Some(spec)
}

/// One page of `items` (id, JSON) by id order, as `Range` asks and the page cap allows:
/// 206 with `Next-Range` when cut, else 200.
pub(super) fn list(
    state: &State,
    request: &RecordedRequest,
    mut items: Vec<(String, Value)>,
    looping: bool,
) -> Answer {
    let spec = match request.header("range") {
        None => RangeSpec {
            start: None,
            exclusive: false,
            max: DEFAULT_PAGE_SIZE,
            descending: false,
        },
        Some(value) => match parse_range(value) {
            Some(spec) => spec,
            None => {
                return Answer::error(
                    StatusCode::RANGE_NOT_SATISFIABLE,
                    "requested_range_not_satisfiable",
                    "Invalid Range header. Expected e.g. `id ..; max=200`.",
                )
            }
        },
    };
    items.sort_by(|a, b| a.0.cmp(&b.0));
    if spec.descending {
        items.reverse();
    }
    let start = if looping { None } else { spec.start.as_deref() };
    let first = match start {
        None => 0,
        Some(start) => items
            .iter()
            .position(|(id, _)| {
                let after = if spec.descending {
                    id.as_str() < start
                } else {
                    id.as_str() > start
                };
                after || (!spec.exclusive && id == start)
            })
            .unwrap_or(items.len()),
    };
    let size = state
        .page_size_cap
        .map_or(spec.max, |cap| cap.min(spec.max));
    let rest = &items[first..];
    let page = &rest[..size.min(rest.len())];
    let cut = page.len() < rest.len();
    let order = if spec.descending { "; order=desc" } else { "" };
    let max = spec.max;
    let body = Value::Array(page.iter().map(|(_, v)| v.clone()).collect());
    let mut answer = Answer::json(StatusCode::OK, &body).header("accept-ranges", "id".into());
    if let (Some((first_id, _)), Some((last_id, _))) = (page.first(), page.last()) {
        answer = answer.header(
            "content-range",
            format!("id {first_id}..{last_id}; max={max}{order}"),
        );
    }
    if cut || looping {
        let last = page.last().map_or(ZERO_UUID, |(id, _)| id.as_str());
        answer.status = StatusCode::PARTIAL_CONTENT;
        answer = answer.header("next-range", format!("id ]{last}..; max={max}{order}"));
    }
    answer
}
