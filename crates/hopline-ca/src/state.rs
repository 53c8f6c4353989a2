//! What the CA remembers between requests: nonces, accounts, orders, authorizations,
//! challenges and issued certificates, in memory (pebble's way: nothing outlives the
//! process but the CA's own key). Ids are random (base64url of 12 bytes).

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;

/// A random id.
pub fn new_id() -> String {
    B64.encode(rand::random::<[u8; 12]>())
}

/// Seconds since the Unix epoch.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// RFC 3339 for a Unix time.
pub fn rfc3339(secs: u64) -> String {
    time::OffsetDateTime::from_unix_timestamp(secs as i64)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

/// An account.
#[derive(Debug, Clone)]
pub struct Account {
    /// Its key.
    pub jwk: serde_json::Value,
    /// The key's thumbprint (RFC 7638), the key authorizations' second half.
    pub thumbprint: String,
    /// `mailto:` addresses.
    pub contact: Vec<String>,
}

/// One challenge of an authorization.
#[derive(Debug, Clone)]
pub struct Challenge {
    /// `http-01`, `tls-alpn-01` or `dns-01`.
    pub kind: &'static str,
    /// Its token.
    pub token: String,
    /// `pending`, `processing`, `valid` or `invalid`.
    pub status: &'static str,
    /// When it was validated.
    pub validated: Option<u64>,
    /// Why it failed.
    pub error: Option<String>,
}

/// An authorization: one name, one account.
#[derive(Debug, Clone)]
pub struct Authz {
    /// Whose.
    pub account: String,
    /// The name (for a wildcard, without its `*.`).
    pub name: String,
    /// Whether the order asked for `*.name`.
    pub wildcard: bool,
    /// `pending`, `valid`, `invalid` or `deactivated`.
    pub status: &'static str,
    /// Until when.
    pub expires: u64,
    /// Challenges by id.
    pub challenges: Vec<(String, Challenge)>,
}

/// An order.
#[derive(Debug, Clone)]
pub struct Order {
    /// Whose.
    pub account: String,
    /// The names asked for, as asked (`*.example.com` included).
    pub names: Vec<String>,
    /// Its authorizations' ids, in the order of `names`.
    pub authz: Vec<String>,
    /// `valid` once the certificate is there, `invalid` when it failed; else computed.
    pub status: Option<&'static str>,
    /// Until when.
    pub expires: u64,
    /// The certificate's id, once issued.
    pub cert: Option<String>,
    /// Why it failed.
    pub error: Option<String>,
}

/// Everything.
#[derive(Debug, Default)]
pub struct State {
    /// Nonces handed out and not yet spent (bounded: the oldest go first).
    pub nonces: HashMap<String, u64>,
    /// Accounts by id, and ids by key thumbprint.
    pub accounts: HashMap<String, Account>,
    /// Account ids by key thumbprint.
    pub by_key: HashMap<String, String>,
    /// Orders by id.
    pub orders: HashMap<String, Order>,
    /// Authorizations by id.
    pub authzs: HashMap<String, Authz>,
    /// Which authorization a challenge belongs to.
    pub challenge_of: HashMap<String, String>,
    /// Certificate chains (PEM) by id.
    pub certs: HashMap<String, String>,
    /// Certificates issued since start.
    pub issued: u64,
    /// Validity of each issued certificate, by base64url serial (for ARI).
    pub validity: HashMap<String, (u64, u64)>,
    /// Validations that failed since start.
    pub failed: u64,
}

/// Nonces kept at most (older ones are forgotten: their requests get badNonce).
const NONCES: usize = 100_000;
/// How long a nonce is good for.
const NONCE_LIFE: Duration = Duration::from_secs(3600);

impl State {
    /// A fresh nonce.
    pub fn nonce(&mut self) -> String {
        if self.nonces.len() >= NONCES {
            let now = now();
            self.nonces
                .retain(|_, at| now.saturating_sub(*at) < NONCE_LIFE.as_secs());
            if self.nonces.len() >= NONCES {
                // still full of fresh ones: forget the oldest half
                let mut ages: Vec<u64> = self.nonces.values().copied().collect();
                ages.sort_unstable();
                let cut = ages[ages.len() / 2];
                self.nonces.retain(|_, at| *at > cut);
            }
        }
        let n = new_id();
        self.nonces.insert(n.clone(), now());
        n
    }

    /// Spend a nonce: true when it was handed out and not spent yet.
    pub fn spend(&mut self, nonce: &str) -> bool {
        matches!(self.nonces.remove(nonce), Some(at) if now().saturating_sub(at) < NONCE_LIFE.as_secs())
    }

    /// An order's status from its authorizations (RFC 8555 §7.1.6).
    pub fn order_status(&self, o: &Order) -> &'static str {
        if let Some(s) = o.status {
            return s;
        }
        if now() > o.expires {
            return "invalid";
        }
        let states: Vec<&str> = o
            .authz
            .iter()
            .map(|a| self.authzs.get(a).map_or("invalid", |z| z.status))
            .collect();
        if states
            .iter()
            .any(|s| *s == "invalid" || *s == "deactivated")
        {
            "invalid"
        } else if states.iter().all(|s| *s == "valid") {
            "ready"
        } else {
            "pending"
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nonce_is_spent_once() {
        let mut s = State::default();
        let n = s.nonce();
        assert!(s.spend(&n));
        assert!(!s.spend(&n));
        assert!(!s.spend("never-given"));
    }
}
