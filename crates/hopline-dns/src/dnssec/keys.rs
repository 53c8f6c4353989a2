//! A signed zone's keys: a key-signing key (KSK, flags 257, signs the DNSKEY RRset; its
//! DS goes to the parent) and a zone-signing key (ZSK, flags 256, signs everything
//! else), made on first start and kept in a folder: the private keys as PKCS#8 (mode
//! 0600), and `<zone>.json` listing each key's role, algorithm, tag and state.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use hickory_proto::dnssec::crypto::{EcdsaSigningKey, Ed25519SigningKey};
use hickory_proto::dnssec::rdata::{DNSKEY, DNSSECRData, DS};
use hickory_proto::dnssec::{Algorithm, DigestType, SigningKey};
use hickory_proto::rr::{Name, RData, Record};
use rustls_pki_types::PrivatePkcs8KeyDer;
use serde::{Deserialize, Serialize};

use crate::error::DnsError;

/// The signing algorithms offered: ECDSA P-256 with SHA-256 (13) and Ed25519 (15).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
pub enum SigningAlgorithm {
    #[serde(rename = "ecdsap256sha256")]
    EcdsaP256Sha256,
    #[serde(rename = "ed25519")]
    Ed25519,
}

impl SigningAlgorithm {
    fn dnssec(self) -> Algorithm {
        match self {
            SigningAlgorithm::EcdsaP256Sha256 => Algorithm::ECDSAP256SHA256,
            SigningAlgorithm::Ed25519 => Algorithm::ED25519,
        }
    }

    fn name(self) -> &'static str {
        match self {
            SigningAlgorithm::EcdsaP256Sha256 => "ecdsap256sha256",
            SigningAlgorithm::Ed25519 => "ed25519",
        }
    }
}

/// What a key does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Signs the DNSKEY RRset; the parent's DS points at it.
    Ksk,
    /// Signs the zone's other RRsets.
    Zsk,
}

/// Where a key is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyState {
    /// In the DNSKEY RRset and signing.
    Active,
    /// In the DNSKEY RRset, not signing yet (a rollover's next key).
    Published,
    /// Gone from the zone; kept on disk.
    Retired,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
struct KeyEntry {
    role: Role,
    algorithm: SigningAlgorithm,
    tag: u16,
    file: String,
    state: KeyState,
    /// Seconds since the Unix epoch.
    created: u64,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
struct KeyList {
    zone: String,
    keys: Vec<KeyEntry>,
}

/// One key of a zone, loaded.
pub struct ZoneKey {
    pub role: Role,
    pub state: KeyState,
    pub algorithm: SigningAlgorithm,
    pub tag: u16,
    pub dnskey: DNSKEY,
    pub signing: Arc<dyn SigningKey>,
}

impl std::fmt::Debug for ZoneKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ZoneKey")
            .field("role", &self.role)
            .field("state", &self.state)
            .field("tag", &self.tag)
            .finish()
    }
}

/// The keys of one zone.
#[derive(Debug)]
pub struct ZoneKeys {
    pub zone: Name,
    pub keys: Vec<ZoneKey>,
}

fn err(dir: &Path, what: impl std::fmt::Display) -> DnsError {
    DnsError::Config(format!("DNSSEC keys in {}: {what}", dir.display()))
}

/// The file stem of a zone's files: its name without the final dot (`root` for `.`).
fn stem(zone: &Name) -> String {
    let s = zone.to_lowercase().to_ascii();
    let s = s.trim_end_matches('.');
    if s.is_empty() {
        "root".into()
    } else {
        s.into()
    }
}

fn list_path(dir: &Path, zone: &Name) -> PathBuf {
    dir.join(format!("{}.json", stem(zone)))
}

fn generate(algorithm: SigningAlgorithm) -> Result<Vec<u8>, String> {
    let der = match algorithm {
        SigningAlgorithm::EcdsaP256Sha256 => {
            EcdsaSigningKey::generate_pkcs8(algorithm.dnssec()).map_err(|e| e.to_string())?
        }
        SigningAlgorithm::Ed25519 => {
            Ed25519SigningKey::generate_pkcs8().map_err(|e| e.to_string())?
        }
    };
    Ok(der.secret_pkcs8_der().to_vec())
}

