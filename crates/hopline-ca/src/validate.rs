//! Challenge validation by really looking (RFC 8555 §8.3, §8.4; RFC 8737): the name is
//! resolved with the CA's resolvers, then HTTP-01 fetches
//! `http://NAME:PORT/.well-known/acme-challenge/TOKEN` from its address, TLS-ALPN-01
//! shakes hands with it offering only `acme-tls/1` and reads the acmeIdentifier of the
//! certificate it shows, DNS-01 asks for the TXT records of `_acme-challenge.NAME`. A fresh
//! resolver each time: a cached "no such record" from before the client published it
//! must not fail the validation.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;

/// How the CA looks.
#[derive(Debug, Clone)]
pub struct Validator {
    /// Resolvers to ask (empty: the system's).
    pub resolvers: Vec<SocketAddr>,
    /// HTTP-01's port.
    pub http_port: u16,
    /// TLS-ALPN-01's port.
    pub tls_port: u16,
}

const TIMEOUT: Duration = Duration::from_secs(10);

impl Validator {
    fn resolver(&self) -> Result<hopline_dns::Resolver, String> {
        let mut b = hopline_dns::Resolver::builder().no_hosts_file();
        if !self.resolvers.is_empty() {
            b = b.forward(self.resolvers.clone());
        }
        b.build().map_err(|e| format!("resolver: {e}"))
    }

    async fn address(&self, name: &str) -> Result<std::net::IpAddr, String> {
        let l = self
            .resolver()?
            .lookup_ip(name)
            .await
            .map_err(|e| format!("resolving {name}: {e}"))?;
        l.addrs
            .first()
            .copied()
            .ok_or_else(|| format!("{name} has no address"))
    }

    /// Check one challenge; `Err` says what was found instead.
    pub async fn check(
        &self,
        kind: &str,
        name: &str,
        token: &str,
        key_authorization: &str,
    ) -> Result<(), String> {
        let work = async {
            match kind {
                "http-01" => self.http01(name, token, key_authorization).await,
                "tls-alpn-01" => self.tls_alpn01(name, key_authorization).await,
                "dns-01" => self.dns01(name, key_authorization).await,
                other => Err(format!("unknown challenge {other}")),
            }
        };
        tokio::time::timeout(TIMEOUT, work)
            .await
            .unwrap_or_else(|_| Err(format!("{kind} for {name}: no answer within 10 s")))
    }

