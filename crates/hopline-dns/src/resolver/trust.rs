//! DNSSEC validation in the resolver: the chain of trust from a trust anchor down to the
//! zone that signed an answer (DS at the parent → the child's DNSKEY RRset → the RRSIG),
//! each zone's verdict cached, every fetch and verdict a step of the trace. The crypto
//! and the NSEC proofs are in `dnssec::validate`.

use std::collections::BTreeMap;
use std::sync::Arc;

use hickory_proto::dnssec::Verifier;
use hickory_proto::dnssec::rdata::DNSKEY;
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{LowerName, Name, RData, Record, RecordType};

use super::standing::{Security, ZoneKeys, ZoneTrust};
use super::{Referral, Resolver, TraceStep, step};
use crate::dnssec::validate::{self, Bogus, ede};
use crate::error::ResolveError;
use crate::hints::RootHints;

fn unix_now() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as u32)
}

/// The signer named by the first RRSIG among `sigs`.
fn signer(sigs: &[&Record]) -> Option<Name> {
    sigs.first()
        .and_then(|r| validate::as_rrsig(r))
        .map(|s| s.input().signer_name.clone())
}

/// Records grouped by (owner, type), RRSIGs left out, in order.
fn rrsets(records: &[Record]) -> Vec<(Name, RecordType, Vec<Record>)> {
    let mut sets: BTreeMap<(LowerName, u16), (Name, RecordType, Vec<Record>)> = BTreeMap::new();
    for r in records
        .iter()
        .filter(|r| r.record_type() != RecordType::RRSIG)
    {
        sets.entry((LowerName::new(&r.name), u16::from(r.record_type())))
            .or_insert_with(|| (r.name.clone(), r.record_type(), Vec::new()))
            .2
            .push(r.clone());
    }
    sets.into_values().collect()
}

/// A bogus answer as the resolver's error.
pub(crate) fn bogus_error(name: &Name, b: Bogus) -> ResolveError {
    ResolveError::Bogus {
        name: name.to_string(),
        ede: b.ede,
        reason: b.reason,
    }
}

impl Resolver {
    /// Does this resolver validate (it has a trust anchor)?
    pub(crate) fn validating(&self) -> bool {
        !self.inner.anchors.is_empty()
    }

    /// `name`/`rtype` as the servers of the zone holding it answer (for a DS, the
    /// parent's), following referrals down; not validated.
    async fn fetch(
        &self,
        hints: &RootHints,
        name: &Name,
        rtype: RecordType,
        steps: &mut Vec<TraceStep>,
        depth: u8,
    ) -> Result<Message, ResolveError> {
        let (mut zone, mut servers) = self.start_for(hints, name, rtype);
        for _ in 0..20 {
            let addrs: Vec<std::net::SocketAddr> = servers
                .iter()
                .map(|(_, ip)| std::net::SocketAddr::new(*ip, self.inner.query_port))
                .collect();
            let (server, resp) = self
                .ask(&addrs, name, rtype, false, &zone.to_string(), steps)
                .await?;
            if resp.answers.is_empty() && resp.metadata.response_code == ResponseCode::NoError {
                let last = steps.len() - 1;
                if let Referral::Down(child, s) = self
                    .referral(hints, name, rtype, &zone, server, &resp, steps, last, depth)
                    .await?
                {
                    zone = child;
                    servers = s;
                    continue;
                }
            }
            return Ok(resp);
        }
        Err(ResolveError::Loop(format!(
            "more than 20 referrals fetching {name} {rtype}"
        )))
    }

    /// How far `zone`'s data can be trusted, proven from a trust anchor down; cached.
    pub(crate) async fn zone_trust(
        &self,
        hints: &RootHints,
        zone: &Name,
        steps: &mut Vec<TraceStep>,
        depth: u8,
    ) -> ZoneTrust {
        let key = LowerName::new(zone);
        if let Some((t, until)) = self.inner.trust.get(&key)
            && tokio::time::Instant::now() < until
        {
            return t;
        }
        let t = if depth > 16 {
            ZoneTrust::Bogus(Bogus::new(
                ede::DNSSEC_BOGUS,
                format!("the chain of trust to {zone} is too long"),
            ))
        } else {
            Box::pin(self.zone_trust_uncached(hints, zone, steps, depth)).await
        };
        let until = tokio::time::Instant::now() + std::time::Duration::from_secs(t.ttl().into());
        self.inner.trust.insert(key, (t.clone(), until));
        t
    }

