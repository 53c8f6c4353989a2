//! hopline-browser: the client hop (not yet built).
