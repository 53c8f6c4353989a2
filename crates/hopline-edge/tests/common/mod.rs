//! Shared helpers for the edge's integration tests: the testkit's real edge and clients,
//! and a scripted origin (`origin.rs`).
#![allow(dead_code)]

pub mod origin;

pub use hopline_testkit::edge::*;
