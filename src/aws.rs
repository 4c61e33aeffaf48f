//! AWS client construction, and the one place that reads SDK errors.
//!
//! Configuration comes from the standard AWS environment (`AWS_ENDPOINT_URL`,
//! `AWS_REGION`, the default credential chain), so the same binary runs
//! against AWS, LocalStack or moto's server. The SDK's own retries are
//! disabled: the daemon has exactly one retry layer (with its own backoff and
//! rate limits), and stacked retry layers multiply each other under throttling.
//!
//! SDK types stay in this module, `stream::aws` and `store::dynamo`; the rest of
//! the crate sees only domain types and domain errors.

use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, SdkConfig};
use aws_sdk_dynamodb::config::http::HttpResponse;
use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};

/// Timeouts for every AWS call. Without them a half-open connection could
/// hang a shard's reader for ever, which looks exactly like an idle shard.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientTimeouts {
    /// Establishing a TCP/TLS connection.
    pub connect: Duration,
    /// A whole call, from send to parsed answer (one attempt: retries are ours).
    pub operation: Duration,
}

impl Default for ClientTimeouts {
    fn default() -> Self {
        ClientTimeouts {
            connect: Duration::from_secs(3),
            // GetRecords can return 1 MB and PutItem carries up to 400 KB:
            // generous, yet well inside a shard iterator's 15-minute life.
            operation: Duration::from_secs(20),
        }
    }
}

/// Overrides [`ClientTimeouts::operation`] (whole seconds, 1–3600). For
/// emulators, which answer a Query on an index by scanning the whole table:
/// against moto, a 100,000-entry audit table makes such a call take longer
/// than the default allows. Real DynamoDB needs no change.
pub const OPERATION_TIMEOUT_ENV: &str = "DDB_AUDIT_OPERATION_TIMEOUT_SECS";

impl ClientTimeouts {
    /// The defaults, with [`OPERATION_TIMEOUT_ENV`] applied when it is set
    /// (a value that is not 1–3600 is named in a warning and ignored).
    pub fn from_env() -> Self {
        let mut t = ClientTimeouts::default();
        if let Ok(text) = std::env::var(OPERATION_TIMEOUT_ENV) {
            match text.trim().parse::<u64>() {
                Ok(secs @ 1..=3600) => t.operation = Duration::from_secs(secs),
                _ => tracing::warn!(
                    value = %text,
                    "{OPERATION_TIMEOUT_ENV} must be whole seconds from 1 to 3600; using {} s",
                    t.operation.as_secs()
                ),
            }
        }
        t
    }
}

/// The SDK configuration from the standard environment, with SDK retries
/// disabled and [`ClientTimeouts::from_env`].
pub async fn load_sdk_config() -> SdkConfig {
    load_sdk_config_with(ClientTimeouts::from_env()).await
}

/// As [`load_sdk_config`], with explicit timeouts.
pub async fn load_sdk_config_with(timeouts: ClientTimeouts) -> SdkConfig {
    let mut loader = aws_config::defaults(BehaviorVersion::latest());
    if off_instance() {
        loader = loader.region(env_or_profile_region());
    }
    loader
        .retry_config(RetryConfig::disabled())
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(timeouts.connect)
                .operation_attempt_timeout(timeouts.operation)
                .operation_timeout(timeouts.operation)
                .build(),
        )
        .load()
        .await
}

/// With an endpoint or static credentials given, this is not an EC2 or ECS
/// host asking its metadata service for a region.
fn off_instance() -> bool {
    let configured = |name: &str| std::env::var_os(name).is_some_and(|v| !v.is_empty());
    configured("AWS_ENDPOINT_URL") || configured("AWS_ACCESS_KEY_ID")
}

fn env_or_profile_region() -> aws_config::meta::region::RegionProviderChain {
    aws_config::meta::region::RegionProviderChain::first_try(
        aws_config::environment::region::EnvironmentVariableRegionProvider::new(),
    )
    .or_else(aws_config::profile::ProfileFileRegionProvider::new())
}

/// Whether the region is known to be missing before anything is loaded:
/// off an instance (an endpoint or static credentials given), the region can
/// only come from the environment or the profile. Checked first so that the
/// one error that says to set AWS_REGION is not preceded by lines of
/// metadata-service warnings from the credential chain's own search.
pub async fn region_missing_off_instance() -> bool {
    off_instance() && env_or_profile_region().region().await.is_none()
}

/// A DynamoDB client (for DescribeTable and the daemon's own tables).
pub fn dynamodb_client(config: &SdkConfig) -> aws_sdk_dynamodb::Client {
    aws_sdk_dynamodb::Client::new(config)
}

/// A DynamoDB Streams client.
pub fn streams_client(config: &SdkConfig) -> aws_sdk_dynamodbstreams::Client {
    aws_sdk_dynamodbstreams::Client::new(config)
}

