//! The `[dns]` part of hopline's config file.

use serde::Deserialize;

/// DNS services run by `hopline serve` (resolvers, authoritative servers, pools).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnsConfig {}
