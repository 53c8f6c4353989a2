//! The HTTP/1.1 codec: request heads (httparse, strict framing per RFC 9112 §6), field
//! offsets, `Content-Length` digits and the chunked decoder. Shared by the connection and
//! by the proxy's origin client, which reads response heads with it.

use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, StatusCode, Version};

/// Most header fields in one request head.
pub const MAX_HEADERS: usize = 100;

/// How a message body is framed on the wire, and how much of it is left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decoder {
    /// `Content-Length`: this many bytes left.
    Length(u64),
    /// Chunked, in this state.
    Chunked(Chunk),
    /// Everything until the connection closes (responses without a length only).
    UntilClose,
    /// The body is complete.
    Done,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chunk {
    /// Expecting a chunk-size line.
    Size,
    /// Inside chunk data: this many bytes left.
    Data(u64),
    /// Expecting the CRLF after chunk data.
    DataEnd,
    /// After the last chunk: trailer lines until an empty one.
    Trailers,
}

/// A body that breaks its framing.
#[derive(Debug, PartialEq, Eq)]
pub struct BadChunk(pub &'static str);

/// Longest chunk-size line (with extensions) or trailer line accepted.
pub const MAX_CHUNK_LINE: usize = 4096;
/// Most trailer bytes accepted.
pub const MAX_TRAILERS: usize = 16 * 1024;

impl Decoder {
    /// A chunked body, before its first chunk.
    pub fn chunked() -> Decoder {
        Decoder::Chunked(Chunk::Size)
    }

    /// Take the next piece of body from `buf`: `Ok(Some(bytes))` data, `Ok(None)` need
    /// more input (or done: see `self`). Consumes framing bytes as it goes.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Bytes>, BadChunk> {
        loop {
            match *self {
                Decoder::Done => return Ok(None),
                Decoder::UntilClose => {
                    if buf.is_empty() {
                        return Ok(None);
                    }
                    return Ok(Some(buf.split().freeze()));
                }
                Decoder::Length(0) => {
                    *self = Decoder::Done;
                    return Ok(None);
                }
                Decoder::Length(n) => {
                    if buf.is_empty() {
                        return Ok(None);
                    }
                    let take = (n.min(buf.len() as u64)) as usize;
                    *self = Decoder::Length(n - take as u64);
                    return Ok(Some(buf.split_to(take).freeze()));
                }
                Decoder::Chunked(Chunk::Size) => {
                    let Some(eol) = find_crlf(buf) else {
                        if buf.len() > MAX_CHUNK_LINE {
                            return Err(BadChunk("chunk-size line too long"));
                        }
                        return Ok(None);
                    };
                    let line = buf.split_to(eol + 2);
                    let line = &line[..eol];
                    let size_part = match line.iter().position(|&b| b == b';') {
                        Some(i) => &line[..i],
                        None => line,
                    };
                    let size_part = trim_ows(size_part);
                    if size_part.is_empty() || size_part.len() > 16 {
                        return Err(BadChunk("bad chunk size"));
                    }
                    let mut size: u64 = 0;
                    for &b in size_part {
                        let d = (b as char).to_digit(16).ok_or(BadChunk("bad chunk size"))?;
                        size = size
                            .checked_mul(16)
                            .and_then(|s| s.checked_add(d as u64))
                            .ok_or(BadChunk("chunk size overflows"))?;
                    }
                    *self = if size == 0 {
                        Decoder::Chunked(Chunk::Trailers)
                    } else {
                        Decoder::Chunked(Chunk::Data(size))
                    };
                }
                Decoder::Chunked(Chunk::Data(n)) => {
                    if buf.is_empty() {
                        return Ok(None);
                    }
                    let take = (n.min(buf.len() as u64)) as usize;
                    let left = n - take as u64;
                    *self = if left == 0 {
                        Decoder::Chunked(Chunk::DataEnd)
                    } else {
                        Decoder::Chunked(Chunk::Data(left))
                    };
                    return Ok(Some(buf.split_to(take).freeze()));
                }
                Decoder::Chunked(Chunk::DataEnd) => {
                    if buf.len() < 2 {
                        return Ok(None);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err(BadChunk("chunk data not followed by CRLF"));
                    }
                    buf.advance(2);
                    *self = Decoder::Chunked(Chunk::Size);
                }
                Decoder::Chunked(Chunk::Trailers) => {
                    // Trailer fields are read and dropped; the section ends with an empty line.
                    let Some(eol) = find_crlf(buf) else {
                        if buf.len() > MAX_TRAILERS {
                            return Err(BadChunk("trailer section too long"));
                        }
                        return Ok(None);
                    };
                    buf.advance(eol + 2);
                    if eol == 0 {
                        *self = Decoder::Done;
                        return Ok(None);
                    }
                }
            }
        }
    }

    pub fn is_done(&self) -> bool {
        matches!(self, Decoder::Done | Decoder::Length(0))
    }
}