    async fn zone_trust_uncached(
        &self,
        hints: &RootHints,
        zone: &Name,
        steps: &mut Vec<TraceStep>,
        depth: u8,
    ) -> ZoneTrust {
        let lz = LowerName::new(zone);
        let anchored: Vec<Record> = self
            .inner
            .anchors
            .iter()
            .filter(|a| LowerName::new(&a.name) == lz)
            .cloned()
            .collect();
        if !anchored.is_empty() {
            return self
                .keys_of(hints, zone, &anchored, steps, depth, "the trust anchor")
                .await;
        }
        if !self
            .inner
            .anchors
            .iter()
            .any(|a| LowerName::new(&a.name).zone_of(&lz))
        {
            return ZoneTrust::Insecure;
        }
        // the DS, at the parent
        let resp = match self.fetch(hints, zone, RecordType::DS, steps, depth).await {
            Ok(r) => r,
            Err(e) => {
                return ZoneTrust::Bogus(Bogus::new(
                    ede::DNSSEC_BOGUS,
                    format!("the DS of {zone} could not be fetched: {e}"),
                ));
            }
        };
        let ds: Vec<Record> = resp
            .answers
            .iter()
            .filter(|r| r.record_type() == RecordType::DS && LowerName::new(&r.name) == lz)
            .cloned()
            .collect();
        let parent_of = |records: &[&Record], soa: Option<&Record>| {
            signer(records)
                .or_else(|| soa.map(|s| s.name.clone()))
                .unwrap_or_else(|| zone.base_name())
        };
        if !ds.is_empty() {
            let sigs = validate::sigs_covering(&resp.answers, zone, RecordType::DS);
            let parent = parent_of(&sigs, None);
            return match self.zone_trust(hints, &parent, steps, depth + 1).await {
                ZoneTrust::Insecure => ZoneTrust::Insecure,
                ZoneTrust::Bogus(b) => ZoneTrust::Bogus(b),
                ZoneTrust::Secure(keys) => {
                    match validate::verify_rrset(&ds, &sigs, &keys, &parent, unix_now()) {
                        Err(b) => self.verdict(steps, zone, Err(b)),
                        Ok(_) => {
                            let by = format!("the DS at {parent}");
                            self.keys_of(hints, zone, &ds, steps, depth, &by).await
                        }
                    }
                }
            };
        }
        // no DS: the parent proves an insecure delegation, or is itself insecure
        let soa = resp
            .authorities
            .iter()
            .find(|r| r.record_type() == RecordType::SOA);
        let nsec_sigs: Vec<&Record> = resp
            .authorities
            .iter()
            .filter(|r| {
                validate::as_rrsig(r).is_some_and(|s| {
                    matches!(s.input().type_covered, RecordType::NSEC | RecordType::NSEC3)
                })
            })
            .collect();
        let parent = parent_of(&nsec_sigs, soa);
        match self.zone_trust(hints, &parent, steps, depth + 1).await {
            ZoneTrust::Insecure => ZoneTrust::Insecure,
            ZoneTrust::Bogus(b) => ZoneTrust::Bogus(b),
            ZoneTrust::Secure(keys) => {
                let nsecs = match verified_nsecs(&resp.authorities, &parent, &keys) {
                    Ok(n) => n,
                    Err(b) => return self.verdict(steps, zone, Err(b)),
                };
                if validate::nsec3_too_costly(&nsecs) {
                    return ZoneTrust::Insecure;
                }
                if validate::proves_insecure_delegation(zone, &nsecs) {
                    steps.push(step(
                        "dnssec",
                        "",
                        &format!("{zone} DS"),
                        "insecure",
                        format!("{parent} proves {zone} has no DS (NSEC): an unsigned zone"),
                        0.0,
                        None,
                        false,
                    ));
                    return ZoneTrust::Insecure;
                }
                // the name has data but no NS: inside the parent, not a zone of its own
                let not_a_cut = nsecs.iter().any(|r| {
                    LowerName::new(&r.name) == lz
                        && matches!(&r.data, RData::DNSSEC(hickory_proto::dnssec::rdata::DNSSECRData::NSEC(n)) if !n.type_bit_maps().any(|t| t == RecordType::NS))
                }) || (nsecs.iter().any(|r| r.record_type() == RecordType::NSEC3)
                    && validate::proves_nodata(zone, RecordType::NS, &nsecs).is_ok());
                if not_a_cut {
                    // a name inside the parent, not a zone of its own: the parent's keys
                    return ZoneTrust::Secure(keys);
                }
                self.verdict(
                    steps,
                    zone,
                    Err(Bogus::new(
                        ede::NSEC_MISSING,
                        format!("{parent} gives no DS for {zone} and no proof that it has none"),
                    )),
                )
            }
        }
    }

