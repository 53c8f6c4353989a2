//! hopline-edge: the nginx-class edge of hopline — web server, reverse proxy, load
//! balancer, CDN cache and rate limits over one HTTP engine.
//!
//! The crate reads bottom-up, each layer a folder that imports only the ones below it:
//! - [`engine`]: the HTTP engine — HTTP/1.1 (codec, connection, write path, upgrades),
//!   HTTP/2, TLS and certificates, bodies, listeners, the access log;
//! - [`proxy`]: upstream pools and their health, forwarding, the origin client, layer 4;
//! - [`cache`]: the CDN cache's store, disk tier and freshness rules;
//! - [`limits`]: request rate limits (GCRA, in memory or on Redis);
//! - [`admin`]: counters, status, Prometheus metrics, the dashboard;
//! - [`request`]: the request path as named phases (route → limits → cache → pick →
//!   forward → store → log), static files, compression, and the route-service seam that
//!   products (realtime, notify) plug into;
//! - [`config`] composes the parts' config types into one file; [`server`] starts,
//!   reloads and stops it all.
//!
//! ```no_run
//! # async fn run() -> Result<(), hopline_edge::EdgeError> {
//! let config = hopline_edge::config::Config::load(std::path::Path::new("site.toml"))?;
//! let server = hopline_edge::Server::start(config).await?;
//! println!("{:?}", server.bound());
//! # Ok(()) }
//! ```

pub mod config;
pub mod error;
pub mod purge_channel;
pub mod request;
pub mod server;

pub use hopline_acme as acme;
pub use hopline_admin as admin;
pub use hopline_cache as cache;
pub use hopline_engine as engine;
pub use hopline_limits as limits;
pub use hopline_proxy as proxy;

pub use config::{Config, ConfigError};
pub use engine::body::Body;
pub use engine::{body, tls};
pub use error::EdgeError;
pub use request::service::{self, RouteService, ServiceContext, Services};
pub use server::{Server, Shutdown};
