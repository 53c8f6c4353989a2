//! A local certificate authority, the way mkcert makes HTTPS work on one machine:
//! `ca.pem` + `ca-key.pem` made once and reused, and leaf certificates it signs for
//! the names a site serves. Private keys are written with mode 0600.

use std::fs;
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};

use crate::error::EngineError;

/// What `ensure_ca` / `issue` wrote or found.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CaFiles {
    /// The CA certificate clients should trust.
    pub ca_cert: PathBuf,
    /// The CA private key.
    pub ca_key: PathBuf,
    /// True when the CA was made now (false: an existing one was reused).
    pub created: bool,
}

/// A leaf certificate written by [`issue`].
#[derive(Debug, Clone, serde::Serialize)]
pub struct LeafFiles {
    /// The certificate (PEM).
    pub cert: PathBuf,
    /// Its private key (PEM, mode 0600).
    pub key: PathBuf,
    /// The names it is valid for.
    pub names: Vec<String>,
    /// The CA that signed it.
    pub ca: CaFiles,
}

fn ca_err(msg: String) -> EngineError {
    EngineError::Tls(msg)
}

fn write_file(path: &Path, data: &str, private: bool) -> Result<(), EngineError> {
    let mut opts = fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(if private { 0o600 } else { 0o644 });
    }
    let mut f = opts
        .open(path)
        .map_err(|e| ca_err(format!("cannot write {}: {e}", path.display())))?;
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::PermissionsExt;
        let _ = f.set_permissions(fs::Permissions::from_mode(0o600));
    }
    f.write_all(data.as_bytes())
        .map_err(|e| ca_err(format!("cannot write {}: {e}", path.display())))
}

/// Make the CA in `dir` if it is not there yet; reuse it if it is.
pub fn ensure_ca(dir: &Path) -> Result<CaFiles, EngineError> {
    fs::create_dir_all(dir).map_err(|e| ca_err(format!("cannot create {}: {e}", dir.display())))?;
    let ca_cert = dir.join("ca.pem");
    let ca_key = dir.join("ca-key.pem");
    match (ca_cert.is_file(), ca_key.is_file()) {
        (true, true) => {
            return Ok(CaFiles {
                ca_cert,
                ca_key,
                created: false,
            });
        }
        (true, false) | (false, true) => {
            return Err(ca_err(format!(
                "{} holds only half a CA (ca.pem and ca-key.pem must both exist); move the other away to make a new one",
                dir.display()
            )));
        }
        (false, false) => {}
    }
    let key = KeyPair::generate().map_err(|e| ca_err(format!("key generation: {e}")))?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "hopline local CA");
    dn.push(DnType::OrganizationName, "hopline development CA");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let now = time_now();
    params.not_before = now - std::time::Duration::from_secs(3600);
    params.not_after = now + std::time::Duration::from_secs(10 * 365 * 86400);
    let cert = params
        .self_signed(&key)
        .map_err(|e| ca_err(format!("signing the CA: {e}")))?;
    write_file(&ca_key, &key.serialize_pem(), true)?;
    write_file(&ca_cert, &cert.pem(), false)?;
    Ok(CaFiles {
        ca_cert,
        ca_key,
        created: true,
    })
}

fn time_now() -> time::OffsetDateTime {
    time::OffsetDateTime::now_utc()
}

/// The file stem for a leaf named after its first name (`*.shop.test` → `_wildcard.shop.test`).
pub fn leaf_stem(first: &str) -> String {
    first
        .replace('*', "_wildcard")
        .replace(['/', '\\', ':'], "_")
}

