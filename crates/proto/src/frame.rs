//! RFC 6455 framing, both directions.
//!
//! Why by hand: the hub sends the *same* frame to thousands of sockets. Server frames are not masked,
//! so header and payload are identical for every subscriber and can be built once per publish into
//! one `Bytes` that every outbox shares; the session then writes all queued frames of a socket in one
//! vectored write. The WebSocket crates we looked at (`../shared/reference/dependencies.md`) encode the
//! header per socket and keep a read buffer of 8–128 KiB allocated per connection even while idle;
//! here a connection holds no read buffer until bytes arrive. The Rust client and the tests use
//! `tokio-websockets`, so every test checks this codec against an independent implementation.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::deflate::{self, InflateError};

/// A frame's opcode (RFC 6455 §5.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpCode {
    /// 0x0: the next fragment of a text or binary message.
    Continuation,
    /// 0x1: a UTF-8 text message (or its first fragment).
    Text,
    /// 0x2: a binary message (or its first fragment).
    Binary,
    /// 0x8: close, with an optional code and reason.
    Close,
    /// 0x9: ping; must be answered with a pong carrying the same payload.
    Ping,
    /// 0xA: pong.
    Pong,
}

impl OpCode {
    fn from_u8(b: u8) -> Option<OpCode> {
        Some(match b {
            0x0 => OpCode::Continuation,
            0x1 => OpCode::Text,
            0x2 => OpCode::Binary,
            0x8 => OpCode::Close,
            0x9 => OpCode::Ping,
            0xA => OpCode::Pong,
            _ => return None,
        })
    }

    fn as_u8(self) -> u8 {
        match self {
            OpCode::Continuation => 0x0,
            OpCode::Text => 0x1,
            OpCode::Binary => 0x2,
            OpCode::Close => 0x8,
            OpCode::Ping => 0x9,
            OpCode::Pong => 0xA,
        }
    }

    fn is_control(self) -> bool {
        matches!(self, OpCode::Close | OpCode::Ping | OpCode::Pong)
    }
}

/// The most [`decode`] reserves ahead for a frame still arriving.
const MAX_RESERVE: usize = 16 << 10;

/// Who is decoding: a server requires masked frames, a client requires unmasked ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Decoding frames a client sent (they must be masked).
    Server,
    /// Decoding frames a server sent (they must not be masked).
    Client,
}

/// One decoded frame, payload already unmasked.
#[derive(Debug)]
pub struct Frame {
    /// Whether this is the last fragment of its message.
    pub fin: bool,
    /// The frame's opcode.
    pub opcode: OpCode,
    /// The unmasked payload.
    pub payload: BytesMut,
    /// RSV1: the message this frame starts is compressed (permessage-deflate).
    pub compressed: bool,
}

/// Why the byte stream is not a valid WebSocket stream. Each maps to a close code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// A frame or message is larger than the configured limit (close 1009).
    #[error("frame of {0} bytes is over the limit of {1} bytes")]
    TooBig(u64, u64),
    /// The framing breaks RFC 6455 (close 1002).
    #[error("protocol error: {0}")]
    Protocol(&'static str),
    /// A text message or close reason is not UTF-8 (close 1007).
    #[error("text is not valid UTF-8")]
    InvalidUtf8,
    /// A compressed message inflates to more than the message limit (close 1009).
    #[error("message inflates to more than {0} bytes")]
    InflatesTooBig(u64),
    /// A compressed message is not valid DEFLATE data (close 1007).
    #[error("invalid compressed data")]
    BadCompression,
}

impl From<InflateError> for FrameError {
    fn from(e: InflateError) -> FrameError {
        match e {
            InflateError::TooBig(limit) => FrameError::InflatesTooBig(limit),
            InflateError::Invalid => FrameError::BadCompression,
        }
    }
}

/// Decodes one frame from the front of `buf`, or returns `Ok(None)` when more bytes are needed.
///
/// `max_payload` is checked as soon as the header is complete, so an oversized frame is refused
/// before its payload is buffered.
pub fn decode(buf: &mut BytesMut, max_payload: u64, role: Role) -> Result<Option<Frame>, FrameError> {
    decode_with(buf, max_payload, role, false)
}

