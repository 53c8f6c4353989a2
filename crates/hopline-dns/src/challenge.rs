//! ACME DNS-01 records (RFC 8555 §8.4) published in this process's authoritative
//! servers: the edge's ACME client puts `_acme-challenge.NAME TXT "…"` here while the CA
//! validates and takes it away after; every [`Authority`](crate::authority::Authority)
//! whose zone holds the name answers it. One registry per process, because that is what
//! "the zone is served here" means: `hopline serve` runs the edge and the DNS of one file.
//! With nothing published an authority pays one atomic load per TXT query.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

/// The process's DNS-01 records and the zones its authoritative servers serve.
#[derive(Debug, Default)]
pub struct Dns01 {
    pending: AtomicUsize,
    records: parking_lot::RwLock<HashMap<String, Vec<String>>>,
    zones: parking_lot::RwLock<HashMap<u64, Vec<String>>>,
    next: AtomicU64,
}

/// The process's registry.
pub fn dns01() -> &'static Dns01 {
    static R: OnceLock<Dns01> = OnceLock::new();
    R.get_or_init(Dns01::default)
}

/// `Www.Example.COM.` → `www.example.com`.
fn key(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// Whether `name` is where DNS-01 records live (`_acme-challenge.…`): answers for it are
/// never replayed from a cache, since its records come and go.
pub fn is_challenge_name(name: &hickory_proto::rr::Name) -> bool {
    name.iter()
        .next()
        .is_some_and(|l| l.eq_ignore_ascii_case(b"_acme-challenge"))
}

/// While alive, the zones of one authority count as served here.
#[derive(Debug)]
pub struct Served(u64);

impl Drop for Served {
    fn drop(&mut self) {
        dns01().zones.write().remove(&self.0);
    }
}

impl Dns01 {
    /// Publish `value` at `name` (e.g. `_acme-challenge.www.example.com`).
    pub fn publish(&self, name: &str, value: &str) {
        let mut r = self.records.write();
        r.entry(key(name)).or_default().push(value.to_string());
        self.pending.store(r.len(), Ordering::Release);
    }

    /// Take `value` at `name` away.
    pub fn withdraw(&self, name: &str, value: &str) {
        let mut r = self.records.write();
        let k = key(name);
        if let Some(v) = r.get_mut(&k) {
            v.retain(|x| x != value);
            if v.is_empty() {
                r.remove(&k);
            }
        }
        self.pending.store(r.len(), Ordering::Release);
    }

    /// The TXT values published at `name`.
    pub fn txt(&self, name: &str) -> Option<Vec<String>> {
        if self.pending.load(Ordering::Acquire) == 0 {
            return None;
        }
        self.records.read().get(&key(name)).cloned()
    }

    /// Whether an authoritative server of this process serves the zone `name` is in.
    pub fn serves(&self, name: &str) -> bool {
        let n = key(name);
        self.zones
            .read()
            .values()
            .flatten()
            .any(|origin| origin.is_empty() || n == *origin || n.ends_with(&format!(".{origin}")))
    }

    /// Count `origins` as served until the guard drops.
    pub fn register(&self, origins: Vec<String>) -> Arc<Served> {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.zones
            .write()
            .insert(id, origins.iter().map(|o| key(o)).collect());
        Arc::new(Served(id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_come_and_go_and_zones_count_while_served() {
        let r = Dns01::default();
        assert_eq!(r.txt("_acme-challenge.a.test"), None);
        r.publish("_acme-challenge.A.test.", "v1");
        r.publish("_acme-challenge.a.test", "v2");
        assert_eq!(
            r.txt("_acme-challenge.a.test."),
            Some(vec!["v1".to_string(), "v2".to_string()])
        );
        r.withdraw("_acme-challenge.a.test", "v1");
        r.withdraw("_acme-challenge.a.test", "v2");
        assert_eq!(r.txt("_acme-challenge.a.test"), None);
        let g = dns01().register(vec!["zone-registry.test.".into()]);
        assert!(dns01().serves("_acme-challenge.www.zone-registry.test"));
        assert!(!dns01().serves("www.notzone-registry.test"));
        drop(g);
        assert!(!dns01().serves("www.zone-registry.test"));
    }
}
