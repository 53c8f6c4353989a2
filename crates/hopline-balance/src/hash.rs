//! Consistent hashing and sticky sessions: which server a key belongs to, so that a
//! client keeps its server (its session, its warm cache) while the set of servers
//! changes little. No I/O: the proxy takes the key from the request (the client's
//! address, a header, a cookie, the URI) and hashes it with [`hash_key`].
//!
//! Two tables, Envoy's two:
//! - **Ring hash** (Karger et al., 1997; ketama): every server gets `160 × weight` points
//!   on a 64-bit ring (the hashes of `"ID#i"`); a key goes to the first point clockwise
//!   from its own hash whose server may take it. A server that leaves moves only its own
//!   keys, and because its points are spread around the ring, those keys spread over all
//!   the others, not onto one neighbour.
//! - **Maglev** (Eisenbud et al., NSDI 2016): a lookup table of prime size 65,537, filled
//!   by each server in turn along its own permutation of the slots (weights as more
//!   turns). A lookup is one index; shares are within a fraction of a percent of the
//!   weights; when a server leaves (the table is made again for the servers that may take
//!   traffic) its slots go to the others and only a little more than its share of keys
//!   moves.
//!
//! **Sticky sessions** need no table: the balancer's cookie carries [`sticky_id`] of the
//! server's address — the same on every balancer node with the same servers, so no state
//! is shared between nodes.

use xxhash_rust::xxh3::{xxh3_64, xxh3_64_with_seed};

/// The hash of a request's key (client address, header value, cookie value, URI).
pub fn hash_key(key: &[u8]) -> u64 {
    xxh3_64(key)
}

/// Points each unit of weight gets on the ring (ketama's and nginx's 160).
pub const RING_POINTS: u32 = 160;

/// The Maglev table's size: a prime, Envoy's default.
pub const MAGLEV_SIZE: usize = 65_537;

const SEED_OFFSET: u64 = 0x6d61_676c_6576_0001;
const SEED_SKIP: u64 = 0x6d61_676c_6576_0002;
const SEED_STICKY: u64 = 0x7374_6963_6b79_0001;

/// A consistent-hash ring over servers `(id, weight)`.
#[derive(Debug, Clone)]
pub struct Ring {
    /// (point, server index), sorted by point.
    points: Vec<(u64, u32)>,
}

impl Ring {
    /// The ring of `servers` (weights of 0 count as 1).
    pub fn new(servers: &[(&str, u32)]) -> Ring {
        let mut points = Vec::new();
        for (i, (id, weight)) in servers.iter().enumerate() {
            for p in 0..RING_POINTS * (*weight).max(1) {
                points.push((xxh3_64(format!("{id}#{p}").as_bytes()), i as u32));
            }
        }
        points.sort_unstable();
        Ring { points }
    }

    /// The server of `key`: the first point clockwise from it whose server `may` take it
    /// (`None` when none may).
    pub fn pick(&self, key: u64, may: impl Fn(usize) -> bool) -> Option<usize> {
        if self.points.is_empty() {
            return None;
        }
        let start = self.points.partition_point(|(p, _)| *p < key);
        let n = self.points.len();
        (0..n)
            .map(|k| self.points[(start + k) % n].1 as usize)
            .find(|&s| may(s))
    }
}

/// A Maglev lookup table over the servers that may take traffic.
#[derive(Debug, Clone)]
pub struct Maglev {
    /// Slot → server index.
    table: Vec<u32>,
}

