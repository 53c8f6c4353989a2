//! DNS messages on the wire: decoding untrusted packets (malformed → FORMERR or
//! dropped, never a panic), building responses, and fitting them into the client's UDP
//! payload size (truncation sets TC so the client retries over TCP).

use hickory_proto::op::{Edns, Message, MessageType, OpCode, ResponseCode};

/// UDP payload we accept and advertise with EDNS0.
pub const EDNS_PAYLOAD: u16 = 1232;

/// The outcome of decoding a query packet.
pub enum Decoded {
    /// A usable query.
    Query(Box<Message>),
    /// Malformed but with a readable ID: answer FORMERR with this ID.
    FormErr(u16),
    /// Not even a header: drop it.
    Drop,
}

/// Decode a packet from the network.
pub fn decode_query(packet: &[u8]) -> Decoded {
    match Message::from_vec(packet) {
        Ok(m) if m.metadata.message_type == MessageType::Query => {
            if m.queries.len() != 1 {
                return Decoded::FormErr(m.metadata.id);
            }
            Decoded::Query(Box::new(m))
        }
        Ok(_) => Decoded::Drop, // a response sent to a server: ignore
        Err(_) if packet.len() >= 12 && packet[2] & 0x80 == 0 => {
            Decoded::FormErr(u16::from_be_bytes([packet[0], packet[1]]))
        }
        Err(_) => Decoded::Drop,
    }
}

/// A response skeleton for a query: same ID, opcode, question and RD.
pub fn response_for(q: &Message, rcode: ResponseCode) -> Message {
    let mut r = Message::response(q.metadata.id, q.metadata.op_code);
    r.metadata.recursion_desired = q.metadata.recursion_desired;
    r.metadata.response_code = rcode;
    r.queries = q.queries.clone();
    if q.edns.is_some() {
        let mut e = Edns::new();
        e.set_max_payload(EDNS_PAYLOAD);
        r.set_edns(e);
    }
    r
}

/// What none of our servers answers as asked, checked before any lookup (RFC 1035 §4.1.1,
/// RFC 6891 §6.1.3, RFC 5936 §4.2): another opcode (UPDATE, NOTIFY, IQUERY, STATUS…) →
/// NOTIMP, never a NOERROR an UPDATE client would take for success; an EDNS version above
/// 0 → BADVERS; a class other than IN (or ANY, answered as IN) → REFUSED; a zone
/// transfer over UDP → FORMERR.
pub fn refusal(q: &Message, udp: bool) -> Option<Message> {
    use hickory_proto::rr::{DNSClass, RecordType};
    if q.metadata.op_code != OpCode::Query {
        return Some(response_for(q, ResponseCode::NotImp));
    }
    if q.edns.as_ref().is_some_and(|e| e.version() > 0) {
        return Some(response_for(q, ResponseCode::BADVERS));
    }
    let question = &q.queries[0];
    if !matches!(question.query_class, DNSClass::IN | DNSClass::ANY) {
        return Some(response_for(q, ResponseCode::Refused));
    }
    if udp && matches!(question.query_type, RecordType::AXFR | RecordType::IXFR) {
        return Some(response_for(q, ResponseCode::FormErr));
    }
    None
}

/// A FORMERR for a packet we could not parse.
pub fn formerr(id: u16) -> Vec<u8> {
    Message::error_msg(id, OpCode::Query, ResponseCode::FormErr)
        .to_vec()
        .unwrap_or_default()
}

/// Encode for UDP within the client's limit (512 without EDNS); too large → TC with
/// only the question, so the client asks again over TCP.
pub fn encode_udp(resp: &mut Message, query: &Message) -> Vec<u8> {
    let limit = query
        .edns
        .as_ref()
        .map(|e| e.max_payload().clamp(512, 4096))
        .unwrap_or(512) as usize;
    let bytes = resp.to_vec().unwrap_or_default();
    if bytes.len() <= limit {
        return bytes;
    }
    resp.metadata.truncation = true;
    resp.answers.clear();
    resp.authorities.clear();
    resp.additionals.clear();
    resp.to_vec().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_packets_never_panic() {
        // truncated header
        assert!(matches!(decode_query(&[1, 2, 3]), Decoded::Drop));
        // header claiming 1000 questions but no data
        let mut p = vec![0x12, 0x34, 0x01, 0x00, 0x03, 0xe8, 0, 0, 0, 0, 0, 0];
        assert!(matches!(decode_query(&p), Decoded::FormErr(0x1234)));
        // a compression pointer pointing at itself
        p = vec![
            0xab, 0xcd, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 0xc0, 12, 0, 1, 0, 1,
        ];
        assert!(matches!(decode_query(&p), Decoded::FormErr(0xabcd)));
        let f = formerr(0xabcd);
        let m = Message::from_vec(&f).unwrap();
        assert_eq!(m.metadata.response_code, ResponseCode::FormErr);
        assert_eq!(m.metadata.id, 0xabcd);
    }

    proptest::proptest! {
        #[test]
        fn any_bytes_decode_without_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..600)) {
            let _ = decode_query(&bytes);
        }

        /// Round trip: a message we encode decodes to the same message.
        #[test]
        fn round_trip(id in 0u16..=u16::MAX, labels in proptest::collection::vec("[a-z0-9]{1,20}", 1..5), ttl in 0u32..100_000, ip in proptest::num::u32::ANY) {
            use hickory_proto::rr::{Name, Record, RData, RecordType, rdata::A};
            use hickory_proto::op::Query;
            let name = Name::from_labels(labels.iter().map(|s| s.as_bytes())).unwrap();
            let mut m = Message::response(id, OpCode::Query);
            m.add_query(Query::query(name.clone(), RecordType::A));
            m.add_answer(Record::from_rdata(name, ttl, RData::A(A(ip.into()))));
            let bytes = m.to_vec().unwrap();
            let back = Message::from_vec(&bytes).unwrap();
            proptest::prop_assert_eq!(back.to_vec().unwrap(), bytes);
            proptest::prop_assert_eq!(back.answers.len(), 1);
        }
    }
}
