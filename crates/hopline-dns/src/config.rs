//! The `[dns]` part of hopline's config file: resolver services, authoritative servers
//! and load-balanced pools.

use serde::Deserialize;

/// DNS services run by `hopline serve`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnsConfig {
    /// Caching resolvers answering stub clients.
    #[serde(default)]
    pub resolver: Vec<ResolverService>,
    /// Authoritative servers.
    #[serde(default)]
    pub authoritative: Vec<AuthoritativeService>,
    /// Names answered from a health-checked pool of addresses.
    #[serde(default)]
    pub pool: Vec<PoolConfig>,
}

/// `[[dns.resolver]]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResolverService {
    /// UDP and TCP address, e.g. "127.0.0.1:5300".
    pub listen: String,
    /// named.root-format hints (default: the real root servers).
    pub root_hints: Option<std::path::PathBuf>,
    /// Forward to these resolvers instead of iterating from the root.
    #[serde(default, deserialize_with = "forward")]
    pub forward: Vec<String>,
    /// Hosts file consulted first ("" to disable; default /etc/hosts).
    pub hosts_file: Option<std::path::PathBuf>,
    /// Cached answers kept at most.
    #[serde(default = "default_cache")]
    pub cache_entries: u64,
    /// Send every iterative query to this port instead of 53 (for test hierarchies on
    /// loopback without root).
    pub query_port: Option<u16>,
    /// Client networks served, e.g. `["127.0.0.0/8", "::1/128", "10.0.0.0/8"]`; others get
    /// REFUSED. Default: loopback, and the listen address's own network (/24, /64) when it
    /// is a specific address — never an open resolver.
    #[serde(default, deserialize_with = "allow")]
    pub allow: Option<Vec<String>>,
    /// Longest time an answer is cached, in seconds (default 86400).
    pub max_ttl: Option<u32>,
    /// Longest time NXDOMAIN / NODATA is cached, in seconds (default 3600).
    pub max_negative_ttl: Option<u32>,
    /// DNSSEC trust anchor: a file of DS or DNSKEY records (Unbound's `trust-anchor-file`
    /// format, or what `hopline dns ds` prints). Without it a resolver iterating from the
    /// real root validates from the IANA root keys, and one with other root hints does
    /// not validate.
    #[serde(default)]
    pub trust_anchor: Option<std::path::PathBuf>,
    /// `false` turns DNSSEC validation off.
    #[serde(default)]
    pub validate: Option<bool>,
    /// `false`: do not answer NXDOMAIN / NODATA from validated NSEC records in the cache
    /// (RFC 8198; on by default when validating, as in Unbound and Knot Resolver).
    #[serde(default)]
    pub aggressive_nsec: Option<bool>,
    /// DNS over TLS (RFC 7858) beside UDP and TCP: `{ listen = "127.0.0.1:853", cert =
    /// "cert.pem", key = "key.pem" }` (ALPN `dot`).
    #[serde(default)]
    pub tls: Option<DotConfig>,
}

/// A DNS-over-TLS listener.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DotConfig {
    /// TCP address, e.g. "127.0.0.1:853".
    pub listen: String,
    /// PEM certificate chain.
    pub cert: std::path::PathBuf,
    /// PEM private key.
    pub key: std::path::PathBuf,
}

// Address lists checked while the file is read, so that an error names the value's line
// and column (and its key).

/// Addresses or networks ("10.0.0.0/8", "::1") of the key `what`.
fn networks<'de, D: serde::Deserializer<'de>>(d: D, what: &str) -> Result<Vec<String>, D::Error> {
    let list = Vec::<String>::deserialize(d)?;
    for n in &list {
        if n.parse::<ipnet::IpNet>().is_err() && n.parse::<std::net::IpAddr>().is_err() {
            return Err(serde::de::Error::custom(format!(
                "{what} {n:?}: expected an address or a network like \"10.0.0.0/8\""
            )));
        }
    }
    Ok(list)
}

/// Servers ("IP", port 53, or "IP:PORT") of the key `what`.
fn servers<'de, D: serde::Deserializer<'de>>(d: D, what: &str) -> Result<Vec<String>, D::Error> {
    let list = Vec::<String>::deserialize(d)?;
    for s in &list {
        if s.parse::<std::net::SocketAddr>().is_err() && s.parse::<std::net::IpAddr>().is_err() {
            return Err(serde::de::Error::custom(format!(
                "{what} {s:?}: expected IP or IP:PORT"
            )));
        }
    }
    Ok(list)
}

