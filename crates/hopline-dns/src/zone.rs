//! Zones: RFC 1035 master files loaded with hickory's zone parser, and the
//! authoritative answer for one question — answer with AA, CNAME chasing inside the
//! zone, referral with glue at a delegation, NODATA / NXDOMAIN with the SOA.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use hickory_proto::rr::{LowerName, Name, RData, Record, RecordType};
use hickory_proto::serialize::txt::Parser;

use crate::error::DnsError;

/// One loaded zone.
#[derive(Debug, Clone)]
pub struct Zone {
    /// The apex, e.g. `test.`.
    pub origin: LowerName,
    /// The file it came from.
    pub file: PathBuf,
    records: HashMap<(LowerName, RecordType), Vec<Record>>,
    /// Every owner name and every ancestor of one inside the zone (empty non-terminals).
    names: HashSet<LowerName>,
    /// The types each owner name holds, names in canonical order (RFC 4034 §6.1).
    types: std::collections::BTreeMap<LowerName, Vec<RecordType>>,
    /// Delegation points below the apex.
    cuts: HashSet<LowerName>,
    soa: Record,
}

/// The authoritative outcome for one question.
#[derive(Debug, Clone, PartialEq)]
pub struct ZoneAnswer {
    /// AA bit.
    pub authoritative: bool,
    /// NXDOMAIN?
    pub nxdomain: bool,
    /// Answer section.
    pub answers: Vec<Record>,
    /// Authority section (NS of a referral, or the SOA of a negative answer).
    pub authorities: Vec<Record>,
    /// Additional section (glue).
    pub additionals: Vec<Record>,
}

impl Zone {
    /// Load a master file. Errors name the file, the line and what was wrong.
    pub fn load(path: &Path, origin: Option<Name>) -> Result<Zone, DnsError> {
        let text = std::fs::read_to_string(path).map_err(|e| DnsError::Zone {
            file: path.to_path_buf(),
            line: None,
            message: format!("cannot read: {e}"),
        })?;
        Self::parse(&text, path, origin)
    }

    /// Parse master-file text as if read from `path`.
    pub fn parse(text: &str, path: &Path, origin: Option<Name>) -> Result<Zone, DnsError> {
        // no origin given and no $ORIGIN: the SOA's owner is the origin (as NSD does)
        let origin = origin.or_else(|| soa_owner(text));
        // escaped labels (`a\032b`, `john\.doe`) are parsed by hopline, the rest by hickory
        let (plain, escapes) = crate::escapes::Escapes::take_out(text);
        let text = plain.as_str();
        let parsed = Parser::new(text, Some(path.to_path_buf()), origin.clone()).parse();
        let (apex, sets) = match parsed {
            Ok(x) => x,
            Err(e) => {
                // hickory's error has no position: find the first line that fails
                let lines: Vec<&str> = text.lines().collect();
                let mut line = None;
                for n in 1..=lines.len() {
                    let prefix = lines[..n].join("\n");
                    if Parser::new(prefix.as_str(), Some(path.to_path_buf()), origin.clone())
                        .parse()
                        .is_err()
                    {
                        line = Some(n);
                        break;
                    }
                }
                return Err(DnsError::Zone {
                    file: path.to_path_buf(),
                    line,
                    message: format!(
                        "{e} (expected an RFC 1035 record: NAME [TTL] [CLASS] TYPE RDATA)"
                    ),
                });
            }
        };
        let origin = LowerName::new(&apex);
        let mut records: HashMap<(LowerName, RecordType), Vec<Record>> = HashMap::new();
        let mut names = HashSet::new();
        let mut types: std::collections::BTreeMap<LowerName, Vec<RecordType>> = Default::default();
        let mut cuts = HashSet::new();
        let mut soa = None;
        for (key, set) in sets {
            let owner = LowerName::new(&escapes.restore(&Name::from(&key.name)));
            if !origin.zone_of(&owner) {
                return Err(DnsError::Zone {
                    file: path.to_path_buf(),
                    line: None,
                    message: format!("record {owner} is outside the zone {origin}"),
                });
            }
            let mut recs: Vec<Record> = set.records_without_rrsigs().cloned().collect();
            for r in &mut recs {
                escapes.restore_record(r);
            }
            if key.record_type == RecordType::SOA && owner == origin {
                soa = recs.first().cloned();
            }
            if key.record_type == RecordType::NS && owner != origin {
                cuts.insert(owner.clone());
            }
            let mut n: Name = Name::from(&owner);
            loop {
                names.insert(LowerName::new(&n));
                if LowerName::new(&n) == origin || n.is_root() {
                    break;
                }
                n = n.base_name();
            }
            let at = types.entry(owner.clone()).or_default();
            at.push(key.record_type);
            at.sort_by_key(|t| u16::from(*t));
            records.insert((owner, key.record_type), recs);
        }
        let soa = soa.ok_or_else(|| DnsError::Zone {
            file: path.to_path_buf(),
            line: None,
            message: format!("zone {origin} has no SOA record at its apex"),
        })?;
        Ok(Zone {
            origin,
            file: path.to_path_buf(),
            records,
            names,
            types,
            cuts,
            soa,
        })
    }

