//! DNSSEC validation, the pure part (RFC 4035 §5): an RRset checked against its RRSIGs
//! with a zone's keys, a DNSKEY RRset against the DS that vouches for it, and NSEC
//! proofs of NXDOMAIN and NODATA. The resolver fetches what these need; nothing here
//! touches the network. A failure says why, with its Extended DNS Error code (RFC 8914).

use hickory_proto::dnssec::rdata::{DNSKEY, DNSSECRData, DS, NSEC, NSEC3, RRSIG};
use hickory_proto::dnssec::{DigestType, Verifier};
use hickory_proto::rr::{DNSClass, LowerName, Name, RData, Record, RecordType};

/// Extended DNS Error codes (RFC 8914 §4) a validator gives.
pub mod ede {
    pub const DNSSEC_BOGUS: u16 = 6;
    pub const SIGNATURE_EXPIRED: u16 = 7;
    pub const SIGNATURE_NOT_YET_VALID: u16 = 8;
    pub const DNSKEY_MISSING: u16 = 9;
    pub const RRSIGS_MISSING: u16 = 10;
    pub const NSEC_MISSING: u16 = 12;
}

/// Why an answer is bogus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bogus {
    /// Its Extended DNS Error code.
    pub ede: u16,
    /// What failed, in words.
    pub reason: String,
}

impl Bogus {
    pub fn new(ede: u16, reason: impl Into<String>) -> Bogus {
        Bogus {
            ede,
            reason: reason.into(),
        }
    }
}

impl std::fmt::Display for Bogus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.reason)
    }
}

/// The RRSIG inside a record, if it is one.
pub fn as_rrsig(r: &Record) -> Option<&RRSIG> {
    match &r.data {
        RData::DNSSEC(DNSSECRData::RRSIG(s)) => Some(s),
        _ => None,
    }
}

/// The DNSKEY inside a record, if it is one.
pub fn as_dnskey(r: &Record) -> Option<&DNSKEY> {
    match &r.data {
        RData::DNSSEC(DNSSECRData::DNSKEY(k)) => Some(k),
        _ => None,
    }
}

fn as_ds(r: &Record) -> Option<&DS> {
    match &r.data {
        RData::DNSSEC(DNSSECRData::DS(d)) => Some(d),
        _ => None,
    }
}

fn as_nsec(r: &Record) -> Option<&NSEC> {
    match &r.data {
        RData::DNSSEC(DNSSECRData::NSEC(n)) => Some(n),
        _ => None,
    }
}

/// The RRSIGs among `records` that cover `owner`/`rtype`.
pub fn sigs_covering<'a>(
    records: &'a [Record],
    owner: &Name,
    rtype: RecordType,
) -> Vec<&'a Record> {
    records
        .iter()
        .filter(|r| {
            r.name == *owner && as_rrsig(r).is_some_and(|s| s.input().type_covered == rtype)
        })
        .collect()
}

