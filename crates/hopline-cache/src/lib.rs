//! The CDN cache: what may be stored and for how long (RFC 9111), the memory store with
//! its disk tier, and the body that stores a response while it streams to the client.
//! It stores what it is handed: fetching from origins is the request path's job.

pub mod config;
pub mod disk;
pub mod freshness;
pub mod store;
pub mod stored;
pub mod tags;
pub mod tee;
