//! The TLS step's certificates: the chain as the server sent it (leaf first), each
//! certificate's subject → issuer, the names it covers and its validity, read from the DER
//! with x509-parser (no I/O); and the few words `--explain`, the waterfall and the HTML
//! page say about it ("chain of 2: www.shop.test ← hopline local CA").

use rustls_pki_types::CertificateDer;
use x509_parser::prelude::{GeneralName, X509Certificate, X509Name};

use crate::timeline::CertInfo;

/// RFC 3339 in UTC, whole seconds (`2026-11-29T10:29:11Z`); empty when out of range.
pub fn rfc3339(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| {
            t.format(&time::macros::format_description!(
                "[year]-[month]-[day]T[hour]:[minute]:[second]Z"
            ))
            .ok()
        })
        .unwrap_or_default()
}

/// The first common name of a distinguished name.
fn common_name(n: &X509Name<'_>) -> Option<String> {
    n.iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .map(str::to_string)
}

fn info(x: &X509Certificate<'_>) -> CertInfo {
    let names: Vec<String> = x
        .subject_alternative_name()
        .ok()
        .flatten()
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|g| match g {
                    GeneralName::DNSName(d) => Some(d.to_string()),
                    GeneralName::IPAddress(b) => match b.len() {
                        4 => Some(
                            std::net::Ipv4Addr::from(<[u8; 4]>::try_from(*b).ok()?).to_string(),
                        ),
                        16 => Some(
                            std::net::Ipv6Addr::from(<[u8; 16]>::try_from(*b).ok()?).to_string(),
                        ),
                        _ => None,
                    },
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    let subject = x.subject().to_string();
    let issuer = x.issuer().to_string();
    let name = common_name(x.subject())
        .or_else(|| names.first().cloned())
        .unwrap_or_else(|| subject.clone());
    let issuer_name = common_name(x.issuer()).unwrap_or_else(|| issuer.clone());
    let v = x.validity();
    let (nb, na) = (v.not_before.timestamp(), v.not_after.timestamp());
    CertInfo {
        name,
        issuer_name,
        self_signed: x.subject().as_raw() == x.issuer().as_raw(),
        subject,
        issuer,
        names,
        not_before: rfc3339(nb),
        not_after: rfc3339(na),
        not_before_unix: nb,
        not_after_unix: na,
        ca: x.is_ca(),
    }
}

/// The chain as received, leaf first; a certificate that does not parse is left out (the
/// handshake, which verified the chain, would have refused one that matters).
pub fn chain(ders: &[CertificateDer<'_>]) -> Vec<CertInfo> {
    ders.iter()
        .filter_map(|d| x509_parser::parse_x509_certificate(d.as_ref()).ok())
        .map(|(_, x)| info(&x))
        .collect()
}

/// Subject → issuer down the chain: `www.shop.test ← hopline local CA`. When the last
/// certificate sent is not self-signed its issuer was not sent: the client found it among
/// the roots it trusts (the handshake succeeded), and that is said.
pub fn path(chain: &[CertInfo]) -> String {
    let mut out: Vec<String> = chain.iter().map(|c| c.name.clone()).collect();
    if let Some(last) = chain.last()
        && !last.self_signed
    {
        out.push(format!(
            "{} (not sent: a root this client trusts)",
            last.issuer_name
        ));
    }
    out.join(" ← ")
}

/// `chain of 2: www.shop.test ← hopline local CA`.
pub fn summary(chain: &[CertInfo]) -> String {
    format!("chain of {}: {}", chain.len(), path(chain))
}

/// A lifetime in words: `1 day`, `90 days`, `12 h`, `30 min`.
pub fn lifetime(secs: i64) -> String {
    let secs = secs.max(0) as f64;
    let days = secs / 86_400.0;
    if days >= 1.95 {
        format!("{:.0} days", days)
    } else if days >= 0.95 {
        "1 day".to_string()
    } else if secs >= 3_600.0 {
        format!("{:.0} h", secs / 3_600.0)
    } else {
        format!("{:.0} min", secs / 60.0)
    }
}

/// The names a certificate covers, shortened past three (`a, b, c and 7 more`); its
/// short name without any.
pub fn covers(c: &CertInfo) -> String {
    if c.names.is_empty() {
        return c.name.clone();
    }
    let shown = c
        .names
        .iter()
        .take(3)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    match c.names.len() {
        n if n > 3 => format!("{shown} and {} more", n - 3),
        _ => shown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(name: &str, issuer: &str, self_signed: bool) -> CertInfo {
        CertInfo {
            name: name.into(),
            issuer_name: issuer.into(),
            self_signed,
            ..Default::default()
        }
    }

    #[test]
    fn the_chain_in_words() {
        let leaf = cert("www.shop.test", "hopline local CA", false);
        let root = cert("hopline local CA", "hopline local CA", true);
        assert_eq!(
            summary(&[leaf.clone(), root]),
            "chain of 2: www.shop.test ← hopline local CA"
        );
        // the root not sent: named, and said where it came from
        assert_eq!(
            summary(std::slice::from_ref(&leaf)),
            "chain of 1: www.shop.test ← hopline local CA (not sent: a root this client trusts)"
        );
        let mid = cert("R3", "ISRG Root X1", false);
        assert_eq!(
            path(&[cert("example.org", "R3", false), mid]),
            "example.org ← R3 ← ISRG Root X1 (not sent: a root this client trusts)"
        );
        assert_eq!(lifetime(86_400 + 60), "1 day");
        assert_eq!(lifetime(825 * 86_400 + 3_600), "825 days");
        assert_eq!(lifetime(3_600), "1 h");
        assert_eq!(lifetime(600), "10 min");
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        let mut many = leaf;
        many.names = (1..=5).map(|i| format!("n{i}.test")).collect();
        assert_eq!(covers(&many), "n1.test, n2.test, n3.test and 2 more");
    }

    #[test]
    fn a_chain_read_from_der() {
        // a leaf for two names from hopline's local CA, then the CA itself
        use rustls_pki_types::pem::PemObject;
        let dir = tempfile::tempdir().unwrap();
        let leaf = hopline_edge::tls::ca::issue(dir.path(), &["a.test".into(), "127.0.0.1".into()])
            .unwrap();
        let ders: Vec<CertificateDer<'static>> = [&leaf.cert, &leaf.ca.ca_cert]
            .iter()
            .flat_map(|p| CertificateDer::pem_file_iter(p).unwrap())
            .map(Result::unwrap)
            .collect();
        let c = chain(&ders);
        assert_eq!(c.len(), 2, "{c:?}");
        assert_eq!(c[0].name, "a.test");
        assert_eq!(
            c[0].names,
            vec!["a.test".to_string(), "127.0.0.1".to_string()]
        );
        assert_eq!(c[0].issuer_name, "hopline local CA");
        assert!(!c[0].self_signed && !c[0].ca && c[1].self_signed && c[1].ca);
        assert!(c[0].subject.contains("CN=a.test") && c[0].issuer.contains("CN=hopline local CA"));
        // backdated an hour, valid 825 days
        assert_eq!(
            lifetime(c[0].not_after_unix - c[0].not_before_unix),
            "825 days"
        );
        assert_eq!(rfc3339(c[0].not_before_unix), c[0].not_before);
        assert_eq!(summary(&c), "chain of 2: a.test ← hopline local CA");
        // a certificate that does not parse is left out
        assert_eq!(chain(&[CertificateDer::from(vec![1u8, 2, 3])]).len(), 0);
    }
}
