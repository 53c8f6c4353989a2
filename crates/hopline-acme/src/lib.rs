//! Certificates without a human: the edge's ACME (RFC 8555) client. A site that says
//! `tls = { acme = "NAME" }` gets its certificate from the `[acme.NAME]` section's CA,
//! stored on disk (keys mode 0600) and reused at start, renewed at two thirds of its
//! lifetime, swapped into the listener atomically. HTTP-01 challenges are answered by
//! the request path before any route (`/.well-known/acme-challenge/TOKEN`).
//!
//! The protocol is `instant-acme`'s (ring, like the rest of the graph); this module is
//! what an edge does with it: when to order, where to keep what it got, what to show.

pub mod challenges;
pub mod config;
pub mod manager;
pub mod on_demand;
pub mod shared;
pub mod storage;
