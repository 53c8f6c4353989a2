//! Root hints: where iterative resolution starts. The real root servers' addresses are
//! built in; a file in the standard `named.root` format overrides them (a private
//! hierarchy, e.g. `. 3600000 NS a.root.` + `a.root. 3600000 A 127.0.0.11`).

use std::net::IpAddr;
use std::path::Path;

use crate::error::ResolveError;

/// The servers of the root zone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootHints {
    /// (server name, address)
    pub servers: Vec<(String, IpAddr)>,
}

const BUILTIN: &str = include_str!("named.root");

impl RootHints {
    /// The real root servers (IANA's named.root).
    pub fn builtin() -> RootHints {
        Self::parse(BUILTIN).expect("the built-in named.root parses")
    }

    /// Read a named.root-format file.
    pub fn from_file(path: &Path) -> Result<RootHints, ResolveError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ResolveError::Config(format!("{}: {e}", path.display())))?;
        Self::parse(&text).map_err(|e| ResolveError::Config(format!("{}: {e}", path.display())))
    }

    /// Parse named.root text: `NAME TTL [IN] A|AAAA ADDRESS` lines give the addresses of
    /// the servers named by the `. NS NAME` lines; comments start with `;`.
    pub fn parse(text: &str) -> Result<RootHints, String> {
        let mut ns = Vec::new();
        let mut addrs = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.split(';').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let f: Vec<&str> = line
                .split_whitespace()
                .filter(|t| !t.eq_ignore_ascii_case("IN"))
                .collect();
            let (name, rtype, data) = match f.as_slice() {
                [name, _ttl, rtype, data] => (*name, *rtype, *data),
                [name, rtype, data] => (*name, *rtype, *data),
                _ => {
                    return Err(format!(
                        "line {}: expected NAME TTL TYPE DATA, found {raw:?}",
                        i + 1
                    ));
                }
            };
            let lname = name.trim_end_matches('.').to_ascii_lowercase();
            match rtype.to_ascii_uppercase().as_str() {
                "NS" => ns.push(data.trim_end_matches('.').to_ascii_lowercase()),
                "A" | "AAAA" => {
                    let ip: IpAddr = data
                        .parse()
                        .map_err(|_| format!("line {}: {data:?} is not an address", i + 1))?;
                    addrs.push((lname, ip));
                }
                other => {
                    return Err(format!(
                        "line {}: unexpected type {other} (expected NS, A or AAAA)",
                        i + 1
                    ));
                }
            }
        }
        let servers: Vec<(String, IpAddr)> = addrs
            .into_iter()
            .filter(|(n, _)| ns.is_empty() || ns.contains(n))
            .collect();
        if servers.is_empty() {
            return Err("no root server addresses found".into());
        }
        Ok(RootHints { servers })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_and_private_hints() {
        let b = RootHints::builtin();
        assert!(b.servers.len() >= 13);
        assert!(
            b.servers
                .iter()
                .any(|(n, ip)| n == "a.root-servers.net" && ip.to_string() == "198.41.0.4")
        );
        let p = RootHints::parse(". 3600000 NS a.root.\na.root. 3600000 A 127.0.0.11\n").unwrap();
        assert_eq!(
            p.servers,
            vec![("a.root".to_string(), "127.0.0.11".parse().unwrap())]
        );
        assert!(RootHints::parse("garbage").is_err());
    }
}
