//! Response compression by `Accept-Encoding`: br, zstd and gzip, only for compressible
//! types above a small size. In-memory bodies (cached files, fixed responses) are
//! compressed once and the variants kept; streams are compressed on the fly.

use std::sync::OnceLock;

use bytes::Bytes;
use http::HeaderValue;

/// Bodies smaller than this are sent as they are.
pub const MIN_SIZE: u64 = 256;

/// A content coding hopline can produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// Brotli.
    Br,
    /// Zstandard.
    Zstd,
    /// gzip.
    Gzip,
}

impl Encoding {
    /// The `Content-Encoding` token.
    pub fn as_str(self) -> &'static str {
        match self {
            Encoding::Br => "br",
            Encoding::Zstd => "zstd",
            Encoding::Gzip => "gzip",
        }
    }

    /// The header value, static.
    pub fn header(self) -> HeaderValue {
        HeaderValue::from_static(self.as_str())
    }

    fn index(self) -> usize {
        match self {
            Encoding::Br => 0,
            Encoding::Zstd => 1,
            Encoding::Gzip => 2,
        }
    }
}

/// Pick the best coding the client accepts (RFC 9110 §12.5.3 q-values; on a tie
/// br > zstd > gzip). `None` = send identity.
pub fn negotiate(accept_encoding: Option<&HeaderValue>) -> Option<Encoding> {
    let value = accept_encoding?.to_str().ok()?;
    let mut q = [None::<f32>; 3]; // br, zstd, gzip
    let mut star: Option<f32> = None;
    for item in value.split(',') {
        let mut parts = item.split(';');
        let coding = parts.next().unwrap_or("").trim();
        let mut weight = 1.0f32;
        for p in parts {
            let p = p.trim();
            if let Some(v) = p.strip_prefix("q=").or_else(|| p.strip_prefix("Q=")) {
                weight = v.trim().parse().unwrap_or(0.0);
            }
        }
        let slot = if coding.eq_ignore_ascii_case("br") {
            Some(0)
        } else if coding.eq_ignore_ascii_case("zstd") {
            Some(1)
        } else if coding.eq_ignore_ascii_case("gzip") || coding.eq_ignore_ascii_case("x-gzip") {
            Some(2)
        } else if coding == "*" {
            star = Some(weight);
            None
        } else {
            None
        };
        if let Some(i) = slot {
            q[i] = Some(weight);
        }
    }
    let order = [Encoding::Br, Encoding::Zstd, Encoding::Gzip];
    let mut best: Option<(Encoding, f32)> = None;
    for e in order {
        let w = q[e.index()].or(star).unwrap_or(0.0);
        if w > 0.0 && best.is_none_or(|(_, bw)| w > bw) {
            best = Some((e, w));
        }
    }
    best.map(|(e, _)| e)
}

/// Is a media type worth compressing?
pub fn compressible(content_type: &str) -> bool {
    let ct = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    ct.starts_with("text/")
        || ct.ends_with("+json")
        || ct.ends_with("+xml")
        || matches!(
            ct.as_str(),
            "application/javascript"
                | "application/json"
                | "application/xml"
                | "application/wasm"
                | "application/manifest+json"
                | "application/x-javascript"
                | "image/svg+xml"
                | "image/x-icon"
                | "image/vnd.microsoft.icon"
                | "font/ttf"
                | "font/otf"
                | "application/vnd.ms-fontobject"
        )
}

/// Compress a whole buffer (blocking; call off the async threads for big inputs).
pub fn compress_bytes(data: &[u8], enc: Encoding) -> std::io::Result<Vec<u8>> {
    use std::io::Write;
    match enc {
        Encoding::Gzip => {
            let mut e = flate2::write::GzEncoder::new(
                Vec::with_capacity(data.len() / 3),
                flate2::Compression::new(6),
            );
            e.write_all(data)?;
            e.finish()
        }
        Encoding::Br => {
            let mut out = Vec::with_capacity(data.len() / 3);
            {
                let mut w = brotli::CompressorWriter::new(&mut out, 16 * 1024, 6, 22);
                w.write_all(data)?;
                w.flush()?;
            }
            Ok(out)
        }
        Encoding::Zstd => zstd::bulk::compress(data, 6),
    }
}

