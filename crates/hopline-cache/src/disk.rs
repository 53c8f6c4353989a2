//! The disk tier: one file per key holding every variant (`Vary`) of it: `HOPC2\n` + u32
//! meta length + meta JSON (the key, each variant's metadata and body length) + the
//! bodies + SHA-256 of everything before it. A file whose length or digest is wrong is
//! corrupt: it is deleted and never served.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use sha2::Digest;

use crate::stored::Stored;

// ---------------------------------------------------------------------------
// Disk tier: one file per key holding every variant (`Vary`) of it: `HOPC2\n` + u32
// meta length + meta JSON (the key, each variant's metadata and body length) + the
// bodies + SHA-256 of everything before it. A file whose length or digest is wrong is
// corrupt: it is deleted and never served.

pub enum DiskRead {
    Found(Vec<Stored>),
    Missing,
    Corrupt(String),
}

pub struct Disk {
    dir: PathBuf,
    limit: u64,
    used: AtomicU64,
}

pub const MAGIC: &[u8] = b"HOPC2\n";

impl Disk {
    pub fn open(dir: &Path, limit: u64) -> std::io::Result<Disk> {
        std::fs::create_dir_all(dir)?;
        let mut used = 0;
        for e in std::fs::read_dir(dir)?.flatten() {
            used += e.metadata().map(|m| m.len()).unwrap_or(0);
        }
        Ok(Disk {
            dir: dir.to_path_buf(),
            limit,
            used: AtomicU64::new(used),
        })
    }

    pub fn path(&self, key: &str) -> PathBuf {
        self.dir
            .join(format!("{:x}", sha2::Sha256::digest(key.as_bytes())))
    }

