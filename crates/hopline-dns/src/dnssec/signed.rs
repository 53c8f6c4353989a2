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
//! NSEC by default: online signing of an in-memory zone makes the chain cheap, answers
//! smaller and validation faster (no hashing). NSEC3 (RFC 5155) on request
//! (`denial = "nsec3"`), with the RFC 9276 defaults — no extra iterations, no salt — and
//! opt-out as an option: it keeps the zone from being listed by walking its chain (its
//! names are hashed), and opt-out leaves unsigned delegations out of the chain, which is
//! what large delegation-heavy zones want. With NSEC3, every name of the chain has its
//! hashed NSEC3 record (empty non-terminals too, but not those only above opted-out
//! delegations); NXDOMAIN carries the closest encloser proof (the NSEC3 matching the
//! closest encloser, the one covering the next closer name, the one covering the
//! wildcard), NODATA the NSEC3 matching the name (or, at an opted-out delegation, the
//! closest provable encloser proof), a wildcard answer the NSEC3 covering the next
//! closer name.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use hickory_proto::dnssec::rdata::{DNSSECRData, NSEC, NSEC3, NSEC3PARAM, RRSIG, SigInput};
use hickory_proto::dnssec::{Nsec3HashAlgorithm, TBS};
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

/// How a signed zone proves what it lacks.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Denial {
    /// An NSEC chain over the names (RFC 4034).
    #[default]
    Nsec,
    /// An NSEC3 chain over the names' hashes (RFC 5155).
    Nsec3(Nsec3Params),
}

/// NSEC3's parameters.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Nsec3Params {
    /// Extra hash iterations (RFC 9276: 0).
    pub iterations: u16,
    /// Salt (RFC 9276: none).
    pub salt: Vec<u8>,
    /// Leave unsigned delegations out of the chain.
    pub opt_out: bool,
}

impl Nsec3Params {
    /// The hash of `name` (RFC 5155 §5).
    fn hash(&self, name: &Name) -> Vec<u8> {
        Nsec3HashAlgorithm::SHA1
            .hash(&self.salt, name, self.iterations)
            .map(|d| d.as_ref().to_vec())
            .unwrap_or_default()
    }
}

/// How a zone is signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signing {
    /// How long signatures are valid; they are made again when half is left.
    pub validity: Duration,
    /// NSEC or NSEC3.
    pub denial: Denial,
}

impl Default for Signing {
    fn default() -> Self {
        Signing {
            validity: DEFAULT_VALIDITY,
            denial: Denial::Nsec,
        }
    }
}

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
    /// The NSEC3 chain: hash → the NSEC3 record (its owner the hash's label + apex).
    nsec3: BTreeMap<Vec<u8>, Record>,
    inception: u32,
    expiration: u32,
    /// When the signatures were made.
    pub signed_at: SystemTime,
    /// How (validity, denial).
    pub how: Signing,
    online: parking_lot::Mutex<HashMap<OnlineKey, Vec<Record>>>,
}

