//! Values never printed whole: URLs that may carry a password, and tokens.

use std::fmt;

/// A connection URL that may hold a password; printing it never shows the password.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct SecretUrl(String);

impl SecretUrl {
    pub fn new(url: impl Into<String>) -> Self {
        Self(url.into())
    }

    /// The full URL, credentials included: pass it to a client, never to a log.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Every URL of a comma-separated list with its password and any secret-looking query
    /// parameter masked.
    fn redacted(&self) -> String {
        self.0
            .split(',')
            .map(redact_one_url)
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// Query parameters whose value is a secret (matched without regard to case).
const SECRET_PARAMETERS: [&str; 7] = [
    "password",
    "passwd",
    "pwd",
    "secret",
    "token",
    "sslpassword",
    "auth",
];

/// `scheme://user:password@host/path?password=x` -> `scheme://user:***@host/path?password=***`.
fn redact_one_url(url: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let mut out = match base.find("://").map(|i| i + 3) {
        Some(scheme_end) => {
            let rest = &base[scheme_end..];
            let authority_end = rest.find('/').unwrap_or(rest.len());
            match rest[..authority_end].rfind('@') {
                Some(at) => {
                    let userinfo = &rest[..at];
                    let masked = match userinfo.split_once(':') {
                        Some((user, _)) => format!("{user}:***"),
                        None => "***".to_string(),
                    };
                    format!("{}{masked}{}", &base[..scheme_end], &rest[at..])
                }
                None => base.to_string(),
            }
        }
        None => base.to_string(),
    };
    if let Some(query) = query {
        let masked: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((key, _))
                    if SECRET_PARAMETERS
                        .iter()
                        .any(|secret| key.eq_ignore_ascii_case(secret)) =>
                {
                    format!("{key}=***")
                }
                _ => pair.to_string(),
            })
            .collect();
        out.push('?');
        out.push_str(&masked.join("&"));
    }
    out
}

impl fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.redacted())
    }
}

impl fmt::Display for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

/// A secret that is not a URL (a token): never printed, not even in part.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(secret: impl Into<String>) -> Self {
        Self(secret.into())
    }

    /// The secret itself: pass it to a client or a comparison, never to a log.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"***\"")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_print_without_password() {
        let url = SecretUrl::new("postgres://app:s3cret@db:5432/x?sslmode=require");
        assert_eq!(
            url.to_string(),
            "postgres://app:***@db:5432/x?sslmode=require"
        );
        assert!(!format!("{url:?}").contains("s3cret"));
        assert_eq!(
            SecretUrl::new("redis://127.0.0.1:6379").to_string(),
            "redis://127.0.0.1:6379"
        );
    }

    #[test]
    fn every_url_of_a_list_and_secret_query_parameters_are_masked() {
        let url = SecretUrl::new(
            "nats://a:pw-one@n1:4222,nats://b:pw-two@n2:4222,nats://tok-three@n3:4222",
        );
        assert_eq!(
            url.to_string(),
            "nats://a:***@n1:4222,nats://b:***@n2:4222,nats://***@n3:4222"
        );
        let url = SecretUrl::new(
            "postgres://db/x?user=app&Password=pw-four&sslmode=verify-full&sslpassword=pw-five",
        );
        let shown = format!("{url} {url:?}");
        for secret in ["pw-four", "pw-five"] {
            assert!(!shown.contains(secret), "{shown}");
        }
        assert!(shown.contains("user=app") && shown.contains("sslmode=verify-full"));
    }
}
