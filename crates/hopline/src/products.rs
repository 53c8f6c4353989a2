//! The composition root of the products served on edge routes: reads their sections of
//! the config file (`[realtime.NAME]`, later `[notify.NAME]`), builds or updates them,
//! and hands the edge the route services its routes name. The edge crate depends on none
//! of them.

use std::path::Path;

use hopline_edge::Services;

/// The products of a running server, kept across reloads.
#[derive(Debug, Default)]
pub struct Products {
    realtime: hopline_realtime::Hubs,
    notify: hopline_notify::RunningServices,
}

/// The folder relative paths of a config file resolve against.
pub fn base_of(path: &Path) -> std::path::PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    }
}

/// Check the product sections of a config file without starting anything.
pub fn check(path: &Path) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(path)?;
    hopline_realtime::config::load(&text, path)?;
    hopline_notify::config::load(&text, path, &base_of(path))?;
    Ok(())
}

impl Products {
    /// Nothing built yet.
    pub fn new() -> Products {
        Products::default()
    }

    /// The realtime hub named `name`, once loaded.
    pub fn realtime_hub(&self, name: &str) -> Option<std::sync::Arc<hopline_realtime::Hub>> {
        self.realtime.get(name)
    }

    /// The notification service named `name`, once loaded.
    pub fn notify_service(&self, name: &str) -> Option<std::sync::Arc<hopline_notify::Service>> {
        self.notify.get(name)
    }

    /// Read the product sections of `path`, build or update each product, and return
    /// the route services for the edge. A bad section is refused with file and line.
    pub fn load(&self, path: &Path) -> anyhow::Result<Services> {
        let text = std::fs::read_to_string(path)?;
        let realtime = hopline_realtime::config::load(&text, path)?;
        let notify = hopline_notify::config::load(&text, path, &base_of(path))?;
        let mut services = Services::new();
        self.realtime.apply(&realtime, &mut services)?;
        self.notify.apply(&notify, &mut services)?;
        Ok(services)
    }
}