impl std::fmt::Debug for SignedZone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignedZone")
            .field("apex", &self.apex)
            .field("rrsets", &self.sigs.len())
            .field("nsec", &self.nsec.len())
            .field("nsec3", &self.nsec3.len())
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
        how: &Signing,
    ) -> Arc<SignedZone> {
        let validity = how.validity;
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
        if let Denial::Nsec3(p) = &how.denial {
            // (the parameters record's flags are 0: opt-out is said in each NSEC3)
            let param = NSEC3PARAM::new(
                Nsec3HashAlgorithm::SHA1,
                false,
                p.iterations,
                p.salt.clone(),
            );
            zone.insert_rrset(
                zone.origin.clone(),
                RecordType::NSEC3PARAM,
                vec![Record::from_rdata(
                    apex.clone(),
                    0,
                    RData::DNSSEC(DNSSECRData::NSEC3PARAM(param)),
                )],
            );
        }
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
        let mut nsec3 = BTreeMap::new();
        let sign_one = |name: &Name, rtype: RecordType, record: &Record| -> Vec<Record> {
            keys.signing(Role::Zsk)
                .filter_map(|k| {
                    rrsig(
                        &apex,
                        name,
                        rtype,
                        negative_ttl,
                        std::slice::from_ref(record),
                        k,
                        window,
                    )
                })
                .collect()
        };
        match &how.denial {
            Denial::Nsec => {
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
                    sigs.insert(
                        (owner.clone(), RecordType::NSEC),
                        sign_one(&name, RecordType::NSEC, &record),
                    );
                    nsec.insert(owner.clone(), record);
                }
                for (owner, record) in &nsec {
                    zone.insert_rrset(owner.clone(), RecordType::NSEC, vec![record.clone()]);
                }
            }
            Denial::Nsec3(p) => {
                // the names of the chain: every authoritative name (an unsigned
                // delegation left out with opt-out), and the empty non-terminals above them
                let mut chain: BTreeMap<LowerName, Vec<RecordType>> = BTreeMap::new();
                for (owner, types) in &names {
                    let insecure_cut = types.contains(&RecordType::NS)
                        && *owner != zone.origin
                        && !types.contains(&RecordType::DS);
                    if insecure_cut && p.opt_out {
                        continue;
                    }
                    let mut types = types.clone();
                    // (an unsigned delegation's NS is not signed: no RRSIG there)
                    if !insecure_cut {
                        types.push(RecordType::RRSIG);
                    }
                    chain.insert(owner.clone(), types);
                    let mut n = Name::from(owner).base_name();
                    while zone.origin.zone_of(&LowerName::new(&n)) {
                        chain.entry(LowerName::new(&n)).or_default();
                        if n.is_root() {
                            break;
                        }
                        n = n.base_name();
                    }
                }
                let mut hashed: Vec<(Vec<u8>, Vec<RecordType>)> = chain
                    .iter()
                    .map(|(owner, types)| (p.hash(&Name::from(owner)), types.clone()))
                    .collect();
                hashed.sort();
                for (i, (hash, types)) in hashed.iter().enumerate() {
                    let next = hashed[(i + 1) % hashed.len()].0.clone();
                    let Some(name) = hashed_owner(hash, &apex) else {
                        continue;
                    };
                    let record = Record::from_rdata(
                        name.clone(),
                        negative_ttl,
                        RData::DNSSEC(DNSSECRData::NSEC3(NSEC3::new(
                            Nsec3HashAlgorithm::SHA1,
                            p.opt_out,
                            p.iterations,
                            p.salt.clone(),
                            next,
                            types.iter().copied(),
                        ))),
                    );
                    let made = sign_one(&name, RecordType::NSEC3, &record);
                    // in the transfer, not in the zone's names (a hashed name asked is
                    // NXDOMAIN, RFC 5155 §7.2.9)
                    zone.insert_hidden(
                        LowerName::new(&name),
                        RecordType::NSEC3,
                        vec![record.clone()],
                    );
                    zone.insert_hidden(LowerName::new(&name), RecordType::RRSIG, made.clone());
                    sigs.insert((LowerName::new(&name), RecordType::NSEC3), made);
                    nsec3.insert(hash.clone(), record);
                }
            }
        }
        // the RRSIGs as RRsets of their own, for transfers (and RRSIG questions)
        let mut by_owner: BTreeMap<LowerName, Vec<Record>> = BTreeMap::new();
        for ((owner, rtype), made) in &sigs {
            if *rtype == RecordType::NSEC3 {
                continue; // (with the NSEC3 records, above)
            }
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
            nsec3,
            inception: window.0,
            expiration: window.1,
            signed_at: SystemTime::now(),
            how: how.clone(),
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
            &self.how,
        );
        (zone, signed)
    }

    /// Are the signatures past half their validity (time to sign again)?
    pub fn due(&self, now: SystemTime) -> bool {
        now.duration_since(self.signed_at)
            .is_ok_and(|age| age >= self.how.validity / 2)
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

    /// The RRSIGs of an RRset the zone answers beyond its file (a pool's addresses).
    pub fn sign_rrset(&self, name: &Name, rtype: RecordType, records: &[Record]) -> Vec<Record> {
        self.online(name, rtype, records)
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

    /// An NSEC3 record with its RRSIGs.
    fn with_sigs3(&self, record: &Record) -> Vec<Record> {
        let mut out = vec![record.clone()];
        if let Some(s) = self
            .sigs
            .get(&(LowerName::new(&record.name), RecordType::NSEC3))
        {
            out.extend(s.iter().cloned());
        }
        out
    }

    /// The NSEC3 whose hash is `name`'s (empty if none).
    fn nsec3_match(&self, p: &Nsec3Params, name: &Name) -> Vec<Record> {
        self.nsec3
            .get(&p.hash(name))
            .map(|r| self.with_sigs3(r))
            .unwrap_or_default()
    }

    /// The NSEC3 whose span covers `name`'s hash.
    fn nsec3_cover(&self, p: &Nsec3Params, name: &Name) -> Vec<Record> {
        let h = p.hash(name);
        self.nsec3
            .range(..h)
            .next_back()
            .or_else(|| self.nsec3.iter().next_back())
            .map(|(_, r)| self.with_sigs3(r))
            .unwrap_or_default()
    }

    /// The closest (provable) encloser proof for `name` (RFC 5155 §7.2.1): the NSEC3
    /// matching its nearest ancestor in the chain, and the one covering the next closer
    /// name. Returns the encloser too.
    fn nsec3_encloser(&self, p: &Nsec3Params, name: &Name) -> (Name, Vec<Record>) {
        let mut next_closer = name.clone();
        let mut n = name.base_name();
        loop {
            let m = self.nsec3_match(p, &n);
            if !m.is_empty() || n == self.apex || n.is_root() {
                let mut out = m;
                out.extend(self.nsec3_cover(p, &next_closer));
                return (n, out);
            }
            next_closer = n.clone();
            n = n.base_name();
        }
    }

    /// What proves `end` lacks data with NSEC3: NXDOMAIN, NODATA (a wildcard's too) or a
    /// referral's missing DS.
    fn nsec3_proof(&self, p: &Nsec3Params, zone: &Zone, end: &Name, nxdomain: bool) -> Vec<Record> {
        if nxdomain {
            let (encloser, mut out) = self.nsec3_encloser(p, end);
            if let Ok(wild) = Name::from_ascii("*").and_then(|w| w.append_name(&encloser)) {
                out.extend(self.nsec3_cover(p, &wild));
            }
            return out;
        }
        let m = self.nsec3_match(p, end);
        if !m.is_empty() {
            return m;
        }
        match zone.wildcard_for(end) {
            // NODATA from a wildcard: the encloser proof and the wildcard's own NSEC3
            Some(wild) if !zone.contains(&LowerName::new(end)) => {
                let (_, mut out) = self.nsec3_encloser(p, end);
                out.extend(self.nsec3_match(p, &Name::from(&wild)));
                out
            }
            // an opted-out delegation (or a name below one): the closest provable encloser
            _ => self.nsec3_encloser(p, end).1,
        }
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
                match &self.how.denial {
                    Denial::Nsec => proofs.extend(self.nsec_for(&asked)),
                    Denial::Nsec3(p) => {
                        let asked = Name::from(&asked);
                        let wild = zone.wildcard_for(&asked).map(|w| Name::from(&w));
                        // the next closer name: the child of the wildcard's parent on
                        // the way to the name asked
                        if let Some(encloser) = wild.map(|w| w.base_name()) {
                            let mut nc = asked.clone();
                            while nc.num_labels() > encloser.num_labels() + 1 {
                                nc = nc.base_name();
                            }
                            proofs.extend(self.nsec3_cover(p, &nc));
                        }
                    }
                }
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
            if let Denial::Nsec3(p) = &self.how.denial {
                let nx = r.metadata.response_code == ResponseCode::NXDomain;
                proofs.extend(self.nsec3_proof(p, zone, &end, nx));
            } else if r.metadata.response_code == ResponseCode::NXDomain {
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
                None => match &self.how.denial {
                    Denial::Nsec => proofs.extend(self.nsec_for(&cut)),
                    Denial::Nsec3(p) => {
                        proofs.extend(self.nsec3_proof(p, zone, &Name::from(&cut), false))
                    }
                },
            }
        }
        for p in proofs {
            if !r.authorities.contains(&p) {
                r.authorities.push(p);
            }
        }
    }
}

/// The owner name of the NSEC3 of `hash`: its base32hex label under the apex.
fn hashed_owner(hash: &[u8], apex: &Name) -> Option<Name> {
    let label = data_encoding::BASE32HEX_NOPAD
        .encode(hash)
        .to_ascii_lowercase();
    Name::from_ascii(&label).ok()?.append_name(apex).ok()
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