/// Check the RRset `records` (one owner, one type) against `rrsigs` with the zone keys
/// `keys` of `signer`: one RRSIG valid now (`now` in seconds since the epoch) by one of
/// the keys is enough. Answers the RRSIG's label count (fewer labels than the owner's
/// means a wildcard answered).
pub fn verify_rrset(
    records: &[Record],
    rrsigs: &[&Record],
    keys: &[DNSKEY],
    signer: &Name,
    now: u32,
) -> Result<u8, Bogus> {
    let Some(first) = records.first() else {
        return Err(Bogus::new(ede::DNSSEC_BOGUS, "an empty RRset"));
    };
    let (owner, rtype) = (&first.name, first.record_type());
    if rrsigs.is_empty() {
        return Err(Bogus::new(
            ede::RRSIGS_MISSING,
            format!("no RRSIG for {owner} {rtype}"),
        ));
    }
    let mut last = Bogus::new(
        ede::DNSKEY_MISSING,
        format!("no key of {signer} made the RRSIG of {owner} {rtype}"),
    );
    for r in rrsigs {
        let Some(sig) = as_rrsig(r) else { continue };
        let input = sig.input();
        if input.signer_name != *signer || input.type_covered != rtype {
            continue;
        }
        if input.num_labels > owner.num_labels() {
            last = Bogus::new(
                ede::DNSSEC_BOGUS,
                format!("RRSIG of {owner} {rtype} has too many labels"),
            );
            continue;
        }
        // serial-number arithmetic (RFC 4034 §3.1.5): compare as distances from now
        let (inception, expiration) = (input.sig_inception.get(), input.sig_expiration.get());
        if (now.wrapping_sub(expiration) as i32) > 0 {
            last = Bogus::new(
                ede::SIGNATURE_EXPIRED,
                format!(
                    "the RRSIG of {owner} {rtype} (key {}) expired",
                    input.key_tag
                ),
            );
            continue;
        }
        if (inception.wrapping_sub(now) as i32) > 0 {
            last = Bogus::new(
                ede::SIGNATURE_NOT_YET_VALID,
                format!(
                    "the RRSIG of {owner} {rtype} (key {}) is not valid yet",
                    input.key_tag
                ),
            );
            continue;
        }
        for key in keys {
            if key.calculate_key_tag().ok() != Some(input.key_tag)
                || key.algorithm() != input.algorithm
                || !key.zone_key()
                || key.revoke()
            {
                continue;
            }
            match key.verify_rrsig(owner, DNSClass::IN, sig, records.iter()) {
                Ok(()) => return Ok(input.num_labels),
                Err(_) => {
                    last = Bogus::new(
                        ede::DNSSEC_BOGUS,
                        format!(
                            "the RRSIG of {owner} {rtype} by key {} does not verify",
                            input.key_tag
                        ),
                    );
                }
            }
        }
    }
    Err(last)
}

/// The zone keys of a DNSKEY RRset (`dnskeys`, of zone `zone`) that one of `ds` vouches
/// for and that signed the RRset: the set's keys then count, or why not.
pub fn verify_dnskeys(
    zone: &Name,
    dnskeys: &[Record],
    rrsigs: &[&Record],
    ds: &[Record],
    now: u32,
) -> Result<Vec<DNSKEY>, Bogus> {
    let keys: Vec<DNSKEY> = dnskeys.iter().filter_map(as_dnskey).cloned().collect();
    if keys.is_empty() {
        return Err(Bogus::new(
            ede::DNSKEY_MISSING,
            format!("{zone} has no DNSKEY"),
        ));
    }
    let mut matched = Vec::new();
    for d in ds.iter().filter_map(as_ds) {
        if !matches!(
            d.digest_type(),
            DigestType::SHA256 | DigestType::SHA384 | DigestType::SHA1
        ) {
            continue;
        }
        for k in &keys {
            if k.calculate_key_tag().ok() == Some(d.key_tag())
                && k.algorithm() == d.algorithm()
                && d.covers(zone, k).unwrap_or(false)
            {
                matched.push(k.clone());
            }
        }
    }
    if matched.is_empty() {
        let tags: Vec<String> = ds
            .iter()
            .filter_map(as_ds)
            .map(|d| d.key_tag().to_string())
            .collect();
        return Err(Bogus::new(
            ede::DNSKEY_MISSING,
            format!(
                "no DNSKEY of {zone} matches its DS ({})",
                if tags.is_empty() {
                    "none".into()
                } else {
                    tags.join(", ")
                }
            ),
        ));
    }
    verify_rrset(dnskeys, rrsigs, &matched, zone, now)?;
    Ok(keys)
}

fn as_nsec3(r: &Record) -> Option<&NSEC3> {
    match &r.data {
        RData::DNSSEC(DNSSECRData::NSEC3(n)) => Some(n),
        _ => None,
    }
}