    /// `zone`'s DNSKEY RRset, proven by `ds` (a trust anchor or the parent's DS).
    async fn keys_of(
        &self,
        hints: &RootHints,
        zone: &Name,
        ds: &[Record],
        steps: &mut Vec<TraceStep>,
        depth: u8,
        by: &str,
    ) -> ZoneTrust {
        let resp = match self
            .fetch(hints, zone, RecordType::DNSKEY, steps, depth)
            .await
        {
            Ok(r) => r,
            Err(e) => {
                return self.verdict(
                    steps,
                    zone,
                    Err(Bogus::new(
                        ede::DNSKEY_MISSING,
                        format!("the DNSKEY of {zone} could not be fetched: {e}"),
                    )),
                );
            }
        };
        let lz = LowerName::new(zone);
        // a DS given as DNSKEY (an anchor file may hold either) vouches for that key
        let mut vouching: Vec<Record> = ds
            .iter()
            .filter(|r| r.record_type() == RecordType::DS)
            .cloned()
            .collect();
        for k in ds.iter().filter_map(validate::as_dnskey) {
            if let (Ok(digest), Ok(tag)) = (
                k.to_digest(zone, hickory_proto::dnssec::DigestType::SHA256),
                k.calculate_key_tag(),
            ) {
                vouching.push(Record::from_rdata(
                    zone.clone(),
                    0,
                    RData::DNSSEC(hickory_proto::dnssec::rdata::DNSSECRData::DS(
                        hickory_proto::dnssec::rdata::DS::new(
                            tag,
                            k.algorithm(),
                            hickory_proto::dnssec::DigestType::SHA256,
                            digest.as_ref().to_vec(),
                        ),
                    )),
                ));
            }
        }
        let dnskeys: Vec<Record> = resp
            .answers
            .iter()
            .filter(|r| r.record_type() == RecordType::DNSKEY && LowerName::new(&r.name) == lz)
            .cloned()
            .collect();
        let sigs = validate::sigs_covering(&resp.answers, zone, RecordType::DNSKEY);
        let ttl = dnskeys.iter().map(|r| r.ttl).min().unwrap_or(0);
        let verdict = validate::verify_dnskeys(zone, &dnskeys, &sigs, &vouching, unix_now())
            .map(|keys| (ZoneKeys { keys, ttl }, by.to_string()));
        self.verdict(steps, zone, verdict)
    }

    /// Record a zone's verdict as a step of the trace and answer it.
    fn verdict(
        &self,
        steps: &mut Vec<TraceStep>,
        zone: &Name,
        v: Result<(ZoneKeys, String), Bogus>,
    ) -> ZoneTrust {
        let (kind, detail, trust) = match v {
            Ok((keys, by)) => {
                let tags: Vec<String> = keys
                    .iter()
                    .filter_map(|k| k.calculate_key_tag().ok())
                    .map(|t| t.to_string())
                    .collect();
                (
                    "secure",
                    format!(
                        "DNSKEY {} of {zone}, vouched for by {by}: secure",
                        tags.join(" ")
                    ),
                    ZoneTrust::Secure(Arc::new(keys)),
                )
            }
            Err(b) => ("bogus", format!("{zone}: {b}"), ZoneTrust::Bogus(b)),
        };
        steps.push(step(
            "dnssec",
            "",
            &format!("{zone} DNSKEY"),
            kind,
            detail,
            0.0,
            None,
            false,
        ));
        trust
    }

