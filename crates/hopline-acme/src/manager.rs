//! One certificate's life: taken from storage when it is still good, else ordered; then
//! renewed at two thirds of its lifetime; on failure retried with backoff (5 s doubling
//! to an hour) while the current certificate keeps serving. Its state is what the admin
//! listener shows.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use instant_acme::{
    Account, AuthorizationStatus, ChallengeType, Identifier, NewAccount, NewOrder, OrderStatus,
    RetryPolicy,
};

use crate::challenges::Http01;
use crate::config::AcmeConfig;
use crate::config::Challenge;
use crate::shared::Shared;
use crate::storage::{self, Stored};
use hopline_engine::tls::{AlpnChallenges, LiveCert};

/// What the admin listener shows of one certificate.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Status {
    /// `waiting` (nothing yet), `ordering`, `valid`, `failing` (a renewal fails, the
    /// current one still serves) or `expired`.
    pub state: &'static str,
    /// The `[acme.NAME]` section.
    pub acme: String,
    /// The names it covers.
    pub names: Vec<String>,
    /// Where the current one came from: `storage` (found at start), `ordered`, or
    /// `shared` (another edge ordered it).
    pub obtained: Option<&'static str>,
    /// The challenge answered for it: `http-01`, `tls-alpn-01` or `dns-01`.
    pub challenge: &'static str,
    /// The key it is ordered with: `ecdsa-p256` or `ecdsa-p384`.
    pub key_type: &'static str,
    /// Valid from (seconds since the Unix epoch).
    pub not_before: Option<u64>,
    /// Its issuer.
    pub issuer: Option<String>,
    /// Valid until (seconds since the Unix epoch).
    pub not_after: Option<u64>,
    /// Renewed from (seconds since the Unix epoch).
    pub renew_at: Option<u64>,
    /// Where `renew_at` comes from: `ari` (the CA's renewal window, RFC 9773) or
    /// `lifetime` (two thirds of it).
    pub renew_by: Option<&'static str>,
    /// Orders completed (the first one and renewals).
    pub orders: u64,
    /// The last failure, if the last attempt failed.
    pub last_error: Option<String>,
    /// When the next attempt is due after a failure (seconds since the Unix epoch).
    pub retry_at: Option<u64>,
}