/// [`decode`] on a connection that negotiated permessage-deflate (`deflate`): RSV1 is then allowed
/// on the first frame of a text or binary message, and marks it compressed.
pub fn decode_with(
    buf: &mut BytesMut,
    max_payload: u64,
    role: Role,
    deflate: bool,
) -> Result<Option<Frame>, FrameError> {
    if buf.len() < 2 {
        return Ok(None);
    }
    let b0 = buf[0];
    let b1 = buf[1];
    let fin = b0 & 0x80 != 0;
    let opcode = OpCode::from_u8(b0 & 0x0F).ok_or(FrameError::Protocol("unknown opcode"))?;
    let compressed = b0 & 0x40 != 0;
    if b0 & 0x30 != 0 || (compressed && !deflate) {
        return Err(FrameError::Protocol("reserved bits set without a negotiated extension"));
    }
    if compressed && !matches!(opcode, OpCode::Text | OpCode::Binary) {
        return Err(FrameError::Protocol("RSV1 set on a control or continuation frame"));
    }
    let masked = b1 & 0x80 != 0;
    match (role, masked) {
        (Role::Server, false) => return Err(FrameError::Protocol("client frame is not masked")),
        (Role::Client, true) => return Err(FrameError::Protocol("server frame is masked")),
        _ => {}
    }
    let (len, mut header) = match b1 & 0x7F {
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
                return Err(FrameError::Protocol("64-bit length with the high bit set"));
            }
            (len, 10)
        }
        n => (n as u64, 2),
    };
    if opcode.is_control() && (len > 125 || !fin) {
        return Err(FrameError::Protocol("control frame fragmented or over 125 bytes"));
    }
    if len > max_payload {
        return Err(FrameError::TooBig(len, max_payload));
    }
    let mask = if masked {
        if buf.len() < header + 4 {
            return Ok(None);
        }
        let m = [buf[header], buf[header + 1], buf[header + 2], buf[header + 3]];
        header += 4;
        Some(m)
    } else {
        None
    };
    let total = header + len as usize;
    if buf.len() < total {
        // Reserve for what is likely to arrive soon, never what the header merely claims: a
        // 14-byte header must not make us allocate megabytes (or abort on a failed allocation).
        buf.reserve((total - buf.len()).min(MAX_RESERVE));
        return Ok(None);
    }
    buf.advance(header);
    let mut payload = buf.split_to(len as usize);
    if let Some(mask) = mask {
        apply_mask(&mut payload, mask);
    }
    Ok(Some(Frame { fin, opcode, payload, compressed }))
}

/// The header of the frame at the front of `buf` when its header is complete but its payload is
/// not: opcode, header length, payload length, mask.
fn incomplete_header(buf: &[u8]) -> Option<(OpCode, usize, usize, Option<[u8; 4]>)> {
    if buf.len() < 2 {
        return None;
    }
    let opcode = OpCode::from_u8(buf[0] & 0x0F)?;
    let (len, mut header) = match buf[1] & 0x7F {
        126 => (u16::from_be_bytes([*buf.get(2)?, *buf.get(3)?]) as usize, 4),
        127 => (usize::try_from(u64::from_be_bytes(buf.get(2..10)?.try_into().ok()?)).ok()?, 10),
        n => (n as usize, 2),
    };
    let mask = if buf[1] & 0x80 != 0 {
        let m = buf.get(header..header + 4)?;
        header += 4;
        Some([m[0], m[1], m[2], m[3]])
    } else {
        None
    };
    (buf.len() >= header && buf.len() - header < len).then_some((opcode, header, len, mask))
}

/// XORs `data` with the 4-byte masking key (RFC 6455 §5.3).
pub fn apply_mask(data: &mut [u8], mask: [u8; 4]) {
    let word = u32::from_ne_bytes(mask);
    let mut chunks = data.chunks_exact_mut(4);
    for chunk in &mut chunks {
        let v = u32::from_ne_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]) ^ word;
        chunk.copy_from_slice(&v.to_ne_bytes());
    }
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= mask[i];
    }
}

/// Appends one complete frame to `out`. `mask` is `Some` only for frames a client sends.
pub fn encode_into(out: &mut BytesMut, opcode: OpCode, payload: &[u8], mask: Option<[u8; 4]>) {
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    out.reserve(payload.len() + 14);
    out.put_u8(0x80 | opcode.as_u8());
    let len = payload.len();
    if len < 126 {
        out.put_u8(mask_bit | len as u8);
    } else if len <= u16::MAX as usize {
        out.put_u8(mask_bit | 126);
        out.put_u16(len as u16);
    } else {
        out.put_u8(mask_bit | 127);
        out.put_u64(len as u64);
    }
    match mask {
        Some(m) => {
            out.put_slice(&m);
            let start = out.len();
            out.put_slice(payload);
            apply_mask(&mut out[start..], m);
        }
        None => out.put_slice(payload),
    }
}

