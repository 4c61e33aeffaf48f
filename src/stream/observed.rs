//! A [`StreamApi`] decorator that counts every call by operation and outcome
//! (`ddb_audit_stream_calls_total`). It wraps the adapter, so each attempt
//! the retry layer makes is counted, throttled ones included.

use std::future::Future;

#[cfg(test)]
use crate::observe::OUTCOMES;
use crate::observe::{Event, StreamCall};
use crate::stream::{wrap_stream_api, StreamApi, StreamError, StreamResult};

/// `inner`, with each call counted.
#[derive(Clone, Debug)]
pub struct Observed<S> {
    pub inner: S,
}

impl<S> Observed<S> {
    pub fn new(inner: S) -> Self {
        Observed { inner }
    }
}

/// The `outcome` label of a call's result.
pub fn outcome<T>(result: &StreamResult<T>) -> &'static str {
    match result {
        Ok(_) => "ok",
        Err(StreamError::Throttled(_)) => "throttled",
        Err(StreamError::Transient(_)) => "transient",
        Err(StreamError::Trimmed(_)) => "trimmed",
        Err(StreamError::ExpiredIterator(_)) => "expired_iterator",
        Err(StreamError::NotFound(_)) => "not_found",
        Err(StreamError::Other(_)) => "error",
    }
}

async fn counted<T>(
    operation: &'static str,
    call: impl Future<Output = StreamResult<T>>,
) -> StreamResult<T> {
    let result = call.await;
    StreamCall {
        operation,
        outcome: outcome(&result),
    }
    .emit();
    result
}

impl<S: StreamApi> StreamApi for Observed<S> {
    wrap_stream_api!(|observed| observed.inner, counted);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_outcome_is_one_exported_from_the_start() {
        let m = || "m".to_string();
        let results: Vec<StreamResult<()>> = vec![
            Ok(()),
            Err(StreamError::Throttled(m())),
            Err(StreamError::Transient(m())),
            Err(StreamError::Trimmed(m())),
            Err(StreamError::ExpiredIterator(m())),
            Err(StreamError::NotFound(m())),
            Err(StreamError::Other(m())),
        ];
        let seen: Vec<&str> = results.iter().map(outcome).collect();
        assert_eq!(seen, OUTCOMES.to_vec());
    }
}
