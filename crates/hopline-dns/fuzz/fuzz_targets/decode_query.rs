//! Fuzz the DNS server's packet decoder and the round trip of whatever decodes:
//! never a panic; a message that decodes must encode, and re-decode to the same bytes.
#![no_main]

use hickory_proto::op::Message;
use hopline_dns::wire::{Decoded, decode_query};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match decode_query(data) {
        Decoded::Query(m) => {
            if let Ok(bytes) = m.to_vec() {
                let again = Message::from_vec(&bytes).expect("our own encoding decodes");
                assert_eq!(again.to_vec().expect("re-encodes"), bytes, "parse → encode → parse is stable");
            }
        }
        Decoded::FormErr(id) => {
            let f = hopline_dns::wire::formerr(id);
            assert!(Message::from_vec(&f).is_ok());
        }
        Decoded::Drop => {}
    }
});
