//! What an ACME section keeps on disk, under its `storage` folder:
//! `account.json` (the account's key and URL, mode 0600) and, per certificate,
//! `certs/NAME.pem` (the chain the CA sent, leaf first) and `certs/NAME-key.pem` (0600),
//! NAME being the first of the site's names. Files are written whole (a temporary file,
//! then a rename), so a crash never leaves half a key.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls::sign::CertifiedKey;

/// A certificate found in storage (or just stored).
#[derive(Debug, Clone)]
pub struct Stored {
    /// Ready for the listeners.
    pub key: Arc<CertifiedKey>,
    /// Valid from…
    pub not_before: SystemTime,
    /// …until.
    pub not_after: SystemTime,
    /// The leaf's names (subjectAltName DNS entries).
    pub names: Vec<String>,
    /// The leaf's issuer, as the CA wrote it.
    pub issuer: String,
    /// Its ARI identifier (RFC 9773 §4.1): base64url of the authority key identifier and
    /// of the serial number, when the leaf has an AKI.
    pub ari: Option<(String, String)>,
    /// The leaf's key, when it is one the client makes.
    pub key_type: Option<crate::config::KeyType>,
}

impl Stored {
    /// When to renew: at two thirds of the lifetime (Let's Encrypt's and Caddy's default).
    pub fn renew_at(&self) -> SystemTime {
        let life = self
            .not_after
            .duration_since(self.not_before)
            .unwrap_or_default();
        self.not_before + life * 2 / 3
    }

    /// Whether it covers every one of `names`.
    pub fn covers(&self, names: &[String]) -> bool {
        names.iter().all(|n| self.names.iter().any(|c| c == n))
    }
}

/// The files of the certificate for `names`.
pub fn cert_files(dir: &Path, names: &[String]) -> (PathBuf, PathBuf) {
    let first = names.first().map(String::as_str).unwrap_or("default");
    // a name is letters, digits, dots and dashes once validated; anything else is
    // replaced so that no name can reach outside the folder
    let stem: String = first
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let stem = stem.trim_start_matches('.');
    let certs = dir.join("certs");
    (
        certs.join(format!("{stem}.pem")),
        certs.join(format!("{stem}-key.pem")),
    )
}

/// Write `bytes` to `path` whole, with `mode`.
fn write_whole(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// Store a new certificate chain and its key.
pub fn save(dir: &Path, names: &[String], chain_pem: &str, key_pem: &str) -> std::io::Result<()> {
    let (cert, key) = cert_files(dir, names);
    write_whole(&key, key_pem.as_bytes(), 0o600)?;
    write_whole(&cert, chain_pem.as_bytes(), 0o644)
}

/// The stored certificate for `names`: `Ok(None)` when there is none, `Err` when the
/// files are there but unusable (then a new one is ordered, and the error shown).
pub fn load(dir: &Path, names: &[String]) -> Result<Option<Stored>, String> {
    let (cert, key) = cert_files(dir, names);
    if !cert.exists() || !key.exists() {
        return Ok(None);
    }
    let ck = hopline_engine::tls::load_certified_key(&cert, &key).map_err(|e| e.to_string())?;
    let leaf = ck
        .cert
        .first()
        .ok_or_else(|| format!("{}: no certificate", cert.display()))?;
    let (not_before, not_after, san, issuer) =
        inspect(leaf.as_ref()).map_err(|e| format!("{}: {e}", cert.display()))?;
    Ok(Some(Stored {
        ari: ari_id(leaf.as_ref()),
        key_type: key_type(leaf.as_ref()),
        key: ck,
        not_before,
        not_after,
        names: san,
        issuer,
    }))
}

/// The kind of a leaf's public key, if it is one the client makes (the length of an
/// uncompressed EC point says the curve: 65 bytes on P-256, 97 on P-384).
pub fn key_type(der: &[u8]) -> Option<crate::config::KeyType> {
    use x509_parser::public_key::PublicKey;
    let (_, x) = x509_parser::parse_x509_certificate(der).ok()?;
    match x.public_key().parsed().ok()? {
        PublicKey::EC(point) if point.data().len() == 65 => Some(crate::config::KeyType::EcdsaP256),
        PublicKey::EC(point) if point.data().len() == 97 => Some(crate::config::KeyType::EcdsaP384),
        _ => None,
    }
}

/// A leaf's ARI identifier: (base64url(AKI keyIdentifier), base64url(serial)).
pub fn ari_id(der: &[u8]) -> Option<(String, String)> {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let (_, x) = x509_parser::parse_x509_certificate(der).ok()?;
    let aki = x
        .extensions()
        .iter()
        .find_map(|e| match e.parsed_extension() {
            x509_parser::extensions::ParsedExtension::AuthorityKeyIdentifier(a) => {
                a.key_identifier.as_ref().map(|k| k.0.to_vec())
            }
            _ => None,
        })?;
    Some((b64.encode(aki), b64.encode(x.raw_serial())))
}

/// A leaf's validity, DNS names and issuer.
pub fn inspect(der: &[u8]) -> Result<(SystemTime, SystemTime, Vec<String>, String), String> {
    let (_, x) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| format!("not an X.509 certificate: {e}"))?;
    let at = |t: x509_parser::time::ASN1Time| {
        let secs = t.timestamp();
        if secs >= 0 {
            SystemTime::UNIX_EPOCH + Duration::from_secs(secs as u64)
        } else {
            SystemTime::UNIX_EPOCH
        }
    };
    let mut names = Vec::new();
    if let Ok(Some(san)) = x.subject_alternative_name() {
        for n in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::DNSName(d) = n {
                names.push(d.to_ascii_lowercase());
            }
        }
    }
    Ok((
        at(x.validity().not_before),
        at(x.validity().not_after),
        names,
        x.issuer().to_string(),
    ))
}