    /// The SOA to put in the authority section of a negative answer (TTL = min(SOA TTL, MINIMUM)).
    pub fn negative_soa(&self) -> Record {
        let mut soa = self.soa.clone();
        if let RData::SOA(s) = &soa.data {
            soa.ttl = soa.ttl.min(s.minimum);
        }
        soa
    }

    /// Every RRset: (owner, type) and its records.
    pub(crate) fn rrsets(&self) -> impl Iterator<Item = (&(LowerName, RecordType), &Vec<Record>)> {
        self.records.iter()
    }

    /// The owner names that hold data, in canonical order, with their types.
    pub(crate) fn owners(&self) -> &std::collections::BTreeMap<LowerName, Vec<RecordType>> {
        &self.types
    }

    /// Add (or replace) one RRset.
    pub(crate) fn insert_rrset(
        &mut self,
        owner: LowerName,
        rtype: RecordType,
        records: Vec<Record>,
    ) {
        let mut n: Name = Name::from(&owner);
        loop {
            self.names.insert(LowerName::new(&n));
            if LowerName::new(&n) == self.origin || n.is_root() {
                break;
            }
            n = n.base_name();
        }
        let at = self.types.entry(owner.clone()).or_default();
        if !at.contains(&rtype) {
            at.push(rtype);
            at.sort_by_key(|t| u16::from(*t));
        }
        self.records.insert((owner, rtype), records);
    }

    /// Add an RRset that is transferred but is no name of the zone (NSEC3 records and
    /// their signatures: their hashed owners are not answered as names).
    pub(crate) fn insert_hidden(
        &mut self,
        owner: LowerName,
        rtype: RecordType,
        records: Vec<Record>,
    ) {
        self.records.insert((owner, rtype), records);
    }

    /// The SOA's serial.
    pub fn serial(&self) -> u32 {
        match &self.soa.data {
            RData::SOA(s) => s.serial,
            _ => 0,
        }
    }

    /// Set the SOA's serial (a signed zone's serial moves at each signing).
    pub(crate) fn set_serial(&mut self, serial: u32) {
        if let RData::SOA(s) = &mut self.soa.data {
            s.serial = serial;
        }
        let key = (self.origin.clone(), RecordType::SOA);
        if let Some(rs) = self.records.get_mut(&key) {
            rs.clear();
            rs.push(self.soa.clone());
        }
    }

    /// Records of one name and type.
    pub fn get(&self, name: &LowerName, rtype: RecordType) -> Option<&Vec<Record>> {
        self.records.get(&(name.clone(), rtype))
    }

    /// The zone's SOA record.
    pub fn soa(&self) -> &Record {
        &self.soa
    }

