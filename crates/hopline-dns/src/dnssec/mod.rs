//! DNSSEC for the authoritative server: keys made and kept per zone (`keys.rs`), and a
//! zone signed online (`signed.rs`): RRSIGs for every authoritative RRset made at load
//! and refreshed well before they expire, an NSEC chain for denial of existence, pooled
//! answers signed as they are made, and the records a DO query's answer carries.

pub mod keys;
pub mod signed;
pub mod validate;
