//! S3 + DynamoDB backend.
//!
//! * [`DynamoItemStore`] implements [`super::ItemStore`] over one DynamoDB table (`PK`/`SK` string
//!   keys, four GSIs `GSI1`..`GSI4` keyed `GSInPK`/`GSInSK`, every attribute a string).
//! * [`S3BlobStore`] implements [`super::BlobStore`] over one S3 bucket.
//! * [`sdk_config`] and [`clients`] build both SDK clients from the environment (honouring
//!   `AWS_ENDPOINT_URL`, `AWS_ENDPOINT_URL_DYNAMODB`, `AWS_ENDPOINT_URL_S3`).
//! * [`RequestCounter`] is an SDK interceptor that counts every request attempt sent, keyed
//!   `"<service>.<operation>"` (`"DynamoDB.Query"`, `"S3.PutObject"`, ...).
//!
//! SDK errors are mapped to [`crate::Error`] in one function per SDK ([`dynamo_error`],
//! [`s3_error`]).

use std::error::Error as StdError;

use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::display::DisplayErrorContext;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;

use crate::error::Error;

mod counter;
mod dynamo;
mod events;
mod s3;
#[cfg(test)]
mod tests;

pub use counter::RequestCounter;
pub use dynamo::DynamoItemStore;
pub use events::EventBridgePublisher;
pub use s3::S3BlobStore;

/// Loads the SDK configuration from the environment (region, credentials, endpoints), with the
/// SDK's own retries OFF (one attempt): throttling and transient failures are retried by the
/// one retry layer of the core ([`crate::retry`], applied by [`crate::backend::retry`]), so the
/// two do not multiply. Load it once per process (a Lambda cold start, a CLI run) and build every
/// client from it.
pub async fn sdk_config() -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .http_client(https_client())
        .retry_config(aws_config::retry::RetryConfig::standard().with_max_attempts(1))
        .load()
        .await
}

/// The HTTPS client of every SDK client: hyper with rustls over ring, the system's trusted roots,
/// the proxy from the environment (`HTTPS_PROXY`, `NO_PROXY`, ...), connector settings (timeouts)
/// and sleep from each SDK client. It is what the SDK's `default-https-client` feature builds,
/// but with ring instead of aws-lc-rs: one small crypto library (the Lambda binaries are smaller
/// and build faster). [`sdk_config`] sets it; an SDK config loaded elsewhere must set it too
/// (`.http_client(https_client())`): the SDK crates are built without a default client.
pub fn https_client() -> aws_smithy_runtime_api::client::http::SharedHttpClient {
    use aws_smithy_http_client::tls::{rustls_provider::CryptoMode, Provider};
    use aws_smithy_http_client::{proxy::ProxyConfig, Builder, ConnectorBuilder};
    Builder::new().build_with_connector_fn(|settings, components| {
        let mut connector =
            ConnectorBuilder::default().tls_provider(Provider::Rustls(CryptoMode::Ring));
        connector.set_connector_settings(settings.cloned());
        if let Some(components) = components {
            connector.set_sleep_impl(components.sleep_impl());
        }
        connector.set_proxy_config(Some(ProxyConfig::from_env()));
        connector.build()
    })
}

/// True when a custom endpoint is configured for S3 (an emulator such as LocalStack).
fn s3_endpoint_configured(sdk: &aws_config::SdkConfig) -> bool {
    let env_set = |name: &str| {
        std::env::var(name)
            .map(|v| !v.trim().is_empty())
            .unwrap_or(false)
    };
    sdk.endpoint_url().is_some() || env_set("AWS_ENDPOINT_URL_S3") || env_set("AWS_ENDPOINT_URL")
}

/// Builds the DynamoDB and S3 clients from one shared configuration. S3 uses path-style
/// addressing whenever a custom endpoint is configured (virtual-host style fails against
/// `http://localhost:4566`). The interceptor, when given, is added to both clients.
pub fn clients(
    sdk: &aws_config::SdkConfig,
    interceptor: Option<RequestCounter>,
) -> (aws_sdk_dynamodb::Client, aws_sdk_s3::Client) {
    let mut ddb = aws_sdk_dynamodb::config::Builder::from(sdk);
    if let Some(counter) = &interceptor {
        ddb = ddb.interceptor(counter.clone());
    }
    (
        aws_sdk_dynamodb::Client::from_conf(ddb.build()),
        s3_client(sdk, interceptor),
    )
}