/// The stored account for `directory`, if any.
pub fn load_account(dir: &Path, directory: &str) -> Option<instant_acme::AccountCredentials> {
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("account.json")).ok()?).ok()?;
    if v.get("directory").and_then(|d| d.as_str()) != Some(directory) {
        return None;
    }
    serde_json::from_value(v.get("credentials")?.clone()).ok()
}

/// Keep the account (mode 0600: its key signs every request to the CA).
pub fn save_account(
    dir: &Path,
    directory: &str,
    credentials: &instant_acme::AccountCredentials,
) -> std::io::Result<()> {
    let v = serde_json::json!({"directory": directory, "credentials": credentials});
    write_whole(
        &dir.join("account.json"),
        serde_json::to_string_pretty(&v)
            .unwrap_or_default()
            .as_bytes(),
        0o600,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_stay_inside_the_folder() {
        let dir = Path::new("/s");
        for name in ["../../etc/passwd", "/abs", "a/b", "..", "*.shop.test"] {
            let (c, k) = cert_files(dir, &[name.to_string()]);
            for p in [c, k] {
                assert_eq!(p.parent(), Some(Path::new("/s/certs")), "{name}: {p:?}");
            }
        }
        let (c, _) = cert_files(dir, &["www.shop.test".into()]);
        assert_eq!(c, Path::new("/s/certs/www.shop.test.pem"));
    }

    #[test]
    fn renewal_at_two_thirds_of_the_lifetime() {
        let dir = tempfile::tempdir().unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["a.test".to_string()]).unwrap();
        params.not_before = rcgen::date_time_ymd(2026, 1, 1);
        params.not_after = rcgen::date_time_ymd(2026, 4, 1); // 90 days
        let cert = params.self_signed(&key).unwrap();
        let names = vec!["a.test".to_string()];
        save(dir.path(), &names, &cert.pem(), &key.serialize_pem()).unwrap();
        let s = load(dir.path(), &names).unwrap().unwrap();
        assert!(s.covers(&names) && !s.covers(&["b.test".to_string()]));
        let start = s.not_before.duration_since(SystemTime::UNIX_EPOCH).unwrap();
        let renew = s.renew_at().duration_since(SystemTime::UNIX_EPOCH).unwrap();
        assert_eq!((renew - start).as_secs(), 60 * 86400);
        use std::os::unix::fs::PermissionsExt;
        let (_, k) = cert_files(dir.path(), &names);
        assert_eq!(
            std::fs::metadata(k).unwrap().permissions().mode() & 0o777,
            0o600
        );
        // a damaged file is an error to show, not a panic
        std::fs::write(cert_files(dir.path(), &names).0, "garbage").unwrap();
        assert!(load(dir.path(), &names).is_err());
    }
}
