//! HTTP-01 challenges in flight: `GET /.well-known/acme-challenge/TOKEN` answers the key
//! authorization while the CA validates, on every listener, before any route. With none
//! in flight the request path pays one atomic load.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The path prefix the CA asks under.
pub const PREFIX: &str = "/.well-known/acme-challenge/";

/// Tokens and their key authorizations, shared by every order of a server.
#[derive(Debug, Default)]
pub struct Http01 {
    pending: AtomicUsize,
    tokens: parking_lot::RwLock<HashMap<String, String>>,
    /// Tokens other edges published (sections with `redis`).
    shared: arc_swap::ArcSwapOption<crate::shared::Shared>,
}

impl Http01 {
    /// Answer `token` with `key_authorization` until [`Http01::remove`].
    pub fn insert(&self, token: &str, key_authorization: &str) {
        let mut t = self.tokens.write();
        t.insert(token.to_string(), key_authorization.to_string());
        self.pending.store(t.len(), Ordering::Release);
    }

    /// Stop answering `token`.
    pub fn remove(&self, token: &str) {
        let mut t = self.tokens.write();
        t.remove(token);
        self.pending.store(t.len(), Ordering::Release);
    }

    /// Also answer tokens other edges publish in `shared`.
    pub fn share(&self, shared: std::sync::Arc<crate::shared::Shared>) {
        self.shared.store(Some(shared));
    }

    /// Whether a path not answered locally may be answered from the shared store.
    pub fn may_share(&self, path: &str) -> bool {
        path.starts_with(PREFIX) && self.shared.load().is_some()
    }

    /// The key authorization another edge published for a request path.
    pub async fn answer_shared(&self, path: &str) -> Option<String> {
        let shared = self.shared.load_full()?;
        shared.get_token(path.strip_prefix(PREFIX)?).await
    }

    /// The key authorization for a request path, if it asks for a token in flight.
    pub fn answer(&self, path: &str) -> Option<String> {
        if self.pending.load(Ordering::Acquire) == 0 {
            return None;
        }
        let token = path.strip_prefix(PREFIX)?;
        self.tokens.read().get(token).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_tokens_in_flight_are_answered() {
        let h = Http01::default();
        assert_eq!(h.answer("/.well-known/acme-challenge/abc"), None);
        h.insert("abc", "abc.thumb");
        assert_eq!(
            h.answer("/.well-known/acme-challenge/abc").as_deref(),
            Some("abc.thumb")
        );
        for other in [
            "/.well-known/acme-challenge/abd",
            "/.well-known/acme-challenge/abc/",
            "/.well-known/acme-challenge/../abc",
            "/abc",
            "/.well-known/acme-challenge/",
        ] {
            assert_eq!(h.answer(other), None, "{other}");
        }
        h.remove("abc");
        assert_eq!(h.answer("/.well-known/acme-challenge/abc"), None);
    }
}