/// What an SDK error means to a caller, independent of the service.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ErrorKind {
    /// Back off and retry.
    Throttled,
    /// 5xx, timeouts, connection failures: retry.
    Transient,
    /// TrimmedDataAccessException.
    Trimmed,
    /// ExpiredIteratorException.
    ExpiredIterator,
    /// ResourceNotFoundException.
    NotFound,
    /// ConditionalCheckFailedException.
    ConditionFailed,
    /// ResourceInUseException (e.g. CreateTable on an existing table).
    ResourceInUse,
    /// ValidationException (bad request, item too large, ...).
    Validation,
    Other,
}

/// An SDK error reduced to its kind and a message fit for a log line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Classified {
    pub kind: ErrorKind,
    pub message: String,
}

/// Error codes that mean "slow down", across DynamoDB and DynamoDB Streams.
const THROTTLE_CODES: &[&str] = &[
    "LimitExceededException",
    "ThrottlingException",
    "Throttling",
    "ProvisionedThroughputExceededException",
    "RequestLimitExceeded",
    "TooManyRequestsException",
];

/// Error codes that mean "the service failed; the same call may succeed".
const TRANSIENT_CODES: &[&str] = &[
    "InternalServerError",
    "InternalFailure",
    "InternalServerErrorException",
    "ServiceUnavailable",
    "ServiceUnavailableException",
];

/// Classify any SDK error of either client (both re-export the same
/// `SdkError` and `HttpResponse`).
pub(crate) fn classify<E>(err: &SdkError<E, HttpResponse>) -> Classified
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let (kind, message) = match err {
        SdkError::ServiceError(ctx) => {
            let status = ctx.raw().status().as_u16();
            let code = ctx.err().code().unwrap_or("");
            let text = ctx.err().message().unwrap_or("");
            let message = match (code.is_empty(), text.is_empty()) {
                (false, false) => format!("{code}: {text}"),
                (false, true) => code.to_string(),
                (true, false) => format!("HTTP {status}: {text}"),
                (true, true) => format!("HTTP {status}: {}", DisplayErrorContext(err)),
            };
            let message = match setup_hint(code) {
                Some(hint) => format!("{message} ({hint})"),
                None => message,
            };
            (kind_of(code, Some(status)), message)
        }
        SdkError::TimeoutError(_) => (ErrorKind::Transient, "timed out".to_string()),
        // Connection refused/reset, DNS, TLS, timeouts: the service may be
        // back in a moment. A "user" error (say, a malformed endpoint URL)
        // will fail the same way every time, so it is not retried.
        SdkError::DispatchFailure(f) => {
            if let Some(why) = missing_credentials(err) {
                // Retrying cannot make credentials appear.
                (ErrorKind::Other, why)
            } else if f.is_io() {
                (
                    ErrorKind::Transient,
                    format!(
                        "cannot connect to {}: {}",
                        endpoint_in_use(),
                        root_cause(err)
                    ),
                )
            } else {
                (
                    if f.is_user() {
                        ErrorKind::Other
                    } else {
                        ErrorKind::Transient
                    },
                    format!("request failed: {}", DisplayErrorContext(err)),
                )
            }
        }
        // An answer we could not parse: a 5xx page from a proxy is worth a
        // retry, anything else is reported as is.
        SdkError::ResponseError(ctx) => {
            let status = ctx.raw().status().as_u16();
            let kind = if status >= 500 || status == 429 {
                kind_of("", Some(status))
            } else {
                ErrorKind::Other
            };
            (
                kind,
                format!(
                    "unreadable HTTP {status} response: {}",
                    DisplayErrorContext(err)
                ),
            )
        }
        _ => (ErrorKind::Other, DisplayErrorContext(err).to_string()),
    };
    Classified { kind, message }
}

/// What to do about an error that is the caller's setup, not the service's
/// state: none of these goes away by retrying.
fn setup_hint(code: &str) -> Option<&'static str> {
    Some(match code {
        "AccessDeniedException" | "AccessDenied" => {
            "the credentials in use lack this permission: grant it to their role or user; \
             infra/init-policy.json, daemon-policy.json, auditor-policy.json and \
             verifier-policy.json list what \
             each role needs (docs/deployment.md)"
        }
        "UnrecognizedClientException" | "InvalidClientTokenId" => {
            "the access key is not known here: check AWS_ACCESS_KEY_ID or AWS_PROFILE, and that \
             AWS_ENDPOINT_URL and AWS_REGION point where that key lives"
        }
        "ExpiredTokenException" | "ExpiredToken" | "RequestExpired" => {
            "the session credentials have expired: refresh them (for example `aws sso login`, or \
             a new AWS_SESSION_TOKEN)"
        }
        "InvalidSignatureException" | "SignatureDoesNotMatch" => {
            "the signature does not match: check AWS_SECRET_ACCESS_KEY for this access key, and \
             the machine's clock"
        }
        "MissingAuthenticationTokenException" | "MissingAuthenticationToken" => {
            "the request carried no credentials: set AWS_ACCESS_KEY_ID and \
             AWS_SECRET_ACCESS_KEY, or AWS_PROFILE"
        }
        _ => return None,
    })
}