fn allow<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    networks(d, "allow").map(Some)
}
fn transfer<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    networks(d, "transfer")
}
fn exempt<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    networks(d, "exempt")
}
fn notify<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    servers(d, "notify")
}
fn forward<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    servers(d, "forward")
}

fn default_cache() -> u64 {
    100_000
}

/// `[[dns.authoritative]]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthoritativeService {
    /// UDP and TCP address, e.g. "127.0.0.1:5353".
    pub listen: String,
    /// RFC 1035 master files: `"file.zone"`, or `{ file = "file.zone", origin = "shop.test." }`
    /// for a file without `$ORIGIN` (otherwise its SOA's owner is the origin).
    pub zones: Vec<ZoneFile>,
    /// Secondaries allowed to transfer the zones (AXFR, and IXFR answered with the whole
    /// zone) over TCP: addresses or networks. Default: none.
    #[serde(default, deserialize_with = "transfer")]
    pub transfer: Vec<String>,
    /// Secondaries told by NOTIFY (RFC 1996) when a reload changed the zones: "IP" or
    /// "IP:PORT" (default port 53).
    #[serde(default, deserialize_with = "notify")]
    pub notify: Vec<String>,
    /// Response rate limiting over UDP (as NSD, Knot, BIND): on by default.
    #[serde(default)]
    pub rrl: RrlConfig,
}

/// Response rate limiting: per client prefix (/24, /56) and question, at most `rate`
/// answers a second over UDP; beyond it every `slip`-th answer goes out truncated (TC, so
/// a real client asks again over TCP, which is never limited) and the rest are dropped —
/// a spoofed-source flood cannot be reflected at a victim.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RrlConfig {
    /// Answers a second per client prefix and question (0: off). Default 200, as NSD.
    pub rate: u32,
    /// Every `slip`-th limited answer is sent truncated (0: none). Default 2.
    pub slip: u32,
    /// Clients never limited. Default: loopback (local resolvers and tools).
    #[serde(deserialize_with = "exempt")]
    pub exempt: Vec<String>,
}

impl Default for RrlConfig {
    fn default() -> Self {
        RrlConfig {
            rate: 200,
            slip: 2,
            exempt: vec!["127.0.0.0/8".into(), "::1/128".into()],
        }
    }
}

/// One zone file of an authoritative server.
#[derive(Debug, Clone)]
pub enum ZoneFile {
    /// Just the file; the origin comes from its `$ORIGIN` or its SOA.
    Path(std::path::PathBuf),
    /// The file, its origin when the file does not say, and whether it is signed.
    Table {
        /// The master file.
        file: std::path::PathBuf,
        /// Its origin, e.g. "shop.test.".
        origin: Option<String>,
        /// Sign the zone online (DNSSEC).
        dnssec: Option<DnssecConfig>,
    },
}

/// The table form of [`ZoneFile`], read with its own errors (an unknown key is named).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ZoneTable {
    file: std::path::PathBuf,
    #[serde(default)]
    origin: Option<String>,
    #[serde(default)]
    dnssec: Option<DnssecConfig>,
}

