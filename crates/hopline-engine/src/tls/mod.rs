//! TLS for the edge's listeners: certificates from PEM files, SNI picks the site's
//! certificate, ALPN offers h2 and http/1.1, and session tickets let clients resume.

pub mod ca;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use rustls::ServerConfig;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::error::EngineError;

/// Install hopline's one crypto provider (ring) as the process default. Safe to call
/// more than once.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Load a PEM certificate chain and private key into a rustls signing identity.
pub fn load_certified_key(cert: &Path, key: &Path) -> Result<Arc<CertifiedKey>, EngineError> {
    let tls_err = |what: String| EngineError::Tls(what);
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| tls_err(format!("{}: cannot read certificates: {e}", cert.display())))?
        .collect::<Result<_, _>>()
        .map_err(|e| tls_err(format!("{}: bad PEM certificate: {e}", cert.display())))?;
    if certs.is_empty() {
        return Err(tls_err(format!(
            "{}: no CERTIFICATE block found",
            cert.display()
        )));
    }
    let key_der = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| tls_err(format!("{}: cannot read a private key: {e}", key.display())))?;
    let signing = rustls::crypto::ring::sign::any_supported_type(&key_der)
        .map_err(|e| tls_err(format!("{}: unsupported private key: {e}", key.display())))?;
    let ck = CertifiedKey::new(certs, signing);
    ck.keys_match().map_err(|e| {
        tls_err(format!(
            "{} does not belong to {}: {e}",
            key.display(),
            cert.display()
        ))
    })?;
    Ok(Arc::new(ck))
}

/// A certificate replaced while the listeners serve (obtained and renewed by ACME): empty
/// until the first one is in; a swap is atomic, so no handshake sees half of a renewal.
pub type LiveCert = Arc<arc_swap::ArcSwapOption<CertifiedKey>>;

/// The ALPN protocol of ACME's TLS-ALPN-01 challenge (RFC 8737).
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

/// TLS-ALPN-01 challenges in flight: for a handshake that offers only `acme-tls/1`, the
/// self-signed certificate carrying the name's acmeIdentifier (made by the ACME client).
/// With none in flight a handshake pays one atomic load.
#[derive(Debug, Default)]
pub struct AlpnChallenges {
    pending: std::sync::atomic::AtomicUsize,
    certs: parking_lot::RwLock<HashMap<String, Arc<CertifiedKey>>>,
}

impl AlpnChallenges {
    /// Answer TLS-ALPN-01 for `name` with `cert` until [`AlpnChallenges::remove`].
    pub fn insert(&self, name: &str, cert: Arc<CertifiedKey>) {
        let mut c = self.certs.write();
        c.insert(name.to_ascii_lowercase(), cert);
        self.pending
            .store(c.len(), std::sync::atomic::Ordering::Release);
    }

    /// Stop answering for `name`.
    pub fn remove(&self, name: &str) {
        let mut c = self.certs.write();
        c.remove(&name.to_ascii_lowercase());
        self.pending
            .store(c.len(), std::sync::atomic::Ordering::Release);
    }

    fn get(&self, name: &str) -> Option<Arc<CertifiedKey>> {
        if self.pending.load(std::sync::atomic::Ordering::Acquire) == 0 {
            return None;
        }
        self.certs.read().get(&name.to_ascii_lowercase()).cloned()
    }
}

/// Certificates obtained while a listener serves (on-demand TLS), by exact name.
#[derive(Debug, Default)]
pub struct OnDemandCerts {
    certs: parking_lot::RwLock<HashMap<String, LiveCert>>,
}

impl OnDemandCerts {
    /// Serve `live` for `name` from now on.
    pub fn insert(&self, name: &str, live: LiveCert) {
        self.certs.write().insert(name.to_ascii_lowercase(), live);
    }

    /// Stop serving `name` (its order failed: the next handshake may try again).
    pub fn remove(&self, name: &str) {
        self.certs.write().remove(&name.to_ascii_lowercase());
    }

    /// The certificate for `name`, once there is one.
    pub fn get(&self, name: &str) -> Option<Arc<CertifiedKey>> {
        self.certs
            .read()
            .get(&name.to_ascii_lowercase())
            .and_then(|l| l.load_full())
    }
}

/// What obtains a certificate for a name while its handshake waits (on-demand TLS).
pub trait OnDemandTls: Send + Sync + std::fmt::Debug {
    /// Done when a certificate for `name` is in the listener's [`OnDemandCerts`];
    /// `Err` says why there will be none (not allowed, rate limited, the CA failed).
    fn ensure<'a>(
        &'a self,
        name: &'a str,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send + 'a>>;
}

