//! permessage-deflate (RFC 7692), shaped for fan-out.
//!
//! Every accepted offer is answered with `server_no_context_takeover` and
//! `client_no_context_takeover`, so each message is compressed and inflated on its own. That is
//! what lets the hub compress a publication **once** and queue the same bytes to every subscriber
//! that negotiated the extension (a compressor that keeps context needs one state per socket, and
//! so one compression per subscriber), and it is why a connection holds no compression state: the
//! compressor and the inflater are per thread and reset for every message. RFC 7692 §7.1.1 lets a
//! server add both parameters whether or not the client offered them.
//!
//! A sender may always send a message uncompressed (RSV1 clear), so the hub compresses only where
//! it pays: publications of at least a configured size that come out smaller.

use std::cell::RefCell;

use bytes::{Bytes, BytesMut};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use crate::frame::OpCode;

/// The extension's token in `Sec-WebSocket-Extensions`.
pub const EXTENSION: &str = "permessage-deflate";

/// The four bytes a sync flush ends with; RFC 7692 §7.2.1 strips them from each message and the
/// receiver appends them again before inflating.
const SYNC_TAIL: [u8; 4] = [0x00, 0x00, 0xFF, 0xFF];

/// The parameters agreed for one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Agreed {
    /// The largest LZ77 window (in bits, 8 to 15) the client lets the hub use, when its offer
    /// said `server_max_window_bits`; `None`: the full 15.
    pub server_max_window_bits: Option<u8>,
}

impl Agreed {
    /// The `Sec-WebSocket-Extensions` value of the 101 response.
    pub fn response_header(&self) -> String {
        let mut h = format!("{EXTENSION}; server_no_context_takeover; client_no_context_takeover");
        // Accepting the parameter means answering with it (RFC 7692 §7.1.2.1).
        if let Some(bits) = self.server_max_window_bits {
            h.push_str(&format!("; server_max_window_bits={bits}"));
        }
        h
    }

    /// Whether the hub sends this connection compressed messages. The shared compressed frame
    /// uses the full 32 KiB window; a client that asked for a smaller one gets every message
    /// uncompressed, which the extension allows.
    pub fn compresses_outgoing(&self) -> bool {
        self.server_max_window_bits.is_none_or(|b| b == 15)
    }
}

/// Picks the first `permessage-deflate` offer the hub can accept from the request's
/// `Sec-WebSocket-Extensions` header values (RFC 7692 §5). An offer with an unknown parameter, a
/// repeated parameter or a bad value is declined and the next one is tried.
pub fn negotiate<'a>(header_values: impl IntoIterator<Item = &'a str>) -> Option<Agreed> {
    header_values.into_iter().flat_map(|v| split_outside_quotes(v, ',')).find_map(accept_offer)
}

fn accept_offer(offer: &str) -> Option<Agreed> {
    let mut parts = split_outside_quotes(offer, ';');
    if !parts.next()?.trim().eq_ignore_ascii_case(EXTENSION) {
        return None;
    }
    let mut seen: Vec<String> = Vec::new();
    let mut agreed = Agreed { server_max_window_bits: None };
    for param in parts {
        let (name, value) = match param.split_once('=') {
            Some((n, v)) => (n.trim(), Some(unquote(v.trim())?)),
            None => (param.trim(), None),
        };
        let name = name.to_ascii_lowercase();
        if seen.contains(&name) {
            return None;
        }
        match (name.as_str(), value) {
            ("server_no_context_takeover" | "client_no_context_takeover", None) => {}
            ("server_max_window_bits", Some(v)) => agreed.server_max_window_bits = Some(window_bits(v)?),
            ("client_max_window_bits", None) => {}
            ("client_max_window_bits", Some(v)) => {
                window_bits(v)?;
            }
            _ => return None,
        }
        seen.push(name);
    }
    Some(agreed)
}

/// A window size parameter: 8 to 15, written without a leading zero.
fn window_bits(v: &str) -> Option<u8> {
    if v.starts_with('0') || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    v.parse::<u8>().ok().filter(|b| (8..=15).contains(b))
}

