//! The notification service as a product of the edge: `[notify.NAME]` sections, each a
//! running service (store, workers) whose API answers the routes that name it
//! (`notify = "NAME"`).

use std::path::Path;

use hopline_edge::engine::error::BoxError;
use hopline_edge::request::service::{Product, Services};

use crate::RunningServices;
#[cfg(test)]
use std::sync::Arc;

/// The kind of `[notify.NAME]` sections and `service = "notify:NAME"` routes.
pub const KIND: &str = "notify";

/// The folder relative paths of a config file resolve against.
pub fn base_of(file: &Path) -> std::path::PathBuf {
    match file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    }
}

impl Product for RunningServices {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn check(&self, text: &str, file: &Path) -> Result<(), BoxError> {
        crate::config::load(text, file, &base_of(file))?;
        Ok(())
    }

    fn apply(&self, text: &str, file: &Path, services: &mut Services) -> Result<(), BoxError> {
        let sections = crate::config::load(text, file, &base_of(file))?;
        RunningServices::apply(self, &sections, services)?;
        Ok(())
    }

    fn shutdown(&self) {
        self.shutdown_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A section kept by a reload keeps its running service; one the file no longer has
    /// is shut down at once, even while something still holds it.
    #[tokio::test]
    async fn a_reload_keeps_kept_sections_and_shuts_removed_ones_down() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("hopline.toml");
        let section = |name: &str| format!("[notify.{name}]\ndatabase = \"{name}.db\"\n");
        let both = format!("{}{}", section("a"), section("b"));
        let products = RunningServices::new();
        let mut services = Services::new();
        Product::apply(&products, &both, &file, &mut services).unwrap();
        let (a, b) = (products.get("a").unwrap(), products.get("b").unwrap());
        assert!(services.get(KIND, "a").is_some() && services.get(KIND, "b").is_some());

        let mut services = Services::new();
        Product::apply(&products, &section("a"), &file, &mut services).unwrap();
        assert!(
            Arc::ptr_eq(&a, &products.get("a").unwrap()),
            "a kept section keeps its service"
        );
        assert!(products.get("b").is_none() && services.get(KIND, "b").is_none());
        tokio::task::yield_now().await;
        assert!(a.is_running());
        assert!(!b.is_running(), "a removed section's workers stop");

        products.shutdown();
        tokio::task::yield_now().await;
        assert!(!a.is_running());
    }
}
