//! Failure injection for the fake Platform API: the [`Failure`] switches tests flip (for every
//! request, for a path prefix, or for the next n requests), the rules that pick the switch for
//! one request, and what each switch does to the answer (an error in its place, a cut or padded
//! body, a reset in the middle of the body). Refusing connections is the server's part, in
//! `mod.rs`; this file only decides when.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use hyper::StatusCode;
use serde_json::json;

use super::model::State;
use super::routing::{unauthorized, Answer, RecordedRequest, RATE_LIMIT_MESSAGE};
use super::{BoxError, FakeHerokuApi};

/// Size of the whitespace padding `Failure::Huge` puts in front of a JSON body.
pub const HUGE_PADDING: usize = 10 * 1024 * 1024;

/// What the fake does instead of answering normally. Set with [`FakeHerokuApi::set_failure`]
/// (every request), [`FakeHerokuApi::set_failure_on`] (paths with a prefix) or
/// [`FakeHerokuApi::fail_next`] (the next n requests).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Failure {
    /// Answer normally.
    None,
    /// Through `set_failure`: stop listening (and close open connections), so connects are
    /// refused while the port stays the fake's; setting any other failure listens on it again.
    /// Through `set_failure_on`/`fail_next`: close the connection without answering.
    Refuse,
    /// Send the status line, headers (with the full `Content-Length`) and half of the body,
    /// then drop the connection.
    ResetMidBody,
    /// Wait this long, then answer normally.
    Stall(Duration),
    /// Answer this status with a Heroku error body (`internal_server_error` for 500, ...).
    Status(u16),
    /// 429 `rate_limit` with `RateLimit-Remaining: 0`.
    RateLimited,
    /// 401 `unauthorized`, whatever the key.
    Unauthorized,
    /// 200 with the first half of the normal JSON body.
    TruncatedJson,
    /// 200 with valid JSON of the wrong shape: `{"unexpected": true}` where a list is expected,
    /// `[{"unexpected": true}]` where an object is.
    WrongShape,
    /// The normal answer with its JSON body preceded by [`HUGE_PADDING`] bytes of whitespace
    /// (still valid JSON of the right shape, about 10 MB).
    Huge,
    /// Lists answer the first page with 206 and the same `Next-Range`, whatever `Range` asks.
    LoopingNextRange,
}

/// One failure setting: for every path or a prefix, for ever or for a number of requests.
pub(super) struct FailureRule {
    pub(super) path_prefix: Option<String>,
    pub(super) failure: Failure,
    /// `Some(n)`: applies to n more requests.
    pub(super) remaining: Option<u32>,
    /// Requests the rule lets through (answered normally) before it applies.
    pub(super) skip: u32,
}

impl FakeHerokuApi {
    /// Applies `failure` to every request from now on, replacing all other failure settings.
    /// `Failure::Refuse` stops listening and closes open connections (connects are refused; the
    /// port stays held) and returns once that is done; any other value first listens on the
    /// same port again if it was not listening.
    pub fn set_failure(&self, failure: Failure) {
        let refuse = failure == Failure::Refuse;
        {
            let mut state = self.state();
            state.rules.clear();
            if !refuse && failure != Failure::None {
                state.rules.push(FailureRule {
                    path_prefix: None,
                    failure,
                    remaining: None,
                    skip: 0,
                });
            }
        }
        self.set_listening(!refuse);
    }

    /// Applies `failure` to requests whose path starts with `path_prefix` (replacing an earlier
    /// setting for the same prefix); `Failure::None` removes the setting. Settings for prefixes
    /// are checked before the one for every path.
    pub fn set_failure_on(&self, path_prefix: &str, failure: Failure) {
        let mut state = self.state();
        state
            .rules
            .retain(|r| r.path_prefix.as_deref() != Some(path_prefix));
        if failure != Failure::None {
            state.rules.insert(
                0,
                FailureRule {
                    path_prefix: Some(path_prefix.to_string()),
                    failure,
                    remaining: None,
                    skip: 0,
                },
            );
        }
    }

    /// Applies `failure` to the next `count` requests (any path), then answers as before.
    pub fn fail_next(&self, count: u32, failure: Failure) {
        self.state().rules.insert(
            0,
            FailureRule {
                path_prefix: None,
                failure,
                remaining: Some(count),
                skip: 0,
            },
        );
    }

    /// Applies `failure` to the `n`th request (counting from 1) whose path starts with
    /// `path_prefix` from now on, once; the ones before it are answered normally. For a failure
    /// at a known point of a sequence whose order the balancer chooses.
    pub fn fail_nth_on(&self, path_prefix: &str, n: u32, failure: Failure) {
        self.state().rules.insert(
            0,
            FailureRule {
                path_prefix: Some(path_prefix.to_string()),
                failure,
                remaining: Some(1),
                skip: n.saturating_sub(1),
            },
        );
    }

    /// Back to normal answers on every path; listens again if it was refusing connections.
    pub fn clear_failures(&self) {
        self.set_failure(Failure::None);
    }
}