/// A site's certificate: fixed (files, loaded at start and reload) or live.
#[derive(Debug, Clone)]
enum Slot {
    Fixed(Arc<CertifiedKey>),
    Live(LiveCert),
}

impl Slot {
    fn get(&self) -> Option<Arc<CertifiedKey>> {
        match self {
            Slot::Fixed(k) => Some(k.clone()),
            Slot::Live(l) => l.load_full(),
        }
    }
}

/// Chooses a certificate by the client's SNI: exact names first, then `*.suffix`
/// wildcards, then the listener's default (its first TLS site). A name whose live
/// certificate is not there yet gets no certificate (the handshake fails) rather than
/// another site's.
#[derive(Debug, Default)]
pub struct SniResolver {
    exact: HashMap<String, Slot>,
    wildcard: Vec<(String, Slot)>,
    default: Option<Slot>,
    alpn: Option<Arc<AlpnChallenges>>,
    on_demand: Option<Arc<OnDemandCerts>>,
}

impl SniResolver {
    /// Names no site's certificate covers are looked up in `certs` (on-demand TLS).
    pub fn on_demand(&mut self, certs: Arc<OnDemandCerts>) {
        self.on_demand = Some(certs);
    }

    /// Answer TLS-ALPN-01 challenges from `challenges` (listeners of ACME sites).
    pub fn answer_challenges(&mut self, challenges: Arc<AlpnChallenges>) {
        self.alpn = Some(challenges);
    }

    /// Add a certificate for host patterns (`None` = any host).
    pub fn add(&mut self, hosts: Option<&[String]>, key: Arc<CertifiedKey>) {
        self.add_slot(hosts, Slot::Fixed(key));
    }

    /// Add a live certificate (ACME) for host patterns (`None` = any host).
    pub fn add_live(&mut self, hosts: Option<&[String]>, live: LiveCert) {
        self.add_slot(hosts, Slot::Live(live));
    }

    fn add_slot(&mut self, hosts: Option<&[String]>, slot: Slot) {
        if let Some(hosts) = hosts {
            for h in hosts {
                if let Some(suffix) = h.strip_prefix("*.") {
                    self.wildcard.push((format!(".{suffix}"), slot.clone()));
                } else {
                    self.exact.insert(h.clone(), slot.clone());
                }
            }
        }
        if self.default.is_none() {
            self.default = Some(slot);
        }
    }

    fn find(&self, sni: Option<&str>) -> Option<Arc<CertifiedKey>> {
        if let Some(name) = sni {
            let name = name.to_ascii_lowercase();
            if let Some(k) = self.exact.get(&name) {
                return k.get();
            }
            if let Some((_, k)) = self
                .wildcard
                .iter()
                .find(|(suffix, _)| name.ends_with(suffix.as_str()) && name.len() > suffix.len())
            {
                return k.get();
            }
            if let Some(od) = &self.on_demand {
                // obtained for this name, or nothing: never another name's certificate
                return od.get(&name);
            }
        }
        self.default.as_ref().and_then(Slot::get)
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        if let Some(alpn) = &self.alpn
            && hello
                .alpn()
                .is_some_and(|mut protocols| protocols.any(|p| p == ACME_TLS_ALPN))
        {
            // a CA validating: its challenge certificate or nothing, never the site's
            return alpn.get(hello.server_name()?);
        }
        self.find(hello.server_name())
    }
}

/// A listener's rustls config: SNI resolver, ALPN h2 + http/1.1, tickets for resumption.
pub fn server_config(resolver: SniResolver) -> Result<Arc<ServerConfig>, EngineError> {
    install_crypto_provider();
    let has_alpn = resolver.alpn.is_some();
    let mut cfg = ServerConfig::builder()
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(resolver));
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    if has_alpn {
        // offered last: only a CA asking for nothing else gets it (RFC 8737)
        cfg.alpn_protocols.push(ACME_TLS_ALPN.to_vec());
    }
    cfg.ticketer = rustls::crypto::ring::Ticketer::new()
        .map_err(|e| EngineError::Tls(format!("cannot make a session ticketer: {e}")))?;
    cfg.session_storage = rustls::server::ServerSessionMemoryCache::new(4096);
    Ok(Arc::new(cfg))
}
