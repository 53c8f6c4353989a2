//! A zone signed online. At load (and again well before the signatures expire) every
//! authoritative RRset gets an RRSIG from each active ZSK, the DNSKEY RRset one from each
//! active KSK, and the zone an NSEC chain over its names in canonical order, each NSEC
//! signed. A DO query's answer then carries what a validator needs: the RRSIGs of the
//! RRsets it holds; for NXDOMAIN the NSEC covering the name and the one covering the
//! wildcard of its closest encloser; for NODATA the NSEC of the name (or the one covering
//! an empty non-terminal); for a wildcard answer the NSEC covering the name asked; for a
//! referral the DS, or the NSEC proving there is none. Pooled answers (DNS load
//! balancing) are signed as they are made, each set of addresses once per signing.
//!
//! NSEC and not NSEC3 by default: online signing of an in-memory zone makes the chain
//! cheap, answers smaller and validation faster; NSEC3 (with opt-out) matters for large
//! delegation-heavy zones that do not want to be walked, which this server is not for.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use hickory_proto::dnssec::TBS;
use hickory_proto::dnssec::rdata::{DNSSECRData, NSEC, RRSIG, SigInput};
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{DNSClass, LowerName, Name, RData, Record, RecordType, SerialNumber};

use super::keys::{Role, ZoneKey, ZoneKeys};
use crate::zone::Zone;

/// How long signatures are valid by default; they are made again when half is left.
pub const DEFAULT_VALIDITY: Duration = Duration::from_secs(14 * 86400);

/// Signatures start this long before they are made (clocks differ).
const INCEPTION_SKEW: u32 = 3600;

/// Pooled RRsets signed and remembered at most (then forgotten all at once).
const ONLINE_CACHE: usize = 4096;

/// A pooled RRset signed online: owner, type and its data sorted.
type OnlineKey = (LowerName, RecordType, Vec<String>);

/// A zone's signatures and denial chain.
pub struct SignedZone {
    keys: Arc<ZoneKeys>,
    apex: Name,
    /// The zone as its file says, to sign again from.
    source: Zone,
    /// Names answered beyond the file (pooled), in the chain.
    extra: Vec<(LowerName, RecordType)>,
    /// RRSIGs by the (owner, type) they cover.
    sigs: HashMap<(LowerName, RecordType), Vec<Record>>,
    /// The NSEC chain: each owner name's NSEC record.
    nsec: BTreeMap<LowerName, Record>,
    inception: u32,
    expiration: u32,
    /// When the signatures were made and how long they are valid.
    pub signed_at: SystemTime,
    pub validity: Duration,
    online: parking_lot::Mutex<HashMap<OnlineKey, Vec<Record>>>,
}

impl std::fmt::Debug for SignedZone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignedZone")
            .field("apex", &self.apex)
            .field("rrsets", &self.sigs.len())
            .field("nsec", &self.nsec.len())
            .finish()
    }
}

fn unix_now() -> u32 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as u32)
}

/// One RRSIG over `records` (the RRset `owner`/`rtype`) by `key`.
fn rrsig(
    apex: &Name,
    owner: &Name,
    rtype: RecordType,
    ttl: u32,
    records: &[Record],
    key: &ZoneKey,
    (inception, expiration): (u32, u32),
) -> Option<Record> {
    let input = SigInput {
        type_covered: rtype,
        algorithm: key.signing.algorithm(),
        // (a wildcard's `*` label is not counted, RFC 4034 §3.1.3)
        num_labels: owner.num_labels(),
        original_ttl: ttl,
        sig_expiration: SerialNumber::new(expiration),
        sig_inception: SerialNumber::new(inception),
        key_tag: key.tag,
        signer_name: apex.clone(),
    };
    let tbs = TBS::from_input(owner, DNSClass::IN, &input, records.iter()).ok()?;
    let sig = key.signing.sign(&tbs).ok()?;
    Some(Record::from_rdata(
        owner.clone(),
        ttl,
        RData::DNSSEC(DNSSECRData::RRSIG(RRSIG::from_sig(input, sig))),
    ))
}

