//! The API's one error shape: `{"success":false,"error":{"code","message"},"timestamp"}`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

/// An API error: status, stable code, and a message saying what to do instead.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    retry_after: Option<std::time::Duration>,
}

impl ApiError {
    /// A new error.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError { status, code, message: message.into(), retry_after: None }
    }

    /// The same error telling the client when to try again (`Retry-After`, whole seconds, ≥ 1).
    pub fn retry_after(self, wait: std::time::Duration) -> ApiError {
        ApiError { retry_after: Some(wait), ..self }
    }

    /// The stable code.
    pub fn code(&self) -> &'static str {
        self.code
    }

    /// 400 with `code`.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, code, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({
            "success": false,
            "error": {"code": self.code, "message": self.message},
            "timestamp": hubbub_proto::time::now_iso(),
        });
        let mut res = (self.status, axum::Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            res.headers_mut().insert("www-authenticate", axum::http::HeaderValue::from_static("Bearer"));
        }
        if let Some(wait) = self.retry_after {
            let secs = crate::access::rate::retry_after_secs(wait);
            res.headers_mut().insert(axum::http::header::RETRY_AFTER, axum::http::HeaderValue::from(secs));
        }
        res
    }
}