impl State {
    /// The failure for this path, counting down a `fail_next` or `fail_nth_on` rule.
    pub(super) fn take_failure(&mut self, path: &str) -> Failure {
        let rule = self.rules.iter_mut().find(|r| {
            r.remaining != Some(0)
                && r.path_prefix
                    .as_deref()
                    .is_none_or(|prefix| path.starts_with(prefix))
        });
        match rule {
            Some(rule) if rule.skip > 0 => {
                rule.skip -= 1;
                Failure::None
            }
            Some(rule) => {
                if let Some(n) = rule.remaining.as_mut() {
                    *n -= 1;
                }
                rule.failure.clone()
            }
            None => Failure::None,
        }
    }
}

impl Failure {
    /// The answer this switch gives in place of the endpoint's, if it replaces it.
    pub(super) fn replacement(&self, request: &RecordedRequest) -> Option<Answer> {
        match self {
            Failure::Status(code) => Some(status_error(*code)),
            Failure::Unauthorized => Some(unauthorized("Invalid credentials provided.")),
            Failure::WrongShape => {
                let shape = if expects_list(request) {
                    json!({"unexpected": true})
                } else {
                    json!([{"unexpected": true}])
                };
                Some(Answer::json(StatusCode::OK, &shape))
            }
            _ => None,
        }
    }

    /// Whether a GET may answer 304: switches that mangle the answer must see a body, so they
    /// skip it.
    pub(super) fn allows_not_modified(&self) -> bool {
        matches!(self, Failure::None | Failure::Stall(_))
    }

    /// The answer as this switch sends it: cut in half, padded, or (the `true`) to be reset
    /// in the middle of its body.
    pub(super) fn mangle(&self, answer: Answer) -> (Answer, bool) {
        match self {
            Failure::TruncatedJson => {
                let body = if answer.body.len() > 1 {
                    answer.body.slice(..answer.body.len() / 2)
                } else {
                    Bytes::from_static(b"[{\"id\":\"")
                };
                let answer = Answer {
                    status: StatusCode::OK,
                    body,
                    ..answer
                };
                (answer, false)
            }
            Failure::Huge => {
                let mut padded = vec![b' '; HUGE_PADDING];
                padded.extend_from_slice(&answer.body);
                let answer = Answer {
                    body: Bytes::from(padded),
                    ..answer
                };
                (answer, false)
            }
            Failure::ResetMidBody => (answer, true),
            _ => (answer, false),
        }
    }
}

fn status_error(code: u16) -> Answer {
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let (id, message) = match status.as_u16() {
        400 => (
            "bad_request",
            "Request invalid, validate usage and try again.",
        ),
        401 => ("unauthorized", "Invalid credentials provided."),
        403 => (
            "forbidden",
            "You do not have access to the app or pipeline.",
        ),
        404 => ("not_found", "Couldn't find that resource."),
        422 => ("invalid_params", "Request failed, validate parameters."),
        429 => ("rate_limit", RATE_LIMIT_MESSAGE),
        503 => (
            "unavailable",
            "API is temporarily unavailable. Please try again later.",
        ),
        _ => (
            "internal_server_error",
            "Internal server error. Please try again later.",
        ),
    };
    Answer::error(status, id, message)
}

fn expects_list(request: &RecordedRequest) -> bool {
    let segments: Vec<&str> = request.path.split('/').filter(|s| !s.is_empty()).collect();
    matches!(
        segments.as_slice(),
        ["pipelines", _, "pipeline-couplings"]
            | ["apps", _, "formation"]
            | ["apps", _, "dynos"]
            | ["filters", "apps"]
    )
}

// ---------------------------------------------------------------------------------------------
// Response body

/// A whole body, or (for `ResetMidBody`) half of it followed by an error that makes hyper drop
/// the connection. The pause before the error lets hyper flush what was sent.
pub(super) struct ReplyBody {
    data: Option<Bytes>,
    reset: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl ReplyBody {
    pub(super) fn new(body: Bytes, reset: bool) -> Self {
        if reset {
            ReplyBody {
                data: Some(body.slice(..body.len() / 2)),
                reset: Some(Box::pin(tokio::time::sleep(Duration::from_millis(50)))),
            }
        } else {
            ReplyBody {
                data: Some(body),
                reset: None,
            }
        }
    }
}

impl Body for ReplyBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if let Some(data) = this.data.take().filter(|d| !d.is_empty()) {
            return Poll::Ready(Some(Ok(Frame::data(data))));
        }
        match this.reset.as_mut() {
            None => Poll::Ready(None),
            Some(pause) => {
                std::task::ready!(pause.as_mut().poll(cx));
                this.reset = None;
                Poll::Ready(Some(Err(
                    "fake Heroku API: connection reset mid-body".into()
                )))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.reset.is_none() && self.data.as_ref().is_none_or(Bytes::is_empty)
    }

    fn size_hint(&self) -> SizeHint {
        match (&self.reset, &self.data) {
            // Unknown, so hyper takes the announced Content-Length instead.
            (Some(_), _) => SizeHint::default(),
            (None, Some(data)) => SizeHint::with_exact(data.len() as u64),
            (None, None) => SizeHint::with_exact(0),
        }
    }
}
