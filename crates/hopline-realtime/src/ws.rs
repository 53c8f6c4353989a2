//! WebSocket (RFC 6455) for the server side, with no I/O: the opening handshake's checks
//! and answer, permessage-deflate (RFC 7692) negotiation and its per-message
//! (de)compression with or without context takeover, and a strict frame decoder:
//! reserved bits, opcodes, client masking, control-frame limits, fragmentation, UTF-8
//! of text (also across fragments and after inflation), close codes, and the message
//! size limit checked from the length header before any payload is buffered (a frame
//! announcing 1 GiB allocates nothing).
//!
//! Why not a crate: tungstenite and fastwebsockets do the framing well but neither ships
//! permessage-deflate (tungstenite's request has been open since 2017), and the hub's
//! fan-out wants to write one shared, pre-encoded frame to thousands of sockets, which
//! a per-connection sink API does not allow. The codec is small, and the tests check it
//! against tungstenite as an independent peer.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

/// The GUID of RFC 6455 §1.3.
const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Largest payload of a control frame.
pub const MAX_CONTROL_PAYLOAD: usize = 125;

/// Close codes hopline sends.
pub mod code {
    /// Normal closure.
    pub const NORMAL: u16 = 1000;
    /// The server is going away (shutdown).
    pub const GOING_AWAY: u16 = 1001;
    /// Protocol error.
    pub const PROTOCOL: u16 = 1002;
    /// Data that is not consistent with the message type (bad UTF-8).
    pub const INVALID_DATA: u16 = 1007;
    /// Policy violation (e.g. a slow consumer, a forbidden channel).
    pub const POLICY: u16 = 1008;
    /// Message too big.
    pub const TOO_BIG: u16 = 1009;
    /// Internal error (e.g. the engine is unavailable).
    pub const INTERNAL: u16 = 1011;
    /// hopline's own: the connection fell behind its send queue (slow consumer).
    pub const SLOW_CONSUMER: u16 = 4008;
}

/// A breach of the protocol by the peer: close with `code`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Violation {
    /// The close code to send.
    pub code: u16,
    /// Why (sent as the close reason).
    pub reason: &'static str,
}

const fn violation(code: u16, reason: &'static str) -> Violation {
    Violation { code, reason }
}

/// Frame opcodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opcode {
    /// Continuation of a fragmented message.
    Continuation,
    /// A text message (UTF-8).
    Text,
    /// A binary message.
    Binary,
    /// Close.
    Close,
    /// Ping.
    Ping,
    /// Pong.
    Pong,
}

impl Opcode {
    fn from_bits(b: u8) -> Option<Opcode> {
        Some(match b {
            0 => Opcode::Continuation,
            1 => Opcode::Text,
            2 => Opcode::Binary,
            8 => Opcode::Close,
            9 => Opcode::Ping,
            10 => Opcode::Pong,
            _ => return None,
        })
    }

    fn bits(self) -> u8 {
        match self {
            Opcode::Continuation => 0,
            Opcode::Text => 1,
            Opcode::Binary => 2,
            Opcode::Close => 8,
            Opcode::Ping => 9,
            Opcode::Pong => 10,
        }
    }

    fn is_control(self) -> bool {
        matches!(self, Opcode::Close | Opcode::Ping | Opcode::Pong)
    }
}

/// A whole message from the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// Text (valid UTF-8).
    Text(Bytes),
    /// Binary.
    Binary(Bytes),
    /// Ping with its payload.
    Ping(Bytes),
    /// Pong with its payload.
    Pong(Bytes),
    /// Close, with the code and reason when the peer sent one.
    Close(Option<(u16, String)>),
}

/// Is `code` one a peer may send in a close frame (RFC 6455 §7.4)?
pub fn valid_close_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1011 | 3000..=4999)
}

// ---------------------------------------------------------------------------------
// handshake

