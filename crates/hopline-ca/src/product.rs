//! The CA as a product of the edge: `[ca.NAME]` sections, each an ACME server on the
//! routes that say `ca = "NAME"`. A reload keeps a CA whose section did not change (its
//! accounts and orders with it).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use hopline_edge::engine::error::BoxError;
use hopline_edge::request::service::{Product, Services};

use crate::server::{Authority, CaService};

/// The kind of `[ca.NAME]` sections and `service = "ca:NAME"` routes.
pub const KIND: &str = "ca";

/// The CAs of a running server.
#[derive(Debug, Default)]
pub struct Authorities {
    running: parking_lot::Mutex<BTreeMap<String, Arc<Authority>>>,
}

impl Authorities {
    /// None yet.
    pub fn new() -> Authorities {
        Authorities::default()
    }
}

impl Product for Authorities {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn check(&self, text: &str, file: &Path) -> Result<(), BoxError> {
        crate::config::load(text, file)?;
        Ok(())
    }

    fn apply(&self, text: &str, file: &Path, services: &mut Services) -> Result<(), BoxError> {
        let sections = crate::config::load(text, file)?;
        let mut running = self.running.lock();
        let mut next = BTreeMap::new();
        for (name, cfg) in &sections {
            let ca = match running.get(name) {
                Some(c) if c.config == *cfg => c.clone(),
                _ => Arc::new(Authority::new(name, cfg).map_err(|e| format!("[ca.{name}]: {e}"))?),
            };
            services.insert(KIND, name, Arc::new(CaService(ca.clone())));
            next.insert(name.clone(), ca);
        }
        *running = next;
        Ok(())
    }

    fn shutdown(&self) {
        self.running.lock().clear();
    }
}
