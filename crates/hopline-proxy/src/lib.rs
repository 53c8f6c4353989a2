//! The reverse proxy: upstream pools (members, health checks, re-resolution), forwarding a
//! request to a picked server with retries, hopline's own HTTP/1.1 origin client and its
//! idle connections, and the layer-4 (TCP/UDP) proxy.

pub mod affinity;
pub mod client_body;
pub mod config;
pub mod error;
pub mod forward;
pub mod health;
pub mod hop_by_hop;
pub mod layer4;
pub mod origin;
pub mod pool;
