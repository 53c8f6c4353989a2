//! An event as each transport sends it — a WebSocket text frame, an SSE block (also as
//! one HTTP/1.1 chunk), the JSON of poll answers — made once per event and shared by every
//! subscriber (kept in the event's [`Frames`](crate::channel_log::Frames)).

use bytes::{Bytes, BytesMut};

use crate::channel_log::Event;

/// JSON string literal of possibly binary data (lossy UTF-8).
pub(crate) fn json_string(data: &[u8]) -> String {
    serde_json::to_string(&String::from_utf8_lossy(data)).unwrap_or_else(|_| "\"\"".into())
}

/// The event as a WebSocket message's JSON.
pub(crate) fn ws_json(channel: &str, epoch: &str, e: &Event) -> String {
    format!(
        "{{\"channel\":{},\"offset\":{},\"epoch\":{},\"data\":{}}}",
        json_string(channel.as_bytes()),
        e.offset,
        json_string(epoch.as_bytes()),
        json_string(&e.data)
    )
}

/// The event's shared WebSocket text frame.
pub(crate) fn ws_frame(channel: &str, epoch: &str, e: &Event) -> Bytes {
    e.frames
        .ws
        .get_or_init(|| {
            crate::ws::frame(
                crate::ws::Opcode::Text,
                ws_json(channel, epoch, e).as_bytes(),
            )
        })
        .clone()
}

/// The event's shared SSE block.
pub(crate) fn sse_frame(epoch: &str, e: &Event) -> Bytes {
    e.frames
        .sse
        .get_or_init(|| {
            let text = String::from_utf8_lossy(&e.data);
            let mut s = String::with_capacity(text.len() + 48);
            s.push_str("id: ");
            s.push_str(epoch);
            s.push(':');
            s.push_str(itoa::Buffer::new().format(e.offset));
            s.push('\n');
            // every line of the data is a data: line (CR, LF and CRLF end lines)
            for line in text.split('\n') {
                s.push_str("data: ");
                s.push_str(line.strip_suffix('\r').unwrap_or(line));
                s.push('\n');
            }
            s.push('\n');
            Bytes::from(s)
        })
        .clone()
}

/// The event's SSE block as one HTTP/1.1 chunk (shared).
pub(crate) fn sse_chunk(epoch: &str, e: &Event) -> Bytes {
    e.frames
        .sse_chunk
        .get_or_init(|| chunk(&sse_frame(epoch, e)))
        .clone()
}

/// The SSE event that tells a subscriber its channel was deleted (the stream ends).
pub(crate) fn sse_deleted(channel: &str) -> Bytes {
    Bytes::from(format!(
        "event: deleted\ndata: {{\"channel\":{}}}\n\n",
        json_string(channel.as_bytes())
    ))
}

/// `data` as one HTTP/1.1 chunk.
pub(crate) fn chunk(data: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(data.len() + 12);
    out.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
    out.freeze()
}

/// The event's shared JSON of poll answers.
pub(crate) fn poll_json(e: &Event) -> Bytes {
    e.frames
        .json
        .get_or_init(|| {
            Bytes::from(format!(
                "{{\"offset\":{},\"data\":{}}}",
                e.offset,
                json_string(&e.data)
            ))
        })
        .clone()
}
