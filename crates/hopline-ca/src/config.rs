//! `[ca.NAME]`: a certificate authority served over ACME.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use hopline_edge::config::ConfigError;
use serde::Deserialize;

/// One CA.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CaConfig {
    /// Its folder: `ca.pem` and `ca-key.pem`, made on first start (the same CA as
    /// `hopline cert --dir DIR`). Relative to the config file.
    pub dir: PathBuf,
    /// The port HTTP-01 is checked on (80 on the internet; tests use others).
    #[serde(default = "default_http_port")]
    pub http_port: u16,
    /// The port TLS-ALPN-01 is checked on (443).
    #[serde(default = "default_tls_port")]
    pub tls_port: u16,
    /// Resolvers (IP:PORT) that name the addresses to validate and answer DNS-01
    /// queries; default: the system's.
    #[serde(default)]
    pub resolvers: Vec<String>,
    /// How long certificates are valid, in seconds (default 90 days, Let's Encrypt's).
    #[serde(default = "default_validity")]
    pub validity_s: u64,
    /// The renewal window clients are told through ACME Renewal Information (RFC 9773):
    /// a certificate this many seconds old should be renewed (default: from two thirds to
    /// three quarters of its life). A CA shortens it after a mis-issuance, or to see
    /// renewals happen.
    pub renew_after_s: Option<u64>,
}

fn default_http_port() -> u16 {
    80
}

fn default_tls_port() -> u16 {
    443
}

fn default_validity() -> u64 {
    90 * 86400
}

/// Read every `[ca.NAME]` section of a config file's text (folders made absolute).
pub fn load(text: &str, file: &Path) -> Result<BTreeMap<String, CaConfig>, ConfigError> {
    #[derive(Deserialize)]
    struct Sections {
        #[serde(default)]
        ca: BTreeMap<String, CaConfig>,
    }
    let sections: Sections =
        toml::from_str(text).map_err(|e| ConfigError::from_toml(file, text, "[ca]", &e))?;
    let base = file.parent().unwrap_or(Path::new("."));
    let mut out = BTreeMap::new();
    for (name, mut c) in sections.ca {
        let header = format!("[ca.{name}]");
        let at = text.find(&header).map(|i| i..i + header.len());
        if c.validity_s < 10 {
            return Err(ConfigError::at(
                file,
                text,
                at,
                format!("{header}: validity_s must be at least 10 seconds"),
            ));
        }
        for r in &c.resolvers {
            if r.parse::<std::net::SocketAddr>().is_err() {
                return Err(ConfigError::at(
                    file,
                    text,
                    at,
                    format!("{header}: resolver {r:?}: expected IP:PORT"),
                ));
            }
        }
        if c.dir.is_relative() {
            c.dir = base.join(&c.dir);
        }
        out.insert(name, c);
    }
    Ok(out)
}