/// NSEC3 iterations above this make a proof count as insecure (RFC 9276 §3.2; Unbound
/// and Knot Resolver draw the line at 150 and 50).
pub const NSEC3_MAX_ITERATIONS: u16 = 150;

/// An NSEC3 record with its owner's hash decoded (RFC 5155).
struct Hashed<'a> {
    hash: Vec<u8>,
    zone: LowerName,
    rec: &'a NSEC3,
}

impl Hashed<'_> {
    fn hash_of(&self, name: &Name) -> Option<Vec<u8>> {
        self.rec
            .hash_algorithm()
            .hash(self.rec.salt(), name, self.rec.iterations())
            .ok()
            .map(|d| d.as_ref().to_vec())
    }

    fn in_zone(&self, name: &Name) -> bool {
        self.zone.zone_of(&LowerName::new(name))
    }

    /// Is this the NSEC3 of `name`?
    fn matches(&self, name: &Name) -> bool {
        self.in_zone(name) && self.hash_of(name).is_some_and(|h| h == self.hash)
    }

    /// Does its span of hashes cover `name`'s (owner < H(name) < next, wrapping)?
    fn covers(&self, name: &Name) -> bool {
        let Some(h) = self.hash_of(name).filter(|_| self.in_zone(name)) else {
            return false;
        };
        let (o, x) = (&self.hash, self.rec.next_hashed_owner_name());
        if o.as_slice() < x {
            o < &h && h.as_slice() < x
        } else {
            o < &h || h.as_slice() < x
        }
    }

    fn types(&self) -> Vec<RecordType> {
        self.rec.type_bit_maps().collect()
    }
}

fn hashed(nsecs: &[Record]) -> Vec<Hashed<'_>> {
    nsecs
        .iter()
        .filter_map(|r| {
            let rec = as_nsec3(r)?;
            let label = r.name.iter().next()?;
            let text = std::str::from_utf8(label).ok()?.to_ascii_uppercase();
            let hash = data_encoding::BASE32HEX_NOPAD
                .decode(text.as_bytes())
                .ok()?;
            Some(Hashed {
                hash,
                zone: LowerName::new(&r.name.base_name()),
                rec,
            })
        })
        .collect()
}

/// Are the NSEC3 records too costly to check (iterations above the limit)?
pub fn nsec3_too_costly(nsecs: &[Record]) -> bool {
    nsecs
        .iter()
        .filter_map(as_nsec3)
        .any(|n| n.iterations() > NSEC3_MAX_ITERATIONS)
}

