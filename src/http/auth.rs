//! Who may use the API: bearer tokens in two roles (write implies read), checked in
//! middleware before a request's body is read, with a per-token rate limit.
//!
//! - No `Authorization` header, another scheme, or an unknown token: 401.
//! - A read token on a write route: 403.
//! - Over the token's rate: 429 with `Retry-After`.
//!
//! Tokens are compared in constant time, against every configured token (no early exit).
//!
//! Over 400 lines with its unit tests; the code itself is under 300.

use std::{
    collections::HashMap,
    path::Path,
    sync::{Arc, Mutex},
    time::Instant,
};

use axum::{
    extract::{Request, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use serde_json::json;

use crate::config::{ApiSettings, Secret};

/// What a route needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    Read,
    Write,
}

/// Why the tokens could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    #[error("cannot read the token file {path}: {source}")]
    File {
        path: String,
        source: std::io::Error,
    },
    #[error("the token file {path} holds no token")]
    EmptyFile { path: String },
    #[error(
        "no API token configured: set SWARM_API_TOKEN (or SWARM_API_TOKEN_FILE, \
         api.write_tokens) — or start with --insecure-no-auth to serve without authentication"
    )]
    NoToken,
}

/// The API's tokens, or none at all when authentication was switched off on purpose.
pub struct Access {
    /// `None`: insecure, everything allowed.
    tokens: Option<Vec<(Secret, Role)>>,
    limiter: RateLimiter,
}

impl Access {
    /// The tokens of `settings` (lists and files). Refuses to build an open API unless
    /// `insecure_no_auth` says so.
    pub fn from_settings(settings: &ApiSettings) -> Result<Self, CredentialsError> {
        let limiter = RateLimiter::new(settings.rate_limit_per_sec);
        if settings.insecure_no_auth {
            return Ok(Self {
                tokens: None,
                limiter,
            });
        }
        let mut tokens: Vec<(Secret, Role)> = Vec::new();
        tokens.extend(
            settings
                .write_tokens
                .iter()
                .map(|t| (t.clone(), Role::Write)),
        );
        tokens.extend(settings.read_tokens.iter().map(|t| (t.clone(), Role::Read)));
        if let Some(path) = &settings.write_token_file {
            tokens.extend(tokens_in_file(path)?.into_iter().map(|t| (t, Role::Write)));
        }
        if let Some(path) = &settings.read_token_file {
            tokens.extend(tokens_in_file(path)?.into_iter().map(|t| (t, Role::Read)));
        }
        tokens.retain(|(t, _)| !t.expose().is_empty());
        if tokens.is_empty() {
            return Err(CredentialsError::NoToken);
        }
        Ok(Self {
            tokens: Some(tokens),
            limiter,
        })
    }

    /// Tokens given directly (tests, embedding).
    pub fn with_tokens(write: &[&str], read: &[&str], rate_limit_per_sec: f64) -> Self {
        let mut tokens: Vec<(Secret, Role)> = write
            .iter()
            .map(|t| (Secret::new(*t), Role::Write))
            .collect();
        tokens.extend(read.iter().map(|t| (Secret::new(*t), Role::Read)));
        Self {
            tokens: Some(tokens),
            limiter: RateLimiter::new(rate_limit_per_sec),
        }
    }

    /// No authentication at all.
    pub fn insecure() -> Self {
        Self {
            tokens: None,
            limiter: RateLimiter::new(0.0),
        }
    }

    /// True when anyone may do anything.
    pub fn is_insecure(&self) -> bool {
        self.tokens.is_none()
    }

    /// Which configured token `headers` carry and its role, or why none.
    fn authenticate(&self, headers: &HeaderMap) -> Result<Option<(usize, Role)>, Denied> {
        let Some(tokens) = &self.tokens else {
            return Ok(None);
        };
        let given = bearer(headers).ok_or(Denied::Unauthenticated)?;
        let mut found = None;
        for (index, (token, role)) in tokens.iter().enumerate() {
            if constant_time_eq(given.as_bytes(), token.expose().as_bytes()) && found.is_none() {
                found = Some((index, *role));
            }
        }
        found.map(Some).ok_or(Denied::Unauthenticated)
    }

