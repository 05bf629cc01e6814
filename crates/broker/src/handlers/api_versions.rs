//! ApiVersions: advertises exactly the APIs in `SUPPORTED`.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{ApiVersionsResponse, ResponseKind};

use super::SUPPORTED;

pub(crate) fn handle() -> ApiVersionsResponse {
    let mut response = ApiVersionsResponse::default();
    response.api_keys = SUPPORTED
        .iter()
        .map(|&(key, min, max)| {
            ApiVersion::default().with_api_key(key as i16).with_min_version(min).with_max_version(max)
        })
        .collect();
    response
}

/// The v0-encodable answer to an ApiVersions request of a version we don't know.
pub(crate) fn unsupported_version_response() -> ResponseKind {
    let mut response = handle();
    response.error_code = ResponseError::UnsupportedVersion.code();
    ResponseKind::ApiVersions(response)
}
