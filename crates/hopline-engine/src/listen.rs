//! Listening sockets made the way a server should: address reuse, `TCP_NODELAY` inherited
//! by accepted sockets, IPv6 only on IPv6 addresses, a deep backlog.

use std::net::SocketAddr;

use tokio::net::TcpListener;

/// Bind a listening socket the way a server should (reuse address, deep backlog).
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let make = || -> std::io::Result<std::net::TcpListener> {
        let domain = socket2::Domain::for_address(addr);
        let s = socket2::Socket::new(domain, socket2::Type::STREAM, Some(socket2::Protocol::TCP))?;
        s.set_reuse_address(true)?;
        // accepted sockets inherit it on Linux: no setsockopt per connection
        s.set_tcp_nodelay(true)?;
        if addr.is_ipv6() {
            s.set_only_v6(true)?;
        }
        s.set_nonblocking(true)?;
        s.bind(&addr.into())?;
        s.listen(4096)?;
        Ok(s.into())
    };
    TcpListener::from_std(make()?)
}