pub fn find_crlf(b: &[u8]) -> Option<usize> {
    b.windows(2).position(|w| w == b"\r\n")
}

pub fn trim_ows(mut b: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = b {
        b = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = b {
        b = rest;
    }
    b
}

// ---------------------------------------------------------------------------------
// request heads

/// A request head that cannot be served: the status that says why, the answer's text,
/// and what the head showed before it broke (for the access log).
pub struct Reject(pub StatusCode, pub &'static str, pub Box<Seen>);

impl Reject {
    /// Refuse the head `raw` (as the client sent it) with `status`.
    fn at(status: StatusCode, why: &'static str, raw: &[u8]) -> Reject {
        Reject(status, why, Box::new(Seen::of(raw)))
    }
}

/// What a refused head showed, for its access-log line (nginx logs its 400s with what it
/// had read): the request line once it reads as one, the Host (or the target's authority
/// in absolute form) and the User-Agent among the field lines that are whole. Read only
/// when a head is refused, from bytes that already failed to parse: every step checks,
/// nothing indexes blindly.
#[derive(Debug, Default)]
pub struct Seen {
    /// Method, target and version, when the request line is whole and well formed.
    pub line: Option<(Method, String, Version)>,
    pub host: Option<String>,
    pub user_agent: Option<String>,
}

impl Seen {
    pub fn of(raw: &[u8]) -> Seen {
        let mut rest = raw;
        let mut seen = Seen::default();
        let Some(first) = take_line(&mut rest) else {
            return seen;
        };
        seen.line = request_line(first);
        // the absolute form's authority replaces Host (RFC 9112 §3.2.2)
        seen.host = seen
            .line
            .as_ref()
            .and_then(|(_, target, _)| http::Uri::try_from(target.as_str()).ok())
            .and_then(|uri| uri.authority().map(|a| a.as_str().to_string()));
        while let Some(line) = take_line(&mut rest) {
            if line.is_empty() {
                break;
            }
            let Some(colon) = line.iter().position(|&b| b == b':') else {
                continue;
            };
            let (name, value) = (&line[..colon], trim_ows(&line[colon + 1..]));
            let text = || {
                HeaderValue::from_bytes(value)
                    .ok()
                    .and_then(|v| v.to_str().ok().map(str::to_string))
            };
            if name.eq_ignore_ascii_case(b"host") {
                if seen.host.is_none() && !value.is_empty() && value.iter().all(|&b| b > b' ') {
                    seen.host = text();
                }
            } else if name.eq_ignore_ascii_case(b"user-agent") && seen.user_agent.is_none() {
                seen.user_agent = text();
            }
        }
        seen
    }
}

/// The next whole line of `rest` (without its CRLF or LF), `None` if no line ends there.
fn take_line<'a>(rest: &mut &'a [u8]) -> Option<&'a [u8]> {
    let end = rest.iter().position(|&b| b == b'\n')?;
    let (line, after) = rest.split_at(end);
    *rest = after.get(1..).unwrap_or_default();
    Some(line.strip_suffix(b"\r").unwrap_or(line))
}

/// `method SP target SP HTTP/1.x`, strictly: a token, visible ASCII, a version this
/// engine speaks.
fn request_line(line: &[u8]) -> Option<(Method, String, Version)> {
    let mut parts = line.split(|&b| b == b' ');
    let (method, target, version) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || target.is_empty() || !target.iter().all(u8::is_ascii_graphic) {
        return None;
    }
    let version = match version {
        b"HTTP/1.1" => Version::HTTP_11,
        b"HTTP/1.0" => Version::HTTP_10,
        _ => return None,
    };
    let method = Method::from_bytes(method).ok()?;
    let target = std::str::from_utf8(target).ok()?.to_string();
    Some((method, target, version))
}

