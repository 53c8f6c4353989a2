//! Real-time channels as a product of the edge: `[realtime.NAME]` sections, each a hub
//! served on the routes that name it (`realtime = "NAME"`).

use std::path::Path;

use hopline_edge::engine::error::BoxError;
use hopline_edge::request::service::{Product, Services};

use crate::Hubs;

/// The kind of `[realtime.NAME]` sections and `service = "realtime:NAME"` routes.
pub const KIND: &str = "realtime";

impl Product for Hubs {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn check(&self, text: &str, file: &Path) -> Result<(), BoxError> {
        crate::config::load(text, file)?;
        Ok(())
    }

    fn apply(&self, text: &str, file: &Path, services: &mut Services) -> Result<(), BoxError> {
        let sections = crate::config::load(text, file)?;
        Hubs::apply(self, &sections, services)?;
        Ok(())
    }

    fn shutdown(&self) {
        self.shutdown_all();
    }
}