/// A complete unmasked server frame, ready to be shared by any number of sockets.
pub fn server_frame(opcode: OpCode, payload: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(payload.len() + 10);
    encode_into(&mut out, opcode, payload, None);
    out.freeze()
}

/// A server text frame.
pub fn server_text(payload: &[u8]) -> Bytes {
    server_frame(OpCode::Text, payload)
}

/// A server close frame with `code` and `reason` (the reason is cut to fit 123 bytes).
pub fn server_close(code: u16, reason: &str) -> Bytes {
    let mut reason = reason;
    while reason.len() > 123 {
        let mut cut = 123;
        while !reason.is_char_boundary(cut) {
            cut -= 1;
        }
        reason = &reason[..cut];
    }
    let mut payload = Vec::with_capacity(2 + reason.len());
    payload.extend_from_slice(&code.to_be_bytes());
    payload.extend_from_slice(reason.as_bytes());
    server_frame(OpCode::Close, &payload)
}

/// A complete message, after reassembling fragments.
#[derive(Debug, PartialEq, Eq)]
pub enum Message {
    /// A UTF-8 text message.
    Text(Bytes),
    /// A binary message.
    Binary(Bytes),
    /// A ping; the payload must be echoed in a pong.
    Ping(Bytes),
    /// A pong.
    Pong(Bytes),
    /// A close, with its code and reason if it had any.
    Close(Option<(u16, String)>),
}

/// Reassembles fragmented messages, inflates compressed ones and validates text and close
/// payloads.
///
/// Holds no buffer unless a fragmented message is in flight.
#[derive(Debug, Default)]
pub struct Assembler {
    /// A message still arriving.
    partial: Option<Partial>,
    /// Payload bytes of the incomplete frame at the front of the read buffer already checked by
    /// [`Assembler::check_incomplete`], and the bytes of a character cut at their end.
    peeked: usize,
    carry: Vec<u8>,
}

#[derive(Debug)]
struct Partial {
    opcode: OpCode,
    payload: BytesMut,
    /// For uncompressed text: how many leading bytes are known to be whole UTF-8 characters (so
    /// each fragment is checked once, on arrival).
    valid: usize,
    /// permessage-deflate: `payload` is compressed and is checked once inflated.
    compressed: bool,
}

/// Checks `bytes[from..]` as the continuation of valid UTF-8; returns how many leading bytes are
/// whole characters (the rest is a character still arriving). Invalid UTF-8 fails at once
/// (RFC 6455 §8.1: fail fast), not when the message ends.
fn utf8_prefix(bytes: &[u8], from: usize) -> Result<usize, FrameError> {
    match std::str::from_utf8(&bytes[from..]) {
        Ok(_) => Ok(bytes.len()),
        Err(e) if e.error_len().is_none() => Ok(from + e.valid_up_to()),
        Err(_) => Err(FrameError::InvalidUtf8),
    }
}

impl Assembler {
    /// Looks at a text frame still arriving at the front of `buf` and fails as soon as its bytes
    /// so far cannot be UTF-8. Each payload byte is looked at once. Compressed text is checked
    /// when it is inflated.
    pub fn check_incomplete(&mut self, buf: &[u8]) -> Result<(), FrameError> {
        let Some((opcode, header, len, mask)) = incomplete_header(buf) else { return Ok(()) };
        let text = match (opcode, &self.partial) {
            (OpCode::Text, None) => buf[0] & 0x40 == 0,
            (OpCode::Continuation, Some(p)) => p.opcode == OpCode::Text && !p.compressed,
            _ => false,
        };
        if !text {
            return Ok(());
        }
        if self.peeked == 0 {
            self.carry = match &self.partial {
                Some(p) => p.payload[p.valid..].to_vec(),
                None => Vec::new(),
            };
        }
        let avail = (buf.len() - header).min(len);
        if avail <= self.peeked {
            return Ok(());
        }
        let mut bytes = std::mem::take(&mut self.carry);
        let start = bytes.len();
        bytes.extend_from_slice(&buf[header + self.peeked..header + avail]);
        if let Some(m) = mask {
            for (i, b) in bytes[start..].iter_mut().enumerate() {
                *b ^= m[(self.peeked + i) % 4];
            }
        }
        let valid = utf8_prefix(&bytes, 0)?;
        self.carry = bytes.split_off(valid);
        self.peeked = avail;
        Ok(())
    }