impl SignedZone {
    /// Sign `zone` in place with `keys`: it gains its DNSKEY RRset, the NSEC chain and
    /// every RRSIG (as RRsets too, so transfers carry them); its SOA gets `serial`. The
    /// answer holds what DO answers need beside the zone's records.
    /// `extra` are names the zone answers beyond its file (pooled names), with their
    /// types, so that the chain proves what they lack.
    pub fn sign(
        zone: &mut Zone,
        keys: Arc<ZoneKeys>,
        extra: &[(LowerName, RecordType)],
        serial: u32,
        validity: Duration,
    ) -> Arc<SignedZone> {
        let source = zone.clone();
        zone.set_serial(serial);
        let apex = Name::from(&zone.origin);
        let now = unix_now();
        let window = (
            now.saturating_sub(INCEPTION_SKEW),
            now.saturating_add(validity.as_secs() as u32),
        );
        let dnskey_ttl = zone.soa().ttl;
        zone.insert_rrset(
            zone.origin.clone(),
            RecordType::DNSKEY,
            keys.dnskey_records(dnskey_ttl),
        );
        for (owner, rtype) in extra {
            if zone.get(owner, *rtype).is_none() {
                // a pooled name: in the chain with its type, signed when answered
                zone.insert_rrset(owner.clone(), *rtype, Vec::new());
            }
        }

        // which RRsets are the zone's own: not the NS of a cut, not what lies below one
        let authoritative =
            |owner: &LowerName, rtype: RecordType| match zone.cut_for(&Name::from(owner)) {
                None => true,
                Some(cut) => cut == *owner && rtype == RecordType::DS,
            };
        let mut sigs: HashMap<(LowerName, RecordType), Vec<Record>> = HashMap::new();
        for ((owner, rtype), records) in zone.rrsets() {
            if records.is_empty() || !authoritative(owner, *rtype) {
                continue;
            }
            let role = if *rtype == RecordType::DNSKEY {
                Role::Ksk
            } else {
                Role::Zsk
            };
            let name = records[0].name.clone();
            let ttl = records[0].ttl;
            let made: Vec<Record> = keys
                .signing(role)
                .filter_map(|k| rrsig(&apex, &name, *rtype, ttl, records, k, window))
                .collect();
            sigs.insert((owner.clone(), *rtype), made);
        }

        // the NSEC chain: owners with authoritative data, in canonical order
        let negative_ttl = zone.negative_soa().ttl;
        let names: Vec<(LowerName, Vec<RecordType>)> = zone
            .owners()
            .iter()
            .filter_map(|(owner, types)| {
                let types: Vec<RecordType> = types
                    .iter()
                    .copied()
                    .filter(|t| {
                        authoritative(owner, *t)
                            || (*t == RecordType::NS
                                && zone.cut_for(&Name::from(owner)).as_ref() == Some(owner))
                    })
                    .collect();
                (!types.is_empty()).then(|| (owner.clone(), types))
            })
            .collect();
        let mut nsec = BTreeMap::new();
        for (i, (owner, types)) in names.iter().enumerate() {
            let next = Name::from(&names[(i + 1) % names.len()].0);
            let name = Name::from(owner);
            let record = Record::from_rdata(
                name.clone(),
                negative_ttl,
                RData::DNSSEC(DNSSECRData::NSEC(NSEC::new_cover_self(
                    next,
                    types.iter().copied(),
                ))),
            );
            let made: Vec<Record> = keys
                .signing(Role::Zsk)
                .filter_map(|k| {
                    rrsig(
                        &apex,
                        &name,
                        RecordType::NSEC,
                        negative_ttl,
                        std::slice::from_ref(&record),
                        k,
                        window,
                    )
                })
                .collect();
            sigs.insert((owner.clone(), RecordType::NSEC), made);
            nsec.insert(owner.clone(), record);
        }
        for (owner, record) in &nsec {
            zone.insert_rrset(owner.clone(), RecordType::NSEC, vec![record.clone()]);
        }
        // the RRSIGs as RRsets of their own, for transfers (and RRSIG questions)
        let mut by_owner: BTreeMap<LowerName, Vec<Record>> = BTreeMap::new();
        for ((owner, _), made) in &sigs {
            by_owner
                .entry(owner.clone())
                .or_default()
                .extend(made.iter().cloned());
        }
        for (owner, made) in by_owner {
            zone.insert_rrset(owner, RecordType::RRSIG, made);
        }
        Arc::new(SignedZone {
            keys,
            apex,
            source,
            extra: extra.to_vec(),
            sigs,
            nsec,
            inception: window.0,
            expiration: window.1,
            signed_at: SystemTime::now(),
            validity,
            online: parking_lot::Mutex::new(HashMap::new()),
        })
    }

