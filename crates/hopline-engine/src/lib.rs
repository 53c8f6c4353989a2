//! The HTTP engine: what every hop served over HTTP needs and nothing about what it
//! serves — HTTP/1.1 (its own codec, connection loop, write path with `sendfile`, upgrades),
//! bodies, TLS and the local CA, the access log and a coarse clock. It imports nothing of
//! the layers above (proxy, cache, config).

pub mod access_log;
pub mod body;
pub mod byte_size;
pub mod clock;
pub mod error;
pub mod h1;
pub mod h2;
pub mod h3;
pub mod host;
pub mod listen;
pub mod tls;
