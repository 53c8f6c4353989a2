//! `[acme.NAME]`: where certificates come from.

use std::path::PathBuf;

use serde::Deserialize;
use toml::Spanned;

/// One ACME CA account.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AcmeConfig {
    /// The CA's directory URL, e.g. Let's Encrypt's
    /// `https://acme-v02.api.letsencrypt.org/directory`.
    pub directory: Spanned<String>,
    /// Contact e-mail for the account (the CA's expiry notices), without `mailto:`.
    pub contact: Option<String>,
    /// A PEM root to trust for the directory's own HTTPS (private CAs, pebble); default:
    /// the system's roots.
    pub ca_root: Option<Spanned<PathBuf>>,
    /// Folder for the account and the certificates (default: `acme/NAME` beside the file).
    pub storage: Option<Spanned<PathBuf>>,
    /// How the CA checks a name: `http-01` (default: a plain listener on port 80 answers
    /// `/.well-known/acme-challenge/`), `tls-alpn-01` (the HTTPS listener on port 443
    /// answers a handshake for `acme-tls/1`) or `dns-01` (a TXT record published in this
    /// process's authoritative DNS server for the zone; wildcard names need it).
    pub challenge: Option<Spanned<String>>,
    /// On-demand TLS: a name is obtained only if `GET ask?domain=NAME` answers 2xx
    /// (required for sites with `on_demand = true`; plain http://).
    pub ask: Option<Spanned<String>>,
    /// How long an ask answer is remembered (default 300000 ms).
    pub ask_cache_ms: Option<u64>,
    /// New on-demand certificates a minute, at most (default 10).
    pub on_demand_per_minute: Option<u32>,
    /// The certificate's key: `ecdsa-p256` (default: what Let's Encrypt and Caddy use,
    /// the fastest handshakes) or `ecdsa-p384`.
    pub key_type: Option<Spanned<String>>,
    /// Share certificates, order locks and HTTP-01 tokens with other edges through this
    /// Redis (`redis://HOST:PORT/DB`); HTTP-01 only.
    pub redis: Option<Spanned<String>>,
}

/// The challenge types the client answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Challenge {
    /// RFC 8555 §8.3.
    Http01,
    /// RFC 8737.
    TlsAlpn01,
    /// RFC 8555 §8.4, through hopline's own authoritative server.
    Dns01,
}

/// The kinds of certificate key the client makes (ring, through rcgen, makes ECDSA keys;
/// RSA keys it cannot generate).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyType {
    /// ECDSA on P-256 with SHA-256.
    EcdsaP256,
    /// ECDSA on P-384 with SHA-384.
    EcdsaP384,
}

impl KeyType {
    /// Every accepted `key_type` value.
    pub const NAMES: [&'static str; 2] = ["ecdsa-p256", "ecdsa-p384"];

    /// From a `key_type` value.
    pub fn parse(s: &str) -> Option<KeyType> {
        match s {
            "ecdsa-p256" => Some(KeyType::EcdsaP256),
            "ecdsa-p384" => Some(KeyType::EcdsaP384),
            _ => None,
        }
    }

    /// As written in the config and shown in the status.
    pub fn name(self) -> &'static str {
        match self {
            KeyType::EcdsaP256 => "ecdsa-p256",
            KeyType::EcdsaP384 => "ecdsa-p384",
        }
    }

    /// rcgen's algorithm for a new key and its CSR.
    pub fn algorithm(self) -> &'static rcgen::SignatureAlgorithm {
        match self {
            KeyType::EcdsaP256 => &rcgen::PKCS_ECDSA_P256_SHA256,
            KeyType::EcdsaP384 => &rcgen::PKCS_ECDSA_P384_SHA384,
        }
    }
}

impl AcmeConfig {
    /// The key to make (validated: one of [`KeyType::NAMES`]).
    pub fn key_type(&self) -> KeyType {
        self.key_type
            .as_ref()
            .and_then(|k| KeyType::parse(k.get_ref()))
            .unwrap_or(KeyType::EcdsaP256)
    }

    /// The challenge to answer (validated: one of the known names).
    pub fn challenge(&self) -> Challenge {
        match self.challenge.as_ref().map(|c| c.get_ref().as_str()) {
            Some("tls-alpn-01") => Challenge::TlsAlpn01,
            Some("dns-01") => Challenge::Dns01,
            _ => Challenge::Http01,
        }
    }
}
