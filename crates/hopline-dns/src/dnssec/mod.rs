//! DNSSEC for the authoritative server: keys made and kept per zone (`keys.rs`), and a
//! zone signed online (`signed.rs`): RRSIGs for every authoritative RRset made at load
//! and refreshed well before they expire, an NSEC chain for denial of existence, pooled
//! answers signed as they are made, and the records a DO query's answer carries.

pub mod keys;
pub mod signed;
pub mod validate;

use hickory_proto::rr::{Name, RData, Record};

/// The name an answer ends at: the target of its last CNAME, or the name asked.
pub fn chain_end(answers: &[Record], asked: &Name) -> Name {
    answers
        .iter()
        .rev()
        .find_map(|a| match &a.data {
            RData::CNAME(c) => Some(c.0.clone()),
            _ => None,
        })
        .unwrap_or_else(|| asked.clone())
}
