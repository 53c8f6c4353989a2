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
#[serde(rename_all = "snake_case")]
pub enum KeyState {
    /// In the DNSKEY RRset and signing.
    Active,
    /// In the DNSKEY RRset, not signing (a ZSK rollover's next key before it signs, and
    /// its old key while signatures it made may still be cached).
    Published,
    /// A KSK not in the DNSKEY RRset whose DS the parent publishes (a double-DS KSK
    /// rollover's next key before the swap, and its old key after it).
    DsPublished,
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
    /// In a rollover: "incoming" (the next key) or "outgoing" (the old one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    rollover: Option<String>,
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
            rollover: None,
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
        self.keys
            .iter()
            .filter(|k| matches!(k.state, KeyState::Active | KeyState::Published))
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

    /// The DS records for the parent (SHA-256 digests of the KSKs that are active or
    /// whose DS is published ahead of or after a swap), with `ttl`.
    pub fn ds_records(&self, ttl: u32) -> Vec<Record> {
        self.keys
            .iter()
            .filter(|k| k.role == Role::Ksk)
            .filter(|k| matches!(k.state, KeyState::Active | KeyState::DsPublished))
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

/// One step of a key rollover, as done.
#[derive(Debug, Clone, Serialize)]
pub struct RolloverStep {
    /// 1, 2 or 3 (3: the rollover is over).
    pub step: u8,
    /// What changed.
    pub did: String,
    /// What to wait for before the next step.
    pub next: String,
}

impl ZoneKeys {
    /// Take the next step of a rollover of `role`'s key, in the key list in `dir`
    /// (a server signing the zone applies it at its next reload). A ZSK rolls by
    /// pre-publication (RFC 6781 §4.1.1.1): publish the new key; sign with it, keeping the
    /// old one published; retire the old one. A KSK rolls by double DS (§4.1.2): publish
    /// the new key's DS at the parent; swap the keys in the DNSKEY RRset; retire the old
    /// DS.
    pub fn roll(dir: &Path, zone: &Name, role: Role) -> Result<RolloverStep, DnsError> {
        let path = list_path(dir, zone);
        let text = std::fs::read_to_string(&path).map_err(|e| {
            err(
                dir,
                format!("{}: {e} (is {zone} signed here?)", path.display()),
            )
        })?;
        let mut list: KeyList = serde_json::from_str(&text)
            .map_err(|e| err(dir, format!("{}: {e}", path.display())))?;
        let marked = |list: &KeyList, mark: &str| {
            list.keys
                .iter()
                .position(|k| k.role == role && k.rollover.as_deref() == Some(mark))
        };
        let active = list
            .keys
            .iter()
            .position(|k| k.role == role && k.state == KeyState::Active)
            .ok_or_else(|| err(dir, format!("{zone} has no active {role:?} key to roll")))?;
        let algorithm = list.keys[active].algorithm;
        let step = match role {
            Role::Zsk => match (marked(&list, "incoming"), marked(&list, "outgoing")) {
                // 1: a new ZSK in the DNSKEY RRset, not signing yet
                (None, None) => {
                    let new = Self::new_key(dir, zone, Role::Zsk, algorithm)?;
                    let tag = new.tag;
                    list.keys.push(KeyEntry {
                        state: KeyState::Published,
                        rollover: Some("incoming".into()),
                        ..new
                    });
                    RolloverStep {
                        step: 1,
                        did: format!("published the next ZSK {tag} (not signing yet)"),
                        next: "reload, wait at least the DNSKEY TTL so resolvers hold the new key, then run this again".into(),
                    }
                }
                (Some(published), _) => {
                    // 2: sign with the new ZSK; the old one stays published
                    list.keys[published].state = KeyState::Active;
                    list.keys[published].rollover = None;
                    list.keys[active].state = KeyState::Published;
                    list.keys[active].rollover = Some("outgoing".into());
                    RolloverStep {
                        step: 2,
                        did: format!(
                            "ZSK {} signs now; {} stays in the DNSKEY RRset",
                            list.keys[published].tag, list.keys[active].tag
                        ),
                        next: "reload, wait the zone's largest TTL so no signature of the old key is cached, then run this again".into(),
                    }
                }
                // 3: the old ZSK leaves
                (None, Some(old)) => {
                    list.keys[old].state = KeyState::Retired;
                    list.keys[old].rollover = None;
                    RolloverStep {
                        step: 3,
                        did: format!("retired ZSK {}", list.keys[old].tag),
                        next: "reload: the rollover is over".into(),
                    }
                }
            },
            Role::Ksk => match (marked(&list, "incoming"), marked(&list, "outgoing")) {
                // 1: a new KSK whose DS the parent publishes beside the old one
                (None, None) => {
                    let new = Self::new_key(dir, zone, Role::Ksk, algorithm)?;
                    let tag = new.tag;
                    list.keys.push(KeyEntry {
                        state: KeyState::DsPublished,
                        rollover: Some("incoming".into()),
                        ..new
                    });
                    RolloverStep {
                        step: 1,
                        did: format!("made the next KSK {tag}: its DS goes to the parent beside the old one (`hopline dns ds {zone}`)"),
                        next: "publish the DS at the parent (a parent served here does it at reload), wait the DS TTL, then run this again".into(),
                    }
                }
                (Some(ds_only), _) => {
                    // 2: swap the keys in the DNSKEY RRset; the old DS stays a while
                    list.keys[ds_only].state = KeyState::Active;
                    list.keys[ds_only].rollover = None;
                    list.keys[active].state = KeyState::DsPublished;
                    list.keys[active].rollover = Some("outgoing".into());
                    RolloverStep {
                        step: 2,
                        did: format!(
                            "KSK {} signs the DNSKEY RRset now; {} left it, its DS stays at the parent",
                            list.keys[ds_only].tag, list.keys[active].tag
                        ),
                        next: "reload, wait the DNSKEY TTL, then run this again to drop the old DS"
                            .into(),
                    }
                }
                // 3: the old DS leaves the parent
                (None, Some(old)) => {
                    list.keys[old].state = KeyState::Retired;
                    list.keys[old].rollover = None;
                    RolloverStep {
                        step: 3,
                        did: format!("retired KSK {}: its DS leaves the parent", list.keys[old].tag),
                        next: "remove the old DS at the parent (a parent served here does it at reload): the rollover is over".into(),
                    }
                }
            },
        };
        Self::save(dir, zone, &list)?;
        Ok(step)
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
        // a ZSK rollover in three steps, then a KSK one
        let zsk = |k: &ZoneKeys, state| {
            k.keys
                .iter()
                .filter(|k| k.role == Role::Zsk && k.state == state)
                .count()
        };
        assert_eq!(
            ZoneKeys::roll(dir.path(), &zone, Role::Zsk).unwrap().step,
            1
        );
        let k = ZoneKeys::load(dir.path(), &zone).unwrap().unwrap();
        assert_eq!(
            (zsk(&k, KeyState::Active), zsk(&k, KeyState::Published)),
            (1, 1)
        );
        assert_eq!(k.dnskey_records(60).len(), 3);
        assert_eq!(
            ZoneKeys::roll(dir.path(), &zone, Role::Zsk).unwrap().step,
            2
        );
        let after = ZoneKeys::load(dir.path(), &zone).unwrap().unwrap();
        let signer = |k: &ZoneKeys| k.signing(Role::Zsk).map(|k| k.tag).collect::<Vec<_>>();
        assert_ne!(signer(&k), signer(&after), "the new ZSK signs");
        assert_eq!(
            ZoneKeys::roll(dir.path(), &zone, Role::Zsk).unwrap().step,
            3
        );
        let k = ZoneKeys::load(dir.path(), &zone).unwrap().unwrap();
        assert_eq!(k.dnskey_records(60).len(), 2);
        assert_eq!(
            ZoneKeys::roll(dir.path(), &zone, Role::Ksk).unwrap().step,
            1
        );
        let k = ZoneKeys::load(dir.path(), &zone).unwrap().unwrap();
        assert_eq!((k.ds_records(60).len(), k.dnskey_records(60).len()), (2, 2));
        assert_eq!(
            ZoneKeys::roll(dir.path(), &zone, Role::Ksk).unwrap().step,
            2
        );
        let k = ZoneKeys::load(dir.path(), &zone).unwrap().unwrap();
        assert_eq!((k.ds_records(60).len(), k.dnskey_records(60).len()), (2, 2));
        assert_eq!(
            ZoneKeys::roll(dir.path(), &zone, Role::Ksk).unwrap().step,
            3
        );
        let k = ZoneKeys::load(dir.path(), &zone).unwrap().unwrap();
        assert_eq!((k.ds_records(60).len(), k.dnskey_records(60).len()), (1, 2));
        let e = ZoneKeys::load_or_create(dir.path(), &zone, SigningAlgorithm::EcdsaP256Sha256)
            .unwrap_err()
            .to_string();
        assert!(e.contains("algorithm rollover"), "{e}");
    }
}
