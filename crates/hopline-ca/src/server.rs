//! The ACME endpoints of one CA, under the route's prefix: `directory`, `new-nonce`,
//! `new-account`, `new-order`, `acct/ID`, `order/ID`, `authz/ID`, `chall/ID`,
//! `finalize/ID`, `cert/ID`. Every answer carries a fresh `Replay-Nonce` and the
//! directory's `Link`; errors are `application/problem+json` with ACME's error types.

use std::sync::Arc;

use bytes::Bytes;
use hopline_edge::Body;
use hopline_edge::engine::body::RequestBody;
use hopline_edge::service::{BoxFuture, RouteService, ServiceContext};
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::BodyExt;

use crate::config::CaConfig;
use crate::jws;
use crate::state::{self, Account, Authz, Challenge, Order, State};
use crate::validate::Validator;

/// One running CA.
pub struct Authority {
    /// Its section's name.
    pub name: String,
    /// Its config.
    pub config: CaConfig,
    state: parking_lot::Mutex<State>,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    ca_pem: String,
    validator: Validator,
}

impl std::fmt::Debug for Authority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authority")
            .field("name", &self.name)
            .finish()
    }
}

/// An answer being built: status, JSON or bytes, extra headers.
struct Answer {
    status: StatusCode,
    body: Bytes,
    content_type: &'static str,
    location: Option<String>,
    link_up: Option<String>,
    retry_after: Option<u64>,
}

impl Answer {
    fn json(status: StatusCode, v: &serde_json::Value) -> Answer {
        Answer {
            status,
            body: Bytes::from(serde_json::to_vec_pretty(v).unwrap_or_default()),
            content_type: "application/json",
            location: None,
            link_up: None,
            retry_after: None,
        }
    }

    fn problem(kind: &str, detail: impl Into<String>) -> Answer {
        let status = match kind {
            "unauthorized" | "orderNotReady" => StatusCode::FORBIDDEN,
            "notFound" => StatusCode::NOT_FOUND,
            "serverInternal" => StatusCode::INTERNAL_SERVER_ERROR,
            "methodNotAllowed" => StatusCode::METHOD_NOT_ALLOWED,
            _ => StatusCode::BAD_REQUEST,
        };
        let kind = if kind == "notFound" || kind == "methodNotAllowed" {
            "malformed"
        } else {
            kind
        };
        let mut a = Answer::json(
            status,
            &serde_json::json!({
                "type": format!("urn:ietf:params:acme:error:{kind}"),
                "detail": detail.into(),
                "status": status.as_u16(),
            }),
        );
        a.content_type = "application/problem+json";
        a
    }

    fn located(mut self, url: String) -> Answer {
        self.location = Some(url);
        self
    }
}

impl Authority {
    /// Open (or make) the CA in `config.dir`.
    pub fn new(name: &str, config: &CaConfig) -> Result<Authority, String> {
        let files = hopline_edge::tls::ca::ensure_ca(&config.dir).map_err(|e| e.to_string())?;
        let key_pem = std::fs::read_to_string(&files.ca_key)
            .map_err(|e| format!("{}: {e}", files.ca_key.display()))?;
        let ca_pem = std::fs::read_to_string(&files.ca_cert)
            .map_err(|e| format!("{}: {e}", files.ca_cert.display()))?;
        let key = rcgen::KeyPair::from_pem(&key_pem)
            .map_err(|e| format!("{}: {e}", files.ca_key.display()))?;
        let issuer = rcgen::Issuer::from_ca_cert_pem(&ca_pem, key)
            .map_err(|e| format!("{}: {e}", files.ca_cert.display()))?;
        Ok(Authority {
            name: name.to_string(),
            config: config.clone(),
            state: parking_lot::Mutex::new(State::default()),
            issuer,
            ca_pem,
            validator: Validator {
                resolvers: config
                    .resolvers
                    .iter()
                    .filter_map(|r| r.parse().ok())
                    .collect(),
                http_port: config.http_port,
                tls_port: config.tls_port,
            },
        })
    }

    /// What the admin listener shows.
    pub fn status(&self) -> serde_json::Value {
        let s = self.state.lock();
        serde_json::json!({
            "accounts": s.accounts.len(),
            "orders": s.orders.len(),
            "issued": s.issued,
            "failed_validations": s.failed,
        })
    }