/// `Sec-WebSocket-Accept` for a `Sec-WebSocket-Key`.
pub fn accept_key(key: &str) -> String {
    use base64::Engine;
    use sha1::Digest;
    let mut h = sha1::Sha1::new();
    h.update(key.trim().as_bytes());
    h.update(GUID.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(h.finalize())
}

/// Is `key` a valid `Sec-WebSocket-Key` (base64 of 16 bytes)?
pub fn valid_key(key: &str) -> bool {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(key.trim())
        .is_ok_and(|k| k.len() == 16)
}

/// permessage-deflate parameters agreed with a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Deflate {
    /// The server resets its compressor after each message.
    pub server_no_context_takeover: bool,
    /// The client resets its compressor after each message (the server its inflater).
    pub client_no_context_takeover: bool,
}

impl Deflate {
    /// The `Sec-WebSocket-Extensions` answer.
    pub fn response(&self) -> String {
        let mut s = String::from("permessage-deflate");
        if self.server_no_context_takeover {
            s.push_str("; server_no_context_takeover");
        }
        if self.client_no_context_takeover {
            s.push_str("; client_no_context_takeover");
        }
        s
    }
}

/// Pick the first permessage-deflate offer hopline can honour from the client's
/// `Sec-WebSocket-Extensions` values (RFC 7692 §5). Offers asking the server for a
/// window smaller than 15 bits are declined (the compressor always uses 32 KiB);
/// `client_max_window_bits` is a hint the inflater needs nothing for.
pub fn negotiate_deflate<'a>(offers: impl Iterator<Item = &'a str>) -> Option<Deflate> {
    for value in offers {
        'offer: for offer in value.split(',') {
            let mut params = offer.split(';').map(str::trim);
            if !params
                .next()
                .is_some_and(|n| n.eq_ignore_ascii_case("permessage-deflate"))
            {
                continue;
            }
            let mut d = Deflate::default();
            let mut seen: Vec<String> = Vec::new();
            for p in params {
                if p.is_empty() {
                    continue;
                }
                let (name, value) = match p.split_once('=') {
                    Some((n, v)) => (n.trim(), Some(v.trim().trim_matches('"'))),
                    None => (p, None),
                };
                let name = name.to_ascii_lowercase();
                if seen.contains(&name) {
                    continue 'offer; // a parameter twice: decline this offer
                }
                seen.push(name.clone());
                match (name.as_str(), value) {
                    ("server_no_context_takeover", None) => d.server_no_context_takeover = true,
                    ("client_no_context_takeover", None) => d.client_no_context_takeover = true,
                    ("server_max_window_bits", Some(v)) => {
                        if v != "15" {
                            continue 'offer;
                        }
                    }
                    ("client_max_window_bits", None) => {}
                    ("client_max_window_bits", Some(v)) => {
                        if !v.parse::<u8>().is_ok_and(|b| (8..=15).contains(&b)) {
                            continue 'offer;
                        }
                    }
                    _ => continue 'offer,
                }
            }
            return Some(d);
        }
    }
    None
}

// ---------------------------------------------------------------------------------
// encoding (server → client: never masked)

/// Append one frame to `out`.
pub fn encode_frame(out: &mut BytesMut, fin: bool, rsv1: bool, opcode: Opcode, payload: &[u8]) {
    let b0 = (u8::from(fin) << 7) | (u8::from(rsv1) << 6) | opcode.bits();
    out.reserve(payload.len() + 10);
    out.put_u8(b0);
    let len = payload.len();
    if len < 126 {
        out.put_u8(len as u8);
    } else if len <= u16::MAX as usize {
        out.put_u8(126);
        out.put_u16(len as u16);
    } else {
        out.put_u8(127);
        out.put_u64(len as u64);
    }
    out.put_slice(payload);
}

/// One unfragmented frame as shared bytes.
pub fn frame(opcode: Opcode, payload: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(payload.len() + 10);
    encode_frame(&mut out, true, false, opcode, payload);
    out.freeze()
}