fn epoch(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// One managed certificate: the slot the listeners read and the task that fills it.
#[derive(Debug)]
pub struct Managed {
    /// What the listeners serve for its names.
    pub live: LiveCert,
    status: Arc<parking_lot::Mutex<Status>>,
    config: AcmeConfig,
    storage: PathBuf,
    names: Vec<String>,
    task: parking_lot::Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// Bumped at every change of state (what [`Managed::first`] waits on).
    changed: Arc<tokio::sync::watch::Sender<u64>>,
    /// The store shared with other edges, when the section names a Redis.
    shared: Option<Arc<Shared>>,
}

impl Drop for Managed {
    fn drop(&mut self) {
        if let Some(t) = self.task.lock().take() {
            t.abort();
        }
    }
}

impl Managed {
    /// A certificate for `names` from section `acme`, kept in `storage`.
    pub fn new(acme: &str, config: AcmeConfig, storage: PathBuf, names: Vec<String>) -> Managed {
        Managed {
            live: LiveCert::default(),
            status: Arc::new(parking_lot::Mutex::new(Status {
                state: "waiting",
                acme: acme.to_string(),
                names: names.clone(),
                challenge: match config.challenge() {
                    Challenge::Http01 => "http-01",
                    Challenge::TlsAlpn01 => "tls-alpn-01",
                    Challenge::Dns01 => "dns-01",
                },
                key_type: config.key_type().name(),
                ..Status::default()
            })),
            storage,
            names,
            task: parking_lot::Mutex::new(None),
            changed: Arc::new(tokio::sync::watch::channel(0).0),
            shared: config
                .redis
                .as_ref()
                .and_then(|u| Shared::new(u.get_ref(), acme).ok())
                .map(Arc::new),
            config,
        }
    }

    /// Done when the first certificate is in; `Err` with the reason when the first
    /// attempt failed (the task goes on retrying).
    pub async fn first(&self) -> Result<(), String> {
        let mut rx = self.changed.subscribe();
        loop {
            if self.live.load().is_some() {
                return Ok(());
            }
            if let Some(e) = &self.status.lock().last_error {
                return Err(e.clone());
            }
            if rx.changed().await.is_err() {
                return Err("stopped".to_string());
            }
        }
    }

    /// Whether a reload may keep this one for a section configured as `config`.
    pub fn same_setup(&self, config: &AcmeConfig, storage: &std::path::Path) -> bool {
        self.storage == storage
            && self.config.directory.get_ref() == config.directory.get_ref()
            && self.config.contact == config.contact
            && self.config.key_type() == config.key_type()
            && self.config.ca_root.as_ref().map(|p| p.get_ref())
                == config.ca_root.as_ref().map(|p| p.get_ref())
    }

    /// The state now.
    pub fn status(&self) -> Status {
        self.status.lock().clone()
    }

    /// Start its task (once; later calls do nothing). Needs a tokio runtime.
    pub fn start(&self, http01: Arc<Http01>, tls_alpn: Arc<AlpnChallenges>) {
        let mut task = self.task.lock();
        if task.is_some() {
            return;
        }
        let job = Job {
            live: self.live.clone(),
            status: self.status.clone(),
            config: self.config.clone(),
            storage: self.storage.clone(),
            names: self.names.clone(),
            http01,
            tls_alpn,
            changed: self.changed.clone(),
            shared: self.shared.clone(),
            installed: parking_lot::Mutex::new(SystemTime::now()),
            account: shared_account(&self.storage, self.config.directory.get_ref()),
        };
        *task = Some(tokio::spawn(job.run()));
    }
}

/// What the task owns.
struct Job {
    live: LiveCert,
    status: Arc<parking_lot::Mutex<Status>>,
    config: AcmeConfig,
    storage: PathBuf,
    names: Vec<String>,
    http01: Arc<Http01>,
    tls_alpn: Arc<AlpnChallenges>,
    changed: Arc<tokio::sync::watch::Sender<u64>>,
    shared: Option<Arc<Shared>>,
    installed: parking_lot::Mutex<SystemTime>,
    account: Arc<AccountCell>,
}

/// An ACME account once loaded: its key, its URL and the HTTP client that talks to the CA.
type AccountCell = tokio::sync::Mutex<Option<Account>>;

/// The account of a storage folder and directory, shared by every certificate ordered
/// with it (a section's on-demand certificates can be thousands: one HTTP client and one
/// account key in memory, not one each). Kept while a certificate uses it.
fn shared_account(storage: &std::path::Path, directory: &str) -> Arc<AccountCell> {
    type Cells = Vec<((PathBuf, String), std::sync::Weak<AccountCell>)>;
    static CELLS: parking_lot::Mutex<Cells> = parking_lot::Mutex::new(Vec::new());
    let mut cells = CELLS.lock();
    cells.retain(|(_, cell)| cell.strong_count() > 0);
    if let Some(cell) = cells
        .iter()
        .find(|((s, d), _)| s == storage && d == directory)
        .and_then(|(_, cell)| cell.upgrade())
    {
        return cell;
    }
    let cell = Arc::new(tokio::sync::Mutex::new(None));
    cells.push((
        (storage.to_path_buf(), directory.to_string()),
        Arc::downgrade(&cell),
    ));
    cell
}

impl Job {
    async fn run(self) {
        let mut backoff = Duration::from_secs(5);
        Box::pin(self.pull()).await;
        let mut renew_now = false;
        let mut current: Option<Stored> = match storage::load(&self.storage, &self.names) {
            Ok(Some(s)) if s.covers(&self.names) && s.not_after > SystemTime::now() => {
                self.install(&s, "storage");
                if s.key_type != Some(self.config.key_type()) {
                    // served until the new one comes
                    tracing::info!(target: "hopline::acme", "stored certificate for {} has a {} key, {} is configured: ordering a new one", self.names.join(", "), s.key_type.map_or("different", |k| k.name()), self.config.key_type().name());
                    renew_now = true;
                }
                Some(s)
            }
            Ok(_) => None,
            Err(e) => {
                tracing::warn!(target: "hopline::acme", "stored certificate for {} unusable, ordering a new one: {e}", self.names.join(", "));
                None
            }
        };
        loop {
            if let Some(c) = &current
                && !renew_now
            {
                // (boxed, as the order below: a task waits most of its life, and its
                // state should not hold room for the HTTP exchanges it makes rarely)
                let (at, recheck) = Box::pin(self.renew_time(c)).await;
                let now = SystemTime::now();
                if now < at {
                    tokio::time::sleep(at.duration_since(now).unwrap_or_default().min(recheck))
                        .await;
                    continue;
                }
            }
            self.status.lock().state = "ordering";
            match Box::pin(self.obtain(current.as_ref())).await {
                Ok((s, how)) => {
                    self.install(&s, how);
                    if how == "ordered" {
                        self.status.lock().orders += 1;
                    }
                    tracing::info!(target: "hopline::acme", "certificate for {} {} (valid until {})", self.names.join(", "), if how == "ordered" { format!("obtained from {}", self.config.directory.get_ref()) } else { "taken from the shared store (another node ordered it)".to_string() }, httpdate::fmt_http_date(s.not_after));
                    current = Some(s);
                    renew_now = false;
                    backoff = Duration::from_secs(5);
                }
                Err(e) => {
                    // the next attempt loads the account afresh (the CA may have lost it)
                    *self.account.lock().await = None;
                    let expired = current
                        .as_ref()
                        .is_none_or(|c| c.not_after <= SystemTime::now());
                    let retry = SystemTime::now() + backoff;
                    {
                        let mut st = self.status.lock();
                        st.state = match (&current, expired) {
                            (None, _) => "waiting",
                            (Some(_), true) => "expired",
                            (Some(_), false) => "failing",
                        };
                        st.last_error = Some(e.clone());
                        st.retry_at = Some(epoch(retry));
                    }
                    self.changed.send_modify(|v| *v += 1);
                    if current.is_some() && expired {
                        tracing::error!(target: "hopline::acme", "certificate for {} EXPIRED and its renewal fails (retry in {} s): {e}", self.names.join(", "), backoff.as_secs());
                    } else {
                        tracing::warn!(target: "hopline::acme", "ordering a certificate for {} failed (retry in {} s): {e}", self.names.join(", "), backoff.as_secs());
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(3600));
                }
            }
        }
    }

    fn install(&self, s: &Stored, how: &'static str) {
        self.live.store(Some(s.key.clone()));
        *self.installed.lock() = SystemTime::now();
        let mut st = self.status.lock();
        st.state = "valid";
        st.obtained = Some(how);
        st.issuer = Some(s.issuer.clone());
        st.not_after = Some(epoch(s.not_after));
        st.not_before = Some(epoch(s.not_before));
        st.renew_at = Some(epoch(s.renew_at()));
        st.last_error = None;
        st.retry_at = None;
        drop(st);
        self.changed.send_modify(|v| *v += 1);
    }

    /// The account: stored for this directory, else created (and stored).
    async fn account(&self) -> Result<Account, String> {
        // loaded (or created) once per section, not at every renewal check
        let mut cached = self.account.lock().await;
        if let Some(a) = cached.as_ref() {
            return Ok(a.clone());
        }
        let a = self.load_account().await?;
        *cached = Some(a.clone());
        Ok(a)
    }

    async fn load_account(&self) -> Result<Account, String> {
        let directory = self.config.directory.get_ref();
        let builder = || {
            client(self.config.ca_root.as_ref().map(|r| r.get_ref().as_path()))
                .map(Account::builder_with_http)
        };
        if let Some(creds) = storage::load_account(&self.storage, directory) {
            match builder()
                .map_err(|e| e.to_string())?
                .from_credentials(creds)
                .await
            {
                Ok(a) => return Ok(a),
                Err(e) => {
                    tracing::warn!(target: "hopline::acme", "stored account unusable, creating a new one: {e}")
                }
            }
        }
        let contact = self.config.contact.as_ref().map(|c| format!("mailto:{c}"));
        let contacts: Vec<&str> = contact.iter().map(String::as_str).collect();
        let (account, creds) = builder()
            .map_err(|e| format!("the directory's client: {e}"))?
            .create(
                &NewAccount {
                    contact: &contacts,
                    terms_of_service_agreed: true,
                    only_return_existing: false,
                },
                directory.clone(),
                None,
            )
            .await
            .map_err(|e| format!("creating an account at {directory}: {e}"))?;
        storage::save_account(&self.storage, directory, &creds)
            .map_err(|e| format!("storing the account in {}: {e}", self.storage.display()))?;
        Ok(account)
    }

    /// When to renew `c`, and when to ask again: at a random point of the CA's renewal
    /// window (ARI, RFC 9773) when its directory offers one, as the RFC asks, looking
    /// again when its Retry-After says; else at two thirds of the lifetime.
    async fn renew_time(&self, c: &Stored) -> (SystemTime, Duration) {
        let lifetime = (c.renew_at(), Duration::from_secs(6 * 3600));
        let Some((aki, serial)) = &c.ari else {
            self.set_renew(c.renew_at(), "lifetime");
            return lifetime;
        };
        let id = instant_acme::CertificateIdentifier {
            authority_key_identifier: aki.as_str().into(),
            serial: serial.as_str().into(),
        };
        let info = match self.account().await {
            Ok(account) => account.renewal_info(&id).await,
            Err(_) => {
                self.set_renew(c.renew_at(), "lifetime");
                return (c.renew_at(), Duration::from_secs(60));
            }
        };
        match info {
            Ok((info, retry)) => {
                let at = |t: time::OffsetDateTime| {
                    SystemTime::UNIX_EPOCH + Duration::from_secs(t.unix_timestamp().max(0) as u64)
                };
                let (start, end) = (
                    at(info.suggested_window.start),
                    at(info.suggested_window.end),
                );
                let span = end.duration_since(start).unwrap_or_default();
                // a window in the past means now — but never sooner than a tenth of the
                // lifetime (at most 10 s) after this certificate began, so a CA whose
                // windows are always past is not asked again and again
                let life = c.not_after.duration_since(c.not_before).unwrap_or_default();
                let floor = self.obtained_at() + (life / 10).min(Duration::from_secs(10));
                let pick = (start + span.mul_f64(rand::random::<f64>())).max(floor);
                self.set_renew(pick, "ari");
                (
                    pick,
                    retry.clamp(Duration::from_secs(1), Duration::from_secs(86400)),
                )
            }
            Err(_) => {
                self.set_renew(c.renew_at(), "lifetime");
                lifetime
            }
        }
    }

    /// When this task last installed a certificate (start, for one found in storage).
    fn obtained_at(&self) -> SystemTime {
        *self.installed.lock()
    }

    fn set_renew(&self, at: SystemTime, by: &'static str) {
        let mut st = self.status.lock();
        st.renew_at = Some(epoch(at));
        st.renew_by = Some(by);
    }

    /// Copy a newer certificate from the shared store (if any) to this node's disk.
    async fn pull(&self) {
        let Some(sh) = &self.shared else { return };
        let Ok(Some((chain, key))) = sh.get_cert(&self.names).await else {
            return;
        };
        let ours = storage::load(&self.storage, &self.names).ok().flatten();
        let theirs = pem_leaf(&chain).and_then(|der| storage::inspect(&der).ok());
        if let Some((_, not_after, _, _)) = theirs
            && ours.as_ref().is_none_or(|o| o.not_after < not_after)
            && let Err(e) = storage::save(&self.storage, &self.names, &chain, &key)
        {
            tracing::warn!(target: "hopline::acme", "copying the shared certificate to {}: {e}", self.storage.display());
        }
    }

    /// A new certificate: ordered here, or — when another edge holds the order lock in
    /// the shared store — the one it stores there.
    async fn obtain(&self, current: Option<&Stored>) -> Result<(Stored, &'static str), String> {
        let Some(sh) = &self.shared else {
            return self.order().await.map(|s| (s, "ordered"));
        };
        if sh.lock(&self.names, Duration::from_secs(120)).await? {
            // the lock is ours; another node may have finished just before we took it
            self.pull().await;
            if let Some(s) = self.fresher_than(current) {
                sh.unlock(&self.names).await;
                return Ok((s, "shared"));
            }
            let r = self.order().await;
            if let Ok(s) = &r
                && let Err(e) = self.push(s).await
            {
                tracing::warn!(target: "hopline::acme", "sharing the certificate for {}: {e}", self.names.join(", "));
            }
            sh.unlock(&self.names).await;
            return r.map(|s| (s, "ordered"));
        }
        // another node orders: wait for its result (up to the lock's life)
        let until = tokio::time::Instant::now() + Duration::from_secs(120);
        while tokio::time::Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(250)).await;
            self.pull().await;
            if let Some(s) = self.fresher_than(current) {
                return Ok((s, "shared"));
            }
        }
        Err("another node held the order lock for 120 s and stored no certificate".to_string())
    }

    /// The stored certificate, if it is newer than `current` and not due for renewal.
    fn fresher_than(&self, current: Option<&Stored>) -> Option<Stored> {
        let s = storage::load(&self.storage, &self.names).ok().flatten()?;
        let newer = current.is_none_or(|c| s.not_after > c.not_after);
        (newer && s.covers(&self.names) && SystemTime::now() < s.renew_at()).then_some(s)
    }

    /// Put this node's certificate in the shared store.
    async fn push(&self, _s: &Stored) -> Result<(), String> {
        let Some(sh) = &self.shared else {
            return Ok(());
        };
        let (cert, key) = storage::cert_files(&self.storage, &self.names);
        let chain = std::fs::read_to_string(&cert).map_err(|e| e.to_string())?;
        let key = std::fs::read_to_string(&key).map_err(|e| e.to_string())?;
        sh.put_cert(&self.names, &chain, &key).await
    }

    /// One order, HTTP-01 for every name, to a stored certificate.
    async fn order(&self) -> Result<Stored, String> {
        let account = self.account().await?;
        let ids: Vec<Identifier> = self
            .names
            .iter()
            .map(|n| Identifier::Dns(n.clone()))
            .collect();
        let mut order = account
            .new_order(&NewOrder::new(&ids))
            .await
            .map_err(|e| format!("new order: {e}"))?;
        let mut answered = Vec::new();
        let result = self.authorize(&mut order, &mut answered).await;
        let result = match result {
            Ok(()) => order
                .poll_ready(
                    &RetryPolicy::new()
                        .initial_delay(Duration::from_millis(50))
                        .timeout(Duration::from_secs(60)),
                )
                .await
                .map_err(|e| format!("waiting for validation: {e}")),
            Err(e) => Err(e),
        };
        for a in &answered {
            match a {
                Answered::Token(t) => {
                    self.http01.remove(t);
                    if let Some(sh) = &self.shared {
                        sh.del_token(t).await;
                    }
                }
                Answered::Name(n) => self.tls_alpn.remove(n),
                Answered::Txt(n, v) => hopline_dns::challenge::dns01().withdraw(n, v),
            }
        }
        match result? {
            OrderStatus::Ready => {}
            other => {
                let why = self.why_invalid(&mut order).await;
                return Err(format!(
                    "the CA did not validate the names ({other:?}){why}"
                ));
            }
        }
        // the CSR names exactly the order's names, with a key of the configured type
        let key_type = self.config.key_type();
        let key = rcgen::KeyPair::generate_for(key_type.algorithm())
            .map_err(|e| format!("a {} key: {e}", key_type.name()))?;
        let mut params = rcgen::CertificateParams::new(self.names.clone())
            .map_err(|e| format!("a CSR for {}: {e}", self.names.join(", ")))?;
        params.distinguished_name = rcgen::DistinguishedName::new();
        let csr = params
            .serialize_request(&key)
            .map_err(|e| format!("a CSR for {}: {e}", self.names.join(", ")))?;
        order
            .finalize_csr(csr.der())
            .await
            .map_err(|e| format!("finalize: {e}"))?;
        let key_pem = key.serialize_pem();
        let chain_pem = order
            .poll_certificate(
                &RetryPolicy::new()
                    .initial_delay(Duration::from_millis(50))
                    .timeout(Duration::from_secs(60)),
            )
            .await
            .map_err(|e| format!("fetching the certificate: {e}"))?;
        storage::save(&self.storage, &self.names, &chain_pem, &key_pem)
            .map_err(|e| format!("storing the certificate in {}: {e}", self.storage.display()))?;
        storage::load(&self.storage, &self.names)?
            .ok_or_else(|| "the stored certificate vanished".to_string())
    }

    /// Answer every pending authorization's challenge and tell the CA.
    async fn authorize(
        &self,
        order: &mut instant_acme::Order,
        answered: &mut Vec<Answered>,
    ) -> Result<(), String> {
        let kind = self.config.challenge();
        let mut authorizations = order.authorizations();
        while let Some(a) = authorizations.next().await {
            let mut authz = a.map_err(|e| format!("authorization: {e}"))?;
            match authz.status {
                AuthorizationStatus::Pending => {}
                AuthorizationStatus::Valid => continue,
                other => return Err(format!("authorization {other:?}")),
            }
            let name = authz.identifier().to_string();
            let mut challenge = authz
                .challenge(challenge_type(kind))
                .ok_or_else(|| format!("the CA offers no {kind:?} challenge for {name}"))?;
            match kind {
                Challenge::Http01 => {
                    let token = challenge.token.clone();
                    self.http01
                        .insert(&token, challenge.key_authorization().as_str());
                    if let Some(sh) = &self.shared {
                        // any node the CA's request reaches can answer it
                        sh.put_token(
                            &token,
                            challenge.key_authorization().as_str(),
                            Duration::from_secs(300),
                        )
                        .await?;
                    }
                    answered.push(Answered::Token(token));
                }
                Challenge::TlsAlpn01 => {
                    let cert =
                        alpn_certificate(&name, challenge.key_authorization().digest().as_ref())?;
                    self.tls_alpn.insert(&name, cert);
                    answered.push(Answered::Name(name.clone()));
                }
                Challenge::Dns01 => {
                    // `*.example.com` is validated at `_acme-challenge.example.com`
                    let base = name.trim_start_matches("*.");
                    let dns = hopline_dns::challenge::dns01();
                    if !dns.serves(base) {
                        return Err(format!(
                            "DNS-01 for {name}: no [[dns.authoritative]] of this process serves its zone (publish the TXT record elsewhere, or choose http-01 / tls-alpn-01)"
                        ));
                    }
                    let record = format!("_acme-challenge.{base}");
                    let value = challenge.key_authorization().dns_value();
                    dns.publish(&record, &value);
                    answered.push(Answered::Txt(record, value));
                }
            }
            challenge
                .set_ready()
                .await
                .map_err(|e| format!("challenge for {name}: {e}"))?;
        }
        Ok(())
    }

    /// The CA's reasons for an invalid order, from its authorizations.
    async fn why_invalid(&self, order: &mut instant_acme::Order) -> String {
        let mut out = String::new();
        let mut authorizations = order.authorizations();
        while let Some(Ok(mut authz)) = authorizations.next().await {
            let name = authz.identifier().to_string();
            if let Some(c) = authz.challenge(challenge_type(self.config.challenge()))
                && let Some(p) = &c.error
            {
                out.push_str(&format!(
                    "; {name}: {}",
                    p.detail.as_deref().unwrap_or("invalid")
                ));
            }
        }
        out
    }
}