    /// The zone signed again from its file's data with the same keys: fresh signatures,
    /// the serial one up (so secondaries transfer it).
    pub fn resigned(&self, serial: u32) -> (Zone, Arc<SignedZone>) {
        let mut zone = self.source.clone();
        let signed = SignedZone::sign(
            &mut zone,
            self.keys.clone(),
            &self.extra,
            serial.wrapping_add(1),
            self.validity,
        );
        (zone, signed)
    }

    /// Are the signatures past half their validity (time to sign again)?
    pub fn due(&self, now: SystemTime) -> bool {
        now.duration_since(self.signed_at)
            .is_ok_and(|age| age >= self.validity / 2)
    }

    /// The zone's apex.
    pub fn apex(&self) -> &Name {
        &self.apex
    }

    /// The zone's keys.
    pub fn keys(&self) -> &Arc<ZoneKeys> {
        &self.keys
    }

    /// The RRSIGs covering the RRset `records` (owner `name`, type `rtype`) as answered:
    /// the zone's own, a wildcard's renamed to the name asked, or made now (pooled).
    fn sigs_for(
        &self,
        zone: &Zone,
        name: &Name,
        rtype: RecordType,
        records: &[Record],
    ) -> (Vec<Record>, Option<LowerName>) {
        let owner = LowerName::new(name);
        if let Some(s) = self.sigs.get(&(owner.clone(), rtype))
            && zone.get(&owner, rtype).is_some_and(|rs| !rs.is_empty())
        {
            return (with_ttl(s, records), None);
        }
        if !zone.contains(&owner)
            && let Some(wild) = zone.wildcard_for(name)
            && let Some(s) = self.sigs.get(&(wild.clone(), rtype))
        {
            let renamed = s
                .iter()
                .map(|r| {
                    let mut r = r.clone();
                    r.name = name.clone();
                    r
                })
                .collect::<Vec<_>>();
            return (with_ttl(&renamed, records), Some(owner));
        }
        (self.online(name, rtype, records), None)
    }

    /// Signatures made on demand (pooled answers), remembered per set of records.
    fn online(&self, name: &Name, rtype: RecordType, records: &[Record]) -> Vec<Record> {
        let mut data: Vec<String> = records.iter().map(|r| r.data.to_string()).collect();
        data.sort();
        let key = (LowerName::new(name), rtype, data);
        if let Some(s) = self.online.lock().get(&key) {
            return s.clone();
        }
        let ttl = records.first().map_or(0, |r| r.ttl);
        let made: Vec<Record> = self
            .keys
            .signing(Role::Zsk)
            .filter_map(|k| {
                rrsig(
                    &self.apex,
                    name,
                    rtype,
                    ttl,
                    records,
                    k,
                    (self.inception, self.expiration),
                )
            })
            .collect();
        let mut cache = self.online.lock();
        if cache.len() >= ONLINE_CACHE {
            cache.clear();
        }
        cache.insert(key, made.clone());
        made
    }

    /// The NSEC (with its RRSIGs) whose span covers `name` (owner < name < next), or the
    /// one at `name` itself.
    fn nsec_for(&self, name: &LowerName) -> Vec<Record> {
        let found = self
            .nsec
            .range(..=name.clone())
            .next_back()
            .or_else(|| self.nsec.iter().next_back());
        let Some((owner, record)) = found else {
            return Vec::new();
        };
        let mut out = vec![record.clone()];
        if let Some(s) = self.sigs.get(&(owner.clone(), RecordType::NSEC)) {
            out.extend(s.iter().cloned());
        }
        out
    }