    async fn handle(
        self: &Arc<Self>,
        req: Request<RequestBody>,
        ctx: &ServiceContext,
    ) -> Response<Body> {
        let host = req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .map(str::to_string)
            .or_else(|| req.uri().authority().map(|a| a.to_string()))
            .unwrap_or_else(|| "localhost".into());
        let base = format!(
            "{}://{host}{}",
            if ctx.tls { "https" } else { "http" },
            ctx.prefix.trim_end_matches('/')
        );
        let rel = req
            .uri()
            .path()
            .strip_prefix(ctx.prefix.trim_end_matches('/'))
            .unwrap_or("")
            .trim_start_matches('/')
            .to_string();
        let method = req.method().clone();
        let answer = match (method.clone(), rel.as_str()) {
            (Method::GET, "" | "directory") => Answer::json(
                StatusCode::OK,
                &serde_json::json!({
                    "newNonce": format!("{base}/new-nonce"),
                    "newAccount": format!("{base}/new-account"),
                    "newOrder": format!("{base}/new-order"),
                    "revokeCert": format!("{base}/revoke-cert"),
                    "keyChange": format!("{base}/key-change"),
                    "renewalInfo": format!("{base}/renewal-info"),
                    "meta": {"externalAccountRequired": false,
                             "website": "https://example.invalid/hopline"},
                }),
            ),
            (Method::HEAD, "new-nonce") => Answer {
                status: StatusCode::OK,
                body: Bytes::new(),
                content_type: "text/plain",
                location: None,
                link_up: None,
                retry_after: None,
            },
            (Method::GET, "new-nonce") => Answer {
                status: StatusCode::NO_CONTENT,
                body: Bytes::new(),
                content_type: "text/plain",
                location: None,
                link_up: None,
                retry_after: None,
            },
            (Method::GET, r) if r.starts_with("renewal-info/") => {
                self.renewal_info(&r["renewal-info/".len()..])
            }
            (Method::POST, _) => {
                let url = format!("{base}/{rel}");
                let body = match http_body_util::Limited::new(req.into_body(), 64 * 1024)
                    .collect()
                    .await
                {
                    Ok(b) => b.to_bytes(),
                    Err(e) => {
                        return self
                            .finish(Answer::problem("malformed", format!("body: {e}")), &base);
                    }
                };
                if body.is_empty() {
                    return self.finish(Answer::problem("malformed", "empty body"), &base);
                }
                self.post(&base, &url, &rel, &body).await
            }
            (_, "directory" | "" | "new-nonce") => {
                Answer::problem("methodNotAllowed", format!("{method} is not allowed here"))
            }
            (Method::GET, _) => Answer::problem(
                "malformed",
                "ACME resources are fetched with POST-as-GET (RFC 8555 §6.3)",
            ),
            _ => Answer::problem("notFound", format!("no resource {rel:?}")),
        };
        self.finish(answer, &base)
    }

