//! What requests are answered with when they fail, and the parsing every handler shares:
//! task ids in paths, JSON object bodies, optional query parameters.

use axum::{
    Json,
    extract::rejection::JsonRejection,
    http::StatusCode,
    response::{IntoResponse, Response},
};
use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;

/// An error as clients see it: a status, a stable code and a clear message.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    pub(super) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    /// A failure of ours: logged in full, reported without internals. A service that
    /// failed or is away is "unavailable, try again"; a server refusing a request this
    /// program built as malformed is a bug of ours that retrying cannot mend.
    pub(super) fn internal(what: &str, error: impl std::error::Error + 'static) -> Self {
        tracing::error!(%error, "{what}");
        if crate::fault::refused_as_malformed(&error) {
            return Self::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal_error",
                format!("{what}: the broker refused a request of ours (a bug, logged)"),
            );
        }
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            format!("{what}; try again"),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({ "error": { "code": self.code, "message": self.message } });
        (self.status, Json(body)).into_response()
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        let status = rejection.status();
        let code = if status == StatusCode::PAYLOAD_TOO_LARGE {
            "body_too_large"
        } else {
            "invalid_body"
        };
        Self::new(status, code, rejection.body_text())
    }
}

/// The task id a path names, or 400 `invalid_id`.
pub(super) fn task_id(text: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(text).map_err(|_| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_id",
            format!("{text:?} is not a task id"),
        )
    })
}

/// The body of a request that takes a JSON object of optional members: anything else (an
/// array, a member given as null — the contract has no nullable one — or a member of the
/// wrong shape) is 422 `invalid_body` naming what is wrong.
pub(super) fn object_body<T: serde::de::DeserializeOwned>(
    body: Result<Json<serde_json::Value>, JsonRejection>,
) -> Result<T, ApiError> {
    let Json(body) = body?;
    let invalid =
        |why: String| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_body", why);
    let Some(members) = body.as_object() else {
        return Err(invalid("the body must be a JSON object".into()));
    };
    if let Some((name, _)) = members.iter().find(|(_, value)| value.is_null()) {
        return Err(invalid(format!("{name}: null is not allowed")));
    }
    serde_path_to_error::deserialize(body)
        .map_err(|e| invalid(format!("{}: {}", e.path(), e.inner())))
}

/// A query parameter given empty (`?reason=`) is no filter, as forms send it.
pub(super) fn empty_is_none<'de, D, T>(de: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: std::str::FromStr,
    T::Err: std::fmt::Display,
{
    let text = String::deserialize(de)?;
    if text.is_empty() {
        return Ok(None);
    }
    text.parse().map(Some).map_err(serde::de::Error::custom)
}
