//! The browser's HTTP cache: private (RFC 9111 rules for a single user, via the
//! `http-cache-semantics` crate in private mode), on disk under the user's cache folder,
//! so a later `hopline visit` serves fresh entries without the network and revalidates
//! stale ones with their validators (`If-None-Match` / `If-Modified-Since`).

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use bytes::Bytes;
use http_cache_semantics::{AfterResponse, BeforeRequest, CacheOptions, CachePolicy};
use sha2::Digest;

/// What the cache says before a request.
pub enum Before {
    /// Serve this without the network.
    Fresh(Stored),
    /// Ask the network with these extra (conditional) headers, then call [`DiskCache::after`].
    Revalidate(Stored, Vec<(String, String)>),
    /// Nothing usable.
    Miss,
}

/// One stored response.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Stored {
    policy: CachePolicy,
    /// Status.
    pub status: u16,
    /// Response headers (decoded body: no content-encoding).
    pub headers: Vec<(String, String)>,
    #[serde(skip)]
    /// Decoded body.
    pub body: Bytes,
}

/// The on-disk private cache.
#[derive(Debug, Clone)]
pub struct DiskCache {
    dir: PathBuf,
}

fn opts() -> CacheOptions {
    CacheOptions {
        shared: false,
        ..Default::default()
    }
}

impl DiskCache {
    /// A cache in `dir` (made if missing).
    pub fn open(dir: &Path) -> std::io::Result<DiskCache> {
        std::fs::create_dir_all(dir)?;
        Ok(DiskCache {
            dir: dir.to_path_buf(),
        })
    }

    /// The default place: the user's cache folder.
    pub fn default_dir() -> PathBuf {
        dirs::cache_dir()
            .unwrap_or_else(std::env::temp_dir)
            .join("hopline")
            .join("http")
    }

    /// The HTTP/3 alternatives origins advertised (`Alt-Svc`), remembered across visits as
    /// browsers do: origin → (UDP port, seconds since the epoch it expires).
    pub fn alt_svc(&self) -> std::collections::HashMap<String, (u16, u64)> {
        std::fs::read(self.dir.join("alt-svc.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    /// Remember what an origin advertised (written whole, then renamed).
    pub fn save_alt_svc(&self, map: &std::collections::HashMap<String, (u16, u64)>) {
        let tmp = self.dir.join("alt-svc.json.tmp");
        if let Ok(b) = serde_json::to_vec(map)
            && std::fs::write(&tmp, b).is_ok()
        {
            let _ = std::fs::rename(&tmp, self.dir.join("alt-svc.json"));
        }
    }

    fn paths(&self, url: &str) -> (PathBuf, PathBuf) {
        let h = format!("{:x}", sha2::Sha256::digest(url.as_bytes()));
        (
            self.dir.join(format!("{h}.json")),
            self.dir.join(format!("{h}.body")),
        )
    }

    fn load(&self, url: &str) -> Option<Stored> {
        let (meta, body) = self.paths(url);
        let mut s: Stored = serde_json::from_slice(&std::fs::read(meta).ok()?).ok()?;
        s.body = Bytes::from(std::fs::read(body).ok()?);
        Some(s)
    }

    /// Look up a GET request.
    pub fn before(&self, req: &http::request::Parts) -> Before {
        let Some(stored) = self.load(&req.uri.to_string()) else {
            return Before::Miss;
        };
        match stored.policy.before_request(req, SystemTime::now()) {
            BeforeRequest::Fresh(_) => Before::Fresh(stored),
            BeforeRequest::Stale {
                request,
                matches: true,
            } => {
                let extra = ["if-none-match", "if-modified-since"]
                    .iter()
                    .filter_map(|n| {
                        request
                            .headers
                            .get(*n)
                            .and_then(|v| v.to_str().ok())
                            .map(|v| (n.to_string(), v.to_string()))
                    })
                    .collect::<Vec<_>>();
                if extra.is_empty() {
                    Before::Miss
                } else {
                    Before::Revalidate(stored, extra)
                }
            }
            BeforeRequest::Stale { .. } => Before::Miss,
        }
    }

    /// After a network response: store it (when allowed) or, for a 304 to a
    /// revalidation, refresh the stored entry. Returns the entry to serve for a 304.
    pub fn after(
        &self,
        req: &http::request::Parts,
        res: &http::response::Parts,
        body: &Bytes,
        old: Option<Stored>,
    ) -> Option<Stored> {
        let now = SystemTime::now();
        let headers = |h: &http::HeaderMap| {
            h.iter()
                .filter(|(k, _)| {
                    *k != http::header::CONTENT_ENCODING
                        && *k != http::header::CONTENT_LENGTH
                        && *k != http::header::TRANSFER_ENCODING
                })
                .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
                .collect::<Vec<_>>()
        };
        if res.status == http::StatusCode::NOT_MODIFIED
            && let Some(old) = old
        {
            if let AfterResponse::NotModified(policy, parts) =
                old.policy.after_response(req, res, now)
            {
                let fresh = Stored {
                    policy,
                    status: old.status,
                    headers: headers(&parts.headers),
                    body: old.body.clone(),
                };
                self.save(&req.uri.to_string(), &fresh);
                return Some(fresh);
            }
            return None;
        }
        let policy = CachePolicy::new_options(req, res, now, opts());
        if policy.is_storable() && res.status == http::StatusCode::OK {
            self.save(
                &req.uri.to_string(),
                &Stored {
                    policy,
                    status: res.status.as_u16(),
                    headers: headers(&res.headers),
                    body: body.clone(),
                },
            );
        }
        None
    }

    fn save(&self, url: &str, s: &Stored) {
        let (meta, body) = self.paths(url);
        if let Ok(m) = serde_json::to_vec(s) {
            let _ = std::fs::write(body, &s.body);
            let _ = std::fs::write(meta, m);
        }
    }
}
