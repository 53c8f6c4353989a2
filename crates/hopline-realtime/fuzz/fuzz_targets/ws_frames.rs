//! The WebSocket frame decoder on arbitrary client bytes, with and without
//! permessage-deflate: it answers a message, "more", or a violation — never a panic, never
//! a message over the limit, never text that is not UTF-8. The first byte picks the
//! settings; the rest is fed in two cuts.
#![no_main]

use bytes::BytesMut;
use hopline_realtime::ws::{Decoder, Deflate, Message};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&knobs, rest)) = data.split_first() else {
        return;
    };
    let deflate = (knobs & 1 == 1).then_some(Deflate {
        server_no_context_takeover: knobs & 2 != 0,
        client_no_context_takeover: knobs & 4 != 0,
    });
    let max = 64 + (knobs as usize >> 3) * 512;
    let mut d = Decoder::new(max, deflate);
    let cut = if rest.is_empty() { 0 } else { (knobs as usize * 7) % rest.len() };
    let mut buf = BytesMut::new();
    for part in [&rest[..cut], &rest[cut..]] {
        buf.extend_from_slice(part);
        loop {
            match d.decode(&mut buf) {
                Ok(Some(m)) => match m {
                    Message::Text(t) => {
                        assert!(t.len() <= max);
                        assert!(std::str::from_utf8(&t).is_ok());
                    }
                    Message::Binary(b) => assert!(b.len() <= max),
                    Message::Ping(p) | Message::Pong(p) => assert!(p.len() <= 125),
                    Message::Close(_) => {}
                },
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
});