/// A close frame with `code` and `reason` (cut to fit a control frame).
pub fn close_frame(code: u16, reason: &str) -> Bytes {
    let mut payload = Vec::with_capacity(2 + reason.len());
    payload.extend_from_slice(&code.to_be_bytes());
    let mut end = reason.len().min(MAX_CONTROL_PAYLOAD - 2);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    payload.extend_from_slice(&reason.as_bytes()[..end]);
    frame(Opcode::Close, &payload)
}

/// The server's compressor for one connection.
pub struct Deflater {
    c: Compress,
    reset_each: bool,
}

impl std::fmt::Debug for Deflater {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Deflater")
    }
}

impl Deflater {
    /// A compressor for the agreed parameters.
    pub fn new(d: Deflate) -> Deflater {
        Deflater {
            c: Compress::new(Compression::fast(), false),
            reset_each: d.server_no_context_takeover,
        }
    }

    /// One compressed text/binary message frame (RSV1 set) appended to `out`.
    pub fn encode(&mut self, out: &mut BytesMut, opcode: Opcode, payload: &[u8]) {
        let mut z: Vec<u8> = Vec::with_capacity(payload.len() / 2 + 64);
        let mut input = payload;
        loop {
            if z.capacity() - z.len() < 64 {
                z.reserve(z.capacity().max(256));
            }
            let before_in = self.c.total_in();
            let status = self
                .c
                .compress_vec(input, &mut z, FlushCompress::Sync)
                .expect("deflate of in-memory data cannot fail");
            let used = (self.c.total_in() - before_in) as usize;
            input = &input[used..];
            // a sync flush is complete when the output ends in the empty stored block
            if input.is_empty() && z.ends_with(&[0, 0, 0xff, 0xff]) {
                break;
            }
            if matches!(status, Status::StreamEnd) {
                break;
            }
        }
        if z.ends_with(&[0, 0, 0xff, 0xff]) {
            z.truncate(z.len() - 4);
        }
        if self.reset_each {
            self.c.reset();
        }
        encode_frame(out, true, true, opcode, &z);
    }
}

/// The server's inflater for one connection.
struct Inflater {
    d: Decompress,
    reset_each: bool,
}

impl Inflater {
    fn inflate(&mut self, data: &[u8], max: usize) -> Result<Vec<u8>, Violation> {
        const TAIL: [u8; 4] = [0, 0, 0xff, 0xff];
        let mut out: Vec<u8> = Vec::with_capacity((data.len() * 3).clamp(64, max.max(64)));
        for part in [data, &TAIL[..]] {
            let mut input = part;
            while !input.is_empty() {
                if out.len() > max {
                    return Err(violation(code::TOO_BIG, "message too big"));
                }
                if out.capacity() == out.len() {
                    out.reserve(out.len().clamp(256, 64 * 1024));
                }
                let before_in = self.d.total_in();
                let before_out = self.d.total_out();
                self.d
                    .decompress_vec(input, &mut out, FlushDecompress::Sync)
                    .map_err(|_| violation(code::INVALID_DATA, "bad deflate data"))?;
                let used = (self.d.total_in() - before_in) as usize;
                let made = (self.d.total_out() - before_out) as usize;
                input = &input[used..];
                if used == 0 && made == 0 && out.capacity() > out.len() {
                    return Err(violation(code::INVALID_DATA, "bad deflate data"));
                }
            }
        }
        // drain what the inflater still holds
        loop {
            if out.len() > max {
                return Err(violation(code::TOO_BIG, "message too big"));
            }
            if out.capacity() == out.len() {
                out.reserve(out.len().clamp(256, 64 * 1024));
            }
            let before_out = self.d.total_out();
            self.d
                .decompress_vec(&[], &mut out, FlushDecompress::Sync)
                .map_err(|_| violation(code::INVALID_DATA, "bad deflate data"))?;
            if self.d.total_out() == before_out {
                break;
            }
        }
        if out.len() > max {
            return Err(violation(code::TOO_BIG, "message too big"));
        }
        if self.reset_each {
            self.d.reset(false);
        }
        Ok(out)
    }
}

