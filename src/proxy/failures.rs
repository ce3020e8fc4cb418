//! How a failed request ends: the status the client gets (504 for a backend
//! that timed out, 502 for other upstream failures) and the few words its
//! access line carries, without Pingora's decoration.

use super::access_log::LineCode;
use pingora::{Error, ErrorSource, ErrorType};

/// A failed request in a few words for its access line: what happened and,
/// when tries failed before, what they ran into.
pub(super) fn describe(e: &Error, last_failure: Option<&str>) -> String {
    let context = e.context.as_ref().map(|context| context.as_str().trim());
    let mut text = match (e.etype(), context) {
        (ErrorType::HTTPStatus(_), Some(context)) => context.to_string(),
        (etype, Some(context)) if !context.is_empty() => format!("{}: {context}", etype.as_str()),
        (etype, _) => etype.as_str().to_string(),
    };
    if let Some(failure) = last_failure {
        if !text.contains(failure) {
            text.push_str(&format!(" (last try: {failure})"));
        }
    }
    text
}

/// The status a failed request answers with: 504 when the backend timed out,
/// 502 for other upstream failures, 400 for a malformed request, 0 when the
/// client is gone.
pub(super) fn error_status(e: &Error) -> u16 {
    match e.etype() {
        ErrorType::HTTPStatus(code) => *code,
        ErrorType::ConnectTimedout | ErrorType::TLSHandshakeTimedout | ErrorType::ReadTimedout
            if e.esource() == &ErrorSource::Upstream =>
        {
            504
        }
        _ => match e.esource() {
            ErrorSource::Upstream => 502,
            ErrorSource::Downstream => match e.etype() {
                ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed => 0,
                _ => 400,
            },
            ErrorSource::Internal | ErrorSource::Unset => 500,
        },
    }
}

/// The access line's code for a request that ended with `e`. `refused_answer`:
/// we refused the backend's answer (its head broke our limits);
/// `tries_failed`: earlier tries failed to connect, so a final "no other
/// backend" is really a connection failure.
pub(super) fn line_code(e: &Error, refused_answer: bool, tries_failed: bool) -> LineCode {
    if refused_answer {
        return LineCode::AnswerRefused;
    }
    match (e.esource(), e.etype()) {
        (_, ErrorType::HTTPStatus(503)) if tries_failed => LineCode::ConnectFailed,
        (_, ErrorType::HTTPStatus(503)) => LineCode::NoBackend,
        (ErrorSource::Upstream, ErrorType::ConnectTimedout | ErrorType::TLSHandshakeTimedout) => {
            LineCode::Timeout
        }
        (ErrorSource::Upstream, ErrorType::ReadTimedout | ErrorType::WriteTimedout) => {
            LineCode::Timeout
        }
        (
            ErrorSource::Upstream,
            ErrorType::ConnectRefused
            | ErrorType::ConnectError
            | ErrorType::ConnectNoRoute
            | ErrorType::SocketError
            | ErrorType::BindError
            | ErrorType::TLSHandshakeFailure
            | ErrorType::InvalidCert
            | ErrorType::TLSWantX509Lookup,
        ) => LineCode::ConnectFailed,
        (ErrorSource::Upstream, _) => LineCode::BackendError,
        (
            ErrorSource::Downstream,
            ErrorType::ConnectionClosed | ErrorType::ReadError | ErrorType::WriteError,
        ) => LineCode::ClientClosed,
        (ErrorSource::Downstream, _) => LineCode::RequestRefused,
        (ErrorSource::Internal | ErrorSource::Unset, _) => LineCode::Internal,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_described_without_pingoras_decoration() {
        let no_backend = Error::explain(ErrorType::HTTPStatus(503), "no other backend to retry on");
        assert_eq!(
            describe(&no_backend, Some("ConnectRefused")),
            "no other backend to retry on (last try: ConnectRefused)"
        );
        let mut timeout = Error::new(ErrorType::ReadTimedout);
        timeout.esource = ErrorSource::Upstream;
        assert_eq!(describe(&timeout, Some("ReadTimedout")), "ReadTimedout");
    }

    #[test]
    fn timeouts_answer_504_and_other_upstream_errors_502() {
        let mut timeout = Error::new(ErrorType::ReadTimedout);
        timeout.esource = ErrorSource::Upstream;
        assert_eq!(error_status(&timeout), 504);
        let mut refused = Error::new(ErrorType::ConnectRefused);
        refused.esource = ErrorSource::Upstream;
        assert_eq!(error_status(&refused), 502);
        assert_eq!(error_status(&Error::new(ErrorType::HTTPStatus(503))), 503);
    }

    #[test]
    fn each_failure_gets_its_stable_code() {
        let upstream = |etype| {
            let mut e = Error::new(etype);
            e.esource = ErrorSource::Upstream;
            e
        };
        let no_backend = Error::explain(ErrorType::HTTPStatus(503), "no backend available");
        assert_eq!(line_code(&no_backend, false, false), LineCode::NoBackend);
        assert_eq!(line_code(&no_backend, false, true), LineCode::ConnectFailed);
        assert_eq!(
            line_code(&upstream(ErrorType::ConnectRefused), false, false),
            LineCode::ConnectFailed
        );
        assert_eq!(
            line_code(&upstream(ErrorType::ReadTimedout), false, false),
            LineCode::Timeout
        );
        assert_eq!(
            line_code(&upstream(ErrorType::ConnectionClosed), false, false),
            LineCode::BackendError
        );
        assert_eq!(
            line_code(&upstream(ErrorType::InvalidHTTPHeader), true, false),
            LineCode::AnswerRefused
        );
        let mut gone = Error::new(ErrorType::ConnectionClosed);
        gone.esource = ErrorSource::Downstream;
        assert_eq!(line_code(&gone, false, false), LineCode::ClientClosed);
    }
}