/// Issue (or re-issue) a leaf certificate for `names`, signed by the CA in `dir`
/// (made first if missing). Files: `NAME.pem` and `NAME-key.pem`, NAME = first name.
/// A name a certificate may be for: an IP address, or a DNS name (LDH labels of 1-63
/// bytes, at most 253 in all, optionally `*.` in front).
fn valid_name(name: &str) -> bool {
    if name.parse::<std::net::IpAddr>().is_ok() {
        return true;
    }
    let host = name.strip_prefix("*.").unwrap_or(name);
    let host = host.strip_suffix('.').unwrap_or(host);
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

pub fn issue(dir: &Path, names: &[String]) -> Result<LeafFiles, EngineError> {
    if names.is_empty() {
        return Err(ca_err("at least one name is needed".into()));
    }
    for n in names {
        if !valid_name(n) {
            return Err(ca_err(format!(
                "{n:?} is neither a DNS name (letters, digits, hyphens; dot-separated labels of 1-63; a leading \"*.\" for a wildcard) nor an IP address"
            )));
        }
    }
    let ca = ensure_ca(dir)?;
    let ca_key_pem = fs::read_to_string(&ca.ca_key)
        .map_err(|e| ca_err(format!("cannot read {}: {e}", ca.ca_key.display())))?;
    let ca_cert_pem = fs::read_to_string(&ca.ca_cert)
        .map_err(|e| ca_err(format!("cannot read {}: {e}", ca.ca_cert.display())))?;
    let ca_key = KeyPair::from_pem(&ca_key_pem)
        .map_err(|e| ca_err(format!("{}: not a usable key: {e}", ca.ca_key.display())))?;
    let issuer = Issuer::from_ca_cert_pem(&ca_cert_pem, ca_key)
        .map_err(|e| ca_err(format!("{}: not a usable CA: {e}", ca.ca_cert.display())))?;

    let mut params = CertificateParams::default();
    let mut sans = Vec::new();
    for n in names {
        let n = n.trim();
        if let Ok(ip) = n.parse::<IpAddr>() {
            sans.push(SanType::IpAddress(ip));
        } else {
            let dns = n
                .to_ascii_lowercase()
                .try_into()
                .map_err(|e| ca_err(format!("{n:?} is not a valid DNS name: {e}")))?;
            sans.push(SanType::DnsName(dns));
        }
    }
    params.subject_alt_names = sans;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, names[0].as_str());
    dn.push(DnType::OrganizationName, "hopline development certificate");
    params.distinguished_name = dn;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let now = time_now();
    params.not_before = now - std::time::Duration::from_secs(3600);
    params.not_after = now + std::time::Duration::from_secs(825 * 86400);
    params.use_authority_key_identifier_extension = true;
    let key = KeyPair::generate().map_err(|e| ca_err(format!("key generation: {e}")))?;
    let cert = params
        .signed_by(&key, &issuer)
        .map_err(|e| ca_err(format!("signing the certificate: {e}")))?;
    let stem = leaf_stem(&names[0]);
    let cert_path = dir.join(format!("{stem}.pem"));
    let key_path = dir.join(format!("{stem}-key.pem"));
    write_file(&key_path, &key.serialize_pem(), true)?;
    write_file(&cert_path, &cert.pem(), false)?;
    Ok(LeafFiles {
        cert: cert_path,
        key: key_path,
        names: names.to_vec(),
        ca,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_must_be_dns_names_or_addresses() {
        for ok in [
            "shop.test",
            "*.shop.test",
            "127.0.0.1",
            "::1",
            "a-b.c_d.test",
            "localhost",
        ] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in [
            "bad name!",
            "",
            "a..b",
            "-a.test",
            "../etc",
            "a/b",
            "*",
            "x.*.test",
        ] {
            assert!(!valid_name(bad), "{bad}");
        }
        let dir = tempfile::tempdir().unwrap();
        let e = issue(dir.path(), &["bad name!".into()]).unwrap_err();
        assert!(e.to_string().contains("neither a DNS name"), "{e}");
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            0,
            "nothing written"
        );
    }

    #[test]
    fn ca_is_made_once_and_reused_and_keys_are_private() {
        let dir = tempfile::tempdir().unwrap();
        let first = ensure_ca(dir.path()).unwrap();
        assert!(first.created);
        let pem1 = fs::read_to_string(&first.ca_cert).unwrap();
        let again = ensure_ca(dir.path()).unwrap();
        assert!(!again.created);
        assert_eq!(pem1, fs::read_to_string(&again.ca_cert).unwrap());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&first.ca_key).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
    }

    use rustls::client::danger::ServerCertVerifier;
    use rustls_pki_types::pem::PemObject;

    #[test]
    fn leaf_is_signed_by_the_ca_and_loads_into_rustls() {
        let dir = tempfile::tempdir().unwrap();
        let leaf = issue(
            dir.path(),
            &["shop.test".into(), "*.shop.test".into(), "127.0.0.1".into()],
        )
        .unwrap();
        assert!(leaf.cert.ends_with("shop.test.pem"));
        assert!(leaf.key.ends_with("shop.test-key.pem"));
        crate::tls::load_certified_key(&leaf.cert, &leaf.key).unwrap();
        // the leaf verifies against the CA with webpki for every name
        crate::tls::install_crypto_provider();
        let ca_der = rustls_pki_types::CertificateDer::from_pem_file(&leaf.ca.ca_cert).unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca_der).unwrap();
        let verifier = rustls::client::WebPkiServerVerifier::builder(std::sync::Arc::new(roots))
            .build()
            .unwrap();
        let leaf_der = rustls_pki_types::CertificateDer::from_pem_file(&leaf.cert).unwrap();
        for name in ["shop.test", "www.shop.test", "127.0.0.1"] {
            let sn = rustls_pki_types::ServerName::try_from(name).unwrap();
            verifier
                .verify_server_cert(&leaf_der, &[], &sn, &[], rustls_pki_types::UnixTime::now())
                .unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        let other = rustls_pki_types::ServerName::try_from("evil.test").unwrap();
        assert!(
            verifier
                .verify_server_cert(
                    &leaf_der,
                    &[],
                    &other,
                    &[],
                    rustls_pki_types::UnixTime::now()
                )
                .is_err()
        );
    }
}