fn signing_key(algorithm: SigningAlgorithm, der: &[u8]) -> Result<Arc<dyn SigningKey>, String> {
    let der = PrivatePkcs8KeyDer::from(der);
    Ok(match algorithm {
        SigningAlgorithm::EcdsaP256Sha256 => Arc::new(
            EcdsaSigningKey::from_pkcs8(&der, algorithm.dnssec()).map_err(|e| e.to_string())?,
        ),
        SigningAlgorithm::Ed25519 => {
            Arc::new(Ed25519SigningKey::from_pkcs8(&der).map_err(|e| e.to_string())?)
        }
    })
}

fn dnskey_of(role: Role, key: &dyn SigningKey) -> Result<DNSKEY, String> {
    let public = key.to_public_key().map_err(|e| e.to_string())?;
    let flags = match role {
        Role::Ksk => 257,
        Role::Zsk => 256,
    };
    Ok(DNSKEY::with_flags(flags, public))
}

/// Write `bytes` to `path` readable by its owner only.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600);
    }
    o.open(path)?.write_all(bytes)
}

impl ZoneKeys {
    /// The zone's keys in `dir`, or `None` when it has none there.
    pub fn load(dir: &Path, zone: &Name) -> Result<Option<ZoneKeys>, DnsError> {
        let path = list_path(dir, zone);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(err(dir, format!("{}: {e}", path.display()))),
        };
        let list: KeyList = serde_json::from_str(&text)
            .map_err(|e| err(dir, format!("{}: {e}", path.display())))?;
        let mut keys = Vec::new();
        for k in &list.keys {
            let der = std::fs::read(dir.join(&k.file))
                .map_err(|e| err(dir, format!("{}: {e}", k.file)))?;
            let signing =
                signing_key(k.algorithm, &der).map_err(|e| err(dir, format!("{}: {e}", k.file)))?;
            let dnskey = dnskey_of(k.role, &*signing).map_err(|e| err(dir, e))?;
            keys.push(ZoneKey {
                role: k.role,
                state: k.state,
                algorithm: k.algorithm,
                tag: dnskey.calculate_key_tag().map_err(|e| err(dir, e))?,
                dnskey,
                signing,
            });
        }
        Ok(Some(ZoneKeys {
            zone: zone.clone(),
            keys,
        }))
    }

    /// The zone's keys in `dir`; a KSK and a ZSK of `algorithm` are made when it has none.
    /// Keys of another algorithm are refused (an algorithm rollover is not offered).
    pub fn load_or_create(
        dir: &Path,
        zone: &Name,
        algorithm: SigningAlgorithm,
    ) -> Result<ZoneKeys, DnsError> {
        if let Some(keys) = Self::load(dir, zone)? {
            if let Some(k) = keys
                .keys
                .iter()
                .find(|k| k.state != KeyState::Retired && k.algorithm != algorithm)
            {
                return Err(err(
                    dir,
                    format!(
                        "zone {zone} is signed with {} (key {}), the config asks for {}: an algorithm rollover is not offered; move the zone's keys away to start over (the parent's DS must then change)",
                        k.algorithm.name(),
                        k.tag,
                        algorithm.name()
                    ),
                ));
            }
            return Ok(keys);
        }
        std::fs::create_dir_all(dir).map_err(|e| err(dir, e))?;
        let mut list = KeyList {
            zone: zone.to_ascii(),
            keys: Vec::new(),
        };
        for role in [Role::Ksk, Role::Zsk] {
            list.keys.push(Self::new_key(dir, zone, role, algorithm)?);
        }
        Self::save(dir, zone, &list)?;
        Ok(Self::load(dir, zone)?.expect("just written"))
    }

    fn new_key(
        dir: &Path,
        zone: &Name,
        role: Role,
        algorithm: SigningAlgorithm,
    ) -> Result<KeyEntry, DnsError> {
        let der = generate(algorithm).map_err(|e| err(dir, e))?;
        let signing = signing_key(algorithm, &der).map_err(|e| err(dir, e))?;
        let tag = dnskey_of(role, &*signing)
            .map_err(|e| err(dir, e))?
            .calculate_key_tag()
            .map_err(|e| err(dir, e))?;
        let file = format!(
            "{}+{:03}+{tag:05}.pk8",
            stem(zone),
            u8::from(algorithm.dnssec())
        );
        write_private(&dir.join(&file), &der).map_err(|e| err(dir, format!("{file}: {e}")))?;
        Ok(KeyEntry {
            role,
            algorithm,
            tag,
            file,
            state: KeyState::Active,
            created: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        })
    }

    fn save(dir: &Path, zone: &Name, list: &KeyList) -> Result<(), DnsError> {
        let path = list_path(dir, zone);
        let tmp = path.with_extension("json.tmp");
        let text = serde_json::to_string_pretty(list).map_err(|e| err(dir, e))?;
        std::fs::write(&tmp, text + "\n").map_err(|e| err(dir, e))?;
        std::fs::rename(&tmp, &path).map_err(|e| err(dir, e))
    }

    /// The keys in the zone's DNSKEY RRset (active and published).
    pub fn published(&self) -> impl Iterator<Item = &ZoneKey> {
        self.keys.iter().filter(|k| k.state != KeyState::Retired)
    }

    /// The keys that sign for `role` now.
    pub fn signing(&self, role: Role) -> impl Iterator<Item = &ZoneKey> {
        self.keys
            .iter()
            .filter(move |k| k.state == KeyState::Active && k.role == role)
    }

    /// The DNSKEY RRset, with `ttl`.
    pub fn dnskey_records(&self, ttl: u32) -> Vec<Record> {
        self.published()
            .map(|k| {
                Record::from_rdata(
                    self.zone.clone(),
                    ttl,
                    RData::DNSSEC(DNSSECRData::DNSKEY(k.dnskey.clone())),
                )
            })
            .collect()
    }

    /// The DS records for the parent (SHA-256 digests of the published KSKs), with `ttl`.
    pub fn ds_records(&self, ttl: u32) -> Vec<Record> {
        self.published()
            .filter(|k| k.role == Role::Ksk)
            .filter_map(|k| {
                let digest = k.dnskey.to_digest(&self.zone, DigestType::SHA256).ok()?;
                let ds = DS::new(
                    k.tag,
                    k.algorithm.dnssec(),
                    DigestType::SHA256,
                    digest.as_ref().to_vec(),
                );
                Some(Record::from_rdata(
                    self.zone.clone(),
                    ttl,
                    RData::DNSSEC(DNSSECRData::DS(ds)),
                ))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_made_once_kept_private_and_refused_for_another_algorithm() {
        let dir = tempfile::tempdir().unwrap();
        let zone = Name::from_ascii("shop.test.").unwrap();
        let a = ZoneKeys::load_or_create(dir.path(), &zone, SigningAlgorithm::Ed25519).unwrap();
        assert_eq!(a.keys.len(), 2);
        assert_eq!(a.signing(Role::Ksk).count(), 1);
        assert_eq!(a.signing(Role::Zsk).count(), 1);
        let b = ZoneKeys::load_or_create(dir.path(), &zone, SigningAlgorithm::Ed25519).unwrap();
        let tags = |k: &ZoneKeys| k.keys.iter().map(|k| k.tag).collect::<Vec<_>>();
        assert_eq!(tags(&a), tags(&b), "loaded, not made again");
        #[cfg(unix)]
        for entry in std::fs::read_dir(dir.path()).unwrap() {
            use std::os::unix::fs::PermissionsExt;
            let e = entry.unwrap();
            if e.path().extension().is_some_and(|x| x == "pk8") {
                assert_eq!(e.metadata().unwrap().permissions().mode() & 0o777, 0o600);
            }
        }
        assert_eq!(a.ds_records(3600).len(), 1);
        let e = ZoneKeys::load_or_create(dir.path(), &zone, SigningAlgorithm::EcdsaP256Sha256)
            .unwrap_err()
            .to_string();
        assert!(e.contains("algorithm rollover"), "{e}");
    }
}