// ---------------------------------------------------------------------------------
// decoding (client → server)

struct Partial {
    opcode: Opcode,
    compressed: bool,
    data: Vec<u8>,
    /// Bytes of `data` already known to be valid UTF-8 (text, uncompressed).
    checked: usize,
}

/// Reads client frames into whole messages, strictly.
pub struct Decoder {
    max_message: usize,
    inflater: Option<Inflater>,
    partial: Option<Partial>,
}

impl std::fmt::Debug for Decoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decoder")
            .field("max_message", &self.max_message)
            .finish_non_exhaustive()
    }
}

/// Check that `data[from..]` is UTF-8 so far; an incomplete last character is fine
/// unless `complete`. Returns how far it is known valid.
fn check_utf8(data: &[u8], from: usize, complete: bool) -> Result<usize, Violation> {
    match std::str::from_utf8(&data[from..]) {
        Ok(_) => Ok(data.len()),
        Err(e) if e.error_len().is_none() && !complete => Ok(from + e.valid_up_to()),
        Err(_) => Err(violation(code::INVALID_DATA, "text is not valid UTF-8")),
    }
}

impl Decoder {
    /// A decoder for messages of at most `max_message` bytes, inflating per `deflate`.
    pub fn new(max_message: usize, deflate: Option<Deflate>) -> Decoder {
        Decoder {
            max_message,
            inflater: deflate.map(|d| Inflater {
                d: Decompress::new(false),
                reset_each: d.client_no_context_takeover,
            }),
            partial: None,
        }
    }

    /// Bytes a caller should be ready to buffer for the frame at the front of `buf`
    /// (`None` when its header is not complete yet).
    pub fn frame_len(buf: &[u8]) -> Option<usize> {
        let (_, _, _, _, len, hlen) = parse_header(buf).ok()??;
        Some(hlen + len as usize)
    }