    /// Admits a request that needs `needed`, or says why not.
    fn admit(&self, headers: &HeaderMap, needed: Role) -> Result<(), Denied> {
        let Some((token, role)) = self.authenticate(headers)? else {
            return Ok(());
        };
        if needed == Role::Write && role == Role::Read {
            return Err(Denied::Forbidden);
        }
        self.limiter.take(token).map_err(Denied::RateLimited)
    }
}

impl Access {
    /// Who a request with `headers` acts as, for records such as `cancelled_by`: the
    /// position of its token among the configured ones (`token #2`), never the token.
    pub fn caller(&self, headers: &HeaderMap) -> String {
        match self.authenticate(headers) {
            Ok(Some((index, role))) => {
                let role = if role == Role::Write { "write" } else { "read" };
                format!("{role} token #{}", index + 1)
            }
            _ => "anonymous".into(),
        }
    }
}

/// The token of an `Authorization: Bearer <token>` header (the scheme in any case).
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

fn tokens_in_file(path: &Path) -> Result<Vec<Secret>, CredentialsError> {
    let text = std::fs::read_to_string(path).map_err(|source| CredentialsError::File {
        path: path.display().to_string(),
        source,
    })?;
    let tokens: Vec<Secret> = text
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(Secret::new)
        .collect();
    if tokens.is_empty() {
        return Err(CredentialsError::EmptyFile {
            path: path.display().to_string(),
        });
    }
    Ok(tokens)
}

/// Compares without stopping at the first difference, so timing tells nothing.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut difference = a.len() ^ b.len();
    for (i, byte) in b.iter().enumerate() {
        difference |= usize::from(a.get(i).copied().unwrap_or(0) ^ byte);
    }
    difference == 0
}

/// Why a request was turned away.
#[derive(Debug, PartialEq)]
enum Denied {
    Unauthenticated,
    Forbidden,
    /// Seconds until the token may ask again.
    RateLimited(u64),
}

impl IntoResponse for Denied {
    fn into_response(self) -> Response {
        let (status, code, message) = match self {
            Denied::Unauthenticated => (
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "a valid `Authorization: Bearer <token>` header is required".to_string(),
            ),
            Denied::Forbidden => (
                StatusCode::FORBIDDEN,
                "forbidden",
                "this token may only read; publishing and replaying need a write token".to_string(),
            ),
            Denied::RateLimited(after) => (
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                format!("too many requests for this token; retry in {after} s"),
            ),
        };
        let body = json!({ "error": { "code": code, "message": message } });
        let mut response = (status, axum::Json(body)).into_response();
        match self {
            Denied::Unauthenticated => {
                response
                    .headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            Denied::RateLimited(after) => {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(after));
            }
            Denied::Forbidden => {}
        }
        response
    }
}

/// Middleware: lets the request through only with a token of the role it needs. Runs as a
/// route layer, before the handler's extractors, so a refused request's body is never read.
pub async fn require(
    State((access, needed)): State<(Arc<Access>, Role)>,
    request: Request,
    next: Next,
) -> Response {
    match access.admit(request.headers(), needed) {
        Ok(()) => next.run(request).await,
        Err(denied) => denied.into_response(),
    }
}

/// A token bucket per token: `rate` requests a second, bursts of `2 × rate`.
struct RateLimiter {
    rate: f64,
    buckets: Mutex<HashMap<usize, (f64, Instant)>>,
}

impl RateLimiter {
    fn new(rate: f64) -> Self {
        Self {
            rate,
            buckets: Mutex::default(),
        }
    }

