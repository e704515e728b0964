//! HTTP helpers: JSON bodies in, JSON replies out, ids from paths.

use crate::error::{ApiError, ApiResult};
use lambda_http::http::{header, HeaderValue, StatusCode};
use lambda_http::{Body, Response};
use serde::{de::DeserializeOwned, Serialize};
use uuid::Uuid;

/// Largest request body any management route accepts.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// Fields whose values must never appear in an error message.
const SECRET_FIELDS: [&str; 1] = ["secretAccessKey"];

/// A successful reply: always 200 with a JSON body (the API has no 201/204).
#[derive(Debug)]
pub struct Reply {
    pub body: String,
    pub headers: Vec<(header::HeaderName, HeaderValue)>,
}

impl Reply {
    pub fn json<T: Serialize>(value: &T) -> ApiResult<Self> {
        let body = serde_json::to_string(value)
            .map_err(|e| ApiError::Internal(format!("cannot encode reply: {e}")))?;
        Ok(Self {
            body,
            headers: Vec::new(),
        })
    }

    /// `{}`: what deletions answer.
    pub fn empty_object() -> Self {
        Self {
            body: "{}".into(),
            headers: Vec::new(),
        }
    }

    pub fn with_header(mut self, name: header::HeaderName, value: &str) -> ApiResult<Self> {
        let value = HeaderValue::from_str(value)
            .map_err(|e| ApiError::Internal(format!("bad header value: {e}")))?;
        self.headers.push((name, value));
        Ok(self)
    }

    pub fn into_response(self) -> Response<Body> {
        let mut response = Response::new(Body::from(self.body));
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        for (name, value) in self.headers {
            headers.insert(name, value);
        }
        response
    }
}

/// The `{"code","message"}` response for an error.
pub fn error_response(err: &ApiError) -> Response<Body> {
    let body = serde_json::to_string(&err.body()).unwrap_or_else(|_| {
        r#"{"code":"internalServerError","message":"the server failed to encode an error"}"#.into()
    });
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = err.status();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if err.status() == StatusCode::UNAUTHORIZED {
        headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    response
}

/// Parses a JSON request body into `T` (which should deny unknown fields).
/// With `empty_is_object`, an empty body reads as `{}`. The error says where and
/// what, but never echoes the value of a secret field.
pub fn parse_json<T: DeserializeOwned>(body: &[u8], empty_is_object: bool) -> ApiResult<T> {
    if body.len() > MAX_BODY_BYTES {
        return Err(ApiError::PayloadTooLarge {
            limit: MAX_BODY_BYTES,
        });
    }
    let body: &[u8] = if empty_is_object && body.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        body
    };
    let mut de = serde_json::Deserializer::from_slice(body);
    let value: T = serde_path_to_error::deserialize(&mut de).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.inner();
        let message = if SECRET_FIELDS.iter().any(|f| path == *f) {
            format!("invalid value for {path}: expected a string")
        } else if inner.is_syntax() || inner.is_eof() {
            format!("request body is not valid JSON: {inner}")
        } else if path == "." || path.is_empty() {
            format!("invalid request body: {inner}")
        } else {
            format!("invalid request body at {path}: {inner}")
        };
        ApiError::InvalidRequestBody(message)
    })?;
    de.end().map_err(|e| {
        ApiError::InvalidRequestBody(format!("request body is not valid JSON: {e}"))
    })?;
    Ok(value)
}

/// Parses a path id. Ids are hyphenated UUIDs, in any case.
pub fn parse_id(name: &'static str, value: &str) -> ApiResult<Uuid> {
    let invalid = || ApiError::InvalidId {
        name,
        value: value.chars().take(64).collect(),
    };
    if value.len() != 36 {
        return Err(invalid());
    }
    Uuid::try_parse(value).map_err(|_| invalid())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    #[allow(dead_code)]
    struct Body {
        description: Option<String>,
        secret_access_key: Option<String>,
    }

    fn err(body: &str, empty_ok: bool) -> String {
        match parse_json::<Body>(body.as_bytes(), empty_ok) {
            Err(ApiError::InvalidRequestBody(m)) => m,
            other => panic!("expected invalidRequestBody, got {other:?}"),
        }
    }

    #[test]
    fn body_errors_are_clear() {
        assert!(err("{", false).starts_with("request body is not valid JSON"));
        assert!(err("", false).starts_with("request body is not valid JSON"));
        assert!(err("{\"nope\": 1}", false).contains("unknown field `nope`"));
        assert!(err("{\"description\": 5}", false).contains("at description"));
        assert!(err("[]", false).starts_with("invalid request body"));
        assert!(err("{} {}", false).contains("trailing characters"));
        assert!(parse_json::<Body>(b"", true).is_ok());
        assert!(parse_json::<Body>(b"{\"description\": null}", false).is_ok());
    }

    #[test]
    fn secret_values_are_never_echoed() {
        let message = err("{\"secretAccessKey\": 123456789}", false);
        assert!(!message.contains("123456789"), "{message}");
        let message = err("{\"secretAccessKey\": true}", false);
        assert_eq!(
            message,
            "invalid value for secretAccessKey: expected a string"
        );
    }

    #[test]
    fn oversize_bodies_are_413() {
        let big = vec![b' '; MAX_BODY_BYTES + 1];
        assert!(matches!(
            parse_json::<Body>(&big, true),
            Err(ApiError::PayloadTooLarge { .. })
        ));
    }

    #[test]
    fn ids_must_be_hyphenated_uuids() {
        let id = Uuid::new_v4();
        assert_eq!(parse_id("databaseId", &id.to_string()).unwrap(), id);
        assert_eq!(
            parse_id("databaseId", &id.to_string().to_uppercase()).unwrap(),
            id
        );
        for bad in [
            "",
            "abc",
            &id.simple().to_string(),
            &format!("{{{id}}}"),
            &format!("{id}0"),
        ] {
            assert!(parse_id("databaseId", bad).is_err(), "{bad}");
        }
    }
}