/// An in-memory body and its compressed variants, made on first use and kept.
#[derive(Debug)]
pub struct Variants {
    /// The identity bytes.
    pub raw: Bytes,
    slots: [OnceLock<Option<Bytes>>; 3],
}

impl Variants {
    /// Wrap identity bytes.
    pub fn new(raw: Bytes) -> Variants {
        Variants {
            raw,
            slots: Default::default(),
        }
    }

    /// The body in `enc`, if compressing made it smaller. Compresses on first call
    /// (callers run this inside `block_in_place`/`spawn_blocking` for large bodies).
    pub fn get(&self, enc: Encoding) -> Option<Bytes> {
        self.slots[enc.index()]
            .get_or_init(|| {
                let out = compress_bytes(&self.raw, enc).ok()?;
                (out.len() < self.raw.len()).then(|| Bytes::from(out))
            })
            .clone()
    }

    /// The variant if it was already computed (never compresses).
    pub fn ready(&self, enc: Encoding) -> Option<Option<Bytes>> {
        self.slots[enc.index()].get().cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn hv(s: &str) -> HeaderValue {
        HeaderValue::from_str(s).unwrap()
    }

    #[test]
    fn negotiation_follows_q_values_and_preference() {
        assert_eq!(negotiate(None), None);
        assert_eq!(negotiate(Some(&hv("gzip"))), Some(Encoding::Gzip));
        assert_eq!(
            negotiate(Some(&hv("gzip, deflate, br, zstd"))),
            Some(Encoding::Br)
        );
        assert_eq!(negotiate(Some(&hv("gzip, zstd"))), Some(Encoding::Zstd));
        assert_eq!(
            negotiate(Some(&hv("br;q=0.5, gzip;q=0.9"))),
            Some(Encoding::Gzip)
        );
        assert_eq!(negotiate(Some(&hv("br;q=0, gzip;q=0"))), None);
        assert_eq!(negotiate(Some(&hv("identity"))), None);
        assert_eq!(negotiate(Some(&hv("*"))), Some(Encoding::Br));
        assert_eq!(
            negotiate(Some(&hv("*;q=0.1, br;q=0"))),
            Some(Encoding::Zstd)
        );
        assert_eq!(negotiate(Some(&hv("deflate"))), None);
    }

    #[test]
    fn compressible_types() {
        assert!(compressible("text/html; charset=utf-8"));
        assert!(compressible("application/javascript"));
        assert!(compressible("application/ld+json"));
        assert!(compressible("image/svg+xml"));
        assert!(!compressible("image/png"));
        assert!(!compressible("font/woff2"));
        assert!(!compressible("application/octet-stream"));
    }

    #[test]
    fn variants_round_trip() {
        let text = "hello hopline ".repeat(200);
        let v = Variants::new(Bytes::from(text.clone()));
        let gz = v.get(Encoding::Gzip).unwrap();
        let mut out = String::new();
        flate2::read::GzDecoder::new(&gz[..])
            .read_to_string(&mut out)
            .unwrap();
        assert_eq!(out, text);
        let br = v.get(Encoding::Br).unwrap();
        let mut out = String::new();
        brotli::Decompressor::new(&br[..], 4096)
            .read_to_string(&mut out)
            .unwrap();
        assert_eq!(out, text);
        let zs = v.get(Encoding::Zstd).unwrap();
        assert_eq!(
            zstd::bulk::decompress(&zs, 1 << 20).unwrap(),
            text.as_bytes()
        );
        // incompressible input yields no variant
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let noise: Vec<u8> = (0..1000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect();
        let v = Variants::new(Bytes::from(noise));
        assert!(v.get(Encoding::Gzip).is_none());
    }
}