    /// Add what a validator needs to `r`, the answer of `zone` to a DO query.
    pub fn decorate(&self, zone: &Zone, r: &mut Message) {
        let mut proofs: Vec<Record> = Vec::new();
        // 1. the answer's RRsets
        let mut sets: Vec<(Name, RecordType, Vec<Record>)> = Vec::new();
        for rec in &r.answers {
            match sets.last_mut() {
                Some((n, t, v)) if n == &rec.name && *t == rec.record_type() => v.push(rec.clone()),
                _ => sets.push((rec.name.clone(), rec.record_type(), vec![rec.clone()])),
            }
        }
        let mut extra = Vec::new();
        for (name, rtype, records) in &sets {
            let (s, expanded) = self.sigs_for(zone, name, *rtype, records);
            extra.extend(s);
            if let Some(asked) = expanded {
                // a wildcard answered: prove the name itself is not there
                proofs.extend(self.nsec_for(&asked));
            }
        }
        r.answers.extend(extra);

        // 2. the authority section
        let soa = r
            .authorities
            .iter()
            .find(|a| a.record_type() == RecordType::SOA)
            .cloned();
        let referral: Vec<Record> = r
            .authorities
            .iter()
            .filter(|a| a.record_type() == RecordType::NS)
            .cloned()
            .collect();
        if let Some(soa) = soa {
            let (s, _) =
                self.sigs_for(zone, &soa.name, RecordType::SOA, std::slice::from_ref(&soa));
            r.authorities.extend(s);
            // the name the answer ends at: the last CNAME's target, or the name asked
            let end = super::chain_end(&r.answers, &r.queries[0].name);
            let lend = LowerName::new(&end);
            if r.metadata.response_code == ResponseCode::NXDomain {
                proofs.extend(self.nsec_for(&lend));
                let encloser = closest_encloser(zone, &end);
                if let Ok(wild) = Name::from_ascii("*").and_then(|w| w.append_name(&encloser)) {
                    proofs.extend(self.nsec_for(&LowerName::new(&wild)));
                }
            } else if self.nsec.contains_key(&lend) || zone.contains(&lend) {
                // NODATA at a name (or an empty non-terminal: the NSEC covering it)
                proofs.extend(self.nsec_for(&lend));
            } else if let Some(wild) = zone.wildcard_for(&end) {
                proofs.extend(self.nsec_for(&lend));
                proofs.extend(self.nsec_for(&wild));
            }
        } else if let Some(ns) = referral.first()
            && !r.metadata.authoritative
        {
            // a referral: the child's DS, or the NSEC saying it has none (insecure)
            let cut = LowerName::new(&ns.name);
            match zone.get(&cut, RecordType::DS).filter(|d| !d.is_empty()) {
                Some(ds) => {
                    r.authorities.extend(ds.iter().cloned());
                    if let Some(s) = self.sigs.get(&(cut, RecordType::DS)) {
                        r.authorities.extend(s.iter().cloned());
                    }
                }
                None => proofs.extend(self.nsec_for(&cut)),
            }
        }
        for p in proofs {
            if !r.authorities.contains(&p) {
                r.authorities.push(p);
            }
        }
    }
}

/// The RRSIGs `s` with the TTL of the RRset they cover as answered.
fn with_ttl(s: &[Record], records: &[Record]) -> Vec<Record> {
    let ttl = records.first().map(|r| r.ttl);
    s.iter()
        .map(|r| {
            let mut r = r.clone();
            if let Some(t) = ttl {
                r.ttl = t;
            }
            r
        })
        .collect()
}

/// The nearest ancestor of `name` the zone holds (empty non-terminals included).
fn closest_encloser(zone: &Zone, name: &Name) -> Name {
    let mut n = name.base_name();
    while !zone.contains(&LowerName::new(&n)) && !n.is_root() {
        n = n.base_name();
    }
    n
}