    /// Take the next whole message out of `buf` (consuming its frames), `Ok(None)` when
    /// more bytes are needed, or the violation to close with.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Message>, Violation> {
        loop {
            let Some((fin, rsv, opcode_bits, mask, len, hlen)) = parse_header(buf)? else {
                return Ok(None);
            };
            let rsv1 = rsv & 0b100 != 0;
            if rsv & 0b011 != 0 {
                return Err(violation(code::PROTOCOL, "reserved bits set"));
            }
            let opcode = Opcode::from_bits(opcode_bits)
                .ok_or(violation(code::PROTOCOL, "unknown opcode"))?;
            let Some(mask) = mask else {
                return Err(violation(code::PROTOCOL, "client frames must be masked"));
            };
            if opcode.is_control() {
                if !fin {
                    return Err(violation(code::PROTOCOL, "fragmented control frame"));
                }
                if len > MAX_CONTROL_PAYLOAD as u64 {
                    return Err(violation(code::PROTOCOL, "control frame over 125 bytes"));
                }
                if rsv1 {
                    return Err(violation(code::PROTOCOL, "RSV1 on a control frame"));
                }
            } else {
                match (opcode, &self.partial) {
                    (Opcode::Continuation, None) => {
                        return Err(violation(code::PROTOCOL, "continuation without a message"));
                    }
                    (Opcode::Text | Opcode::Binary, Some(_)) => {
                        return Err(violation(
                            code::PROTOCOL,
                            "new message inside a fragmented one",
                        ));
                    }
                    _ => {}
                }
                if rsv1 && (self.inflater.is_none() || opcode == Opcode::Continuation) {
                    return Err(violation(code::PROTOCOL, "RSV1 without permessage-deflate"));
                }
                let so_far = self.partial.as_ref().map_or(0, |p| p.data.len()) as u64;
                if so_far.saturating_add(len) > self.max_message as u64 {
                    return Err(violation(code::TOO_BIG, "message too big"));
                }
            }
            let total = hlen + len as usize;
            if buf.len() < total {
                return Ok(None);
            }
            buf.advance(hlen);
            let mut payload = buf.split_to(len as usize);
            unmask(&mut payload, mask);
            match opcode {
                Opcode::Ping => return Ok(Some(Message::Ping(payload.freeze()))),
                Opcode::Pong => return Ok(Some(Message::Pong(payload.freeze()))),
                Opcode::Close => return parse_close(&payload).map(|c| Some(Message::Close(c))),
                Opcode::Text | Opcode::Binary | Opcode::Continuation => {
                    let p = self.partial.get_or_insert_with(|| Partial {
                        opcode,
                        compressed: rsv1,
                        data: Vec::new(),
                        checked: 0,
                    });
                    p.data.extend_from_slice(&payload);
                    if p.opcode == Opcode::Text && !p.compressed {
                        p.checked = check_utf8(&p.data, p.checked, fin)?;
                    }
                    if !fin {
                        continue;
                    }
                    let p = self.partial.take().expect("just set");
                    let data = if p.compressed {
                        let inflater = self.inflater.as_mut().expect("checked above");
                        let d = inflater.inflate(&p.data, self.max_message)?;
                        if p.opcode == Opcode::Text {
                            check_utf8(&d, 0, true)?;
                        }
                        d
                    } else {
                        p.data
                    };
                    let data = Bytes::from(data);
                    return Ok(Some(if p.opcode == Opcode::Text {
                        Message::Text(data)
                    } else {
                        Message::Binary(data)
                    }));
                }
            }
        }
    }
}

/// (fin, rsv bits, opcode bits, mask, payload length, header length)
type Header = (bool, u8, u8, Option<[u8; 4]>, u64, usize);

fn parse_header(buf: &[u8]) -> Result<Option<Header>, Violation> {
    if buf.len() < 2 {
        return Ok(None);
    }
    let fin = buf[0] & 0x80 != 0;
    let rsv = (buf[0] >> 4) & 0b111;
    let opcode = buf[0] & 0x0f;
    let masked = buf[1] & 0x80 != 0;
    let (len, mut at) = match buf[1] & 0x7f {
        126 => {
            if buf.len() < 4 {
                return Ok(None);
            }
            (u16::from_be_bytes([buf[2], buf[3]]) as u64, 4)
        }
        127 => {
            if buf.len() < 10 {
                return Ok(None);
            }
            let mut b = [0u8; 8];
            b.copy_from_slice(&buf[2..10]);
            let len = u64::from_be_bytes(b);
            if len >> 63 != 0 {
                return Err(violation(
                    code::PROTOCOL,
                    "64-bit length with the top bit set",
                ));
            }
            (len, 10)
        }
        n => (n as u64, 2),
    };
    let mask = if masked {
        if buf.len() < at + 4 {
            return Ok(None);
        }
        let m = [buf[at], buf[at + 1], buf[at + 2], buf[at + 3]];
        at += 4;
        Some(m)
    } else {
        None
    };
    Ok(Some((fin, rsv, opcode, mask, len, at)))
}

fn unmask(data: &mut [u8], mask: [u8; 4]) {
    let word = u32::from_ne_bytes(mask);
    let mut chunks = data.chunks_exact_mut(4);
    for c in &mut chunks {
        let v = u32::from_ne_bytes([c[0], c[1], c[2], c[3]]) ^ word;
        c.copy_from_slice(&v.to_ne_bytes());
    }
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= mask[i];
    }
}

