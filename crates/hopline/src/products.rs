//! The composition root of the products served on edge routes: each product (real-time
//! channels, the notification service) is registered here once, as an edge `Product`;
//! at start and at each reload every product reads its own sections of the config file
//! (`[realtime.NAME]`, `[notify.NAME]`), keeps, applies, starts or shuts down its parts,
//! and hands the edge the route services its routes name. The edge crate depends on none
//! of them and knows none by name.

use std::path::Path;
use std::sync::Arc;

use hopline_edge::Services;
use hopline_edge::request::service::Product;

/// The products of a running server, kept across reloads.
#[derive(Debug)]
pub struct Products {
    realtime: Arc<hopline_realtime::Hubs>,
    notify: Arc<hopline_notify::RunningServices>,
    ca: Arc<hopline_ca::Authorities>,
    doh: Arc<crate::doh::Relays>,
}

impl Default for Products {
    fn default() -> Self {
        Products {
            realtime: Arc::new(hopline_realtime::Hubs::new()),
            notify: Arc::new(hopline_notify::RunningServices::new()),
            ca: Arc::new(hopline_ca::Authorities::new()),
            doh: Arc::new(crate::doh::Relays::default()),
        }
    }
}

/// Check the product sections of a config file without starting anything.
pub fn check(path: &Path) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(path)?;
    for product in Products::default().all() {
        product
            .check(&text, path)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    Ok(())
}

impl Products {
    /// Nothing built yet.
    pub fn new() -> Products {
        Products::default()
    }

    /// Every product this program serves, as the edge sees them.
    fn all(&self) -> [&dyn Product; 4] {
        [&*self.realtime, &*self.notify, &*self.ca, &*self.doh]
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
        let mut services = Services::new();
        for product in self.all() {
            services.declare(product.kind());
            product
                .apply(&text, path, &mut services)
                .map_err(|e| anyhow::anyhow!("{e}"))?;
        }
        Ok(services)
    }

    /// The server stops: every product shuts its parts down.
    pub fn shutdown(&self) {
        for product in self.all() {
            product.shutdown();
        }
    }
}