    /// Every record of the zone in transfer order (RFC 5936 §2.2): the SOA, every other
    /// record (the apex's first, then by name), the SOA again.
    pub fn transfer_records(&self) -> Vec<Record> {
        let mut keys: Vec<&(LowerName, RecordType)> = self
            .records
            .keys()
            .filter(|(n, t)| !(*t == RecordType::SOA && *n == self.origin))
            .collect();
        keys.sort_by(|a, b| {
            (
                a.0 != self.origin,
                a.0.num_labels(),
                a.0.to_string(),
                u16::from(a.1),
            )
                .cmp(&(
                    b.0 != self.origin,
                    b.0.num_labels(),
                    b.0.to_string(),
                    u16::from(b.1),
                ))
        });
        let mut out = vec![self.soa.clone()];
        for k in keys {
            out.extend(self.records[k].iter().cloned());
        }
        out.push(self.soa.clone());
        out
    }

    /// Does the zone hold this name (or something below it)?
    pub fn contains(&self, name: &LowerName) -> bool {
        self.names.contains(name)
    }

    /// The delegation point at or above `qname`, strictly below the apex.
    pub(crate) fn cut_for(&self, qname: &Name) -> Option<LowerName> {
        let mut n = qname.clone();
        let mut found = None;
        while LowerName::new(&n) != self.origin && !n.is_root() {
            let ln = LowerName::new(&n);
            if self.cuts.contains(&ln) {
                found = Some(ln); // keep walking up: the highest cut wins
            }
            n = n.base_name();
        }
        found
    }

    fn glue(&self, ns: &[Record]) -> Vec<Record> {
        let mut out = Vec::new();
        for r in ns {
            if let RData::NS(target) = &r.data {
                let t = LowerName::new(&target.0);
                for rt in [RecordType::A, RecordType::AAAA] {
                    if let Some(rs) = self.get(&t, rt) {
                        out.extend(rs.iter().cloned());
                    }
                }
            }
        }
        out
    }

    /// Answer a question for a name inside this zone.
    pub fn answer(&self, qname: &Name, qtype: RecordType) -> ZoneAnswer {
        let mut out = ZoneAnswer {
            authoritative: true,
            nxdomain: false,
            answers: Vec::new(),
            authorities: Vec::new(),
            additionals: Vec::new(),
        };
        if let Some(cut) = self
            .cut_for(qname)
            // a DS lives on the parent's side of the cut (RFC 4035 §3.1.4.1)
            .filter(|cut| !(qtype == RecordType::DS && *cut == LowerName::new(qname)))
        {
            let ns = self.get(&cut, RecordType::NS).cloned().unwrap_or_default();
            out.authoritative = false;
            out.additionals = self.glue(&ns);
            out.authorities = ns;
            return out;
        }
        if qtype == RecordType::ANY {
            // RFC 8482 §4.1: not everything, one RRset of the name (the SOA at the apex,
            // else its lowest type; a CNAME owner its CNAME), as NSD; an empty
            // non-terminal NODATA; a name that does not exist NXDOMAIN
            let ln = LowerName::new(qname);
            let owner = if self.contains(&ln) {
                Some(ln)
            } else {
                self.wildcard_for(qname)
            };
            let Some(owner) = owner else {
                out.nxdomain = true;
                out.authorities.push(self.negative_soa());
                return out;
            };
            let first = self.types.get(&owner).and_then(|t| {
                t.iter()
                    .find(|t| **t == RecordType::SOA)
                    .or_else(|| t.first())
            });
            match first.and_then(|t| self.get(&owner, *t)) {
                Some(rs) => out.answers.extend(rs.iter().map(|r| with_name(r, qname))),
                None => out.authorities.push(self.negative_soa()),
            }
            return out;
        }
        let mut name = qname.clone();
        // (a chain inside the zone is followed at least as far as Unbound goes: 11 links)
        for _ in 0..12 {
            let ln = LowerName::new(&name);
            // the records come from the name itself — or, when the zone lacks it, from the
            // wildcard at its closest encloser (RFC 4592), renamed to the name asked
            let owner = if self.contains(&ln) {
                ln
            } else if let Some(wild) = self.wildcard_for(&name) {
                wild
            } else {
                out.nxdomain = true;
                out.authorities.push(self.negative_soa());
                return out;
            };
            if let Some(rs) = self.get(&owner, qtype) {
                out.answers.extend(rs.iter().map(|r| with_name(r, &name)));
                if qtype == RecordType::NS && owner == self.origin {
                    out.additionals = self.glue(rs);
                }
                return out;
            }
            if qtype != RecordType::CNAME
                && let Some(cname) = self.get(&owner, RecordType::CNAME).and_then(|v| v.first())
            {
                out.answers.push(with_name(cname, &name));
                let RData::CNAME(target) = &cname.data else {
                    break;
                };
                let t = LowerName::new(&target.0);
                if !self.origin.zone_of(&t) || self.cut_for(&target.0).is_some() {
                    return out; // the chain leaves the zone: the resolver follows it
                }
                // (a target the zone lacks ends at NXDOMAIN, the CNAME kept)
                name = target.0.clone();
                continue;
            }
            // NODATA (also for an empty non-terminal, or a wildcard without this type)
            out.authorities.push(self.negative_soa());
            return out;
        }
        out
    }