/// What a parsed head tells the connection.
pub struct Head {
    pub req: Request<()>,
    pub decoder: Decoder,
    pub keep_alive: bool,
    pub expect_continue: bool,
    pub upgrade: bool,
}

/// A `Content-Length` value (or one item of a list of them): digits only (RFC 9110
/// §8.6), within u64. Shared by the request parser and the proxy's response parser.
pub fn length_digits(v: &[u8]) -> Option<u64> {
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}

/// Where each header field's name and value sit in a parsed head, so that once the head
/// is frozen into `Bytes` the values share its bytes instead of being copied. Used for
/// request heads here and response heads by the proxy's origin client.
pub struct FieldOffsets {
    // (offsets fit u32: a head is at most max_header_bytes, itself far below 4 GiB)
    at: [(u32, u32, u32, u32); MAX_HEADERS],
    n: usize,
}

impl FieldOffsets {
    /// The fields httparse found in `buf` (at most [`MAX_HEADERS`]).
    pub fn of(buf: &[u8], headers: &[httparse::Header<'_>]) -> FieldOffsets {
        let base = buf.as_ptr() as usize;
        let mut at = [(0, 0, 0, 0); MAX_HEADERS];
        for (slot, h) in at.iter_mut().zip(headers) {
            *slot = (
                (h.name.as_ptr() as usize - base) as u32,
                h.name.len() as u32,
                (h.value.as_ptr() as usize - base) as u32,
                h.value.len() as u32,
            );
        }
        FieldOffsets {
            at,
            n: headers.len().min(MAX_HEADERS),
        }
    }

    /// How many fields the head has.
    pub fn len(&self) -> usize {
        self.n
    }

    /// The head has no fields.
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// Field `i`, its value sharing `head` (the same bytes `of` saw, frozen).
    pub fn field(&self, head: &Bytes, i: usize) -> Result<(HeaderName, HeaderValue), &'static str> {
        let (na, nl, va, vl) = self.at[i];
        let (na, nl, va, vl) = (na as usize, nl as usize, va as usize, vl as usize);
        let name = HeaderName::from_bytes(&head[na..na + nl]).map_err(|_| "bad header name\n")?;
        let value = HeaderValue::from_maybe_shared(head.slice(va..va + vl))
            .map_err(|_| "bad header value\n")?;
        Ok((name, value))
    }
}

