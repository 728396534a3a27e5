//! Everything a client's bytes go through: frame decoding (in arbitrary read-sized pieces, with
//! the fail-fast UTF-8 check on incomplete frames), message assembly (inflating permessage-deflate
//! messages when the connection negotiated it), and the JSON command parser. Must never panic,
//! whatever arrives.
#![no_main]

use bytes::BytesMut;
use hubbub_proto::frame::{self, Assembler, Message, Role};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The first byte picks the read size, so frames get split at every possible place, and its
    // high bit whether the connection negotiated permessage-deflate.
    let Some((&split, bytes)) = data.split_first() else { return };
    let step = usize::from(split & 0x7F).max(1);
    let deflate = split & 0x80 != 0;
    let mut buf = BytesMut::new();
    let mut assembler = Assembler::default();
    for chunk in bytes.chunks(step) {
        buf.extend_from_slice(chunk);
        loop {
            match frame::decode_with(&mut buf, 1 << 16, Role::Server, deflate) {
                Ok(Some(f)) => match assembler.push(f, 1 << 16) {
                    Ok(Some(Message::Text(t))) => {
                        let text = std::str::from_utf8(&t).expect("the assembler only passes UTF-8");
                        let _ = hubbub_proto::client::parse(text);
                    }
                    Ok(_) => {}
                    Err(_) => return,
                },
                Ok(None) => {
                    if assembler.check_incomplete(&buf).is_err() {
                        return;
                    }
                    break;
                }
                Err(_) => return,
            }
        }
    }
    // And the parser on the raw bytes as text, framing aside.
    if let Ok(text) = std::str::from_utf8(bytes) {
        let _ = hubbub_proto::client::parse(text);
    }
});