    /// The wildcard that answers for `name`, a name the zone does not hold: `*.` + its
    /// closest encloser (the nearest ancestor the zone holds, empty non-terminals
    /// included), when the zone has that wildcard (RFC 4592 §3.3.1).
    pub(crate) fn wildcard_for(&self, name: &Name) -> Option<LowerName> {
        let mut n = name.base_name();
        loop {
            let ln = LowerName::new(&n);
            if self.names.contains(&ln) {
                let wild = Name::from_ascii("*").ok()?.append_name(&n).ok()?;
                let wild = LowerName::new(&wild);
                return self.names.contains(&wild).then_some(wild);
            }
            if ln == self.origin || n.is_root() {
                return None;
            }
            n = n.base_name();
        }
    }
}

/// The absolute owner name of the first SOA record of a file without `$ORIGIN`.
fn soa_owner(text: &str) -> Option<Name> {
    if text
        .lines()
        .any(|l| l.trim_start().to_ascii_uppercase().starts_with("$ORIGIN"))
    {
        return None;
    }
    text.lines()
        .map(|l| l.split(';').next().unwrap_or(""))
        .find(|l| l.split_whitespace().any(|t| t.eq_ignore_ascii_case("SOA")))
        .and_then(|l| l.split_whitespace().next())
        .filter(|owner| owner.ends_with('.'))
        .and_then(|owner| Name::from_ascii(owner).ok())
}

