//! The service's errors as the simulator answers them.

use std::fmt;

use crate::stream::StreamError;

pub(super) fn not_found(what: impl fmt::Display) -> StreamError {
    StreamError::NotFound(what.to_string())
}

pub(super) fn invalid(what: impl fmt::Display) -> StreamError {
    StreamError::Other(format!("ValidationException: {what}"))
}