    fn finish(&self, a: Answer, base: &str) -> Response<Body> {
        let nonce = self.state.lock().nonce();
        let mut r = Response::new(Body::full(a.body.clone()));
        *r.status_mut() = a.status;
        let h = r.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(a.content_type),
        );
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(a.body.len()));
        if let Ok(v) = HeaderValue::from_str(&nonce) {
            h.insert("replay-nonce", v);
        }
        if let Ok(v) = HeaderValue::from_str(&format!("<{base}/directory>;rel=\"index\"")) {
            h.append(header::LINK, v);
        }
        if let Some(up) = a
            .link_up
            .as_deref()
            .and_then(|u| HeaderValue::from_str(&format!("<{u}>;rel=\"up\"")).ok())
        {
            h.append(header::LINK, up);
        }
        if let Some(secs) = a.retry_after {
            h.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if let Some(l) = a
            .location
            .as_deref()
            .and_then(|l| HeaderValue::from_str(l).ok())
        {
            h.insert(header::LOCATION, l);
        }
        r
    }

    /// A signed request: nonce, URL and signature checked, then handled.
    async fn post(self: &Arc<Self>, base: &str, url: &str, rel: &str, body: &[u8]) -> Answer {
        let (f, header, payload) = match jws::parse(body) {
            Ok(p) => p,
            Err((kind, detail)) => return Answer::problem(kind, detail),
        };
        if !header
            .nonce
            .as_deref()
            .is_some_and(|n| self.state.lock().spend(n))
        {
            return Answer::problem(
                "badNonce",
                "the nonce is unknown or spent: take the one in this answer's Replay-Nonce",
            );
        }
        if header.url != url {
            return Answer::problem(
                "unauthorized",
                format!(
                    "the signed url {:?} is not this request's {url:?}",
                    header.url
                ),
            );
        }
        // the key: given (new accounts only) or the account's
        let (jwk, account) = match (&header.jwk, &header.kid) {
            (Some(jwk), None) if rel == "new-account" => (jwk.clone(), None),
            (Some(_), None) => {
                return Answer::problem(
                    "malformed",
                    "only new-account is signed with a jwk; use kid",
                );
            }
            (None, Some(kid)) => {
                let id = kid.strip_prefix(&format!("{base}/acct/")).unwrap_or("");
                match self.state.lock().accounts.get(id) {
                    Some(a) => (a.jwk.clone(), Some(id.to_string())),
                    None => {
                        return Answer::problem("accountDoesNotExist", format!("no account {kid}"));
                    }
                }
            }
            _ => return Answer::problem("malformed", "exactly one of jwk and kid"),
        };
        if let Err((kind, detail)) = jws::verify(&f, &header.alg, &jwk) {
            return Answer::problem(kind, detail);
        }
        let json: serde_json::Value = if payload.is_empty() {
            serde_json::Value::Null
        } else {
            match serde_json::from_slice(&payload) {
                Ok(v) => v,
                Err(e) => return Answer::problem("malformed", format!("payload: {e}")),
            }
        };
        let (what, id) = rel.split_once('/').unwrap_or((rel, ""));
        match (what, account) {
            ("new-account", None) => self.new_account(base, &jwk, &json),
            (_, None) => Answer::problem("accountDoesNotExist", "sign with an account's kid"),
            ("acct", Some(a)) if a == id => self.account(base, &a),
            ("acct", Some(_)) => Answer::problem("unauthorized", "not your account"),
            ("new-order", Some(a)) => self.new_order(base, &a, &json),
            ("order", Some(a)) => self.order(base, &a, id),
            ("authz", Some(a)) => self.authz(base, &a, id, &json),
            ("chall", Some(a)) => self.challenge(base, &a, id, &json),
            ("finalize", Some(a)) => self.finalize(base, &a, id, &json),
            ("cert", Some(a)) => self.certificate(&a, id),
            _ => Answer::problem("notFound", format!("no resource {rel:?}")),
        }
    }

    fn new_account(&self, base: &str, jwk: &serde_json::Value, p: &serde_json::Value) -> Answer {
        let thumb = match jws::thumbprint(jwk) {
            Ok(t) => t,
            Err((kind, detail)) => return Answer::problem(kind, detail),
        };
        let mut s = self.state.lock();
        if let Some(id) = s.by_key.get(&thumb).cloned() {
            let a = &s.accounts[&id];
            return Answer::json(StatusCode::OK, &account_json(base, &id, a))
                .located(format!("{base}/acct/{id}"));
        }
        if p["onlyReturnExisting"].as_bool() == Some(true) {
            return Answer::problem("accountDoesNotExist", "no account has this key");
        }
        let contact: Vec<String> = p["contact"]
            .as_array()
            .map(|c| {
                c.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        if let Some(bad) = contact.iter().find(|c| !c.starts_with("mailto:")) {
            return Answer::problem(
                "unsupportedContact",
                format!("{bad:?}: only mailto: contacts"),
            );
        }
        let id = state::new_id();
        let a = Account {
            jwk: jwk.clone(),
            thumbprint: thumb.clone(),
            contact,
        };
        let body = account_json(base, &id, &a);
        s.accounts.insert(id.clone(), a);
        s.by_key.insert(thumb, id.clone());
        Answer::json(StatusCode::CREATED, &body).located(format!("{base}/acct/{id}"))
    }

    fn account(&self, base: &str, id: &str) -> Answer {
        let s = self.state.lock();
        Answer::json(StatusCode::OK, &account_json(base, id, &s.accounts[id]))
            .located(format!("{base}/acct/{id}"))
    }

    fn new_order(&self, base: &str, account: &str, p: &serde_json::Value) -> Answer {
        let Some(ids) = p["identifiers"].as_array().filter(|a| !a.is_empty()) else {
            return Answer::problem("malformed", "an order needs identifiers");
        };
        if ids.len() > 100 {
            return Answer::problem("rejectedIdentifier", "at most 100 names an order");
        }
        let mut names = Vec::new();
        for i in ids {
            if i["type"].as_str() != Some("dns") {
                return Answer::problem(
                    "unsupportedIdentifier",
                    format!("{i}: only dns identifiers"),
                );
            }
            let name = i["value"].as_str().unwrap_or("").to_ascii_lowercase();
            if !valid_order_name(&name) {
                return Answer::problem(
                    "rejectedIdentifier",
                    format!("{name:?} is not a DNS name this CA signs"),
                );
            }
            if !names.contains(&name) {
                names.push(name);
            }
        }
        let now = state::now();
        let expires = now + 7 * 86400;
        let mut s = self.state.lock();
        let mut authz_ids = Vec::new();
        for n in &names {
            let (wildcard, base_name) = match n.strip_prefix("*.") {
                Some(b) => (true, b.to_string()),
                None => (false, n.clone()),
            };
            let kinds: &[&'static str] = if wildcard {
                &["dns-01"]
            } else {
                &["http-01", "tls-alpn-01", "dns-01"]
            };
            let challenges: Vec<(String, Challenge)> = kinds
                .iter()
                .map(|k| {
                    (
                        state::new_id(),
                        Challenge {
                            kind: k,
                            token: state::new_id() + &state::new_id(),
                            status: "pending",
                            validated: None,
                            error: None,
                        },
                    )
                })
                .collect();
            let aid = state::new_id();
            for (cid, _) in &challenges {
                s.challenge_of.insert(cid.clone(), aid.clone());
            }
            s.authzs.insert(
                aid.clone(),
                Authz {
                    account: account.to_string(),
                    name: base_name,
                    wildcard,
                    status: "pending",
                    expires,
                    challenges,
                },
            );
            authz_ids.push(aid);
        }
        let oid = state::new_id();
        let o = Order {
            account: account.to_string(),
            names,
            authz: authz_ids,
            status: None,
            expires,
            cert: None,
            error: None,
        };
        let body = order_json(&s, base, &oid, &o);
        s.orders.insert(oid.clone(), o);
        Answer::json(StatusCode::CREATED, &body).located(format!("{base}/order/{oid}"))
    }

    fn order(&self, base: &str, account: &str, id: &str) -> Answer {
        let s = self.state.lock();
        match s.orders.get(id).filter(|o| o.account == account) {
            Some(o) => Answer::json(StatusCode::OK, &order_json(&s, base, id, o))
                .located(format!("{base}/order/{id}")),
            None => Answer::problem("notFound", format!("no order {id}")),
        }
    }

    fn authz(&self, base: &str, account: &str, id: &str, p: &serde_json::Value) -> Answer {
        let mut s = self.state.lock();
        let Some(z) = s.authzs.get_mut(id).filter(|z| z.account == account) else {
            return Answer::problem("notFound", format!("no authorization {id}"));
        };
        if p["status"].as_str() == Some("deactivated") {
            z.status = "deactivated";
        }
        Answer::json(StatusCode::OK, &authz_json(base, z))
    }

    fn challenge(
        self: &Arc<Self>,
        base: &str,
        account: &str,
        id: &str,
        p: &serde_json::Value,
    ) -> Answer {
        let mut s = self.state.lock();
        let Some(aid) = s.challenge_of.get(id).cloned() else {
            return Answer::problem("notFound", format!("no challenge {id}"));
        };
        let thumbprint = s
            .accounts
            .get(account)
            .map(|a| a.thumbprint.clone())
            .unwrap_or_default();
        let Some(z) = s.authzs.get_mut(&aid).filter(|z| z.account == account) else {
            return Answer::problem("unauthorized", "not your challenge");
        };
        let name = z.name.clone();
        let Some((_, c)) = z.challenges.iter_mut().find(|(cid, _)| cid == id) else {
            return Answer::problem("notFound", format!("no challenge {id}"));
        };
        // a POST with a JSON object (`{}`) asks for validation; POST-as-GET only looks
        if p.is_object() && c.status == "pending" && z.status == "pending" {
            c.status = "processing";
            let (kind, token) = (c.kind, c.token.clone());
            let me = self.clone();
            let (aid, cid) = (aid.clone(), id.to_string());
            let key_authorization = format!("{token}.{thumbprint}");
            tokio::spawn(async move {
                let r = me
                    .validator
                    .check(kind, &name, &token, &key_authorization)
                    .await;
                me.validated(&aid, &cid, r);
            });
        }
        let body = challenge_json(base, id, c);
        let mut a = Answer::json(StatusCode::OK, &body);
        a.link_up = Some(format!("{base}/authz/{aid}"));
        a
    }

    fn validated(&self, aid: &str, cid: &str, r: Result<(), String>) {
        let mut s = self.state.lock();
        if r.is_err() {
            s.failed += 1;
        }
        let Some(z) = s.authzs.get_mut(aid) else {
            return;
        };
        if let Some((_, c)) = z.challenges.iter_mut().find(|(id, _)| id == cid) {
            match &r {
                Ok(()) => {
                    c.status = "valid";
                    c.validated = Some(state::now());
                }
                Err(e) => {
                    tracing::info!(target: "hopline::ca", "{} {}: {e}", c.kind, z.name);
                    c.status = "invalid";
                    c.error = Some(e.clone());
                }
            }
        }
        z.status = if r.is_ok() { "valid" } else { "invalid" };
    }

    fn finalize(&self, base: &str, account: &str, id: &str, p: &serde_json::Value) -> Answer {
        let (names, status) = {
            let s = self.state.lock();
            match s.orders.get(id).filter(|o| o.account == account) {
                Some(o) => (o.names.clone(), s.order_status(o)),
                None => return Answer::problem("notFound", format!("no order {id}")),
            }
        };
        if status != "ready" {
            return Answer::problem("orderNotReady", format!("the order is {status}, not ready"));
        }
        let csr = match p["csr"]
            .as_str()
            .map(|c| base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, c))
        {
            Some(Ok(der)) => der,
            _ => return Answer::problem("badCSR", "csr: base64url DER expected"),
        };
        let pem = match self.sign(&csr, &names) {
            Ok(pem) => pem,
            Err(e) => return Answer::problem("badCSR", e),
        };
        let mut s = self.state.lock();
        if let Some((nb, na, serial)) = pem_validity(&pem) {
            s.validity.insert(serial, (nb, na));
        }
        let cid = state::new_id();
        s.certs.insert(cid.clone(), pem);
        s.issued += 1;
        let Some(o) = s.orders.get_mut(id) else {
            return Answer::problem("notFound", format!("no order {id}"));
        };
        o.status = Some("valid");
        o.cert = Some(cid);
        let o = o.clone();
        Answer::json(StatusCode::OK, &order_json(&s, base, id, &o))
            .located(format!("{base}/order/{id}"))
    }

    /// A certificate for exactly the order's names, with the CSR's key.
    fn sign(&self, csr: &[u8], names: &[String]) -> Result<String, String> {
        let der = rustls_pki_types::CertificateSigningRequestDer::from(csr.to_vec());
        let mut req = rcgen::CertificateSigningRequestParams::from_der(&der)
            .map_err(|e| format!("the CSR does not parse or its signature does not verify: {e}"))?;
        let mut asked: Vec<String> = req
            .params
            .subject_alt_names
            .iter()
            .filter_map(|s| match s {
                rcgen::SanType::DnsName(d) => Some(d.as_str().to_ascii_lowercase()),
                _ => None,
            })
            .collect();
        asked.sort();
        asked.dedup();
        let mut want = names.to_vec();
        want.sort();
        if asked != want {
            return Err(format!(
                "the CSR names {asked:?}, the order {want:?}: they must be the same"
            ));
        }
        let now = time::OffsetDateTime::now_utc();
        let p = &mut req.params;
        p.not_before = now - time::Duration::minutes(1);
        p.not_after = now + time::Duration::seconds(self.config.validity_s as i64);
        p.serial_number = Some(rcgen::SerialNumber::from_slice(&rand::random::<[u8; 16]>()));
        p.is_ca = rcgen::IsCa::ExplicitNoCa;
        p.key_usages = vec![
            rcgen::KeyUsagePurpose::DigitalSignature,
            rcgen::KeyUsagePurpose::KeyEncipherment,
        ];
        p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        p.use_authority_key_identifier_extension = true;
        let mut dn = rcgen::DistinguishedName::new();
        dn.push(rcgen::DnType::CommonName, names[0].as_str());
        p.distinguished_name = dn;
        let cert = req
            .signed_by(&self.issuer)
            .map_err(|e| format!("signing: {e}"))?;
        Ok(format!("{}{}", cert.pem(), self.ca_pem))
    }

    /// ARI (RFC 9773): when a certificate should be renewed — from two thirds to three
    /// quarters of its life, or once it is `renew_after_s` old.
    fn renewal_info(&self, id: &str) -> Answer {
        let Some((_, serial)) = id.split_once('.') else {
            return Answer::problem("malformed", "expected AKI.SERIAL (base64url)");
        };
        let Some((nb, na)) = self.state.lock().validity.get(serial).copied() else {
            return Answer::problem("notFound", "no certificate with that serial from this CA");
        };
        let life = na.saturating_sub(nb);
        let (start, end) = match self.config.renew_after_s {
            Some(after) => {
                let start = (nb + after).min(na);
                // a window a tenth of that age wide (1 s to an hour)
                (start, (start + (after / 10).clamp(1, 3600)).min(na))
            }
            None => (nb + life * 2 / 3, nb + life * 3 / 4),
        };
        let mut a = Answer::json(
            StatusCode::OK,
            &serde_json::json!({"suggestedWindow": {
                "start": state::rfc3339(start), "end": state::rfc3339(end)}}),
        );
        a.retry_after = Some((life / 10).clamp(1, 6 * 3600));
        a
    }

    fn certificate(&self, account: &str, id: &str) -> Answer {
        let s = self.state.lock();
        let owned = s
            .orders
            .values()
            .any(|o| o.account == account && o.cert.as_deref() == Some(id));
        match s.certs.get(id).filter(|_| owned) {
            Some(pem) => Answer {
                status: StatusCode::OK,
                body: Bytes::from(pem.clone()),
                content_type: "application/pem-certificate-chain",
                location: None,
                link_up: None,
                retry_after: None,
            },
            None => Answer::problem("notFound", format!("no certificate {id}")),
        }
    }
}

