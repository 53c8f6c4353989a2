//! Escaped labels in master files (RFC 1035 §5.1: `\DDD` is the byte with the decimal
//! value DDD, `\X` is X itself, so `a\032b` holds a space and `john\.doe` a dot inside
//! one label). hickory's zone parser reads `\DDD` as octal and then refuses the bytes
//! that are not letters, so names with escapes are taken out before it parses: every
//! escaped label becomes a placeholder label, and after the parse each placeholder is
//! put back as the label's real bytes — in owner names and in the names inside RDATA
//! (CNAME, NS, PTR, DNAME, MX, SRV, SOA). TXT-like data keeps its own escapes.

use std::collections::HashMap;

use hickory_proto::rr::domain::Label;
use hickory_proto::rr::{Name, RData, Record};

/// Placeholder label → the label's bytes.
#[derive(Debug, Default)]
pub struct Escapes {
    labels: HashMap<Vec<u8>, Vec<u8>>,
    prefix: String,
    /// Some quoted string had a `\DDD`: it went through as a private-use character.
    marked: bool,
}

/// `\DDD` inside a quoted string becomes U+E000 + DDD (hickory's lexer would read it as
/// octal and store the UTF-8 of that); the TXT's bytes are put right after the parse.
const MARK: u32 = 0xE000;

/// The line with every `\DDD` inside quotes replaced by its mark; whether any was.
fn mark_quoted(line: &str) -> (String, bool) {
    let mut out = String::with_capacity(line.len());
    let mut marked = false;
    let mut in_quote = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                in_quote = !in_quote;
                out.push(c);
            }
            '\\' if in_quote => {
                let digits: String = chars.clone().take(3).collect();
                match digits.parse::<u32>() {
                    Ok(v)
                        if v <= 255
                            && digits.len() == 3
                            && digits.bytes().all(|b| b.is_ascii_digit()) =>
                    {
                        out.push(char::from_u32(MARK + v).expect("a private-use character"));
                        marked = true;
                        for _ in 0..3 {
                            chars.next();
                        }
                    }
                    _ => {
                        // `\"`, `\\` and friends: hickory reads these right
                        out.push(c);
                        if let Some(n) = chars.next() {
                            out.push(n);
                        }
                    }
                }
            }
            _ => out.push(c),
        }
    }
    (out, marked)
}

/// The bytes of a marked string: each mark back to its byte.
fn unmark(bytes: &[u8]) -> Box<[u8]> {
    match std::str::from_utf8(bytes) {
        Ok(s) => {
            let mut out = Vec::with_capacity(bytes.len());
            for c in s.chars() {
                let v = c as u32;
                if (MARK..=MARK + 255).contains(&v) {
                    out.push((v - MARK) as u8);
                } else {
                    let mut buf = [0u8; 4];
                    out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                }
            }
            out.into_boxed_slice()
        }
        Err(_) => bytes.into(),
    }
}

/// Record types whose RDATA holds names (the tokens with escapes in them are names).
const NAME_TYPES: &[&str] = &["CNAME", "NS", "PTR", "DNAME", "MX", "SRV", "SOA"];

/// RR type mnemonics that can follow an owner, TTL and class (to find a line's type).
fn is_type(t: &str) -> bool {
    let u = t.to_ascii_uppercase();
    NAME_TYPES.contains(&u.as_str())
        || [
            "A",
            "AAAA",
            "TXT",
            "SPF",
            "CAA",
            "HINFO",
            "DS",
            "SSHFP",
            "TLSA",
            "NAPTR",
            "SVCB",
            "HTTPS",
            "OPT",
            "NULL",
            "CSYNC",
            "OPENPGPKEY",
            "DNSKEY",
            "RRSIG",
            "NSEC",
            "NSEC3",
            "NSEC3PARAM",
            "CERT",
            "ANAME",
        ]
        .contains(&u.as_str())
        || (u.starts_with("TYPE") && u[4..].parse::<u16>().is_ok())
}

