//! Request rate limits: GCRA per key, in memory or shared by several nodes on Redis.

pub mod config;
pub mod gcra;
pub mod limiter;
