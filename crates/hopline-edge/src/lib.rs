//! hopline-edge