impl<'de> Deserialize<'de> for ZoneFile {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = ZoneFile;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a zone file path, or { file = \"…\", origin = \"…\", dnssec = { … } }")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<ZoneFile, E> {
                Ok(ZoneFile::Path(v.into()))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<ZoneFile, A::Error> {
                let t = ZoneTable::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
                if let Some(d) = &t.dnssec {
                    d.signing().map_err(serde::de::Error::custom)?;
                }
                Ok(ZoneFile::Table {
                    file: t.file,
                    origin: t.origin,
                    dnssec: t.dnssec,
                })
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// `dnssec = { … }` of a zone: signed online with keys made on first start.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DnssecConfig {
    /// How the zone proves what it lacks: "nsec" (default) or "nsec3".
    #[serde(default)]
    pub denial: DenialKind,
    /// NSEC3's settings (`denial = "nsec3"`): `{ opt_out, iterations, salt }`.
    #[serde(default)]
    pub nsec3: Option<Nsec3Config>,
    /// "ecdsap256sha256" (default, algorithm 13) or "ed25519" (15).
    #[serde(default = "default_algorithm")]
    pub algorithm: crate::dnssec::keys::SigningAlgorithm,
    /// Folder of the zone's keys, relative to the config (default "keys").
    #[serde(default)]
    pub keys: Option<std::path::PathBuf>,
    /// How long signatures are valid, in days (default 14); they are made again when
    /// half of it is left.
    #[serde(default)]
    pub validity_days: Option<u32>,
}

/// `denial = "nsec" | "nsec3"`.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum DenialKind {
    /// An NSEC chain (default).
    #[default]
    Nsec,
    /// An NSEC3 chain of hashed names.
    Nsec3,
}

/// `nsec3 = { … }` of a signed zone.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Nsec3Config {
    /// Leave unsigned delegations out of the chain (default false).
    #[serde(default)]
    pub opt_out: bool,
    /// Extra hash iterations (default 0, as RFC 9276 says; at most 150, above which
    /// validators count the zone as unsigned).
    #[serde(default)]
    pub iterations: u16,
    /// Salt, in hex (default none, as RFC 9276 says).
    #[serde(default)]
    pub salt: String,
}

impl DnssecConfig {
    /// How to sign: validity and denial, checked (an error says what was expected).
    pub fn signing(&self) -> Result<crate::dnssec::signed::Signing, String> {
        use crate::dnssec::signed::{Denial, Nsec3Params, Signing};
        let validity = self
            .validity_days
            .map_or(crate::dnssec::signed::DEFAULT_VALIDITY, |days| {
                std::time::Duration::from_secs(u64::from(days.max(1)) * 86400)
            });
        let denial = match (self.denial, &self.nsec3) {
            (DenialKind::Nsec, None) => Denial::Nsec,
            (DenialKind::Nsec, Some(_)) => {
                return Err("dnssec.nsec3 is set but denial is \"nsec\": expected denial = \"nsec3\" with it".into());
            }
            (DenialKind::Nsec3, n) => {
                let n = n.clone().unwrap_or_default();
                if n.iterations > crate::dnssec::validate::NSEC3_MAX_ITERATIONS {
                    return Err(format!(
                        "dnssec.nsec3.iterations = {}: expected at most {} (validators count a zone with more as unsigned; RFC 9276 says 0)",
                        n.iterations,
                        crate::dnssec::validate::NSEC3_MAX_ITERATIONS
                    ));
                }
                let salt = if n.salt.is_empty() || n.salt == "-" {
                    Vec::new()
                } else {
                    data_encoding::HEXLOWER_PERMISSIVE
                        .decode(n.salt.as_bytes())
                        .ok()
                        .filter(|s| s.len() <= 255)
                        .ok_or_else(|| {
                            format!(
                                "dnssec.nsec3.salt = {:?}: expected hex digits (at most 255 bytes), or \"\" for none",
                                n.salt
                            )
                        })?
                };
                Denial::Nsec3(Nsec3Params {
                    iterations: n.iterations,
                    salt,
                    opt_out: n.opt_out,
                })
            }
        };
        Ok(Signing { validity, denial })
    }
}

fn default_algorithm() -> crate::dnssec::keys::SigningAlgorithm {
    crate::dnssec::keys::SigningAlgorithm::EcdsaP256Sha256
}

impl ZoneFile {
    /// The file.
    pub fn file(&self) -> &std::path::Path {
        match self {
            ZoneFile::Path(p) | ZoneFile::Table { file: p, .. } => p,
        }
    }

    /// The origin given in the config, if any.
    pub fn origin(&self) -> Option<&str> {
        match self {
            ZoneFile::Path(_) => None,
            ZoneFile::Table { origin, .. } => origin.as_deref(),
        }
    }

    /// Its DNSSEC settings, when it is signed.
    pub fn dnssec(&self) -> Option<&DnssecConfig> {
        match self {
            ZoneFile::Path(_) => None,
            ZoneFile::Table { dnssec, .. } => dnssec.as_ref(),
        }
    }
}

impl From<&str> for ZoneFile {
    fn from(p: &str) -> ZoneFile {
        ZoneFile::Path(p.into())
    }
}