/// The closest encloser proof (RFC 5155 §8.3): the longest ancestor of `qname` with a
/// matching NSEC3, and whether the NSEC3 covering the next closer name has opt-out set.
/// `None` when there is no such proof (or `qname` itself matches).
fn closest_encloser3(qname: &Name, n3: &[Hashed<'_>]) -> Option<(Name, bool)> {
    let mut next_closer = qname.clone();
    let mut candidate = qname.base_name();
    if n3.iter().any(|h| h.matches(qname)) {
        return None;
    }
    loop {
        if n3.iter().any(|h| h.matches(&candidate)) {
            let cover = n3.iter().find(|h| h.covers(&next_closer))?;
            return Some((candidate, cover.rec.opt_out()));
        }
        if candidate.is_root() || !n3.iter().any(|h| h.in_zone(&candidate)) {
            return None;
        }
        next_closer = candidate.clone();
        candidate = candidate.base_name();
    }
}

fn wildcard_of(encloser: &Name) -> Option<Name> {
    Name::from_ascii("*")
        .and_then(|w| w.append_name(encloser))
        .ok()
}

/// Does the NSEC at `owner` cover `name` (owner < name < next, on the canonical order,
/// the last NSEC wrapping to the apex)?
fn covers(owner: &Name, nsec: &NSEC, name: &Name) -> bool {
    let (o, n, x) = (
        LowerName::new(owner),
        LowerName::new(nsec.next_domain_name()),
        LowerName::new(name),
    );
    if o < n {
        o < x && x < n
    } else {
        // the last NSEC of the zone: its next is the apex
        o < x && n.zone_of(&x)
    }
}

/// NXDOMAIN for `qname` is proven by `nsecs` (already verified): one NSEC covers the
/// name, one covers the wildcard at its closest encloser (RFC 4035 §5.4); with NSEC3 the
/// closest encloser proof (RFC 5155 §8.4). `Ok(true)`: proven, but under an NSEC3
/// opt-out span, where an unsigned delegation could hide: insecure, not secure.
pub fn proves_nxdomain(qname: &Name, nsecs: &[Record]) -> Result<bool, Bogus> {
    let n3 = hashed(nsecs);
    if !n3.is_empty() {
        // RFC 5155 §8.4: the closest encloser proof, and no wildcard at the encloser
        let missing = || {
            Bogus::new(
                ede::NSEC_MISSING,
                format!("no NSEC3 proves that {qname} does not exist"),
            )
        };
        let (encloser, opt_out) = closest_encloser3(qname, &n3).ok_or_else(missing)?;
        let wild = wildcard_of(&encloser).ok_or_else(missing)?;
        if !n3.iter().any(|h| h.covers(&wild)) {
            return Err(Bogus::new(
                ede::NSEC_MISSING,
                format!("no NSEC3 proves that {wild} does not exist"),
            ));
        }
        return Ok(opt_out);
    }
    let all: Vec<(&Name, &NSEC)> = nsecs
        .iter()
        .filter_map(|r| as_nsec(r).map(|n| (&r.name, n)))
        .collect();
    // (a span whose next name is below the name asked proves an empty non-terminal, not
    // an absent name)
    let lq = LowerName::new(qname);
    let Some((owner, n)) = all
        .iter()
        .find(|(o, n)| covers(o, n, qname) && !lq.zone_of(&LowerName::new(n.next_domain_name())))
    else {
        return Err(Bogus::new(
            ede::NSEC_MISSING,
            format!("no NSEC proves that {qname} does not exist"),
        ));
    };
    // the closest encloser: the longest common ancestor of the covering NSEC's ends
    let encloser = closest_encloser(qname, owner, n.next_domain_name());
    let Ok(wild) = Name::from_ascii("*").and_then(|w| w.append_name(&encloser)) else {
        return Err(Bogus::new(ede::DNSSEC_BOGUS, "no wildcard name"));
    };
    let wild_denied = all.iter().any(|(o, n)| covers(o, n, &wild));
    if !wild_denied {
        return Err(Bogus::new(
            ede::NSEC_MISSING,
            format!("no NSEC proves that {wild} does not exist"),
        ));
    }
    Ok(false)
}

/// The longest ancestor of `qname` shared with the owner or the next name of the NSEC
/// that covers it.
fn closest_encloser(qname: &Name, owner: &Name, next: &Name) -> Name {
    let mut n = qname.base_name();
    loop {
        let ln = LowerName::new(&n);
        if ln.zone_of(&LowerName::new(owner)) || ln.zone_of(&LowerName::new(next)) || n.is_root() {
            return n;
        }
        n = n.base_name();
    }
}

/// NODATA for `qname`/`qtype` is proven by `nsecs` (already verified): the NSEC at the
/// name lacks the type and CNAME, or (an empty non-terminal) an NSEC covers the name
/// with its next name below it, or a wildcard that lacks the type answers for it.
/// `Ok(true)`: a DS proven absent only by an NSEC3 opt-out span (insecure).
pub fn proves_nodata(qname: &Name, qtype: RecordType, nsecs: &[Record]) -> Result<bool, Bogus> {
    let n3 = hashed(nsecs);
    if !n3.is_empty() {
        if let Some(h) = n3.iter().find(|h| h.matches(qname)) {
            // RFC 5155 §8.5 (an empty non-terminal has its own NSEC3)
            let types = h.types();
            if types.contains(&qtype) || types.contains(&RecordType::CNAME) {
                return Err(Bogus::new(
                    ede::DNSSEC_BOGUS,
                    format!("the NSEC3 of {qname} says it has {qtype}"),
                ));
            }
            return Ok(false);
        }
        if let Some((encloser, opt_out)) = closest_encloser3(qname, &n3) {
            // §8.6: a DS under an opt-out span (an unsigned delegation)
            if qtype == RecordType::DS && opt_out {
                return Ok(true);
            }
            // §8.7: a wildcard without the type (under an opt-out span the name itself
            // could be an unsigned delegation: insecure, as Unbound says)
            if let Some(wild) = wildcard_of(&encloser)
                && let Some(w) = n3.iter().find(|h| h.matches(&wild))
            {
                let types = w.types();
                if !types.contains(&qtype) && !types.contains(&RecordType::CNAME) {
                    return Ok(opt_out);
                }
            }
        }
        return Err(Bogus::new(
            ede::NSEC_MISSING,
            format!("no NSEC3 proves that {qname} has no {qtype}"),
        ));
    }
    let all: Vec<(&Name, &NSEC)> = nsecs
        .iter()
        .filter_map(|r| as_nsec(r).map(|n| (&r.name, n)))
        .collect();
    let lq = LowerName::new(qname);
    if let Some((_, n)) = all.iter().find(|(o, _)| LowerName::new(o) == lq) {
        let types: Vec<RecordType> = n.type_bit_maps().collect();
        if types.contains(&qtype) || types.contains(&RecordType::CNAME) {
            return Err(Bogus::new(
                ede::DNSSEC_BOGUS,
                format!("the NSEC of {qname} says it has {qtype}"),
            ));
        }
        // a DS NODATA must come from the parent side (NS without SOA at a cut)
        return Ok(false);
    }
    if all
        .iter()
        .any(|(o, n)| covers(o, n, qname) && lq.zone_of(&LowerName::new(n.next_domain_name())))
    {
        return Ok(false); // an empty non-terminal
    }
    // a wildcard without the type: the name is covered, the wildcard's NSEC lacks it
    if let Some((owner, n)) = all.iter().find(|(o, n)| covers(o, n, qname)) {
        let encloser = closest_encloser(qname, owner, n.next_domain_name());
        if let Ok(wild) = Name::from_ascii("*").and_then(|w| w.append_name(&encloser)) {
            let lw = LowerName::new(&wild);
            if let Some((_, wn)) = all.iter().find(|(o, _)| LowerName::new(o) == lw) {
                let types: Vec<RecordType> = wn.type_bit_maps().collect();
                if !types.contains(&qtype) && !types.contains(&RecordType::CNAME) {
                    return Ok(false);
                }
            }
        }
    }
    Err(Bogus::new(
        ede::NSEC_MISSING,
        format!("no NSEC proves that {qname} has no {qtype}"),
    ))
}

/// A wildcard answer for `qname` (RRSIG labels `labels` < the name's) is only valid with
/// an NSEC proving the name itself does not exist. `Ok(true)`: proven by an NSEC3
/// opt-out span, where an unsigned delegation could hide the name (insecure, as Unbound
/// says).
pub fn proves_wildcard(qname: &Name, labels: u8, nsecs: &[Record]) -> Result<bool, Bogus> {
    let n3 = hashed(nsecs);
    if !n3.is_empty() {
        // RFC 5155 §8.8: the next closer name (one label below the wildcard's parent) is
        // covered
        let mut next_closer = qname.clone();
        while next_closer.num_labels() > labels + 1 {
            next_closer = next_closer.base_name();
        }
        return if let Some(h) = n3.iter().find(|h| h.covers(&next_closer)) {
            Ok(h.rec.opt_out())
        } else {
            Err(Bogus::new(
                ede::NSEC_MISSING,
                format!("a wildcard answered {qname} without an NSEC3 covering {next_closer}"),
            ))
        };
    }
    let covered = nsecs
        .iter()
        .filter_map(|r| as_nsec(r).map(|n| (&r.name, n)))
        .any(|(o, n)| covers(o, n, qname));
    if covered {
        Ok(false)
    } else {
        Err(Bogus::new(
            ede::NSEC_MISSING,
            format!("a wildcard answered {qname} without an NSEC proving the name is not there"),
        ))
    }
}

/// Does the (verified) NSEC at a delegation point `cut` prove it is an insecure one:
/// NS present, no DS, no SOA?
pub fn proves_insecure_delegation(cut: &Name, nsecs: &[Record]) -> bool {
    let n3 = hashed(nsecs);
    if !n3.is_empty() {
        if let Some(h) = n3.iter().find(|h| h.matches(cut)) {
            let types = h.types();
            return types.contains(&RecordType::NS)
                && !types.contains(&RecordType::DS)
                && !types.contains(&RecordType::SOA);
        }
        // an opt-out span covers it: delegations there are unsigned (RFC 5155 §6)
        return closest_encloser3(cut, &n3).is_some_and(|(_, opt_out)| opt_out);
    }
    let lc = LowerName::new(cut);
    nsecs
        .iter()
        .filter(|r| LowerName::new(&r.name) == lc)
        .filter_map(as_nsec)
        .any(|n| {
            let types: Vec<RecordType> = n.type_bit_maps().collect();
            types.contains(&RecordType::NS)
                && !types.contains(&RecordType::DS)
                && !types.contains(&RecordType::SOA)
        })
}

/// Parse a trust anchor: lines of `NAME [TTL] [IN] DS|DNSKEY …` (Unbound's
/// `trust-anchor-file`, the output of `hopline dns ds`); `;` starts a comment.
pub fn parse_anchors(text: &str) -> Result<Vec<Record>, String> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.split(';').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let zone = format!("$ORIGIN .\n$TTL 86400\n{line}\n");
        let (_, sets) = hickory_proto::serialize::txt::Parser::new(zone, None, Some(Name::root()))
            .parse()
            .map_err(|e| format!("line {}: {e}", i + 1))?;
        for (_, set) in sets {
            out.extend(
                set.records_without_rrsigs()
                    .filter(|r| matches!(r.record_type(), RecordType::DS | RecordType::DNSKEY))
                    .cloned(),
            );
        }
    }
    if out.is_empty() {
        return Err("no DS or DNSKEY record".into());
    }
    Ok(out)
}

