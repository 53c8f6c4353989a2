//! hopline-browser: the client hop — loads a URL the way a browser's network stack
//! does (redirects, DNS, TCP, TLS, HTTP/1.1 or HTTP/2, HTML streaming through a preload
//! scanner, subresources over pooled connections) and measures every phase. A page
//! loader, not a renderer. The timeline is plain data read by the waterfall, HAR and
//! JSON outputs.

pub mod cache;
pub mod certificate;
pub mod discover;
pub mod explain;
pub mod fetch;
pub mod har;
pub mod html;
pub mod navigation;
pub mod timeline;
pub mod waterfall;

pub use fetch::{Client, ClientOptions, Force};
pub use navigation::{VisitOptions, navigate};
pub use timeline::Navigation;