/// The bytes of one escaped label, or None when an escape is malformed (`\256`, `\1x`).
fn decode(label: &str) -> Option<Vec<u8>> {
    let b = label.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'\\' {
            out.push(b[i]);
            i += 1;
            continue;
        }
        match b.get(i + 1) {
            Some(d) if d.is_ascii_digit() => {
                let digits = b.get(i + 1..i + 4)?;
                if !digits.iter().all(u8::is_ascii_digit) {
                    return None;
                }
                let v: u32 = std::str::from_utf8(digits).ok()?.parse().ok()?;
                out.push(u8::try_from(v).ok()?);
                i += 4;
            }
            Some(&c) => {
                out.push(c);
                i += 2;
            }
            None => return None,
        }
    }
    Some(out)
}

/// Splits a name token on the dots that are not escaped.
fn labels(token: &str) -> Vec<&str> {
    let b = token.as_bytes();
    let mut out = Vec::new();
    let (mut start, mut i) = (0, 0);
    while i < b.len() {
        match b[i] {
            b'\\' => i += 2,
            b'.' => {
                out.push(&token[start..i]);
                i += 1;
                start = i;
            }
            _ => i += 1,
        }
    }
    out.push(&token[start.min(token.len())..]);
    out
}

impl Escapes {
    /// The text with every escaped label of a name replaced by a placeholder.
    pub fn take_out(text: &str) -> (String, Escapes) {
        let mut esc = Escapes::default();
        if !text.contains('\\') {
            return (text.to_string(), esc);
        }
        // a prefix no label of the file starts with
        let mut n = 0;
        esc.prefix = loop {
            let p = format!("hoplineesc{n}x");
            if !text.to_ascii_lowercase().contains(&p) {
                break p;
            }
            n += 1;
        };
        let mut out = String::with_capacity(text.len());
        let mut depth = 0usize; // inside ( … ) of a record spanning lines
        for line in text.split_inclusive('\n') {
            let (body, comment) = match line.find(';') {
                Some(i) if !line[..i].contains('"') => line.split_at(i),
                _ => (line, ""),
            };
            let (marked_body, marked) = if body.contains('"') {
                mark_quoted(body)
            } else {
                (body.to_string(), false)
            };
            esc.marked |= marked;
            let body = marked_body.as_str();
            if !body.contains('\\') || depth > 0 {
                depth =
                    (depth + body.matches('(').count()).saturating_sub(body.matches(')').count());
                out.push_str(body);
                out.push_str(comment);
                continue;
            }
            depth = (depth + body.matches('(').count()).saturating_sub(body.matches(')').count());
            let starts_with_owner = !body.starts_with([' ', '\t']);
            let tokens: Vec<&str> = body.split_whitespace().collect();
            let type_at = tokens.iter().position(|t| is_type(t));
            let names_in_rdata = type_at
                .map(|i| NAME_TYPES.contains(&tokens[i].to_ascii_uppercase().as_str()))
                .unwrap_or(false);
            let mut rebuilt = String::new();
            let mut rest = body;
            for (k, tok) in tokens.iter().enumerate() {
                let at = rest.find(tok).unwrap_or(0);
                rebuilt.push_str(&rest[..at]);
                rest = &rest[at + tok.len()..];
                let is_owner = k == 0 && starts_with_owner;
                let in_rdata = type_at.is_some_and(|i| k > i) && names_in_rdata;
                if tok.contains('\\') && (is_owner || in_rdata) {
                    rebuilt.push_str(&esc.replace(tok));
                } else {
                    rebuilt.push_str(tok);
                }
            }
            rebuilt.push_str(rest);
            out.push_str(&rebuilt);
            out.push_str(comment);
        }
        (out, esc)
    }

