//! hopline-ca: the local certificate authority of `hopline cert`, speaking ACME (RFC 8555)
//! as a server, the way Caddy's `acme_server` and smallstep's step-ca do: a directory,
//! nonces, accounts (JWS with ES256 / ES384 / RS256 keys), orders, authorizations whose
//! HTTP-01, TLS-ALPN-01 and DNS-01 challenges are validated by really connecting to the
//! name or querying its TXT record, finalization with a CSR, and the certificate chain.
//! It is a product of the edge: `[ca.NAME]` sections, served on the routes that say
//! `ca = "NAME"`. State is kept in memory, as pebble's is: accounts and orders do not
//! outlive the process; the CA's key and certificate do (in its folder).

pub mod config;
pub mod jws;
pub mod product;
pub mod server;
pub mod state;
pub mod validate;

pub use product::{Authorities, KIND};
