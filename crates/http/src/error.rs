//! Errors in OpenAI's shape: `{"error": {"message", "type", "param", "code"}}`.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use switchyard_runtime::engine::SubmitError;

/// An error answered to the client.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Human-readable; names the offending value.
    pub message: String,
    /// The request field at fault, when one is.
    pub param: Option<String>,
    /// A machine-readable code (OpenAI's where one exists).
    pub code: Option<&'static str>,
    /// Seconds for `Retry-After` (429 and 503).
    pub retry_after: Option<u32>,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            param: None,
            code: None,
            retry_after: None,
        }
    }

    /// 400 about `param`.
    pub fn invalid(param: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            param: Some(param.into()),
            ..Self::new(StatusCode::BAD_REQUEST, message)
        }
    }

    /// 400 without a single parameter at fault (e.g. malformed JSON).
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    /// 400: a parameter we do not support.
    pub fn unsupported(param: &str, why: &str) -> Self {
        Self {
            code: Some("unsupported_parameter"),
            ..Self::invalid(
                param,
                format!("parameter `{param}` is not supported by this server{why}"),
            )
        }
    }

    /// 401: missing or wrong API key.
    pub fn unauthorized() -> Self {
        Self {
            code: Some("invalid_api_key"),
            ..Self::new(
                StatusCode::UNAUTHORIZED,
                "incorrect or missing API key: send `Authorization: Bearer <key>` (or `x-api-key: <key>`)",
            )
        }
    }

    /// 404: unknown model.
    pub fn model_not_found(model: &str) -> Self {
        Self {
            param: Some("model".into()),
            code: Some("model_not_found"),
            ..Self::new(
                StatusCode::NOT_FOUND,
                format!("the model `{model}` does not exist"),
            )
        }
    }

    /// 404: `param` names nothing this server has (a stored response's id).
    pub fn not_found(param: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            param: Some(param.into()),
            code: Some("not_found"),
            ..Self::new(StatusCode::NOT_FOUND, message)
        }
    }

    /// 404: unknown route.
    pub fn route_not_found(method: &str, path: &str) -> Self {
        Self {
            code: Some("not_found"),
            ..Self::new(StatusCode::NOT_FOUND, format!("no route {method} {path}"))
        }
    }

    /// 405: known route, wrong method.
    pub fn method_not_allowed(method: &str, path: &str) -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("method {method} is not allowed on {path}"),
        )
    }

    /// 413: body above the limit.
    pub fn too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body is larger than the limit of {limit} bytes"),
        )
    }

    /// 408: the client did not send the whole body in time.
    pub fn body_timeout(timeout: std::time::Duration) -> Self {
        Self {
            code: Some("request_timeout"),
            ..Self::new(
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "the request body was not received within {:.1} s",
                    timeout.as_secs_f64()
                ),
            )
        }
    }

    /// 429: admission limit reached.
    pub fn overloaded(message: impl Into<String>) -> Self {
        Self {
            code: Some("rate_limit_exceeded"),
            retry_after: Some(1),
            ..Self::new(StatusCode::TOO_MANY_REQUESTS, message)
        }
    }

    /// 503: shutting down (or the engine is gone).
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self {
            retry_after: Some(5),
            ..Self::new(StatusCode::SERVICE_UNAVAILABLE, message)
        }
    }

    /// 500.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }

    /// OpenAI's `type` for the status.
    fn kind(&self) -> &'static str {
        match self.status.as_u16() {
            400 | 404 | 405 | 408 | 413 => "invalid_request_error",
            401 => "authentication_error",
            429 => "rate_limit_error",
            503 => "service_unavailable",
            _ => "server_error",
        }
    }

    /// The JSON body.
    pub fn body(&self) -> serde_json::Value {
        json!({
            "error": {
                "message": self.message,
                "type": self.kind(),
                "param": self.param,
                "code": self.code,
            }
        })
    }

    /// Engine refusals, with the request field they are about (`prompt` or `messages`).
    pub fn from_submit(e: SubmitError, prompt_field: &str) -> Self {
        let msg = e.to_string();
        match e {
            SubmitError::Stopped => Self::unavailable(msg),
            SubmitError::EmptyPrompt | SubmitError::TokenOutOfRange { .. } => {
                Self::invalid(prompt_field, msg)
            }
            SubmitError::ContextTooLong { .. } => Self {
                code: Some("context_length_exceeded"),
                ..Self::invalid(prompt_field, msg)
            },
            SubmitError::ZeroMaxTokens => Self::invalid("max_tokens", msg),
            SubmitError::MinAboveMax { .. } => Self::invalid("min_tokens", msg),
            SubmitError::BadN { .. } => Self::invalid("n", msg),
            SubmitError::TooManyLogprobs { field, .. } => Self::invalid(field, msg),
            SubmitError::BadSampling { param, .. } => Self::invalid(param, msg),
            SubmitError::EmptyStop => Self::invalid("stop", msg),
            SubmitError::BadEmbedding(_) => Self::invalid(prompt_field, msg),
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.status, self.message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (self.status, axum::Json(self.body())).into_response();
        if let Some(s) = self.retry_after {
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shape_and_retry_after() {
        let e = ApiError::overloaded("busy");
        let b = e.body();
        assert_eq!(b["error"]["type"], "rate_limit_error");
        assert_eq!(b["error"]["message"], "busy");
        assert!(b["error"]["param"].is_null());
        let r = e.into_response();
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(r.headers()[header::RETRY_AFTER], "1");
        let e = ApiError::unsupported("suffix", "");
        assert_eq!(e.body()["error"]["param"], "suffix");
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
    }
}
