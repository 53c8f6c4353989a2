//! The admin side: counters the request path bumps, the status JSON, Prometheus metrics,
//! purge, traces and the live dashboard, served on the admin listener.

pub mod dashboard;
pub mod listener;