    pub fn save(&self, key: &str, variants: &[Arc<Stored>]) {
        #[derive(Serialize)]
        struct Meta<'a> {
            key: &'a str,
            stored: Vec<&'a Stored>,
            lens: Vec<usize>,
        }
        let meta = Meta {
            key,
            stored: variants.iter().map(|s| &**s).collect(),
            lens: variants.iter().map(|s| s.body.len()).collect(),
        };
        let Ok(meta) = serde_json::to_vec(&meta) else {
            return;
        };
        let bodies: usize = variants.iter().map(|s| s.body.len()).sum();
        let mut data = Vec::with_capacity(MAGIC.len() + 4 + meta.len() + bodies + 32);
        data.extend_from_slice(MAGIC);
        data.extend_from_slice(&(meta.len() as u32).to_be_bytes());
        data.extend_from_slice(&meta);
        for v in variants {
            data.extend_from_slice(&v.body);
        }
        let digest = sha2::Sha256::digest(&data);
        data.extend_from_slice(&digest);
        let path = self.path(key);
        let tmp = path.with_extension("tmp");
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&data)?;
            f.sync_data()?;
            std::fs::rename(&tmp, &path)
        };
        let old = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        if write().is_ok() {
            let used =
                self.used.fetch_add(data.len() as u64, Ordering::Relaxed) + data.len() as u64 - old;
            self.used.fetch_sub(old, Ordering::Relaxed);
            if used > self.limit {
                self.evict();
            }
        } else {
            let _ = std::fs::remove_file(&tmp);
        }
    }

    /// Remove the oldest files until under the limit.
    fn evict(&self) {
        let Ok(rd) = std::fs::read_dir(&self.dir) else {
            return;
        };
        let mut files: Vec<(SystemTime, u64, PathBuf)> = rd
            .flatten()
            .filter_map(|e| {
                let m = e.metadata().ok()?;
                Some((m.modified().ok()?, m.len(), e.path()))
            })
            .collect();
        files.sort();
        let mut used: u64 = files.iter().map(|f| f.1).sum();
        for (_, len, p) in files {
            if used <= self.limit * 9 / 10 {
                break;
            }
            if std::fs::remove_file(&p).is_ok() {
                used -= len;
            }
        }
        self.used.store(used, Ordering::Relaxed);
    }

    pub fn load(&self, key: &str) -> DiskRead {
        let path = self.path(key);
        let data = match std::fs::read(&path) {
            Ok(d) => d,
            Err(_) => return DiskRead::Missing,
        };
        match Self::decode(key, &data) {
            Ok(s) => DiskRead::Found(s),
            Err(why) => {
                let _ = std::fs::remove_file(&path);
                self.used.fetch_sub(
                    (data.len() as u64).min(self.used.load(Ordering::Relaxed)),
                    Ordering::Relaxed,
                );
                DiskRead::Corrupt(why)
            }
        }
    }

    fn decode(key: &str, data: &[u8]) -> Result<Vec<Stored>, String> {
        #[derive(Deserialize)]
        struct Meta {
            key: String,
            stored: Vec<Stored>,
            lens: Vec<usize>,
        }
        if data.len() < MAGIC.len() + 4 + 32 || !data.starts_with(MAGIC) {
            return Err("truncated or not a cache file".into());
        }
        let (content, digest) = data.split_at(data.len() - 32);
        if sha2::Sha256::digest(content).as_slice() != digest {
            return Err("checksum mismatch (truncated or altered)".into());
        }
        let meta_len = u32::from_be_bytes(
            content[MAGIC.len()..MAGIC.len() + 4]
                .try_into()
                .expect("4 bytes"),
        ) as usize;
        let start = MAGIC.len() + 4;
        if start + meta_len > content.len() {
            return Err("metadata length out of range".into());
        }
        let meta: Meta = serde_json::from_slice(&content[start..start + meta_len])
            .map_err(|e| format!("metadata: {e}"))?;
        if meta.key != key {
            return Err("key mismatch".into());
        }
        if meta.lens.len() != meta.stored.len()
            || meta.lens.iter().sum::<usize>() != content.len() - start - meta_len
        {
            return Err("body lengths do not add up".into());
        }
        let mut at = start + meta_len;
        let mut out = Vec::with_capacity(meta.stored.len());
        for (mut stored, len) in meta.stored.into_iter().zip(meta.lens) {
            stored.body = Bytes::copy_from_slice(&content[at..at + len]);
            at += len;
            out.push(stored);
        }
        Ok(out)
    }

    pub fn remove(&self, key: &str) -> bool {
        let path = self.path(key);
        let len = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        let ok = std::fs::remove_file(path).is_ok();
        if ok {
            self.used.fetch_sub(
                len.min(self.used.load(Ordering::Relaxed)),
                Ordering::Relaxed,
            );
        }
        ok
    }

    /// Each entry file's path and its meta JSON (the key, the variants), read from the
    /// file's head only.
    fn metas(&self) -> Vec<(PathBuf, Vec<u8>)> {
        let Ok(rd) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for e in rd.flatten() {
            let Ok(mut f) = std::fs::File::open(e.path()) else {
                continue;
            };
            let mut head = [0u8; 10];
            if std::io::Read::read_exact(&mut f, &mut head).is_err()
                || &head[..MAGIC.len()] != MAGIC
            {
                continue;
            }
            let meta_len = u32::from_be_bytes(head[MAGIC.len()..].try_into().expect("4")) as usize;
            let mut meta = vec![0u8; meta_len.min(16 << 20)];
            if std::io::Read::read_exact(&mut f, &mut meta).is_ok() {
                out.push((e.path(), meta));
            }
        }
        out
    }

    /// Every entry's key and the tags its variants carry (the surrogate-key index is
    /// rebuilt from this at start).
    pub fn keys_and_tags(&self) -> Vec<(String, Vec<Box<str>>)> {
        #[derive(Deserialize)]
        struct Meta {
            key: String,
            stored: Vec<Stored>,
        }
        let mut out = Vec::new();
        for (_, meta) in self.metas() {
            if let Ok(m) = serde_json::from_slice::<Meta>(&meta) {
                let mut tags: Vec<Box<str>> = Vec::new();
                for s in &m.stored {
                    for t in crate::tags::of_stored(&s.headers) {
                        if !tags.contains(&t) {
                            tags.push(t);
                        }
                    }
                }
                out.push((m.key, tags));
            }
        }
        out
    }

    /// Prefix purge on disk: file names are digests, so read each file's key.
    pub fn purge_prefix(&self, prefix: &str, already: &[String]) -> u64 {
        #[derive(Deserialize)]
        struct KeyOnly {
            key: String,
        }
        let mut n = 0;
        for (path, meta) in self.metas() {
            if let Ok(k) = serde_json::from_slice::<KeyOnly>(&meta)
                && k.key.starts_with(prefix)
                && !already.contains(&k.key)
                && std::fs::remove_file(path).is_ok()
            {
                n += 1;
            }
        }
        n
    }
}
