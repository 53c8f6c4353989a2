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
}