impl Maglev {
    /// The table of the servers `(id, weight)` for which `member` holds (a server out of
    /// it gets no slot). Empty when no server is a member.
    pub fn new(servers: &[(&str, u32)], member: impl Fn(usize) -> bool) -> Maglev {
        const EMPTY: u32 = u32::MAX;
        let m = MAGLEV_SIZE as u64;
        let members: Vec<(usize, u64, u64, u64)> = servers
            .iter()
            .enumerate()
            .filter(|(i, _)| member(*i))
            .map(|(i, (id, w))| {
                let offset = xxh3_64_with_seed(id.as_bytes(), SEED_OFFSET) % m;
                let skip = xxh3_64_with_seed(id.as_bytes(), SEED_SKIP) % (m - 1) + 1;
                (i, offset, skip, u64::from((*w).max(1)))
            })
            .collect();
        if members.is_empty() {
            return Maglev { table: Vec::new() };
        }
        let max_weight = members.iter().map(|m| m.3).max().unwrap_or(1);
        let mut table = vec![EMPTY; MAGLEV_SIZE];
        let mut next = vec![0u64; members.len()];
        let mut turns = vec![0u64; members.len()];
        let mut filled = 0;
        'fill: loop {
            for (k, &(i, offset, skip, weight)) in members.iter().enumerate() {
                // weights as turns: a server of half the largest weight fills every other
                turns[k] += weight;
                if turns[k] < max_weight {
                    continue;
                }
                turns[k] -= max_weight;
                loop {
                    let slot = ((offset + next[k] * skip) % m) as usize;
                    next[k] += 1;
                    if table[slot] == EMPTY {
                        table[slot] = i as u32;
                        filled += 1;
                        break;
                    }
                }
                if filled == MAGLEV_SIZE {
                    break 'fill;
                }
            }
        }
        Maglev { table }
    }

    /// The server of `key`, or `None` for an empty table.
    pub fn pick(&self, key: u64) -> Option<usize> {
        (!self.table.is_empty()).then(|| self.table[(key % MAGLEV_SIZE as u64) as usize] as usize)
    }

    /// The server of `key` among those `may` allows (a retry excluding the servers
    /// already tried): the key's slot, then the slots of the key hashed again, up to 32.
    pub fn pick_among(&self, key: u64, may: impl Fn(usize) -> bool) -> Option<usize> {
        if self.table.is_empty() {
            return None;
        }
        let mut k = key;
        for _ in 0..32 {
            let s = self.table[(k % MAGLEV_SIZE as u64) as usize] as usize;
            if may(s) {
                return Some(s);
            }
            k = xxh3_64_with_seed(&k.to_le_bytes(), SEED_OFFSET);
        }
        None
    }
}

