//! hopline-edge: the nginx-class edge of hopline — listeners (TCP/TLS, HTTP/1.1,
//! HTTP/2), routing by Host and path, static files, redirects and fixed responses,
//! compression, limits and the access log. Later hops (proxy, load balancer, CDN cache,
//! rate limits) plug into the same request path.
//!
//! ```no_run
//! # async fn run() -> Result<(), hopline_edge::EdgeError> {
//! let config = hopline_edge::config::Config::load(std::path::Path::new("site.toml"))?;
//! let server = hopline_edge::Server::start(config).await?;
//! println!("{:?}", server.bound());
//! # Ok(()) }
//! ```

pub mod access_log;
pub mod admin;
pub mod body;
pub mod cache;
pub mod clock;
pub mod compress;
pub mod config;
pub mod dashboard;
pub mod error;
pub mod files;
pub mod h1;
pub mod pop;
pub mod proxy;
pub mod ratelimit;
pub mod router;
pub mod server;
pub mod service;
pub mod stream;
pub mod tls;
pub mod upstream;

pub use body::Body;
pub use config::{Config, ConfigError};
pub use error::EdgeError;
pub use server::{Server, Shutdown};
pub use service::{RouteService, ServiceContext, Services};
