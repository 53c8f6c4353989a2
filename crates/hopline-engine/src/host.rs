//! The Host header.

/// Strip the port from a Host header value (`shop.test:8080` → `shop.test`, `[::1]:80` → `[::1]`).
pub fn without_port(host: &str) -> &str {
    if host.starts_with('[') {
        return match host.find(']') {
            Some(i) => &host[..=i],
            None => host,
        };
    }
    // (bytes, not chars: a short host is scanned faster than str's searcher sets up)
    match host.bytes().rposition(|b| b == b':') {
        Some(i) if host.as_bytes()[i + 1..].iter().all(u8::is_ascii_digit) => &host[..i],
        _ => host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port_stripping() {
        assert_eq!(without_port("shop.test:8080"), "shop.test");
        assert_eq!(without_port("shop.test"), "shop.test");
        assert_eq!(without_port("[::1]:80"), "[::1]");
        assert_eq!(without_port("[::1]"), "[::1]");
    }
}
