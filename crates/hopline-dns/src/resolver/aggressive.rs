//! Aggressive use of the DNSSEC-validated cache (RFC 8198): the NSEC records of secure
//! negative answers are kept per zone, in canonical order, with the zone's SOA; a later
//! question whose name an unexpired NSEC proves absent (with the wildcard at its closest
//! encloser) is answered NXDOMAIN without asking, and a type an NSEC at the name lacks,
//! NODATA — as Unbound (`aggressive-nsec: yes`) and Knot Resolver do. NSEC3 spans are not
//! used (their hashes make the same reuse rarer; Unbound does not either). A span whose
//! owner is a delegation (NS without SOA) or a DNAME above the name proves nothing there.

use std::collections::BTreeMap;
use std::sync::Arc;

use hickory_proto::dnssec::rdata::{DNSSECRData, NSEC};
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{LowerName, Name, RData, Record, RecordType};
use tokio::time::Instant;

use crate::dnssec::validate;

/// A proof made from the cache: the rcode, the SOA, the NSEC records with their RRSIGs,
/// and how long it holds.
pub(crate) struct Synthesized {
    pub rcode: ResponseCode,
    pub soa: Record,
    pub proof: Vec<Record>,
    pub ttl: u32,
}

/// One NSEC with its RRSIGs, until it expires.
struct Held {
    nsec: Record,
    sigs: Vec<Record>,
    until: Instant,
}

#[derive(Default)]
struct ZoneNsecs {
    /// The SOA (and its RRSIGs) of the zone's negative answers, until it expires.
    soa: Option<(Record, Vec<Record>, Instant)>,
    chain: BTreeMap<LowerName, Held>,
}

/// The validated NSEC records of each zone.
pub(crate) struct NsecCache {
    zones: moka::sync::Cache<LowerName, Arc<parking_lot::Mutex<ZoneNsecs>>>,
}

/// NSEC records kept per zone at most (the oldest half goes when full).
const PER_ZONE: usize = 10_000;

fn as_nsec(r: &Record) -> Option<&NSEC> {
    match &r.data {
        RData::DNSSEC(DNSSECRData::NSEC(n)) => Some(n),
        _ => None,
    }
}

impl NsecCache {
    pub(crate) fn new() -> NsecCache {
        NsecCache {
            zones: moka::sync::Cache::builder().max_capacity(10_000).build(),
        }
    }

    /// Keep the NSEC records (and the SOA) of a negative answer of `zone` that validated
    /// as secure. `proof` holds the NSEC records and the RRSIGs of the authority section;
    /// `max_ttl` caps how long anything is held (the negative cache's cap).
    pub(crate) fn learn(&self, zone: &Name, soa: Option<&Record>, proof: &[Record], max_ttl: u32) {
        let now = Instant::now();
        let lz = LowerName::new(zone);
        let sigs_of = |owner: &Name, t: RecordType| -> Vec<Record> {
            validate::sigs_covering(proof, owner, t)
                .into_iter()
                .cloned()
                .collect()
        };
        let held = |ttl: u32| now + std::time::Duration::from_secs(u64::from(ttl.min(max_ttl)));
        let nsecs: Vec<&Record> = proof
            .iter()
            .filter(|r| as_nsec(r).is_some() && lz.zone_of(&LowerName::new(&r.name)))
            .collect();
        if nsecs.is_empty() {
            return;
        }
        let entry = self.zones.get_with(lz, Default::default);
        let mut z = entry.lock();
        if let Some(soa) = soa {
            let ttl = match &soa.data {
                RData::SOA(s) => soa.ttl.min(s.minimum),
                _ => soa.ttl,
            };
            z.soa = Some((soa.clone(), sigs_of(&soa.name, RecordType::SOA), held(ttl)));
        }
        if z.chain.len() >= PER_ZONE {
            z.chain.retain(|_, h| h.until > now);
            if z.chain.len() >= PER_ZONE {
                z.chain.clear();
            }
        }
        for r in nsecs {
            z.chain.insert(
                LowerName::new(&r.name),
                Held {
                    nsec: r.clone(),
                    sigs: sigs_of(&r.name, RecordType::NSEC),
                    until: held(r.ttl),
                },
            );
        }
    }