    /// Validate a response the servers of `zone` gave for `name`/`rtype`: its RRsets
    /// against their zone's keys, and for a negative or wildcard answer the NSEC proof.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn check(
        &self,
        hints: &RootHints,
        resp: &Message,
        name: &Name,
        rtype: RecordType,
        zone: &Name,
        steps: &mut Vec<TraceStep>,
        depth: u8,
    ) -> Result<Security, ResolveError> {
        let now = unix_now();
        let lz = LowerName::new(zone);
        let in_zone = |r: &&Record| lz.zone_of(&LowerName::new(&r.name));
        let answers: Vec<Record> = resp.answers.iter().filter(in_zone).cloned().collect();
        let auth: Vec<Record> = resp.authorities.iter().filter(in_zone).cloned().collect();
        let mut security = Security::Secure;
        let mut wildcards = Vec::new();
        let mut keys_used: Option<(Name, Arc<ZoneKeys>)> = None;
        for (owner, t, records) in rrsets(&answers) {
            let sigs = validate::sigs_covering(&answers, &owner, t);
            let signer_name = signer(&sigs).unwrap_or_else(|| zone.clone());
            let ls = LowerName::new(&signer_name);
            if !ls.zone_of(&LowerName::new(&owner)) || !lz.zone_of(&ls) && !ls.zone_of(&lz) {
                return Err(bogus_error(
                    name,
                    Bogus::new(
                        ede::DNSSEC_BOGUS,
                        format!("{owner} {t} is signed by {signer_name}, not an enclosing zone"),
                    ),
                ));
            }
            match self.zone_trust(hints, &signer_name, steps, depth).await {
                ZoneTrust::Insecure => security = security.min(Security::Insecure),
                ZoneTrust::Bogus(b) => return Err(bogus_error(name, b)),
                ZoneTrust::Secure(keys) => {
                    let labels = validate::verify_rrset(&records, &sigs, &keys, &signer_name, now)
                        .map_err(|b| bogus_error(name, b))?;
                    if labels < owner.num_labels() {
                        wildcards.push((owner.clone(), labels));
                    }
                    keys_used = Some((signer_name, keys));
                }
            }
        }
        // the name the answer ends at (after the CNAMEs inside this zone)
        let mut end = name.clone();
        for _ in 0..super::MAX_CHAIN {
            let le = LowerName::new(&end);
            match answers
                .iter()
                .find(|r| LowerName::new(&r.name) == le && r.record_type() == RecordType::CNAME)
                .map(|r| &r.data)
            {
                Some(RData::CNAME(c)) if rtype != RecordType::CNAME => end = c.0.clone(),
                _ => break,
            }
        }
        let has_final = answers.iter().any(|r| {
            LowerName::new(&r.name) == LowerName::new(&end)
                && (r.record_type() == rtype || rtype == RecordType::ANY)
        });
        let nxdomain = resp.metadata.response_code == ResponseCode::NXDomain;
        let nodata = !nxdomain && !has_final && lz.zone_of(&LowerName::new(&end));
        if !(nxdomain || nodata || !wildcards.is_empty()) {
            return Ok(security);
        }
        // the proof: the SOA and NSEC RRsets of the authority section
        let proof_sigs: Vec<&Record> = auth
            .iter()
            .filter(|r| {
                validate::as_rrsig(r).is_some_and(|s| {
                    matches!(
                        s.input().type_covered,
                        RecordType::NSEC | RecordType::NSEC3 | RecordType::SOA
                    )
                })
            })
            .collect();
        let soa_owner = auth
            .iter()
            .find(|r| r.record_type() == RecordType::SOA)
            .map(|r| r.name.clone());
        let signer_name = signer(&proof_sigs)
            .or(soa_owner)
            .or_else(|| keys_used.as_ref().map(|(n, _)| n.clone()))
            .unwrap_or_else(|| zone.clone());
        let keys = match self.zone_trust(hints, &signer_name, steps, depth).await {
            ZoneTrust::Insecure => return Ok(security.min(Security::Insecure)),
            ZoneTrust::Bogus(b) => return Err(bogus_error(name, b)),
            ZoneTrust::Secure(keys) => keys,
        };
        let nsecs = verified_nsecs(&auth, &signer_name, &keys).map_err(|b| bogus_error(name, b))?;
        if validate::nsec3_too_costly(&nsecs) {
            return Ok(security.min(Security::Insecure));
        }
        let opt_out = if nxdomain {
            validate::proves_nxdomain(&end, &nsecs).map_err(|b| bogus_error(name, b))?
        } else if nodata {
            validate::proves_nodata(&end, rtype, &nsecs).map_err(|b| bogus_error(name, b))?
        } else {
            false
        };
        if opt_out {
            security = security.min(Security::Insecure);
        }
        for (w, labels) in &wildcards {
            if validate::proves_wildcard(w, *labels, &nsecs).map_err(|b| bogus_error(name, b))? {
                security = security.min(Security::Insecure);
            }
        }
        Ok(security)
    }
}

/// The NSEC records of `auth` whose RRSIG by `signer`'s `keys` verifies; any NSEC that
/// does not is an error (and none at all is no proof).
fn verified_nsecs(auth: &[Record], signer: &Name, keys: &[DNSKEY]) -> Result<Vec<Record>, Bogus> {
    let now = unix_now();
    let mut out = Vec::new();
    for (owner, t, records) in rrsets(auth) {
        if !matches!(t, RecordType::NSEC | RecordType::NSEC3 | RecordType::SOA) {
            continue;
        }
        let sigs = validate::sigs_covering(auth, &owner, t);
        validate::verify_rrset(&records, &sigs, keys, signer, now)?;
        if t != RecordType::SOA {
            out.extend(records);
        }
    }
    Ok(out)
}
