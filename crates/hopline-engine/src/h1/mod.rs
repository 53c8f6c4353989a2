//! The HTTP/1.1 connection: hopline's own, because the edge's speed and memory are
//! decided here. One task per connection reads request heads (httparse), hands each
//! request to the edge's service, and writes the response:
//!
//! - **idle connections hold no buffers**: between requests a plain TCP connection
//!   waits for readability with nothing allocated (nginx frees its header buffer the same
//!   way), so ten thousand idle keep-alive clients cost little memory;
//! - **files leave by `sendfile`** on plain TCP (head written on its own, body from the
//!   page cache, no copy through user space); small bodies go out with the head in one
//!   write. The head is not held back for the body (`MSG_MORE`, nginx's `tcp_nopush`):
//!   measured on loopback (docs/benchmarks-history.md) holding it made a 100 KiB response cost the
//!   server 14.1 µs of CPU instead of 10.5, and its p99 60 % longer, for 9 % more req/s
//!   from a load generator that woke up once less per response;
//! - **strict framing** (RFC 9112 §6): `Transfer-Encoding` with `Content-Length`,
//!   differing `Content-Length`s, a coding list not ending in `chunked`, or
//!   `Transfer-Encoding` in HTTP/1.0 are answered 400 and the connection closed — a
//!   smuggled request is never read. Every head the engine refuses (400, 405, 431) is
//!   reported to the service once answered, which logs and counts it like any answer;
//! - request bodies stream to the handler through a small channel, read only once the
//!   handler asks (`Expect: 100-continue` answered then); a body the handler did not
//!   read closes the connection after the response, with a lingering read so the
//!   client still sees the answer;
//! - timeouts: the header section must complete within `header_timeout` of its first
//!   byte (of the accept for a first request), an idle keep-alive connection closes
//!   after `keepalive_timeout`; graceful shutdown closes idle connections at once and
//!   busy ones after their response;
//! - `Upgrade` (WebSocket): after a 101 the raw connection (with any bytes already
//!   read) is handed to whoever asked through [`on_upgrade`];
//! - HTTP/2 prior knowledge on a plain listener is recognised by its preface and handed
//!   to hyper, which serves HTTP/2 (and HTTPS with ALPN `h2`).

pub mod codec;
pub mod connection;
pub mod interim;
pub mod request_body;
pub mod transport;
pub mod upgrade;
pub mod write;