    /// Takes one request from `token`'s bucket, or says in how many seconds one is free.
    fn take(&self, token: usize) -> Result<(), u64> {
        if self.rate <= 0.0 {
            return Ok(());
        }
        let burst = (self.rate * 2.0).max(1.0);
        let now = Instant::now();
        let mut buckets = self.buckets.lock().expect("rate limiter lock");
        let (level, since) = buckets.entry(token).or_insert((burst, now));
        *level = (*level + now.duration_since(*since).as_secs_f64() * self.rate).min(burst);
        *since = now;
        if *level >= 1.0 {
            *level -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - *level) / self.rate).ceil().max(1.0) as u64)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn the_bearer_scheme_is_matched_in_any_case() {
        for value in ["Bearer abc", "bearer abc", "BEARER  abc ", "bEaReR abc"] {
            assert_eq!(bearer(&headers(value)), Some("abc"), "{value}");
        }
        for value in ["Basic abc", "Bearer", "Bearer ", "abc", "Bearerabc"] {
            assert_eq!(bearer(&headers(value)), None, "{value}");
        }
    }

    #[test]
    fn roles_decide_between_401_and_403() {
        let access = Access::with_tokens(&["w1", "w2"], &["r1"], 0.0);
        assert_eq!(access.admit(&headers("Bearer w2"), Role::Write), Ok(()));
        assert_eq!(access.admit(&headers("Bearer w1"), Role::Read), Ok(()));
        assert_eq!(access.admit(&headers("Bearer r1"), Role::Read), Ok(()));
        assert_eq!(
            access.admit(&headers("Bearer r1"), Role::Write),
            Err(Denied::Forbidden)
        );
        assert_eq!(
            access.admit(&headers("Bearer w3"), Role::Read),
            Err(Denied::Unauthenticated)
        );
        assert_eq!(
            access.admit(&HeaderMap::new(), Role::Read),
            Err(Denied::Unauthenticated)
        );
        assert_eq!(
            access.admit(&headers("Bearer w"), Role::Read),
            Err(Denied::Unauthenticated),
            "a prefix of a token is not the token"
        );
    }

    #[test]
    fn an_insecure_api_admits_anyone() {
        let access = Access::insecure();
        assert!(access.is_insecure());
        assert_eq!(access.admit(&HeaderMap::new(), Role::Write), Ok(()));
    }

    #[test]
    fn without_any_token_the_api_refuses_to_exist() {
        let settings = ApiSettings::default();
        assert!(matches!(
            Access::from_settings(&settings),
            Err(CredentialsError::NoToken)
        ));
        let insecure = ApiSettings {
            insecure_no_auth: true,
            ..ApiSettings::default()
        };
        assert!(Access::from_settings(&insecure).unwrap().is_insecure());
    }

    #[test]
    fn token_files_hold_one_token_per_line() {
        let dir = std::env::temp_dir().join(format!("swarm-tokens-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("write");
        std::fs::write(&file, "# rotated 2026-11-30\nnew-token\n\n  old-token  \n").unwrap();
        let empty = dir.join("empty");
        std::fs::write(&empty, "# nothing yet\n").unwrap();
        let settings = ApiSettings {
            write_token_file: Some(file),
            ..ApiSettings::default()
        };
        let access = Access::from_settings(&settings).unwrap();
        assert_eq!(
            access.admit(&headers("Bearer old-token"), Role::Write),
            Ok(())
        );
        assert_eq!(
            access.admit(&headers("Bearer new-token"), Role::Write),
            Ok(())
        );
        let settings = ApiSettings {
            write_token_file: Some(empty),
            ..ApiSettings::default()
        };
        assert!(matches!(
            Access::from_settings(&settings),
            Err(CredentialsError::EmptyFile { .. })
        ));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn each_token_has_its_own_rate() {
        let access = Access::with_tokens(&["a", "b"], &[], 1.0);
        assert_eq!(access.admit(&headers("Bearer a"), Role::Read), Ok(()));
        assert_eq!(access.admit(&headers("Bearer a"), Role::Read), Ok(()));
        assert_eq!(
            access.admit(&headers("Bearer a"), Role::Read),
            Err(Denied::RateLimited(1))
        );
        assert_eq!(access.admit(&headers("Bearer b"), Role::Read), Ok(()));
    }
}