    async fn http01(&self, name: &str, token: &str, expected: &str) -> Result<(), String> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let ip = self.address(name).await?;
        let addr = SocketAddr::new(ip, self.http_port);
        let mut s = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connecting to {addr} for {name}: {e}"))?;
        s.write_all(
            format!(
                "GET /.well-known/acme-challenge/{token} HTTP/1.1\r\nHost: {name}\r\nUser-Agent: hopline-ca\r\nAccept: */*\r\nConnection: close\r\n\r\n"
            )
            .as_bytes(),
        )
        .await
        .map_err(|e| e.to_string())?;
        let mut raw = Vec::new();
        (&mut s)
            .take(16 * 1024)
            .read_to_end(&mut raw)
            .await
            .map_err(|e| format!("reading {addr}: {e}"))?;
        let text = String::from_utf8_lossy(&raw);
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let status = head.split_whitespace().nth(1).unwrap_or("");
        if status != "200" {
            return Err(format!(
                "http://{name}:{}/.well-known/acme-challenge/{token} answered {status:?}",
                self.http_port
            ));
        }
        // (chunked bodies: the key authorization is one short chunk; take its data line)
        let chunked = head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked");
        let got = if chunked {
            body.lines().nth(1).unwrap_or("")
        } else {
            body
        };
        if got.trim() == expected {
            Ok(())
        } else {
            Err(format!(
                "http://{name}:{}/.well-known/acme-challenge/{token} answered {:?}, not the key authorization",
                self.http_port,
                got.chars().take(100).collect::<String>()
            ))
        }
    }

    async fn tls_alpn01(&self, name: &str, key_authorization: &str) -> Result<(), String> {
        let ip = self.address(name).await?;
        let addr = SocketAddr::new(ip, self.tls_port);
        let tcp = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connecting to {addr} for {name}: {e}"))?;
        hopline_edge::tls::install_crypto_provider();
        let mut cfg = rustls::ClientConfig::builder()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate))
            .with_no_client_auth();
        cfg.alpn_protocols = vec![b"acme-tls/1".to_vec()];
        let server_name = rustls_pki_types::ServerName::try_from(name.to_string())
            .map_err(|e| format!("{name}: {e}"))?;
        let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
            .connect(server_name, tcp)
            .await
            .map_err(|e| format!("TLS with {addr} for {name} (acme-tls/1): {e}"))?;
        let (_, conn) = tls.get_ref();
        if conn.alpn_protocol() != Some(b"acme-tls/1") {
            return Err(format!("{addr} did not agree to acme-tls/1"));
        }
        let cert = conn
            .peer_certificates()
            .and_then(|c| c.first())
            .ok_or_else(|| format!("{addr} showed no certificate"))?;
        let (_, x) = x509_parser::parse_x509_certificate(cert.as_ref())
            .map_err(|e| format!("{addr}: its certificate does not parse: {e}"))?;
        let names: Vec<String> = x
            .subject_alternative_name()
            .ok()
            .flatten()
            .map(|san| {
                san.value
                    .general_names
                    .iter()
                    .filter_map(|n| match n {
                        x509_parser::extensions::GeneralName::DNSName(d) => {
                            Some(d.to_ascii_lowercase())
                        }
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default();
        if names != [name.to_string()] {
            return Err(format!(
                "{addr}: the challenge certificate names {names:?}, not just {name}"
            ));
        }
        let digest = ring::digest::digest(&ring::digest::SHA256, key_authorization.as_bytes());
        let mut want = vec![0x04, 32];
        want.extend_from_slice(digest.as_ref());
        let ext = x
            .extensions()
            .iter()
            .find(|e| e.oid.to_id_string() == "1.3.6.1.5.5.7.1.31")
            .ok_or_else(|| format!("{addr}: no acmeIdentifier extension"))?;
        if !ext.critical {
            return Err(format!(
                "{addr}: the acmeIdentifier extension is not critical"
            ));
        }
        if ext.value != want.as_slice() {
            return Err(format!(
                "{addr}: the acmeIdentifier is not the key authorization's digest"
            ));
        }
        Ok(())
    }

    async fn dns01(&self, name: &str, key_authorization: &str) -> Result<(), String> {
        let want = B64.encode(ring::digest::digest(
            &ring::digest::SHA256,
            key_authorization.as_bytes(),
        ));
        let record = format!("_acme-challenge.{name}");
        let l = self
            .resolver()?
            .lookup(&record, hopline_dns::RecordType::TXT)
            .await
            .map_err(|e| format!("TXT {record}: {e}"))?;
        let found: Vec<String> = l
            .records
            .iter()
            .filter(|r| r.rtype == "TXT")
            .map(|r| r.data.trim_matches('"').to_string())
            .collect();
        if found.contains(&want) {
            Ok(())
        } else {
            Err(format!(
                "TXT {record} holds {found:?}, not the key authorization's digest"
            ))
        }
    }
}

/// TLS-ALPN-01 checks the certificate's contents, not its chain: it is self-signed.
#[derive(Debug)]
struct AnyCertificate;

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls_pki_types::CertificateDer<'_>,
        _intermediates: &[rustls_pki_types::CertificateDer<'_>],
        _server_name: &rustls_pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        verify_with_spki(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        verify_with_spki(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        use rustls::SignatureScheme as S;
        vec![
            S::ECDSA_NISTP256_SHA256,
            S::ECDSA_NISTP384_SHA384,
            S::ED25519,
            S::RSA_PSS_SHA256,
            S::RSA_PSS_SHA384,
            S::RSA_PSS_SHA512,
            S::RSA_PKCS1_SHA256,
            S::RSA_PKCS1_SHA384,
            S::RSA_PKCS1_SHA512,
        ]
    }
}

/// The handshake's signature checked against the certificate's key with ring directly:
/// webpki refuses to parse a certificate with an unknown critical extension, and the
/// challenge certificate's acmeIdentifier is one (RFC 8737 §3).
fn verify_with_spki(
    message: &[u8],
    cert: &rustls_pki_types::CertificateDer<'_>,
    dss: &rustls::DigitallySignedStruct,
) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
    use ring::signature as sig;
    use rustls::SignatureScheme as S;
    let bad = |why: &str| rustls::Error::General(format!("challenge certificate: {why}"));
    let (_, x) =
        x509_parser::parse_x509_certificate(cert.as_ref()).map_err(|_| bad("does not parse"))?;
    let key = x.public_key().subject_public_key.data.as_ref();
    let alg: &dyn sig::VerificationAlgorithm = match dss.scheme {
        S::ECDSA_NISTP256_SHA256 => &sig::ECDSA_P256_SHA256_ASN1,
        S::ECDSA_NISTP384_SHA384 => &sig::ECDSA_P384_SHA384_ASN1,
        S::ED25519 => &sig::ED25519,
        S::RSA_PSS_SHA256 => &sig::RSA_PSS_2048_8192_SHA256,
        S::RSA_PSS_SHA384 => &sig::RSA_PSS_2048_8192_SHA384,
        S::RSA_PSS_SHA512 => &sig::RSA_PSS_2048_8192_SHA512,
        S::RSA_PKCS1_SHA256 => &sig::RSA_PKCS1_2048_8192_SHA256,
        S::RSA_PKCS1_SHA384 => &sig::RSA_PKCS1_2048_8192_SHA384,
        S::RSA_PKCS1_SHA512 => &sig::RSA_PKCS1_2048_8192_SHA512,
        _ => return Err(bad("unsupported signature scheme")),
    };
    sig::UnparsedPublicKey::new(alg, key)
        .verify(message, dss.signature())
        .map_err(|_| bad("the handshake signature does not verify"))?;
    Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
}
