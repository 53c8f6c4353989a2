//! Channel tokens: HS256 JWTs whose `channels` claim lists the channel names a holder
//! may use (`"orders"`, a prefix `"orders.*"`, or `"*"` for all), with `exp` honoured.
//! Sent as `Authorization: Bearer …` or, for browsers' EventSource and WebSocket that
//! cannot set headers, as `?token=…`.

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

/// The claims hopline reads.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    /// Allowed channel names; a name ending in `*` is a prefix.
    pub channels: Vec<String>,
    /// Expiry, Unix seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exp: Option<u64>,
    /// Subject (free text, for logs; presence shows it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    /// Free JSON about the client (presence shows it), e.g. `{"name": "Ada"}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub info: Option<serde_json::Value>,
}

impl Claims {
    /// Does this token allow `channel`?
    pub fn allows(&self, channel: &str) -> bool {
        self.channels.iter().any(|c| match c.strip_suffix('*') {
            Some(prefix) => channel.starts_with(prefix),
            None => c == channel,
        })
    }
}

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// No token was sent.
    #[error("a token is required (Authorization: Bearer JWT, or ?token=JWT)")]
    Missing,
    /// The token is malformed, badly signed, expired or lacks the `channels` claim.
    #[error("invalid token: {0}")]
    Invalid(String),
}

/// Verify an HS256 token with `secret`.
pub fn verify(token: &str, secret: &str) -> Result<Claims, TokenError> {
    let mut validation = Validation::new(Algorithm::HS256);
    validation.required_spec_claims.clear();
    validation.validate_exp = true;
    validation.leeway = 0;
    jsonwebtoken::decode::<Claims>(
        token,
        &DecodingKey::from_secret(secret.as_bytes()),
        &validation,
    )
    .map(|d| d.claims)
    .map_err(|e| TokenError::Invalid(e.to_string()))
}

/// Make an HS256 token (for `hopline publish --secret` and tests).
pub fn sign(claims: &Claims, secret: &str) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("HS256 signing of plain claims cannot fail")
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "0123456789abcdef-secret";

    fn now() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    #[test]
    fn channels_claim_and_expiry() {
        let c = Claims {
            channels: vec!["orders".into(), "news.*".into()],
            exp: Some(now() + 60),
            sub: None,
            info: None,
        };
        let t = sign(&c, SECRET);
        let back = verify(&t, SECRET).unwrap();
        assert!(back.allows("orders"));
        assert!(back.allows("news.sport"));
        assert!(!back.allows("orders2"));
        assert!(!back.allows("secret"));
        assert!(verify(&t, "another-secret-of-16").is_err());
        let expired = sign(
            &Claims {
                exp: Some(now() - 5),
                ..c.clone()
            },
            SECRET,
        );
        assert!(verify(&expired, SECRET).is_err());
        assert!(verify("not.a.jwt", SECRET).is_err());
        let all = Claims {
            channels: vec!["*".into()],
            exp: None,
            sub: None,
            info: None,
        };
        assert!(verify(&sign(&all, SECRET), SECRET).unwrap().allows("x"));
        // alg=none and other algorithms are refused
        let none = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJjaGFubmVscyI6WyIqIl19.";
        assert!(verify(none, SECRET).is_err());
    }
}