/// The innermost cause's own words ("Connection refused (os error 111)"),
/// not the whole chain of wrappers.
fn root_cause(err: &(dyn std::error::Error + 'static)) -> String {
    let mut e = err;
    while let Some(next) = e.source() {
        e = next;
    }
    e.to_string()
}

/// Where requests go, for a message about a connection that failed.
fn endpoint_in_use() -> String {
    match std::env::var("AWS_ENDPOINT_URL") {
        Ok(url) if !url.is_empty() => {
            format!("AWS_ENDPOINT_URL={url} (is it running? unset AWS_ENDPOINT_URL for AWS itself)")
        }
        _ => "the AWS endpoint (check the network, a proxy, and AWS_REGION)".to_string(),
    }
}

/// "No credentials were found", with what to set, when that is why the
/// request could not be sent.
fn missing_credentials(err: &(dyn std::error::Error + 'static)) -> Option<String> {
    use aws_credential_types::provider::error::CredentialsError;
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = source {
        if let Some(c) = e.downcast_ref::<CredentialsError>() {
            let what = match c {
                CredentialsError::CredentialsNotLoaded(_) => "no AWS credentials found",
                _ => "the AWS credentials could not be loaded",
            };
            return Some(format!(
                "{what}: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE, or run \
                 where a role provides them (an ECS task role, an EC2 instance profile); with a \
                 local emulator any values work"
            ));
        }
        source = e.source();
    }
    None
}

/// The result of a conditional write: `Ok(true)` when it was written,
/// `Ok(false)` when its condition did not hold (nothing was written), else
/// the error, classified.
pub(crate) fn written<O, E>(
    result: Result<O, SdkError<E, HttpResponse>>,
) -> Result<bool, Classified>
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    match result {
        Ok(_) => Ok(true),
        Err(e) => match classify(&e) {
            c if c.kind == ErrorKind::ConditionFailed => Ok(false),
            c => Err(c),
        },
    }
}

fn kind_of(code: &str, status: Option<u16>) -> ErrorKind {
    match code {
        "TrimmedDataAccessException" => ErrorKind::Trimmed,
        "ExpiredIteratorException" => ErrorKind::ExpiredIterator,
        "ResourceNotFoundException" => ErrorKind::NotFound,
        "ConditionalCheckFailedException" => ErrorKind::ConditionFailed,
        "ResourceInUseException" => ErrorKind::ResourceInUse,
        "ValidationException" => ErrorKind::Validation,
        c if THROTTLE_CODES.contains(&c) => ErrorKind::Throttled,
        c if TRANSIENT_CODES.contains(&c) => ErrorKind::Transient,
        _ => match status {
            Some(429) => ErrorKind::Throttled,
            Some(s) if s >= 500 => ErrorKind::Transient,
            _ => ErrorKind::Other,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn setup_errors_say_what_to_fix_and_are_not_retried() {
        for (code, names) in [
            ("AccessDeniedException", "daemon-policy.json"),
            ("UnrecognizedClientException", "AWS_ACCESS_KEY_ID"),
            ("ExpiredTokenException", "AWS_SESSION_TOKEN"),
            ("InvalidSignatureException", "AWS_SECRET_ACCESS_KEY"),
            ("MissingAuthenticationTokenException", "AWS_PROFILE"),
        ] {
            let hint = setup_hint(code).unwrap_or_default();
            assert!(hint.contains(names), "{code}: {hint}");
            assert_eq!(kind_of(code, Some(400)), ErrorKind::Other, "{code}");
        }
        assert_eq!(setup_hint("ValidationException"), None);
    }

    #[test]
    fn codes_map_to_kinds() {
        for (code, status, kind) in [
            ("LimitExceededException", 400, ErrorKind::Throttled),
            (
                "ProvisionedThroughputExceededException",
                400,
                ErrorKind::Throttled,
            ),
            ("RequestLimitExceeded", 400, ErrorKind::Throttled),
            ("InternalServerError", 500, ErrorKind::Transient),
            ("Whatever", 503, ErrorKind::Transient),
            ("", 429, ErrorKind::Throttled),
            ("AccessDeniedException", 400, ErrorKind::Other),
            ("TrimmedDataAccessException", 400, ErrorKind::Trimmed),
        ] {
            assert_eq!(kind_of(code, Some(status)), kind, "{code} {status}");
        }
    }
}