    /// Feeds one frame; returns a message when one is complete. `max_message` bounds a message
    /// both as it arrives and, when compressed, once inflated.
    pub fn push(&mut self, frame: Frame, max_message: u64) -> Result<Option<Message>, FrameError> {
        self.peeked = 0;
        self.carry.clear();
        match frame.opcode {
            OpCode::Ping => Ok(Some(Message::Ping(frame.payload.freeze()))),
            OpCode::Pong => Ok(Some(Message::Pong(frame.payload.freeze()))),
            OpCode::Close => parse_close(&frame.payload).map(|c| Some(Message::Close(c))),
            OpCode::Text | OpCode::Binary => {
                if self.partial.is_some() {
                    return Err(FrameError::Protocol("new message before the last one finished"));
                }
                let mut p =
                    Partial { opcode: frame.opcode, payload: frame.payload, valid: 0, compressed: frame.compressed };
                if frame.fin {
                    return p.finish(max_message).map(Some);
                }
                if p.opcode == OpCode::Text && !p.compressed {
                    p.valid = utf8_prefix(&p.payload, 0)?;
                }
                self.partial = Some(p);
                Ok(None)
            }
            OpCode::Continuation => {
                let Some(mut p) = self.partial.take() else {
                    return Err(FrameError::Protocol("continuation without a message"));
                };
                let total = (p.payload.len() + frame.payload.len()) as u64;
                if total > max_message {
                    return Err(FrameError::TooBig(total, max_message));
                }
                p.payload.extend_from_slice(&frame.payload);
                if frame.fin {
                    return p.finish(max_message).map(Some);
                }
                if p.opcode == OpCode::Text && !p.compressed {
                    p.valid = utf8_prefix(&p.payload, p.valid)?;
                }
                self.partial = Some(p);
                Ok(None)
            }
        }
    }
}

impl Partial {
    fn finish(self, max_message: u64) -> Result<Message, FrameError> {
        let payload = if self.compressed {
            BytesMut::from(&deflate::inflate(&self.payload, max_message)?[..])
        } else {
            self.payload
        };
        if self.opcode == OpCode::Text {
            std::str::from_utf8(&payload).map_err(|_| FrameError::InvalidUtf8)?;
            Ok(Message::Text(payload.freeze()))
        } else {
            Ok(Message::Binary(payload.freeze()))
        }
    }
}

