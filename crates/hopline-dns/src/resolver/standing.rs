//! How far the resolver trusts what it holds: an answer's standing, and each zone's place
//! in the chain of trust (its proven keys, or why not). Plain data; the chain is walked in
//! `trust.rs`.

use std::sync::Arc;

use hickory_proto::dnssec::rdata::DNSKEY;
use serde::Serialize;

use crate::dnssec::validate::Bogus;

/// How far an answer can be trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Security {
    /// Not validated (no trust anchor covers it, or the client set CD).
    Unchecked,
    /// Validated: a chain of trust proves it has no signatures to check (an unsigned zone
    /// below an insecure delegation).
    Insecure,
    /// Validated along the chain of trust from an anchor.
    Secure,
}

/// A zone's standing: its keys when they are proven, or why not.
#[derive(Debug, Clone)]
pub(crate) enum ZoneTrust {
    Secure(Arc<ZoneKeys>),
    Insecure,
    Bogus(Bogus),
}

/// A zone's proven keys, and how long they may be held (the DNSKEY RRset's TTL).
#[derive(Debug)]
pub(crate) struct ZoneKeys {
    pub(crate) keys: Vec<DNSKEY>,
    pub(crate) ttl: u32,
}

impl std::ops::Deref for ZoneKeys {
    type Target = [DNSKEY];
    fn deref(&self) -> &[DNSKEY] {
        &self.keys
    }
}

impl ZoneTrust {
    /// How long the verdict is held: a zone's keys for their TTL (an hour at most), a
    /// proof of no signatures 5 minutes, a bogus verdict a minute (as Unbound's
    /// `val-bogus-ttl`).
    pub(crate) fn ttl(&self) -> u32 {
        match self {
            ZoneTrust::Secure(k) => k.ttl.min(3600),
            ZoneTrust::Insecure => 300,
            ZoneTrust::Bogus(_) => 60,
        }
    }
}