fn with_name(r: &Record, name: &Name) -> Record {
    let mut r = r.clone();
    r.name = name.clone();
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    const ZONE: &str = "$ORIGIN test.\n$TTL 300\n@ IN SOA ns1.test. admin.test. 1 3600 600 86400 60\n@ IN NS ns1.test.\nns1 IN A 127.0.0.12\nwww IN A 10.0.0.1\nwww IN A 10.0.0.2\nalias IN CNAME www\nout IN CNAME www.example.\nmail IN MX 10 www.test.\ntxt IN TXT \"hello world\"\n_http._tcp IN SRV 0 5 80 www\n@ IN CAA 0 issue \"letsencrypt.org\"\nv6 IN AAAA ::1\nshop IN NS ns1.shop.test.\nns1.shop IN A 127.0.0.13\na.b.deep IN A 10.0.0.9\n";

    fn zone() -> Zone {
        Zone::parse(ZONE, Path::new("test.zone"), None).unwrap()
    }

    fn n(s: &str) -> Name {
        Name::from_str(s).unwrap()
    }

    #[test]
    fn a_file_without_origin_takes_the_soa_owner_or_the_given_origin() {
        let text = "shop.test. 300 IN SOA ns1.shop.test. admin.shop.test. 1 3600 600 86400 30\nshop.test. 300 IN NS ns1.shop.test.\nns1.shop.test. 300 IN A 127.0.0.1\nwww.shop.test. 300 IN A 10.0.0.1 ; a comment\n";
        let z = Zone::parse(text, Path::new("noorigin.zone"), None).unwrap();
        assert_eq!(z.origin, LowerName::new(&n("shop.test.")));
        assert_eq!(
            z.answer(&n("www.shop.test."), RecordType::A).answers.len(),
            1
        );
        // relative names need an origin: from the config
        let rel = "@ 300 IN SOA ns1 admin 1 3600 600 86400 30\n@ IN NS ns1\nns1 IN A 127.0.0.1\n";
        assert!(Zone::parse(rel, Path::new("rel.zone"), None).is_err());
        let z = Zone::parse(rel, Path::new("rel.zone"), Some(n("shop.test."))).unwrap();
        assert_eq!(z.origin, LowerName::new(&n("shop.test.")));
    }

    #[test]
    fn any_gets_one_rrset_as_rfc_8482_allows() {
        let z = zone();
        let a = z.answer(&n("www.test."), RecordType::ANY);
        assert!(!a.answers.is_empty());
        assert!(
            a.answers.iter().all(|r| r.record_type() == RecordType::A),
            "{a:?}"
        );
        let a = z.answer(&n("test."), RecordType::ANY);
        assert_eq!(a.answers.len(), 1);
        assert_eq!(a.answers[0].record_type(), RecordType::SOA, "{a:?}");
        let a = z.answer(&n("nothing.test."), RecordType::ANY);
        assert!(a.nxdomain && a.answers.is_empty());
    }

    #[test]
    fn answers_aa_records() {
        let z = zone();
        let a = z.answer(&n("www.test."), RecordType::A);
        assert!(a.authoritative && !a.nxdomain);
        assert_eq!(a.answers.len(), 2);
        for (name, t) in [
            ("mail.test.", RecordType::MX),
            ("txt.test.", RecordType::TXT),
            ("_http._tcp.test.", RecordType::SRV),
            ("test.", RecordType::CAA),
            ("v6.test.", RecordType::AAAA),
        ] {
            assert_eq!(z.answer(&n(name), t).answers.len(), 1, "{name} {t}");
        }
    }

    #[test]
    fn cname_chased_inside_the_zone_only() {
        let z = zone();
        let a = z.answer(&n("alias.test."), RecordType::A);
        assert_eq!(a.answers.len(), 3, "CNAME + 2 A");
        assert_eq!(a.answers[0].record_type(), RecordType::CNAME);
        let a = z.answer(&n("out.test."), RecordType::A);
        assert_eq!(a.answers.len(), 1);
        assert_eq!(
            z.answer(&n("alias.test."), RecordType::CNAME).answers.len(),
            1
        );
    }

    #[test]
    fn negative_answers_carry_the_soa() {
        let z = zone();
        let a = z.answer(&n("nope.test."), RecordType::A);
        assert!(a.nxdomain && a.authoritative);
        assert_eq!(a.authorities[0].record_type(), RecordType::SOA);
        assert_eq!(
            a.authorities[0].ttl, 60,
            "negative TTL = min(SOA TTL, MINIMUM)"
        );
        let a = z.answer(&n("www.test."), RecordType::AAAA);
        assert!(!a.nxdomain && a.answers.is_empty(), "NODATA");
        // empty non-terminal: NODATA, not NXDOMAIN
        let a = z.answer(&n("b.deep.test."), RecordType::A);
        assert!(!a.nxdomain && a.answers.is_empty());
    }

    #[test]
    fn referrals_with_glue() {
        let z = zone();
        for q in ["shop.test.", "www.shop.test.", "x.y.shop.test."] {
            let a = z.answer(&n(q), RecordType::A);
            assert!(!a.authoritative, "{q}");
            assert_eq!(a.authorities.len(), 1);
            assert_eq!(a.authorities[0].record_type(), RecordType::NS);
            assert_eq!(a.additionals.len(), 1, "glue for ns1.shop.test");
        }
    }

    #[test]
    fn bad_zone_names_file_and_line() {
        let bad = "$ORIGIN test.\n$TTL 300\n@ IN SOA ns1.test. admin.test. 1 3600 600 86400 60\nwww IN A not-an-address\n";
        let e = Zone::parse(bad, Path::new("bad.zone"), None).unwrap_err();
        let msg = e.to_string();
        assert!(msg.starts_with("bad.zone:4:"), "{msg}");
        let e = Zone::parse(
            "$ORIGIN test.\n$TTL 300\nwww IN A 10.0.0.1\n",
            Path::new("nosoa.zone"),
            None,
        )
        .unwrap_err();
        assert!(e.to_string().contains("no SOA"), "{e}");
    }
}