/// The IANA root zone's key-signing keys, as DS records (KSK-2017 and KSK-2024).
pub fn iana_root_anchors() -> Vec<Record> {
    parse_anchors(
        ". IN DS 20326 8 2 E06D44B80B8F1D39A95C0B0D7C65D08458E880409BBC683457104237C7F8EC8D\n\
         . IN DS 38696 8 2 683D2D0ACB8C9B712A1948B27F741219298D0A450D612C483AF444A4C0FB2B16\n",
    )
    .expect("the built-in root anchors parse")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_built_in_root_anchors_are_the_two_iana_ksks() {
        let a = iana_root_anchors();
        assert_eq!(a.len(), 2);
        assert!(
            a.iter()
                .all(|r| r.name.is_root() && r.record_type() == RecordType::DS)
        );
    }

    #[test]
    fn an_nsec_covers_the_names_between_its_owner_and_next_and_wraps_at_the_end() {
        let n = |s: &str| Name::from_ascii(s).unwrap();
        let nsec = NSEC::new(n("m.test."), [RecordType::A]);
        assert!(covers(&n("c.test."), &nsec, &n("d.test.")));
        assert!(!covers(&n("c.test."), &nsec, &n("z.test.")));
        assert!(!covers(&n("c.test."), &nsec, &n("c.test.")));
        let last = NSEC::new(n("test."), [RecordType::A]);
        assert!(covers(&n("x.test."), &last, &n("y.test.")));
        assert!(!covers(&n("x.test."), &last, &n("b.test.")));
    }
}
