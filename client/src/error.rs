//! [`Error`]: what a client call can fail with.
//!
//! Servers report failures as gRPC statuses with a meaningful code plus a
//! `cairn-error` metadata key naming the kind; [`Error::from`] maps both back
//! to a variant a caller can act on.

use tonic::Code;

/// Metadata key holding the kind of a Cairn error.
pub const ERROR_KIND_KEY: &str = "cairn-error";
/// Metadata key holding the expected version of a wrong-expected-version error.
pub const EXPECTED_KEY: &str = "cairn-expected";
/// Metadata key holding the actual version of a wrong-expected-version error.
pub const ACTUAL_KEY: &str = "cairn-actual";

/// A failed client call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// An append or delete named an expected version the stream is not at;
    /// nothing was written. Re-read the stream and decide again.
    #[error("{message}")]
    WrongExpectedVersion {
        /// The expected version that was sent: a number, `any` or `no-stream`.
        expected: String,
        /// The version the stream is actually at.
        actual: u64,
        /// The server's message.
        message: String,
    },
    /// The stream was deleted.
    #[error("{0}")]
    StreamDeleted(String),
    /// The actor rejected the command (e.g. insufficient funds); nothing was written.
    #[error("{0}")]
    Rejected(String),
    /// The request was malformed; the message says what to fix.
    #[error("{0}")]
    InvalidArgument(String),
    /// What was asked for does not exist.
    #[error("{0}")]
    NotFound(String),
    /// A server answered but could not serve the call yet (no leader, shutting
    /// down, leader unreachable) for as long as the client kept retrying.
    #[error("{0}")]
    Unavailable(String),
    /// No server could be reached at all.
    #[error("{0}")]
    Unreachable(String),
    /// Anything else (an internal server error, a malformed reply).
    #[error("{0}")]
    Other(String),
}

impl Error {
    /// Whether the same call may succeed if tried again later.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Error::Unavailable(_) | Error::Unreachable(_))
    }
}

impl From<tonic::Status> for Error {
    fn from(status: tonic::Status) -> Error {
        let metadata = status.metadata();
        let text = |key: &str| metadata.get(key).and_then(|v| v.to_str().ok());
        let message = status.message().to_string();
        match text(ERROR_KIND_KEY) {
            Some("wrong-expected-version") => {
                return wrong_expected_version(text(EXPECTED_KEY), text(ACTUAL_KEY), message);
            }
            Some("stream-deleted") => return Error::StreamDeleted(message),
            Some("command-rejected") => return Error::Rejected(message),
            Some("invalid-argument") => return Error::InvalidArgument(message),
            Some("no-leader") => return Error::Unavailable(message),
            _ => {}
        }
        match status.code() {
            Code::InvalidArgument => Error::InvalidArgument(message),
            Code::NotFound => Error::NotFound(message),
            Code::Unavailable => Error::Unavailable(message),
            Code::FailedPrecondition if message.contains("wrong expected version") => {
                wrong_expected_version(None, None, message)
            }
            Code::FailedPrecondition if message.contains("deleted") => {
                Error::StreamDeleted(message)
            }
            Code::FailedPrecondition => Error::Rejected(message),
            code => Error::Other(format!("{message} ({code:?})")),
        }
    }
}

/// A wrong-expected-version error from its metadata, falling back on the
/// message ("... expected 3, but stream `s` is at version 5") when the
/// metadata is missing. Without a readable actual version it is `Other`.
fn wrong_expected_version(expected: Option<&str>, actual: Option<&str>, message: String) -> Error {
    let actual = actual
        .and_then(|a| a.parse().ok())
        .or_else(|| last_number_after(&message, "at version "));
    let expected = expected.map(str::to_string).or_else(|| {
        let (_, rest) = message.rsplit_once("expected ")?;
        let token = rest.split([',', ' ']).next()?;
        (!token.is_empty()).then(|| token.to_string())
    });
    match (expected, actual) {
        (Some(expected), Some(actual)) => Error::WrongExpectedVersion {
            expected,
            actual,
            message,
        },
        _ => Error::Other(message),
    }
}

fn last_number_after(message: &str, marker: &str) -> Option<u64> {
    let (_, rest) = message.rsplit_once(marker)?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use tonic::metadata::MetadataValue;

    fn status(code: Code, message: &str, meta: &[(&'static str, &'static str)]) -> tonic::Status {
        let mut status = tonic::Status::new(code, message);
        for (key, value) in meta {
            status
                .metadata_mut()
                .insert(*key, MetadataValue::from_static(value));
        }
        status
    }

    #[test]
    fn wrong_expected_version_from_metadata() {
        let msg = "wrong expected version: expected 3, but stream `s` is at version 5";
        let err = Error::from(status(
            Code::FailedPrecondition,
            msg,
            &[
                ("cairn-error", "wrong-expected-version"),
                ("cairn-expected", "no-stream"),
                ("cairn-actual", "7"),
            ],
        ));
        assert_eq!(
            err,
            Error::WrongExpectedVersion {
                expected: "no-stream".into(),
                actual: 7,
                message: msg.into()
            }
        );
        assert_eq!(err.to_string(), msg);
    }

    #[test]
    fn wrong_expected_version_from_message_only() {
        let msg = "wrong expected version: expected 3, but stream `s` is at version 5";
        let err = Error::from(status(Code::FailedPrecondition, msg, &[]));
        assert_eq!(
            err,
            Error::WrongExpectedVersion {
                expected: "3".into(),
                actual: 5,
                message: msg.into()
            }
        );
    }

    #[test]
    fn kinds_from_metadata() {
        let cases = [
            ("stream-deleted", Error::StreamDeleted("m".into())),
            ("command-rejected", Error::Rejected("m".into())),
            ("invalid-argument", Error::InvalidArgument("m".into())),
            ("no-leader", Error::Unavailable("m".into())),
        ];
        for (kind, want) in cases {
            let got = Error::from(status(
                Code::FailedPrecondition,
                "m",
                &[("cairn-error", kind)],
            ));
            assert_eq!(got, want, "kind {kind}");
        }
    }

    #[test]
    fn kinds_from_codes() {
        let cases = [
            (Code::InvalidArgument, Error::InvalidArgument("m".into())),
            (Code::NotFound, Error::NotFound("m".into())),
            (Code::Unavailable, Error::Unavailable("m".into())),
            (Code::FailedPrecondition, Error::Rejected("m".into())),
            (Code::Internal, Error::Other("m (Internal)".into())),
        ];
        for (code, want) in cases {
            assert_eq!(Error::from(status(code, "m", &[])), want, "code {code:?}");
        }
        assert_eq!(
            Error::from(status(
                Code::FailedPrecondition,
                "stream `s` is deleted",
                &[]
            )),
            Error::StreamDeleted("stream `s` is deleted".into())
        );
    }

    #[test]
    fn retryable() {
        assert!(Error::Unavailable("x".into()).is_retryable());
        assert!(!Error::Rejected("x".into()).is_retryable());
    }
}
