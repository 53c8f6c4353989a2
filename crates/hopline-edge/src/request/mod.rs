//! The request path: the router (host → site, path → route), the cache phase of a proxy
//! route, static files, compression, and the route-service seam products plug into.

pub mod cached;
pub mod compress;
pub mod files;
pub mod phases;
pub mod router;
pub mod service;