fn parse_close(payload: &[u8]) -> Result<Option<(u16, String)>, Violation> {
    match payload.len() {
        0 => Ok(None),
        1 => Err(violation(code::PROTOCOL, "close payload of one byte")),
        _ => {
            let c = u16::from_be_bytes([payload[0], payload[1]]);
            if !valid_close_code(c) {
                return Err(violation(code::PROTOCOL, "invalid close code"));
            }
            let reason = std::str::from_utf8(&payload[2..])
                .map_err(|_| violation(code::INVALID_DATA, "close reason is not UTF-8"))?;
            Ok(Some((c, reason.to_string())))
        }
    }
}

/// A client frame (masked), for tests and the fuzz target.
pub fn client_frame(
    fin: bool,
    rsv1: bool,
    opcode_bits: u8,
    mask: [u8; 4],
    payload: &[u8],
) -> Vec<u8> {
    let mut out = BytesMut::new();
    out.put_u8((u8::from(fin) << 7) | (u8::from(rsv1) << 6) | (opcode_bits & 0x0f));
    let len = payload.len();
    if len < 126 {
        out.put_u8(0x80 | len as u8);
    } else if len <= u16::MAX as usize {
        out.put_u8(0x80 | 126);
        out.put_u16(len as u16);
    } else {
        out.put_u8(0x80 | 127);
        out.put_u64(len as u64);
    }
    out.put_slice(&mask);
    let mut p = payload.to_vec();
    unmask(&mut p, mask);
    out.put_slice(&p);
    out.to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const M: [u8; 4] = [0x12, 0x34, 0x56, 0x78];

    fn decode_all(d: &mut Decoder, bytes: &[u8]) -> Result<Vec<Message>, Violation> {
        let mut buf = BytesMut::from(bytes);
        let mut out = Vec::new();
        while let Some(m) = d.decode(&mut buf)? {
            out.push(m);
        }
        Ok(out)
    }

    fn err(bytes: &[u8]) -> u16 {
        decode_all(&mut Decoder::new(1 << 20, None), bytes)
            .expect_err("must be refused")
            .code
    }

    #[test]
    fn accept_key_of_the_rfc() {
        assert_eq!(
            accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
        assert!(valid_key("dGhlIHNhbXBsZSBub25jZQ=="));
        assert!(!valid_key("c2hvcnQ="));
    }

    #[test]
    fn messages_fragments_and_controls_between() {
        let mut bytes = client_frame(false, false, 1, M, "héllo ".as_bytes());
        bytes.extend(client_frame(true, false, 9, M, b"p"));
        // a two-byte character split across fragments
        let euro = "€".as_bytes();
        bytes.extend(client_frame(false, false, 0, M, &euro[..1]));
        bytes.extend(client_frame(true, false, 0, M, &euro[1..]));
        bytes.extend(client_frame(true, false, 2, M, &[0, 1, 2]));
        bytes.extend(client_frame(true, false, 8, M, &[0x03, 0xe8, b'o', b'k']));
        let got = decode_all(&mut Decoder::new(1024, None), &bytes).unwrap();
        assert_eq!(
            got,
            vec![
                Message::Ping(Bytes::from_static(b"p")),
                Message::Text(Bytes::from("héllo €")),
                Message::Binary(Bytes::from_static(&[0, 1, 2])),
                Message::Close(Some((1000, "ok".into()))),
            ]
        );
    }

    #[test]
    fn violations_get_their_close_codes() {
        // reserved bits, unknown opcode, unmasked
        assert_eq!(err(&[0xa1, 0x80, 0, 0, 0, 0]), code::PROTOCOL);
        assert_eq!(err(&client_frame(true, false, 3, M, b"")), code::PROTOCOL);
        assert_eq!(err(&[0x81, 0x01, b'a']), code::PROTOCOL);
        // RSV1 without deflate
        assert_eq!(err(&client_frame(true, true, 1, M, b"a")), code::PROTOCOL);
        // control frame over 125 bytes, fragmented control
        assert_eq!(
            err(&client_frame(true, false, 9, M, &[0; 126])),
            code::PROTOCOL
        );
        assert_eq!(err(&client_frame(false, false, 9, M, b"")), code::PROTOCOL);
        // continuation without a message; a new message inside one
        assert_eq!(err(&client_frame(true, false, 0, M, b"a")), code::PROTOCOL);
        let mut b = client_frame(false, false, 1, M, b"a");
        b.extend(client_frame(true, false, 1, M, b"b"));
        assert_eq!(err(&b), code::PROTOCOL);
        // invalid UTF-8, also when the bad byte comes in a later fragment
        assert_eq!(
            err(&client_frame(true, false, 1, M, &[0xff])),
            code::INVALID_DATA
        );
        let mut b = client_frame(false, false, 1, M, b"ok");
        b.extend(client_frame(false, false, 0, M, &[0xc3]));
        b.extend(client_frame(true, false, 0, M, &[0x28]));
        assert_eq!(err(&b), code::INVALID_DATA);
        // the first fragment alone already fails fast
        assert_eq!(
            decode_all(
                &mut Decoder::new(1024, None),
                &client_frame(false, false, 1, M, &[0xed, 0xa0, 0x80])
            )
            .unwrap_err()
            .code,
            code::INVALID_DATA
        );
        // close: one byte, 1005 and 999 are not sendable, bad reason
        assert_eq!(err(&client_frame(true, false, 8, M, &[3])), code::PROTOCOL);
        assert_eq!(
            err(&client_frame(true, false, 8, M, &1005u16.to_be_bytes())),
            code::PROTOCOL
        );
        assert_eq!(
            err(&client_frame(true, false, 8, M, &999u16.to_be_bytes())),
            code::PROTOCOL
        );
        let mut c = 1000u16.to_be_bytes().to_vec();
        c.push(0xff);
        assert_eq!(
            err(&client_frame(true, false, 8, M, &c)),
            code::INVALID_DATA
        );
        // 64-bit length with the top bit set
        let mut b = vec![0x82, 0x80 | 127];
        b.extend_from_slice(&(1u64 << 63).to_be_bytes());
        b.extend_from_slice(&M);
        assert_eq!(err(&b), code::PROTOCOL);
    }

    #[test]
    fn a_huge_length_is_refused_before_any_payload() {
        // announces 1 GiB; nothing follows
        let mut b = vec![0x82, 0x80 | 127];
        b.extend_from_slice(&(1u64 << 30).to_be_bytes());
        b.extend_from_slice(&M);
        let mut d = Decoder::new(64 * 1024, None);
        let mut buf = BytesMut::from(&b[..]);
        assert_eq!(d.decode(&mut buf).unwrap_err().code, code::TOO_BIG);
        // also when fragments add up past the limit
        let mut b = client_frame(false, false, 2, M, &[0; 600]);
        b.extend(client_frame(true, false, 0, M, &[0; 600]));
        assert_eq!(
            decode_all(&mut Decoder::new(1000, None), &b)
                .unwrap_err()
                .code,
            code::TOO_BIG
        );
    }

    #[test]
    fn deflate_negotiation() {
        let d = negotiate_deflate(["permessage-deflate; client_max_window_bits"].into_iter());
        assert_eq!(d, Some(Deflate::default()));
        let d = negotiate_deflate(
            ["permessage-deflate; server_max_window_bits=10, permessage-deflate; server_no_context_takeover"]
                .into_iter(),
        )
        .unwrap();
        assert!(d.server_no_context_takeover);
        assert_eq!(
            d.response(),
            "permessage-deflate; server_no_context_takeover"
        );
        assert_eq!(
            negotiate_deflate(["x-webkit-deflate-frame"].into_iter()),
            None
        );
        assert_eq!(
            negotiate_deflate(["permessage-deflate; bogus"].into_iter()),
            None
        );
        assert_eq!(
            negotiate_deflate(
                ["permessage-deflate; server_no_context_takeover; server_no_context_takeover"]
                    .into_iter()
            ),
            None
        );
    }

    /// A client-side compressor, as a browser would run it.
    fn client_deflate(c: &mut Compress, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(data.len() + 64);
        c.compress_vec(data, &mut out, FlushCompress::Sync).unwrap();
        assert!(out.ends_with(&[0, 0, 0xff, 0xff]));
        out.truncate(out.len() - 4);
        out
    }

    #[test]
    fn deflated_messages_with_and_without_context_takeover() {
        for takeover in [true, false] {
            let agreed = Deflate {
                server_no_context_takeover: !takeover,
                client_no_context_takeover: !takeover,
            };
            let mut d = Decoder::new(1 << 20, Some(agreed));
            let mut client = Compress::new(Compression::default(), false);
            let text = "the same words again and again ".repeat(20);
            for _ in 0..3 {
                let z = client_deflate(&mut client, text.as_bytes());
                if !takeover {
                    client.reset();
                }
                let got = decode_all(&mut d, &client_frame(true, true, 1, M, &z)).unwrap();
                assert_eq!(got, vec![Message::Text(Bytes::from(text.clone()))]);
            }
            // the server's frames inflate back with a plain inflater
            let mut server = Deflater::new(agreed);
            let mut inflate = Decompress::new(false);
            for _ in 0..3 {
                let mut out = BytesMut::new();
                server.encode(&mut out, Opcode::Text, text.as_bytes());
                assert_eq!(out[0], 0xc1, "FIN + RSV1 + text");
                let (_, _, _, _, len, hlen) = parse_header(&out).unwrap().unwrap();
                let mut z = out[hlen..hlen + len as usize].to_vec();
                z.extend_from_slice(&[0, 0, 0xff, 0xff]);
                let mut plain = Vec::with_capacity(text.len() + 16);
                inflate
                    .decompress_vec(&z, &mut plain, FlushDecompress::Sync)
                    .unwrap();
                assert_eq!(plain, text.as_bytes());
                if !takeover {
                    inflate.reset(false);
                }
            }
        }
    }

    #[test]
    fn a_deflate_bomb_is_cut_at_the_limit() {
        let mut client = Compress::new(Compression::best(), false);
        let z = client_deflate(&mut client, &vec![b'a'; 1 << 20]);
        assert!(z.len() < 4096);
        let mut d = Decoder::new(64 * 1024, Some(Deflate::default()));
        assert_eq!(
            decode_all(&mut d, &client_frame(true, true, 2, M, &z))
                .unwrap_err()
                .code,
            code::TOO_BIG
        );
    }

    proptest! {
        /// Any bytes: the decoder answers a message, "more", or a violation — never a
        /// panic — and a message split at any point decodes the same.
        #[test]
        fn any_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let mut d = Decoder::new(1024, Some(Deflate::default()));
            let mut buf = BytesMut::from(&bytes[..]);
            for _ in 0..50 {
                match d.decode(&mut buf) {
                    Ok(Some(_)) => continue,
                    _ => break,
                }
            }
        }

        #[test]
        fn split_anywhere_decodes_the_same(text in "\\PC{0,200}", cut in 0usize..400) {
            let bytes = client_frame(true, false, 1, M, text.as_bytes());
            let cut = cut.min(bytes.len());
            let mut d = Decoder::new(1 << 16, None);
            let mut buf = BytesMut::from(&bytes[..cut]);
            let first = d.decode(&mut buf).unwrap();
            let msg = match first {
                Some(m) => m,
                None => {
                    buf.extend_from_slice(&bytes[cut..]);
                    d.decode(&mut buf).unwrap().unwrap()
                }
            };
            prop_assert_eq!(msg, Message::Text(Bytes::from(text)));
        }
    }
}
