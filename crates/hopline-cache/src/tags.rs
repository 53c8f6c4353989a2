//! Surrogate keys: an origin tags a response (`Surrogate-Key: product-42 catalog`, as
//! Fastly reads it, or `Cache-Tag: product-42,catalog`, as Cloudflare does), and a purge by
//! tag drops — or marks stale — every stored object that carries it.
//!
//! The index maps each tag to the cache keys that carry it. A key's text is held once
//! (shared by its tags); an object carries at most [`MAX_TAGS`] tags of at most
//! [`MAX_TAG_LEN`] bytes (more are ignored), and the index only lists objects the cache
//! holds: an object evicted or purged leaves it. Its size is measured by the tests
//! (1,000,000 objects over 10,000 tags).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use http::HeaderMap;

/// Tags read from one response at most.
pub const MAX_TAGS: usize = 64;
/// A tag's longest length, in bytes.
pub const MAX_TAG_LEN: usize = 128;

/// The tags of a response's `Surrogate-Key` (space separated) and `Cache-Tag` (comma
/// separated) fields, deduplicated, in order.
pub fn of_response(h: &HeaderMap) -> Vec<Box<str>> {
    let fields = h
        .get_all("surrogate-key")
        .iter()
        .chain(h.get_all("cache-tag").iter())
        .map(|v| v.as_bytes());
    collect(fields)
}

/// The tags of a stored head (its header list), read in place.
pub fn of_stored(headers: &[(String, Vec<u8>)]) -> Vec<Box<str>> {
    collect(
        headers
            .iter()
            .filter(|(k, _)| k == "surrogate-key" || k == "cache-tag")
            .map(|(_, v)| v.as_slice()),
    )
}

fn collect<'a>(fields: impl Iterator<Item = &'a [u8]>) -> Vec<Box<str>> {
    let mut out: Vec<Box<str>> = Vec::new();
    for v in fields.filter_map(|v| std::str::from_utf8(v).ok()) {
        for t in v.split([' ', ',', '\t']).map(str::trim) {
            if t.is_empty() || t.len() > MAX_TAG_LEN || out.iter().any(|o| &**o == t) {
                continue;
            }
            if out.len() == MAX_TAGS {
                return out;
            }
            out.push(t.into());
        }
    }
    out
}

/// The index's hasher: foldhash, seeded per process (tags and keys come from origins and
/// clients, so not a fixed seed; SipHash was a third of a purge's time).
type Hasher = foldhash::fast::RandomState;

/// Tag → the keys that carry it.
#[derive(Debug, Default)]
pub struct TagIndex {
    by_tag: HashMap<Box<str>, HashSet<Arc<str>, Hasher>, Hasher>,
    /// Each indexed key's text, held once, and how many tags list it.
    keys: HashMap<Arc<str>, u32, Hasher>,
}

impl TagIndex {
    /// `key` carries `tags` (in addition to what it carried).
    pub fn add(&mut self, key: &str, tags: &[Box<str>]) {
        if tags.is_empty() {
            return;
        }
        let shared: Arc<str> = match self.keys.get_key_value(key) {
            Some((k, _)) => k.clone(),
            None => Arc::from(key),
        };
        let mut added = 0;
        for t in tags {
            let set = match self.by_tag.get_mut(&**t) {
                Some(s) => s,
                None => self.by_tag.entry(t.clone()).or_default(),
            };
            if set.insert(shared.clone()) {
                added += 1;
            }
        }
        if added > 0 {
            *self.keys.entry(shared).or_default() += added;
        }
    }

    /// `key` no longer carries `tags`.
    pub fn remove(&mut self, key: &str, tags: &[Box<str>]) {
        let mut removed = 0;
        for t in tags {
            if let Some(set) = self.by_tag.get_mut(&**t) {
                if set.remove(key) {
                    removed += 1;
                }
                if set.is_empty() {
                    self.by_tag.remove(&**t);
                }
            }
        }
        if removed > 0
            && let Some(n) = self.keys.get_mut(key)
        {
            *n = n.saturating_sub(removed);
            if *n == 0 {
                self.keys.remove(key);
            }
        }
    }

    /// Take `tag` out of the index, with the list of keys that carried it (each still
    /// listed under its other tags, for the caller to remove as it drops the object).
    pub fn take(&mut self, tag: &str) -> Vec<Arc<str>> {
        let Some(set) = self.by_tag.remove(tag) else {
            return Vec::new();
        };
        let mut out = Vec::with_capacity(set.len());
        for k in set {
            if let Some(n) = self.keys.get_mut(&k) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    self.keys.remove(&k);
                }
            }
            out.push(k);
        }
        out
    }

    /// The keys that carry `tag`.
    pub fn keys_of(&self, tag: &str) -> Vec<String> {
        self.by_tag
            .get(tag)
            .map(|s| s.iter().map(|k| k.to_string()).collect())
            .unwrap_or_default()
    }

    /// (tags, keys) indexed.
    pub fn len(&self) -> (usize, usize) {
        (self.by_tag.len(), self.keys.len())
    }

    /// Nothing indexed?
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_read_from_both_fields_deduplicated_and_bounded() {
        let mut h = HeaderMap::new();
        h.insert("surrogate-key", "a  b\tc".parse().unwrap());
        h.append("cache-tag", "c, d,,e".parse().unwrap());
        let tags: Vec<String> = of_response(&h).iter().map(|t| t.to_string()).collect();
        assert_eq!(tags, ["a", "b", "c", "d", "e"]);
        let many: String = (0..100).map(|i| format!("t{i} ")).collect();
        let long = "x".repeat(MAX_TAG_LEN + 1);
        let mut h = HeaderMap::new();
        h.insert("surrogate-key", format!("{long} {many}").parse().unwrap());
        let tags = of_response(&h);
        assert_eq!(tags.len(), MAX_TAGS);
        assert_eq!(&*tags[0], "t0", "an over-long tag is ignored");
        assert_eq!(
            of_stored(&[("surrogate-key".into(), b"p q".to_vec())]),
            vec![Box::from("p"), Box::from("q")]
        );
    }

    #[test]
    fn keys_come_and_go_with_their_tags() {
        let mut ix = TagIndex::default();
        let t = |s: &[&str]| s.iter().map(|x| Box::<str>::from(*x)).collect::<Vec<_>>();
        ix.add("k1", &t(&["a", "b"]));
        ix.add("k2", &t(&["b"]));
        let mut b = ix.keys_of("b");
        b.sort();
        assert_eq!(b, ["k1", "k2"]);
        assert_eq!(ix.len(), (2, 2));
        ix.remove("k1", &t(&["a", "b"]));
        assert_eq!(ix.keys_of("a"), Vec::<String>::new());
        assert_eq!(ix.keys_of("b"), ["k2"]);
        assert_eq!(ix.len(), (1, 1));
        ix.remove("k2", &t(&["b"]));
        assert!(ix.is_empty() && ix.len() == (0, 0));
        // a tag taken whole: its keys stay under their other tags until removed
        ix.add("k1", &t(&["a", "b"]));
        ix.add("k2", &t(&["b"]));
        let mut taken: Vec<String> = ix.take("b").iter().map(|k| k.to_string()).collect();
        taken.sort();
        assert_eq!(taken, ["k1", "k2"]);
        assert_eq!(ix.len(), (1, 1), "k2 had only b; k1 is still under a");
        assert_eq!(ix.keys_of("a"), ["k1"]);
        ix.remove("k1", &t(&["a", "b"]));
        assert!(ix.is_empty());
        assert!(ix.take("nothing").is_empty());
    }
}