fn unquote(v: &str) -> Option<&str> {
    match v.strip_prefix('"') {
        Some(rest) => rest.strip_suffix('"'),
        None => Some(v),
    }
}

/// Splits `s` on `sep` except inside double quotes.
fn split_outside_quotes(s: &str, sep: char) -> impl Iterator<Item = &str> {
    let mut start = 0;
    let mut quoted = false;
    let mut cuts = Vec::new();
    for (i, c) in s.char_indices() {
        match c {
            '"' => quoted = !quoted,
            c if c == sep && !quoted => {
                cuts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    cuts.push(&s[start..]);
    cuts.into_iter().filter(|p| !p.trim().is_empty())
}

/// Why a compressed message could not be inflated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InflateError {
    /// It inflates to more than the message limit (a decompression bomb is stopped here, after at
    /// most `limit` bytes of output).
    #[error("message inflates to more than {0} bytes")]
    TooBig(u64),
    /// The bytes are not a valid DEFLATE stream.
    #[error("invalid compressed data")]
    Invalid,
}

thread_local! {
    static COMPRESSOR: RefCell<Option<(u32, Compress)>> = const { RefCell::new(None) };
    static INFLATER: RefCell<Option<Decompress>> = const { RefCell::new(None) };
}

/// Compresses one message on its own (no context from earlier messages), sync tail removed.
/// Level 0 stores the bytes in stored blocks: no back-references, so the result is valid for any
/// window size a client asked for. `None` only if the compressor fails, which it should not.
pub fn compress(payload: &[u8], level: u32) -> Option<Vec<u8>> {
    COMPRESSOR.with_borrow_mut(|slot| {
        let c = match slot {
            Some((l, c)) if *l == level => {
                c.reset();
                c
            }
            _ => &mut slot.insert((level, Compress::new(Compression::new(level), false))).1,
        };
        // Room for the worst case (incompressible input in stored blocks, 5 bytes per block of at
        // most 16 KiB, plus the flush), so one call always finishes: resuming a sync flush into a
        // grown buffer lost bytes with the miniz_oxide backend in our tests.
        let mut out = Vec::with_capacity(payload.len() + payload.len() / 1024 + 64);
        let done = c.compress_vec(payload, &mut out, FlushCompress::Sync).is_ok()
            && c.total_in() as usize == payload.len()
            && out.len() < out.capacity();
        if !done {
            return None;
        }
        if out.ends_with(&SYNC_TAIL) {
            out.truncate(out.len() - SYNC_TAIL.len());
        }
        Some(out)
    })
}

/// Inflates one message compressed on its own. Output beyond `limit` bytes fails with
/// [`InflateError::TooBig`] without inflating further.
pub fn inflate(compressed: &[u8], limit: u64) -> Result<Vec<u8>, InflateError> {
    INFLATER.with_borrow_mut(|slot| {
        let d = match slot {
            Some(d) => {
                d.reset(false);
                d
            }
            None => slot.insert(Decompress::new(false)),
        };
        let limit = usize::try_from(limit).unwrap_or(usize::MAX);
        let mut out: Vec<u8> = Vec::new();
        let step = 16 << 10;
        for input in [compressed, &SYNC_TAIL[..]] {
            let start = d.total_in() as usize;
            loop {
                let consumed = d.total_in() as usize - start;
                if out.len() == out.capacity() {
                    // One byte past the limit is enough to know it is over.
                    let room = limit.saturating_add(1).saturating_sub(out.len());
                    if room == 0 {
                        return Err(InflateError::TooBig(limit as u64));
                    }
                    out.reserve_exact(room.min(step));
                }
                let status = d
                    .decompress_vec(&input[consumed..], &mut out, FlushDecompress::Sync)
                    .map_err(|_| InflateError::Invalid)?;
                if out.len() > limit {
                    return Err(InflateError::TooBig(limit as u64));
                }
                if status == Status::StreamEnd {
                    // A final block ended the stream; the sync tail after it is not data.
                    return Ok(out);
                }
                let done = d.total_in() as usize - start == input.len();
                if done && out.len() < out.capacity() {
                    break;
                }
                if !done && status == Status::BufError && out.len() < out.capacity() {
                    return Err(InflateError::Invalid);
                }
            }
        }
        Ok(out)
    })
}

/// The compressed twin of a complete, unmasked server data frame: the same message with RSV1 set
/// and its payload compressed at `level`. `None` when the frame is not a single text or binary
/// frame, its payload is under `min_bytes`, or compression would not make it smaller.
pub fn server_frame(plain: &[u8], level: u32, min_bytes: usize) -> Option<Bytes> {
    let (&b0, rest) = plain.split_first()?;
    let opcode = match b0 {
        0x81 => OpCode::Text,
        0x82 => OpCode::Binary,
        _ => return None,
    };
    let header = match rest.first()? & 0x7F {
        126 => 4,
        127 => 10,
        _ => 2,
    };
    let payload = plain.get(header..)?;
    if payload.len() < min_bytes.max(1) {
        return None;
    }
    let compressed = compress(payload, level)?;
    if compressed.len() >= payload.len() {
        return None;
    }
    Some(compressed_frame(opcode, &compressed))
}

/// A server frame for `payload` with RSV1 set, compressed at `level` whether or not that makes it
/// smaller (the echo endpoint compresses every message; see `websocket.echo_path`). Falls back to
/// the plain frame if the compressor fails.
pub fn always_compressed_frame(opcode: OpCode, payload: &[u8], level: u32) -> Bytes {
    match compress(payload, level) {
        Some(z) => compressed_frame(opcode, &z),
        None => crate::frame::server_frame(opcode, payload),
    }
}

/// A server frame carrying an already compressed message (RSV1 set).
pub fn compressed_frame(opcode: OpCode, compressed: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(compressed.len() + 10);
    crate::frame::encode_into(&mut out, opcode, compressed, None);
    out[0] |= 0x40;
    out.freeze()
}

/// Appends a masked client frame with RSV1 set (for test clients and tools that speak the
/// extension with the hub's own codec).
pub fn client_frame_into(out: &mut BytesMut, opcode: OpCode, compressed: &[u8], mask: [u8; 4]) {
    let at = out.len();
    crate::frame::encode_into(out, opcode, compressed, Some(mask));
    out[at] |= 0x40;
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn agreed(h: &str) -> Option<Agreed> {
        negotiate([h])
    }

    #[test]
    fn accepts_what_browsers_and_autobahn_offer() {
        let whole = Agreed { server_max_window_bits: None };
        let full = Some(whole);
        assert_eq!(agreed("permessage-deflate; client_max_window_bits"), full);
        assert_eq!(agreed("permessage-deflate"), full);
        assert_eq!(agreed("Permessage-Deflate ; client_no_context_takeover ;server_no_context_takeover"), full);
        assert_eq!(agreed("permessage-deflate; client_max_window_bits=\"10\""), full);
        assert_eq!(
            agreed("permessage-deflate; server_max_window_bits=9"),
            Some(Agreed { server_max_window_bits: Some(9) })
        );
        // An offered 15 is accepted by answering with it; the hub still compresses.
        let a = agreed("permessage-deflate; server_max_window_bits=15").unwrap();
        assert!(a.compresses_outgoing());
        assert!(a.response_header().ends_with("; server_max_window_bits=15"));
        let a = agreed("permessage-deflate; server_max_window_bits=8").unwrap();
        assert!(!a.compresses_outgoing());
        assert_eq!(
            a.response_header(),
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=8"
        );
        assert_eq!(
            whole.response_header(),
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
        );
    }

    #[test]
    fn declines_bad_offers_and_takes_the_next() {
        for bad in [
            "permessage-deflate; server_max_window_bits",
            "permessage-deflate; server_max_window_bits=16",
            "permessage-deflate; server_max_window_bits=7",
            "permessage-deflate; server_max_window_bits=010",
            "permessage-deflate; server_max_window_bits=+9",
            "permessage-deflate; client_max_window_bits=abc",
            "permessage-deflate; server_no_context_takeover=1",
            "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
            "permessage-deflate; mystery",
            "x-webkit-deflate-frame",
            "",
        ] {
            assert_eq!(agreed(bad), None, "{bad}");
        }
        let two = "permessage-deflate; foo, permessage-deflate; server_max_window_bits=12";
        assert_eq!(agreed(two), Some(Agreed { server_max_window_bits: Some(12) }));
        // Offers may also come in separate header lines; a quoted comma does not split.
        assert_eq!(
            negotiate(["other; p=\"a, permessage-deflate\"", "permessage-deflate"]),
            Some(Agreed { server_max_window_bits: None })
        );
    }

    #[test]
    fn rfc_7692_hello_example_inflates() {
        // RFC 7692 §7.2.3.1: "Hello" compressed, sync tail removed.
        assert_eq!(inflate(&[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00], 100).unwrap(), b"Hello");
        // §7.2.3.3: the same message in a stored (uncompressed) block.
        assert_eq!(
            inflate(&[0x00, 0x05, 0x00, 0xfa, 0xff, 0x48, 0x65, 0x6c, 0x6c, 0x6f, 0x00], 100).unwrap(),
            b"Hello"
        );
    }

    #[test]
    fn inflate_stops_at_the_limit_and_rejects_garbage() {
        let bomb = compress(&vec![b'a'; 1 << 20], 9).unwrap();
        assert!(bomb.len() < 2048, "{}", bomb.len());
        assert_eq!(inflate(&bomb, 4096), Err(InflateError::TooBig(4096)));
        assert_eq!(inflate(&bomb, 1 << 20).unwrap().len(), 1 << 20);
        assert_eq!(inflate(&[0xff, 0xff, 0xff, 0xff, 0xff], 100), Err(InflateError::Invalid));
    }

    #[test]
    fn server_frame_compresses_only_when_it_pays() {
        let big = crate::frame::server_text(&b"{\"value\":12345}".repeat(40));
        let z = server_frame(&big, 1, 64).unwrap();
        assert_eq!(z[0], 0xC1, "FIN + RSV1 + text");
        assert!(z.len() < big.len() / 4);
        let small = crate::frame::server_text(b"{\"a\":1}");
        assert_eq!(server_frame(&small, 1, 64), None, "under the minimum");
        let noise: Vec<u8> = (0..300u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
        assert_eq!(server_frame(&crate::frame::server_frame(OpCode::Binary, &noise), 1, 0), None, "no gain");
        assert_eq!(server_frame(&crate::frame::server_close(1000, ""), 1, 0), None, "control frame");
    }

    #[test]
    fn incompressible_input_round_trips_in_one_call() {
        // The input that once lost bytes when a sync flush resumed into a grown buffer.
        let mut x = 88_172_645_463_325_252u64;
        let noise: Vec<u8> = (0..31_746)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        for level in [0, 1, 6, 9] {
            let z = compress(&noise, level).unwrap();
            assert_eq!(inflate(&z, noise.len() as u64).unwrap(), noise, "level {level}");
        }
    }

    proptest! {
        #[test]
        fn compress_round_trips(payload in proptest::collection::vec(any::<u8>(), 0..70_000), level in 0u32..=9) {
            let z = compress(&payload, level).unwrap();
            prop_assert_eq!(&inflate(&z, payload.len() as u64).unwrap(), &payload);
            // A frame built for any payload carries RSV1 and inflates back to it.
            let f = always_compressed_frame(OpCode::Binary, &payload, level);
            prop_assert_eq!(f[0], 0xC2);
        }

        #[test]
        fn inflate_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..2000)) {
            let _ = inflate(&bytes, 1 << 16);
        }
    }
}