    /// NXDOMAIN or NODATA for `qname`/`rtype` proven by NSEC records already validated,
    /// if the cache holds such a proof.
    pub(crate) fn synthesize(&self, qname: &Name, rtype: RecordType) -> Option<Synthesized> {
        let now = Instant::now();
        let lq = LowerName::new(qname);
        // the closest enclosing zone whose NSEC records are known (for a DS, the
        // parent's: the child's apex NSEC says nothing of it)
        if rtype == RecordType::DS && qname.is_root() {
            return None;
        }
        let mut n = if rtype == RecordType::DS {
            qname.base_name()
        } else {
            qname.clone()
        };
        let (zone, entry) = loop {
            if let Some(e) = self.zones.get(&LowerName::new(&n)) {
                break (n, e);
            }
            if n.is_root() {
                return None;
            }
            n = n.base_name();
        };
        let z = entry.lock();
        let (soa, soa_sigs, soa_until) = z.soa.as_ref().filter(|s| s.2 > now)?;
        let live = |h: &&Held| h.until > now;
        let at_or_before = |name: &LowerName| {
            z.chain
                .range(..=name.clone())
                .next_back()
                .map(|(_, h)| h)
                .filter(live)
        };
        let first = at_or_before(&lq)?;
        let owner = LowerName::new(&first.nsec.name);
        let nsec = as_nsec(&first.nsec)?;
        let types: Vec<RecordType> = nsec.type_bit_maps().collect();
        let cut = types.contains(&RecordType::NS) && !types.contains(&RecordType::SOA);
        // the span of a delegation (or a DNAME) above the name is the child's business
        if owner != lq && owner.zone_of(&lq) && (cut || types.contains(&RecordType::DNAME)) {
            return None;
        }
        let mut used: Vec<&Held> = vec![first];
        let next = LowerName::new(nsec.next_domain_name());
        let rcode = if owner == lq {
            // the name's own NSEC: NODATA when it lacks the type (at a delegation only
            // the DS is the parent's to deny)
            if (cut && rtype != RecordType::DS)
                || (rtype == RecordType::DS && types.contains(&RecordType::SOA))
            {
                return None;
            }
            validate::proves_nodata(qname, rtype, std::slice::from_ref(&first.nsec)).ok()?;
            ResponseCode::NoError
        } else if lq.zone_of(&next) && next != lq {
            // an empty non-terminal: the name is there, with nothing
            ResponseCode::NoError
        } else {
            // not there, and no wildcard at its closest encloser that could answer
            let mut a = qname.base_name();
            while LowerName::new(&zone).zone_of(&LowerName::new(&a)) {
                if let Ok(wild) = Name::from_ascii("*").and_then(|w| w.append_name(&a))
                    && let Some(h) = at_or_before(&LowerName::new(&wild))
                    && !used.iter().any(|u| u.nsec == h.nsec)
                {
                    used.push(h);
                }
                if a == zone || a.is_root() {
                    break;
                }
                a = a.base_name();
            }
            let nsecs: Vec<Record> = used.iter().map(|h| h.nsec.clone()).collect();
            if matches!(validate::proves_nxdomain(qname, &nsecs), Ok(false)) {
                ResponseCode::NXDomain
            } else if matches!(validate::proves_nodata(qname, rtype, &nsecs), Ok(false)) {
                ResponseCode::NoError // a wildcard without the type
            } else {
                return None;
            }
        };
        let left = |until: &Instant| until.saturating_duration_since(now).as_secs() as u32;
        let ttl = used
            .iter()
            .map(|h| left(&h.until))
            .chain([left(soa_until)])
            .min()
            .unwrap_or(0);
        if ttl == 0 {
            return None;
        }
        let mut soa = soa.clone();
        soa.ttl = soa.ttl.min(ttl);
        let mut proof: Vec<Record> = soa_sigs.clone();
        for h in used {
            let mut r = h.nsec.clone();
            r.ttl = r.ttl.min(ttl);
            proof.push(r);
            proof.extend(h.sigs.iter().cloned());
        }
        Some(Synthesized {
            rcode,
            soa,
            proof,
            ttl,
        })
    }
}
