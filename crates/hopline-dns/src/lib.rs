//! hopline-dns: the naming hop of a request. A caching resolver (hosts file, cache,
//! forwarding or iterative resolution from the root with a hop-by-hop trace) that the
//! browser and the proxy use as a library, and an authoritative server (RFC 1035 zones,
//! referrals, negative answers, DNS-based load balancing over health-checked pools),
//! both servable over UDP and TCP by `hopline serve`.

pub mod authority;
pub mod challenge;
pub mod config;
pub mod dnssec;
pub mod error;
mod escapes;
pub mod hints;
pub mod resolver;
mod rrl;
pub mod service;
pub mod wire;
pub mod zone;

pub use error::{DnsError, ResolveError, bind_reason};
pub use hickory_proto::rr::RecordType;
pub use hints::RootHints;
pub use resolver::{
    Answered, CachedAnswer, Lookup, RecordView, Resolver, ResolverBuilder, Security, TraceStep,
};