/// The S3 client alone (path-style addressing when a custom endpoint is configured).
pub fn s3_client(
    sdk: &aws_config::SdkConfig,
    interceptor: Option<RequestCounter>,
) -> aws_sdk_s3::Client {
    let mut s3 = aws_sdk_s3::config::Builder::from(sdk);
    if s3_endpoint_configured(sdk) {
        s3 = s3.force_path_style(true);
    }
    if let Some(counter) = interceptor {
        s3 = s3.interceptor(counter);
    }
    aws_sdk_s3::Client::from_conf(s3.build())
}

/// Error codes that mean "slow down" on either service.
const THROTTLING_CODES: &[&str] = &[
    "ProvisionedThroughputExceededException",
    "ThrottlingException",
    "Throttling",
    "ThrottledException",
    "RequestLimitExceeded",
    "RequestThrottled",
    "RequestThrottledException",
    "TooManyRequestsException",
    "LimitExceededException",
    "TransactionConflictException",
    "TransactionInProgressException",
    "SlowDown",
];

/// What the two per-SDK mappers share: transport failures, throttling, 5xx and the fallback.
fn classify_common<E>(service: &str, op: &str, err: &SdkError<E, HttpResponse>) -> Error
where
    E: ProvideErrorMetadata + StdError + Send + Sync + 'static,
{
    match err {
        SdkError::ServiceError(_) => {
            let code = err.code().unwrap_or("");
            let message = err.message().unwrap_or("");
            let status = err.raw_response().map(|r| r.status().as_u16());
            let text = format!(
                "{service}.{op} failed: {}{}{}",
                if code.is_empty() {
                    "unknown error"
                } else {
                    code
                },
                if message.is_empty() { "" } else { ": " },
                message
            );
            if THROTTLING_CODES.contains(&code) || status == Some(503) || status == Some(429) {
                Error::Throttled(text)
            } else {
                let status = status.map(|s| format!(" (HTTP {s})")).unwrap_or_default();
                Error::Unavailable(format!("{text}{status}"))
            }
        }
        SdkError::TimeoutError(_) => Error::Unavailable(format!("{service}.{op} timed out")),
        SdkError::DispatchFailure(_) => Error::Unavailable(format!(
            "{service}.{op} could not be sent: {}",
            DisplayErrorContext(err)
        )),
        SdkError::ResponseError(_) => Error::Unavailable(format!(
            "{service}.{op} returned an unreadable response: {}",
            DisplayErrorContext(err)
        )),
        _ => Error::Unavailable(format!(
            "{service}.{op} failed: {}",
            DisplayErrorContext(err)
        )),
    }
}

/// Maps any EventBridge operation error (throttling → `Throttled`, anything else → `Unavailable`).
pub(crate) fn classify_eventbridge<E>(
    op: &str,
    err: aws_sdk_eventbridge::error::SdkError<E>,
) -> Error
where
    E: ProvideErrorMetadata + StdError + Send + Sync + 'static,
{
    classify_common("EventBridge", op, &err)
}

/// Maps a KMS operation error (throttling → `Throttled`, anything else → `Unavailable`); the
/// envelope module maps the key errors of `Decrypt` to `Integrity` first.
pub(crate) fn classify_kms<E>(op: &str, err: &aws_sdk_kms::error::SdkError<E>) -> Error
where
    E: ProvideErrorMetadata + StdError + Send + Sync + 'static,
{
    classify_common("KMS", op, err)
}

/// Maps a Secrets Manager operation error (throttling → `Throttled`, anything else →
/// `Unavailable`).
pub(crate) fn classify_secrets<E>(
    op: &str,
    err: &aws_sdk_secretsmanager::error::SdkError<E>,
) -> Error
where
    E: ProvideErrorMetadata + StdError + Send + Sync + 'static,
{
    classify_common("SecretsManager", op, err)
}

/// Maps any DynamoDB operation error to the core's error.
///
/// `ConditionalCheckFailedException` → `ConditionFailed { ops: [0] }`; throttling codes and HTTP
/// 503 → `Throttled`; transport failures, timeouts, 5xx and anything else → `Unavailable` (with
/// the code and message). Transaction cancellations are interpreted by the caller (it knows the
/// operation indexes) before falling back to this function.
pub fn dynamo_error<E>(op: &str, err: aws_sdk_dynamodb::error::SdkError<E>) -> Error
where
    E: ProvideErrorMetadata + StdError + Send + Sync + 'static,
{
    if err.code() == Some("ConditionalCheckFailedException") {
        return Error::ConditionFailed { ops: vec![0] };
    }
    classify_common("DynamoDB", op, &err)
}

