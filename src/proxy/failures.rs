//! How a failed request ends: the status the client gets (504 for a backend
//! that timed out, 502 for other upstream failures) and the few words its
//! access line carries, without Pingora's decoration.

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
}
