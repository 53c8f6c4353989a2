//! The admin side: counters the request path bumps, what a running edge shows of itself
//! ([`view::AdminView`]), the status JSON, Prometheus metrics, purge, traces and the live
//! dashboard, served on the admin listener. Counters flow up to it; it never reaches back
//! into the request path.

pub mod auth;
pub mod counters;
pub mod dashboard;
pub mod listener;
pub mod prometheus;
pub mod status;
pub mod view;