/// Maps any S3 operation error to the core's error.
///
/// `NoSuchKey` → `NotFound`; `InvalidObjectState` (object in an archive storage class) →
/// `Archived`; a checksum mismatch on upload (`BadDigest`, `XAmzContentSHA256Mismatch`, ...) →
/// `Integrity`; throttling (`SlowDown`, HTTP 503) → `Throttled`; everything else →
/// `Unavailable`. `what` names the object (bucket/key) for the message.
pub fn s3_error<E>(op: &str, what: &str, err: aws_sdk_s3::error::SdkError<E>) -> Error
where
    E: ProvideErrorMetadata + StdError + Send + Sync + 'static,
{
    match err.code() {
        Some("NoSuchKey") | Some("NotFound") => {
            return Error::NotFound(format!("no blob at {what}"));
        }
        Some("InvalidObjectState") | Some("ObjectNotInActiveTierError") => {
            return Error::Archived(format!("blob {what} is in archive storage"));
        }
        Some(
            code @ ("BadDigest"
            | "InvalidDigest"
            | "XAmzContentSHA256Mismatch"
            | "XAmzContentChecksumMismatch"),
        ) => {
            return Error::Integrity(format!(
                "S3.{op} rejected {what}: {code}: {}",
                err.message().unwrap_or("checksum mismatch")
            ));
        }
        _ => {}
    }
    classify_common("S3", op, &err)
}

/// Wraps an SDK builder error (a missing required field: a bug of ours).
fn build_error(err: aws_smithy_types::error::operation::BuildError) -> Error {
    Error::Internal(format!("building an AWS request failed: {err}"))
}

#[cfg(test)]
mod mapping_tests {
    use aws_sdk_dynamodb::operation::get_item::GetItemError;
    use aws_sdk_s3::operation::get_object::GetObjectError;
    use aws_smithy_runtime_api::client::result::ConnectorError;
    use aws_smithy_runtime_api::http::{Response, StatusCode};
    use aws_smithy_types::body::SdkBody;
    use aws_smithy_types::error::ErrorMetadata;

    use super::*;

    fn response(status: u16) -> HttpResponse {
        Response::new(StatusCode::try_from(status).unwrap(), SdkBody::empty())
    }

    fn ddb(code: &str, status: u16) -> Error {
        let meta = ErrorMetadata::builder().code(code).message("msg").build();
        dynamo_error(
            "GetItem",
            SdkError::service_error(GetItemError::generic(meta), response(status)),
        )
    }

    fn s3(code: &str, status: u16) -> Error {
        let meta = ErrorMetadata::builder().code(code).message("msg").build();
        s3_error(
            "GetObject",
            "b/k",
            SdkError::service_error(GetObjectError::generic(meta), response(status)),
        )
    }

    #[test]
    fn dynamo_errors_map() {
        assert!(matches!(
            ddb("ProvisionedThroughputExceededException", 400),
            Error::Throttled(_)
        ));
        assert!(matches!(
            ddb("ThrottlingException", 400),
            Error::Throttled(_)
        ));
        assert!(matches!(
            ddb("RequestLimitExceeded", 400),
            Error::Throttled(_)
        ));
        assert!(matches!(ddb("Whatever", 503), Error::Throttled(_)));
        match ddb("ConditionalCheckFailedException", 400) {
            Error::ConditionFailed { ops } => assert_eq!(ops, vec![0]),
            other => panic!("{other:?}"),
        }
        match ddb("ValidationException", 400) {
            Error::Unavailable(m) => assert!(m.contains("ValidationException: msg"), "{m}"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            ddb("InternalServerError", 500),
            Error::Unavailable(_)
        ));
        let dispatch: aws_sdk_dynamodb::error::SdkError<GetItemError> =
            SdkError::dispatch_failure(ConnectorError::io("connection refused".into()));
        assert!(matches!(
            dynamo_error("GetItem", dispatch),
            Error::Unavailable(_)
        ));
        let timeout: aws_sdk_dynamodb::error::SdkError<GetItemError> =
            SdkError::timeout_error("slow");
        assert!(matches!(
            dynamo_error("GetItem", timeout),
            Error::Unavailable(_)
        ));
    }

    #[test]
    fn s3_errors_map() {
        assert!(matches!(s3("NoSuchKey", 404), Error::NotFound(_)));
        assert!(matches!(s3("InvalidObjectState", 403), Error::Archived(_)));
        assert!(matches!(s3("SlowDown", 503), Error::Throttled(_)));
        assert!(matches!(s3("BadDigest", 400), Error::Integrity(_)));
        assert!(matches!(s3("AccessDenied", 403), Error::Unavailable(_)));
        assert!(matches!(s3("", 500), Error::Unavailable(_)));
    }
}
