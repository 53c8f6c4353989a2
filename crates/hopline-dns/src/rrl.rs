//! Response rate limiting (RRL) of an authoritative server's UDP answers: per client
//! prefix (/24, /56) and question, answers over the rate a second are dropped, or sent
//! truncated now and then so that a real client retries over TCP.

use hickory_proto::op::Message;

/// Response rate limiting settings of an authoritative listener (default: off).
#[derive(Debug, Clone, Default)]
pub(crate) struct RrlSettings {
    /// Answers a second per client prefix and question (0: no limit).
    pub(crate) rate: u32,
    /// Of the answers over the rate, every `slip`-th goes out truncated (0: none).
    pub(crate) slip: u32,
    /// Clients never limited.
    pub(crate) exempt: Vec<ipnet::IpNet>,
}

impl RrlSettings {
    pub(crate) fn off() -> RrlSettings {
        RrlSettings {
            rate: 0,
            slip: 0,
            exempt: Vec::new(),
        }
    }
}

/// What to do with one UDP answer.
#[derive(Debug, PartialEq)]
pub(crate) enum Verdict {
    Send,
    /// Send it truncated (TC, no records): a real client retries over TCP.
    Slip,
    Drop,
}

/// The counts of one UDP listener (its receive loop owns them: no lock), per client
/// prefix and question, for the current second.
#[derive(Default)]
pub(crate) struct Rrl {
    second: u64,
    counts: std::collections::HashMap<u64, u32>,
    started: Option<tokio::time::Instant>,
    /// (keyed per listener: a client cannot aim collisions at another's bucket)
    keys: std::hash::RandomState,
}

impl Rrl {
    pub(crate) fn check(
        &mut self,
        s: &RrlSettings,
        peer: std::net::IpAddr,
        question: &[u8],
    ) -> Verdict {
        use std::hash::{BuildHasher, Hasher};
        if s.rate == 0 {
            return Verdict::Send;
        }
        let peer = peer.to_canonical();
        if s.exempt.iter().any(|n| n.contains(&peer)) {
            return Verdict::Send;
        }
        let started = *self.started.get_or_insert_with(tokio::time::Instant::now);
        let now = started.elapsed().as_secs();
        if now != self.second {
            self.second = now;
            self.counts.clear();
        }
        let prefix: u128 = match peer {
            std::net::IpAddr::V4(v4) => u32::from(v4) as u128 & 0xffff_ff00,
            std::net::IpAddr::V6(v6) => u128::from(v6) & !((1u128 << 72) - 1),
        };
        let mut h = self.keys.build_hasher();
        h.write_u128(prefix);
        h.write(question);
        let c = self.counts.entry(h.finish()).or_insert(0);
        *c = c.saturating_add(1);
        if *c <= s.rate {
            Verdict::Send
        } else if s.slip > 0 && (*c - s.rate).is_multiple_of(s.slip) {
            Verdict::Slip
        } else {
            Verdict::Drop
        }
    }
}

/// The truncated form of an answer to `query`: its header and question, TC set.
pub(crate) fn slipped(query: &[u8]) -> Option<Vec<u8>> {
    let q = Message::from_vec(query).ok()?;
    let mut r = crate::wire::response_for(&q, hickory_proto::op::ResponseCode::NoError);
    r.metadata.truncation = true;
    r.metadata.authoritative = true;
    r.to_vec().ok()
}