/// Parse a complete head at the front of `buf` (consuming it), `Ok(None)` if more bytes
/// are needed.
pub fn parse_head(buf: &mut BytesMut, max_header_bytes: usize) -> Result<Option<Head>, Reject> {
    // RFC 9112 §2.2: ignore empty lines before a request line
    while buf.starts_with(b"\r\n") {
        buf.advance(2);
    }
    while buf.starts_with(b"\n") {
        buf.advance(1);
    }
    if buf.is_empty() {
        return Ok(None);
    }
    let mut headers =
        [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut []);
    let len = match parsed.parse_with_uninit_headers(buf, &mut headers) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            if buf.len() > max_header_bytes {
                return Err(Reject::at(
                    StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                    "request header section too large\n",
                    buf,
                ));
            }
            return Ok(None);
        }
        Err(httparse::Error::TooManyHeaders) => {
            return Err(Reject::at(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "too many request header fields\n",
                buf,
            ));
        }
        Err(_) => {
            return Err(Reject::at(
                StatusCode::BAD_REQUEST,
                "malformed request\n",
                buf,
            ));
        }
    };
    if len > max_header_bytes {
        return Err(Reject::at(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "request header section too large\n",
            buf,
        ));
    }
    let Ok(method) = Method::from_bytes(parsed.method.unwrap_or("").as_bytes()) else {
        return Err(Reject::at(StatusCode::BAD_REQUEST, "bad method\n", buf));
    };
    let version = match parsed.version {
        Some(1) => Version::HTTP_11,
        Some(0) => Version::HTTP_10,
        _ => {
            return Err(Reject::at(
                StatusCode::BAD_REQUEST,
                "unsupported HTTP version\n",
                buf,
            ));
        }
    };
    let path = parsed.path.unwrap_or("");
    let path_at = path.as_ptr() as usize - buf.as_ptr() as usize;
    let path_len = path.len();
    let fields = FieldOffsets::of(buf, parsed.headers);
    let head = buf.split_to(len).freeze();
    let bad = |why| Reject::at(StatusCode::BAD_REQUEST, why, &head);
    let uri = http::Uri::from_maybe_shared(head.slice(path_at..path_at + path_len))
        .map_err(|_| bad("bad request target\n"))?;
    let mut map = HeaderMap::with_capacity(fields.len());
    let mut content_length: Option<u64> = None;
    let mut chunked = false;
    let mut has_te = false;
    let mut conn_close = false;
    let mut conn_keep_alive = false;
    let mut conn_upgrade = false;
    let mut has_upgrade = false;
    let mut expect_continue = false;
    let mut hosts = 0u32;
    for i in 0..fields.len() {
        let (name, value) = fields.field(&head, i).map_err(bad)?;
        if name == header::HOST {
            hosts += 1;
            if hosts > 1 {
                // RFC 9112 §3.2: more than one Host is a bad request
                return Err(bad("more than one Host field\n"));
            }
        } else if name == header::CONTENT_LENGTH {
            for part in value.as_bytes().split(|&b| b == b',') {
                let v = length_digits(trim_ows(part)).ok_or_else(|| bad("bad Content-Length\n"))?;
                match content_length {
                    Some(prev) if prev != v => return Err(bad("conflicting Content-Length\n")),
                    _ => content_length = Some(v),
                }
            }
        } else if name == header::TRANSFER_ENCODING {
            has_te = true;
            // the last coding must be chunked (RFC 9112 §6.3 rule 4)
            let last = value
                .as_bytes()
                .rsplit(|&b| b == b',')
                .map(trim_ows)
                .find(|c| !c.is_empty());
            chunked = last.is_some_and(|c| c.eq_ignore_ascii_case(b"chunked"));
        } else if name == header::CONNECTION {
            for t in value.as_bytes().split(|&b| b == b',').map(trim_ows) {
                if t.eq_ignore_ascii_case(b"close") {
                    conn_close = true;
                } else if t.eq_ignore_ascii_case(b"keep-alive") {
                    conn_keep_alive = true;
                } else if t.eq_ignore_ascii_case(b"upgrade") {
                    conn_upgrade = true;
                }
            }
        } else if name == header::UPGRADE {
            has_upgrade = true;
        } else if name == header::EXPECT {
            expect_continue = value.as_bytes().eq_ignore_ascii_case(b"100-continue");
        }
        map.append(name, value);
    }
    let decoder = if has_te {
        if version == Version::HTTP_10 {
            return Err(bad("Transfer-Encoding is not allowed in HTTP/1.0\n"));
        }
        if content_length.is_some() {
            return Err(bad(
                "both Transfer-Encoding and Content-Length: refused (request smuggling)\n",
            ));
        }
        if !chunked {
            return Err(bad("the last transfer coding must be chunked\n"));
        }
        Decoder::Chunked(Chunk::Size)
    } else {
        match content_length {
            Some(0) | None => Decoder::Done,
            Some(n) => Decoder::Length(n),
        }
    };
    let keep_alive = match version {
        Version::HTTP_11 => !conn_close,
        _ => conn_keep_alive && !conn_close,
    };
    if method == Method::CONNECT {
        return Err(Reject::at(
            StatusCode::METHOD_NOT_ALLOWED,
            "CONNECT is not supported\n",
            &head,
        ));
    }
    if let Some(authority) = uri.authority() {
        // absolute form (RFC 9112 §3.2.2): the target's authority replaces any Host
        let v =
            HeaderValue::from_str(authority.as_str()).map_err(|_| bad("bad request target\n"))?;
        map.insert(header::HOST, v);
    } else if version == Version::HTTP_11
        && map
            .get(header::HOST)
            .is_none_or(|h| h.as_bytes().trim_ascii().is_empty())
    {
        // RFC 9112 §3.2: an HTTP/1.1 request without a (non-empty) Host is a bad request
        return Err(bad("an HTTP/1.1 request needs a Host field\n"));
    }
    let mut req = Request::new(());
    *req.method_mut() = method;
    *req.uri_mut() = uri;
    *req.version_mut() = version;
    *req.headers_mut() = map;
    Ok(Some(Head {
        req,
        decoder,
        keep_alive,
        expect_continue: expect_continue && version == Version::HTTP_11,
        upgrade: conn_upgrade && has_upgrade && version == Version::HTTP_11,
    }))
}
