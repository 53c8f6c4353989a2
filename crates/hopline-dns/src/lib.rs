//! hopline-dns: the naming hop — resolver and authoritative server.

pub mod config;