/// The HTTP client the ACME requests go through: HTTPS only, HTTP/1.1 and HTTP/2, the
/// web's roots plus `ca_root`, and TCP_NODELAY — the library's default client leaves
/// Nagle on, and each signed POST (written in two parts) then waited ~40 ms for the CA's
/// delayed ACK: ~385 ms of an issuance's ~940 ms (bench/acme.sh).
fn client(ca_root: Option<&std::path::Path>) -> Result<Box<dyn instant_acme::HttpClient>, String> {
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(root) = ca_root {
        for cert in rustls_pki_types::CertificateDer::pem_file_iter(root)
            .map_err(|e| format!("{}: {e}", root.display()))?
        {
            let cert = cert.map_err(|e| format!("{}: {e}", root.display()))?;
            roots
                .add(cert)
                .map_err(|e| format!("{}: {e}", root.display()))?;
        }
    }
    hopline_engine::tls::install_crypto_provider();
    let tls = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
    http.set_nodelay(true);
    http.enforce_http(false);
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_only()
        .enable_http1()
        .enable_http2()
        .wrap_connector(http);
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build::<_, instant_acme::BodyWrapper<bytes::Bytes>>(https);
    Ok(Box::new(client))
}

/// The DER of the first certificate of a PEM chain.
fn pem_leaf(chain: &str) -> Option<Vec<u8>> {
    use rustls_pki_types::pem::PemObject;
    rustls_pki_types::CertificateDer::pem_slice_iter(chain.as_bytes())
        .next()?
        .ok()
        .map(|c| c.as_ref().to_vec())
}