/// The leaf's (not_before, not_after, base64url serial) of a PEM chain.
fn pem_validity(pem: &str) -> Option<(u64, u64, String)> {
    use base64::Engine;
    let (_, p) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).ok()?;
    let x = p.parse_x509().ok()?;
    Some((
        x.validity().not_before.timestamp().max(0) as u64,
        x.validity().not_after.timestamp().max(0) as u64,
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(x.raw_serial()),
    ))
}

fn valid_order_name(name: &str) -> bool {
    let n = name.strip_prefix("*.").unwrap_or(name);
    // (an all-digit last label is an IP address written as a name: not a DNS identifier)
    !n.is_empty()
        && !n
            .rsplit('.')
            .next()
            .is_some_and(|tld| tld.bytes().all(|b| b.is_ascii_digit()))
        && n.len() <= 253
        && n.contains('.')
        && n.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

fn account_json(base: &str, id: &str, a: &Account) -> serde_json::Value {
    serde_json::json!({
        "status": "valid",
        "contact": a.contact,
        "orders": format!("{base}/acct/{id}/orders"),
    })
}

fn order_json(s: &State, base: &str, id: &str, o: &Order) -> serde_json::Value {
    let mut v = serde_json::json!({
        "status": s.order_status(o),
        "expires": state::rfc3339(o.expires),
        "identifiers": o.names.iter().map(|n| serde_json::json!({"type": "dns", "value": n})).collect::<Vec<_>>(),
        "authorizations": o.authz.iter().map(|a| format!("{base}/authz/{a}")).collect::<Vec<_>>(),
        "finalize": format!("{base}/finalize/{id}"),
    });
    if let Some(c) = &o.cert {
        v["certificate"] = format!("{base}/cert/{c}").into();
    }
    if let Some(e) = &o.error {
        v["error"] =
            serde_json::json!({"type": "urn:ietf:params:acme:error:serverInternal", "detail": e});
    }
    v
}

fn authz_json(base: &str, z: &Authz) -> serde_json::Value {
    let mut v = serde_json::json!({
        "identifier": {"type": "dns", "value": z.name},
        "status": z.status,
        "expires": state::rfc3339(z.expires),
        "challenges": z.challenges.iter().map(|(id, c)| challenge_json(base, id, c)).collect::<Vec<_>>(),
    });
    if z.wildcard {
        v["wildcard"] = true.into();
    }
    v
}

fn challenge_json(base: &str, id: &str, c: &Challenge) -> serde_json::Value {
    let mut v = serde_json::json!({
        "type": c.kind,
        "url": format!("{base}/chall/{id}"),
        "token": c.token,
        "status": c.status,
    });
    if let Some(t) = c.validated {
        v["validated"] = state::rfc3339(t).into();
    }
    if let Some(e) = &c.error {
        v["error"] = serde_json::json!({"type": "urn:ietf:params:acme:error:incorrectResponse", "detail": e, "status": 403});
    }
    v
}

/// The route service of one CA.
#[derive(Debug)]
pub struct CaService(pub Arc<Authority>);

impl RouteService for CaService {
    fn call(&self, req: Request<RequestBody>, ctx: ServiceContext) -> BoxFuture<Response<Body>> {
        let ca = self.0.clone();
        Box::pin(async move { ca.handle(req, &ctx).await })
    }

    fn status(&self) -> serde_json::Value {
        self.0.status()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ca() -> (tempfile::TempDir, Authority) {
        let dir = tempfile::tempdir().unwrap();
        let cfg = CaConfig {
            dir: dir.path().join("ca"),
            http_port: 80,
            tls_port: 443,
            resolvers: Vec::new(),
            validity_s: 3600,
            renew_after_s: None,
        };
        let a = Authority::new("t", &cfg).unwrap();
        (dir, a)
    }

    fn csr(names: &[&str]) -> Vec<u8> {
        let key = rcgen::KeyPair::generate().unwrap();
        let params =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        params.serialize_request(&key).unwrap().der().to_vec()
    }

    #[test]
    fn a_csr_must_name_exactly_the_orders_names() {
        let (_dir, ca) = ca();
        let names = vec!["a.test".to_string(), "b.test".to_string()];
        let pem = ca.sign(&csr(&["b.test", "a.test"]), &names).unwrap();
        assert_eq!(pem.matches("BEGIN CERTIFICATE").count(), 2);
        let (_, x) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).unwrap();
        let cert = x.parse_x509().unwrap();
        let life = cert.validity().not_after.timestamp() - cert.validity().not_before.timestamp();
        assert_eq!(life, 3600 + 60);
        // a name the order did not authorize, or one missing
        for other in [&["a.test", "b.test", "evil.test"][..], &["a.test"][..]] {
            let e = ca.sign(&csr(other), &names).unwrap_err();
            assert!(e.contains("must be the same"), "{e}");
        }
        // garbage, and a CSR whose signature does not verify
        assert!(ca.sign(b"not a csr", &names).is_err());
        let mut tampered = csr(&["a.test", "b.test"]);
        let last = tampered.len() - 1;
        tampered[last] ^= 0xff;
        assert!(ca.sign(&tampered, &names).is_err());
    }

    #[test]
    fn order_names_this_ca_signs() {
        for ok in ["www.a.test", "*.a.test", "a-b.c"] {
            assert!(valid_order_name(ok), "{ok}");
        }
        for bad in [
            "",
            "localhost",
            "*.*.a.test",
            "a..b",
            "a.b/c",
            "*a.test",
            "127.0.0.1",
        ] {
            assert!(!valid_order_name(bad), "{bad}");
        }
    }
}