/// The value a sticky-session cookie carries for the server `id` (its address): 16 hex
/// digits, the same on every balancer node, telling nothing of the address itself.
pub fn sticky_id(id: &str) -> String {
    format!("{:016x}", xxh3_64_with_seed(id.as_bytes(), SEED_STICKY))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ids(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("10.0.0.{}:8080", i + 1)).collect()
    }

    fn with_weights(ids: &[String], w: u32) -> Vec<(&str, u32)> {
        ids.iter().map(|s| (s.as_str(), w)).collect()
    }

    const KEYS: u64 = 20_000;

    fn owners(pick: impl Fn(u64) -> usize) -> Vec<usize> {
        (0..KEYS)
            .map(|k| pick(hash_key(format!("user-{k}").as_bytes())))
            .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(12))]

        /// A server that leaves moves its own keys and no other, spread over the rest.
        #[test]
        fn ring_a_server_leaving_moves_only_its_keys(n in 3usize..9, gone in 0usize..9) {
            let gone = gone % n;
            let ids = ids(n);
            let ring = Ring::new(&with_weights(&ids, 1));
            let before = owners(|k| ring.pick(k, |_| true).unwrap());
            let after = owners(|k| ring.pick(k, |s| s != gone).unwrap());
            let mut went_to = vec![0u64; n];
            for (b, a) in before.iter().zip(&after) {
                if *b == gone {
                    went_to[*a] += 1;
                } else {
                    prop_assert_eq!(b, a, "a key of a staying server moved");
                }
            }
            let moved: u64 = went_to.iter().sum();
            // ~1/N moved, and to every other server, none taking most of them
            let share = moved as f64 / KEYS as f64;
            prop_assert!((share - 1.0 / n as f64).abs() < 0.5 / n as f64, "moved {share}");
            prop_assert!(went_to.iter().enumerate().all(|(i, c)| i == gone || *c > 0));
            prop_assert!(*went_to.iter().max().unwrap() < moved * 6 / 10);
        }

        /// Maglev: the leaving server's keys move, and only a few others.
        #[test]
        fn maglev_a_server_leaving_moves_about_its_share(n in 3usize..9, gone in 0usize..9) {
            let gone = gone % n;
            let ids = ids(n);
            let servers = with_weights(&ids, 1);
            let all = Maglev::new(&servers, |_| true);
            let rest = Maglev::new(&servers, |s| s != gone);
            let before = owners(|k| all.pick(k).unwrap());
            let after = owners(|k| rest.pick(k).unwrap());
            let mut went_to = vec![0u64; n];
            let mut others_moved = 0u64;
            for (b, a) in before.iter().zip(&after) {
                prop_assert_ne!(*a, gone);
                if *b == gone {
                    went_to[*a] += 1;
                } else if a != b {
                    others_moved += 1;
                }
            }
            // the paper's figure: a little more than 1/N moves in all
            let moved = went_to.iter().sum::<u64>() + others_moved;
            prop_assert!((moved as f64 / KEYS as f64) < 1.0 / n as f64 + 0.05, "moved {moved}");
            prop_assert!(*went_to.iter().max().unwrap() < went_to.iter().sum::<u64>() * 6 / 10);
        }

        /// A server that joins takes about 1/(N+1) of the keys, from every other.
        #[test]
        fn a_server_joining_takes_about_its_share(n in 3usize..8) {
            let ids_n1 = ids(n + 1);
            let servers = with_weights(&ids_n1, 1);
            let ring = Ring::new(&servers);
            let before = owners(|k| ring.pick(k, |s| s < n).unwrap());
            let after = owners(|k| ring.pick(k, |_| true).unwrap());
            let moved = before.iter().zip(&after).filter(|(b, a)| b != a).count() as f64;
            prop_assert!(before.iter().zip(&after).all(|(b, a)| b == a || *a == n));
            prop_assert!((moved / KEYS as f64 - 1.0 / (n + 1) as f64).abs() < 0.5 / (n + 1) as f64);
            let small = Maglev::new(&servers, |s| s < n);
            let big = Maglev::new(&servers, |_| true);
            let before = owners(|k| small.pick(k).unwrap());
            let after = owners(|k| big.pick(k).unwrap());
            let moved = before.iter().zip(&after).filter(|(b, a)| b != a).count() as f64;
            prop_assert!(moved / (KEYS as f64) < 1.0 / (n + 1) as f64 + 0.05);
        }
    }

    #[test]
    fn shares_follow_the_weights() {
        let ids = ids(3);
        let servers: Vec<(&str, u32)> = vec![(&ids[0], 1), (&ids[1], 2), (&ids[2], 1)];
        let ring = Ring::new(&servers);
        let maglev = Maglev::new(&servers, |_| true);
        for (name, got) in [
            ("ring", owners(|k| ring.pick(k, |_| true).unwrap())),
            ("maglev", owners(|k| maglev.pick(k).unwrap())),
        ] {
            let mut count = [0f64; 3];
            for s in got {
                count[s] += 1.0;
            }
            for (i, want) in [0.25, 0.5, 0.25].iter().enumerate() {
                let share = count[i] / KEYS as f64;
                assert!(
                    (share - want).abs() < 0.05,
                    "{name}: server {i} has {share}"
                );
            }
        }
        // Maglev's slots themselves are near exact
        let mut slots = [0usize; 3];
        for &s in &maglev.table {
            slots[s as usize] += 1;
        }
        assert!(
            (slots[1] as f64 / MAGLEV_SIZE as f64 - 0.5).abs() < 0.01,
            "{slots:?}"
        );
    }

    #[test]
    fn nothing_to_pick_is_none_and_sticky_ids_are_stable() {
        let ids = ids(2);
        let servers = with_weights(&ids, 1);
        assert_eq!(Ring::new(&servers).pick(42, |_| false), None);
        assert_eq!(Maglev::new(&servers, |_| false).pick(42), None);
        assert_eq!(
            Maglev::new(&servers, |_| true).pick_among(42, |_| false),
            None
        );
        let a = sticky_id("10.0.0.1:8080");
        assert_eq!(a, sticky_id("10.0.0.1:8080"));
        assert_ne!(a, sticky_id("10.0.0.2:8080"));
        assert_eq!(a.len(), 16);
        assert!(!a.contains("10.0"));
    }
}