    /// One name token with its escaped labels replaced (unchanged when an escape is bad,
    /// so that the parser reports it).
    fn replace(&mut self, token: &str) -> String {
        let parts = labels(token);
        let mut out = Vec::with_capacity(parts.len());
        for p in parts {
            if !p.contains('\\') {
                out.push(p.to_string());
                continue;
            }
            let Some(bytes) = decode(p) else {
                return token.to_string();
            };
            let ph = format!("{}{}", self.prefix, self.labels.len());
            self.labels.insert(ph.clone().into_bytes(), bytes);
            out.push(ph);
        }
        out.join(".")
    }

    /// Whether the file had no escaped names and no escapes in quoted strings.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty() && !self.marked
    }

    /// A parsed name with its placeholders put back.
    pub fn restore(&self, name: &Name) -> Name {
        if self.labels.is_empty() {
            return name.clone();
        }
        let mut changed = false;
        let labels: Vec<Label> = name
            .iter()
            .map(|l| {
                let key = l.to_ascii_lowercase();
                match self.labels.get(&key) {
                    Some(real) => {
                        changed = true;
                        Label::from_raw_bytes(real)
                    }
                    None => Label::from_raw_bytes(l),
                }
            })
            .collect::<Result<_, _>>()
            .unwrap_or_default();
        if !changed {
            return name.clone();
        }
        let mut n = Name::from_labels(labels).unwrap_or_else(|_| name.clone());
        n.set_fqdn(name.is_fqdn());
        n
    }

    /// A parsed record with its placeholders put back (owner and names in RDATA).
    pub fn restore_record(&self, r: &mut Record) {
        if self.is_empty() {
            return;
        }
        r.name = self.restore(&r.name);
        match &mut r.data {
            RData::CNAME(c) => c.0 = self.restore(&c.0),
            RData::NS(n) => n.0 = self.restore(&n.0),
            RData::PTR(p) => p.0 = self.restore(&p.0),
            RData::ANAME(a) => a.0 = self.restore(&a.0),
            RData::MX(m) => m.exchange = self.restore(&m.exchange),
            RData::SRV(s) => s.target = self.restore(&s.target),
            RData::SOA(s) => {
                s.mname = self.restore(&s.mname);
                s.rname = self.restore(&s.rname);
            }
            RData::TXT(t) if self.marked => {
                t.txt_data = t.txt_data.iter().map(|b| unmark(b)).collect();
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_decode_as_rfc_1035_says() {
        assert_eq!(decode(r"a\032b").unwrap(), b"a b");
        assert_eq!(decode(r"bin\255\000").unwrap(), b"bin\xff\x00");
        assert_eq!(decode(r"dot\.in").unwrap(), b"dot.in");
        assert_eq!(decode(r"x\256"), None);
        assert_eq!(decode(r"x\1a2"), None);
        assert_eq!(
            labels(r"john\.doe.shop.test."),
            vec![r"john\.doe", "shop", "test", ""]
        );
    }

    #[test]
    fn names_are_taken_out_and_put_back() {
        let text = "$ORIGIN esc.test.\n@ IN SOA ns1 john\\.doe 1 2 3 4 5\na\\032b IN A 10.0.0.1 ; note\nc IN CNAME a\\032b\nt IN TXT \"x\\032y\"\n";
        let (out, esc) = Escapes::take_out(text);
        // names lose their escapes to placeholders; quoted strings keep their bytes as marks
        assert!(
            !out.contains("a\\032b") && out.contains("\"x\u{E020}y\""),
            "{out}"
        );
        assert_eq!(&*unmark("x\u{E020}y\u{E0FF}".as_bytes()), b"x y\xff");
        assert!(out.contains("; note"));
        let placeholder = out
            .lines()
            .nth(2)
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap();
        let n = Name::from_ascii(format!("{placeholder}.esc.test.")).unwrap();
        let back = esc.restore(&n);
        assert_eq!(back.iter().next().unwrap(), b"a b");
        assert_eq!(back.num_labels(), 3);
    }
}
