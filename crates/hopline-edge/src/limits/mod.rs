//! Request rate limits: GCRA per key, in memory or shared by several nodes on Redis.

pub mod limiter;