/// `[[dns.pool]]`: a name answered from a pool of addresses.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolConfig {
    /// The name, e.g. "www.shop.test.".
    pub name: String,
    /// "round_robin" (rotate the whole set) or "weighted" (smooth weighted order).
    #[serde(default = "default_balance")]
    pub balance: String,
    /// Addresses: "127.0.0.2" or { addr = "127.0.0.3", weight = 2 }.
    pub addresses: Vec<PoolAddress>,
    /// TTL of pooled answers (short, so clients come back for the current set).
    #[serde(default = "default_pool_ttl")]
    pub ttl: u32,
    /// HTTP health check of each address.
    pub health: Option<PoolHealth>,
}

fn default_balance() -> String {
    "round_robin".into()
}
fn default_pool_ttl() -> u32 {
    5
}

/// One pooled address.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum PoolAddress {
    /// Just the address.
    Addr(String),
    /// With a weight.
    Weighted {
        /// The address.
        addr: String,
        /// Relative share.
        weight: u32,
    },
}

/// Health check of pooled addresses.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolHealth {
    /// Path asked with GET.
    pub http: String,
    /// Port of the HTTP check (default 80).
    #[serde(default = "default_port")]
    pub port: u16,
    /// Time between checks.
    #[serde(default = "default_interval")]
    pub interval_ms: u64,
    /// A check slower than this failed.
    #[serde(default = "default_timeout")]
    pub timeout_ms: u64,
    /// Failures in a row that take an address out.
    #[serde(default = "default_two")]
    pub fails: u32,
    /// Successes in a row that bring it back.
    #[serde(default = "default_two")]
    pub passes: u32,
}

fn default_port() -> u16 {
    80
}
fn default_interval() -> u64 {
    1000
}
fn default_timeout() -> u64 {
    500
}
fn default_two() -> u32 {
    2
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_zone_table_names_its_unknown_key_and_what_it_expected() {
        let e = toml::from_str::<DnsConfig>(
            "[[authoritative]]\nlisten = \"127.0.0.1:0\"\nzones = [{ file = \"z\", dnssec = { algoritm = \"ed25519\" } }]\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("unknown field `algoritm`") && e.contains("`algorithm`"),
            "{e}"
        );
        let e = toml::from_str::<DnsConfig>(
            "[[authoritative]]\nlisten = \"127.0.0.1:0\"\nzones = [{ file = \"z\", dnssec = { algorithm = \"rsa\" } }]\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("`ed25519`"), "{e}");
        let ok = toml::from_str::<DnsConfig>(
            "[[authoritative]]\nlisten = \"127.0.0.1:0\"\nzones = [\"a.zone\", { file = \"b.zone\", origin = \"b.test.\" }]\n",
        )
        .unwrap();
        assert_eq!(ok.authoritative[0].zones[1].origin(), Some("b.test."));
    }

    #[test]
    fn nsec3_settings_are_checked_where_they_are_written() {
        let zone = |dnssec: &str| {
            toml::from_str::<DnsConfig>(&format!(
                "[[authoritative]]\nlisten = \"127.0.0.1:0\"\nzones = [\n  {{ file = \"z\", dnssec = {{ {dnssec} }} }},\n]\n"
            ))
        };
        let e = zone(r#"denial = "nsec3", nsec3 = { iterations = 500 }"#)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("line 4") && e.contains("expected at most 150"),
            "{e}"
        );
        let e = zone(r#"denial = "nsec3", nsec3 = { salt = "xyz" }"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("expected hex digits"), "{e}");
        let e = zone(r#"nsec3 = { opt_out = true }"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("expected denial = \"nsec3\""), "{e}");
        let e = zone(r#"denial = "nsec5""#).unwrap_err().to_string();
        assert!(e.contains("`nsec3`"), "{e}");
        let ok = zone(r#"denial = "nsec3", nsec3 = { opt_out = true, salt = "BEEF" }"#).unwrap();
        let how = ok.authoritative[0].zones[0]
            .dnssec()
            .unwrap()
            .signing()
            .unwrap();
        assert_eq!(
            how.denial,
            crate::dnssec::signed::Denial::Nsec3(crate::dnssec::signed::Nsec3Params {
                iterations: 0,
                salt: vec![0xbe, 0xef],
                opt_out: true
            })
        );
    }
}