fn parse_close(payload: &[u8]) -> Result<Option<(u16, String)>, FrameError> {
    match payload.len() {
        0 => Ok(None),
        1 => Err(FrameError::Protocol("close payload of one byte")),
        _ => {
            let code = u16::from_be_bytes([payload[0], payload[1]]);
            let valid = matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999);
            if !valid {
                return Err(FrameError::Protocol("invalid close code"));
            }
            let reason = std::str::from_utf8(&payload[2..]).map_err(|_| FrameError::InvalidUtf8)?;
            Ok(Some((code, reason.to_owned())))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn client_frame(op: OpCode, fin: bool, payload: &[u8]) -> BytesMut {
        let mut out = BytesMut::new();
        encode_into(&mut out, op, payload, Some([1, 2, 3, 4]));
        if !fin {
            out[0] &= 0x7F;
        }
        out
    }

    #[test]
    fn server_text_header_lengths() {
        assert_eq!(&server_text(b"hi")[..], &[0x81, 2, b'h', b'i']);
        let f = server_text(&[b'a'; 200]);
        assert_eq!(&f[..4], &[0x81, 126, 0, 200]);
        let f = server_text(&vec![b'a'; 70_000]);
        assert_eq!(f[1], 127);
        assert_eq!(f.len(), 70_010);
    }

    #[test]
    fn decodes_masked_client_frame_in_pieces() {
        let whole = client_frame(OpCode::Text, true, b"hello world");
        for split in 0..whole.len() {
            let mut buf = BytesMut::from(&whole[..split]);
            assert!(decode(&mut buf, 1024, Role::Server).unwrap().is_none());
            buf.extend_from_slice(&whole[split..]);
            let f = decode(&mut buf, 1024, Role::Server).unwrap().unwrap();
            assert_eq!(&f.payload[..], b"hello world");
            assert!(buf.is_empty());
        }
    }

    #[test]
    fn refuses_unmasked_client_frames_and_big_frames_early() {
        let mut buf = BytesMut::from(&server_text(b"x")[..]);
        assert!(matches!(decode(&mut buf, 10, Role::Server), Err(FrameError::Protocol(_))));
        // Only the header of a 1 MB frame has arrived: it is refused already.
        let mut buf = BytesMut::from(&[0x81u8, 0xFF, 0, 0, 0, 0, 0, 0x10, 0, 0][..]);
        assert_eq!(decode(&mut buf, 512, Role::Server).unwrap_err(), FrameError::TooBig(1 << 20, 512));
    }

    #[test]
    fn a_huge_declared_length_reserves_little() {
        let mut buf = BytesMut::from(&[0x82u8, 0xFF, 0, 0, 0x20, 0, 0, 0, 0, 0, 1, 2, 3, 4][..]);
        assert!(decode(&mut buf, u64::MAX >> 1, Role::Server).unwrap().is_none());
        assert!(buf.capacity() <= 64 << 10, "{}", buf.capacity());
    }

    #[test]
    fn reassembles_fragments_around_a_ping() {
        let mut a = Assembler::default();
        let mut stream = client_frame(OpCode::Text, false, b"hel");
        stream.extend_from_slice(&client_frame(OpCode::Ping, true, b"p"));
        stream.extend_from_slice(&client_frame(OpCode::Continuation, true, b"lo"));
        let mut got = Vec::new();
        while let Some(f) = decode(&mut stream, 100, Role::Server).unwrap() {
            if let Some(m) = a.push(f, 100).unwrap() {
                got.push(m);
            }
        }
        assert_eq!(got, vec![Message::Ping(Bytes::from_static(b"p")), Message::Text(Bytes::from_static(b"hello"))]);
    }

    #[test]
    fn invalid_utf8_fails_at_the_fragment_or_byte_that_breaks_it() {
        // A fragment boundary inside a character is fine; a bad byte fails before the message ends.
        let euro = "€".as_bytes();
        let mut a = Assembler::default();
        let mut buf = client_frame(OpCode::Text, false, &euro[..1]);
        let f = decode(&mut buf, 1 << 20, Role::Server).unwrap().unwrap();
        assert_eq!(a.push(f, 1 << 20), Ok(None));
        let mut buf = client_frame(OpCode::Continuation, false, &[euro[1], euro[2], 0xFF]);
        let f = decode(&mut buf, 1 << 20, Role::Server).unwrap().unwrap();
        assert_eq!(a.push(f, 1 << 20), Err(FrameError::InvalidUtf8));
        // Inside one frame still arriving: the first bytes are enough to fail.
        let mut a = Assembler::default();
        let whole = client_frame(OpCode::Text, true, b"hello\xFFworld, and much more after it");
        assert_eq!(a.check_incomplete(&whole[..8]), Ok(()), "header and 'he'");
        assert_eq!(a.check_incomplete(&whole[..14]), Err(FrameError::InvalidUtf8));
        // A character cut by the read boundary is not an error.
        let mut a = Assembler::default();
        let text = client_frame(OpCode::Text, true, "aé€😀 and more".as_bytes());
        for end in 6..text.len() {
            assert_eq!(a.check_incomplete(&text[..end]), Ok(()), "{end}");
        }
    }

    #[test]
    fn rejects_invalid_utf8_and_bad_close() {
        let mut a = Assembler::default();
        let mut s = client_frame(OpCode::Text, true, &[0xff, 0xfe]);
        let f = decode(&mut s, 100, Role::Server).unwrap().unwrap();
        assert_eq!(a.push(f, 100), Err(FrameError::InvalidUtf8));
        let mut s = client_frame(OpCode::Close, true, &[0x03, 0xE7]);
        let f = decode(&mut s, 100, Role::Server).unwrap().unwrap();
        assert!(matches!(a.push(f, 100), Err(FrameError::Protocol(_))));
    }

    proptest! {
        #[test]
        fn round_trips_any_payload(payload in proptest::collection::vec(any::<u8>(), 0..70_000), mask in any::<[u8; 4]>()) {
            let mut buf = BytesMut::new();
            encode_into(&mut buf, OpCode::Binary, &payload, Some(mask));
            let f = decode(&mut buf, u64::MAX >> 1, Role::Server).unwrap().unwrap();
            prop_assert_eq!(&f.payload[..], &payload[..]);
            let mut buf = BytesMut::from(&server_frame(OpCode::Binary, &payload)[..]);
            let f = decode(&mut buf, u64::MAX >> 1, Role::Client).unwrap().unwrap();
            prop_assert_eq!(&f.payload[..], &payload[..]);
        }

        #[test]
        fn never_panics_on_garbage(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let mut buf = BytesMut::from(&bytes[..]);
            let mut a = Assembler::default();
            while let Ok(Some(f)) = decode(&mut buf, 1 << 16, Role::Server) {
                if a.push(f, 1 << 16).is_err() { break; }
            }
        }
    }
}