/// A challenge answered during an order, to withdraw after it.
enum Answered {
    Token(String),
    Name(String),
    Txt(String, String),
}

fn challenge_type(c: Challenge) -> ChallengeType {
    match c {
        Challenge::Http01 => ChallengeType::Http01,
        Challenge::TlsAlpn01 => ChallengeType::TlsAlpn01,
        Challenge::Dns01 => ChallengeType::Dns01,
    }
}

/// The TLS-ALPN-01 answer for `name`: a self-signed certificate for it alone with the
/// critical acmeIdentifier extension holding SHA-256 of the key authorization (RFC 8737 §3).
fn alpn_certificate(name: &str, digest: &[u8]) -> Result<Arc<rustls::sign::CertifiedKey>, String> {
    let key = rcgen::KeyPair::generate().map_err(|e| format!("a challenge key: {e}"))?;
    let mut params = rcgen::CertificateParams::new(vec![name.to_string()])
        .map_err(|e| format!("a challenge certificate for {name}: {e}"))?;
    params.custom_extensions = vec![rcgen::CustomExtension::new_acme_identifier(digest)];
    let cert = params
        .self_signed(&key)
        .map_err(|e| format!("a challenge certificate for {name}: {e}"))?;
    let der = rustls_pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into());
    let signing = rustls::crypto::ring::sign::any_supported_type(&der)
        .map_err(|e| format!("a challenge key: {e}"))?;
    Ok(Arc::new(rustls::sign::CertifiedKey::new(
        vec![cert.der().clone()],
        signing,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tls_alpn_answer_carries_the_digest_in_a_critical_extension() {
        let digest = [7u8; 32];
        let ck = alpn_certificate("www.a.test", &digest).unwrap();
        let (_, x) = x509_parser::parse_x509_certificate(ck.cert[0].as_ref()).unwrap();
        let ext = x
            .extensions()
            .iter()
            .find(|e| e.oid.to_id_string() == "1.3.6.1.5.5.7.1.31")
            .expect("acmeIdentifier");
        assert!(ext.critical);
        // an OCTET STRING of the 32 bytes
        assert_eq!(&ext.value[..2], &[0x04, 32]);
        assert_eq!(&ext.value[2..], &digest);
        let (_, _, names, _) = crate::storage::inspect(ck.cert[0].as_ref()).unwrap();
        assert_eq!(names, vec!["www.a.test".to_string()]);
    }
}
