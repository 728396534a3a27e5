//! The socket a session reads and writes: plain TCP, or TLS (`[tls]`) over TCP.
//!
//! The session waits for readiness and then reads or writes without blocking, so an idle
//! connection holds no read buffer and queued frames go out in one vectored write. For TLS the
//! same calls drive a rustls connection by hand: ciphertext is read from and written to the
//! `TcpStream` with non-blocking calls, plaintext goes in and out of rustls. rustls keeps its own
//! bounded buffers (64 KiB of unsent data); `has_unsent` tells the session to keep waiting for
//! writability until they are on the wire.

use std::io::{self, IoSlice, Read, Write};
use std::task::{Context, Poll};

use bytes::BytesMut;
use tokio::net::TcpStream;
use tokio_rustls::rustls::ServerConnection;

/// Plain or TLS.
pub enum Transport {
    /// `ws://`
    Plain(TcpStream),
    /// `wss://`
    Tls(Box<Tls>),
}

/// A TCP stream with a rustls server connection over it.
pub struct Tls {
    tcp: TcpStream,
    conn: ServerConnection,
}

/// `std::io` over a non-blocking `TcpStream`, for rustls's `read_tls`/`write_tls`.
struct NonBlocking<'a>(&'a TcpStream);

impl Read for NonBlocking<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.try_read(buf)
    }
}

impl Write for NonBlocking<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.try_write(buf)
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.0.try_write_vectored(bufs)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Transport {
    /// A TLS transport from what hyper hands back after the upgrade.
    pub fn tls(tcp: TcpStream, conn: ServerConnection) -> Transport {
        Transport::Tls(Box::new(Tls { tcp, conn }))
    }

    fn tcp(&self) -> &TcpStream {
        match self {
            Transport::Plain(s) => s,
            Transport::Tls(t) => &t.tcp,
        }
    }

    /// Ready when the socket has bytes. Every TLS read drains the plaintext rustls holds, so
    /// nothing waits in rustls while the socket is quiet (the session drains once at start for
    /// what arrived with the upgrade request).
    pub fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.tcp().poll_read_ready(cx)
    }

    /// Whether this is TLS.
    pub fn is_tls(&self) -> bool {
        matches!(self, Transport::Tls(_))
    }

    /// Waits until the socket is readable.
    pub async fn readable(&self) -> io::Result<()> {
        self.tcp().readable().await
    }

    /// Waits until the socket is writable.
    pub async fn writable(&self) -> io::Result<()> {
        self.tcp().writable().await
    }

    /// Reads what is available into `buf`: `Ok(0)` at end of stream, `WouldBlock` when nothing is.
    pub fn try_read_buf(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        match self {
            Transport::Plain(s) => s.try_read_buf(buf),
            Transport::Tls(t) => t.read(buf),
        }
    }

    /// Writes one buffer without waiting.
    pub fn try_write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Transport::Plain(s) => s.try_write(buf),
            Transport::Tls(t) => t.write(&[IoSlice::new(buf)]),
        }
    }

    /// Writes several buffers without waiting.
    pub fn try_write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        match self {
            Transport::Plain(s) => s.try_write_vectored(bufs),
            Transport::Tls(t) => t.write(bufs),
        }
    }

    /// Whether accepted bytes are still waiting to go out (TLS only).
    pub fn has_unsent(&self) -> bool {
        matches!(self, Transport::Tls(t) if t.conn.wants_write())
    }

    /// Sends what is waiting; `WouldBlock` when the socket is full.
    pub fn flush_unsent(&mut self) -> io::Result<()> {
        match self {
            Transport::Plain(_) => Ok(()),
            Transport::Tls(t) => t.flush(),
        }
    }
}

impl Tls {
    fn read(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        let eof = match self.conn.read_tls(&mut NonBlocking(&self.tcp)) {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => false,
            Err(e) => return Err(e),
        };
        let state = match self.conn.process_new_packets() {
            Ok(s) => s,
            Err(e) => {
                // Send the alert rustls queued, then give up on the connection.
                let _ = self.flush();
                return Err(io::Error::new(io::ErrorKind::InvalidData, e));
            }
        };
        let closed = state.peer_has_closed();
        // Handshake messages, key updates and alerts may be waiting to go out.
        match self.flush() {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
        let mut n = 0;
        let mut chunk = [0u8; 16 * 1024];
        loop {
            match self.conn.reader().read(&mut chunk) {
                Ok(0) => break,
                Ok(k) => {
                    buf.extend_from_slice(&chunk[..k]);
                    n += k;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
        if n > 0 {
            Ok(n)
        } else if eof || closed {
            Ok(0)
        } else {
            Err(io::ErrorKind::WouldBlock.into())
        }
    }

    fn write(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        // Older ciphertext first, so rustls's buffer never grows past its limit.
        self.flush()?;
        let n = self.conn.writer().write_vectored(bufs)?;
        match self.flush() {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
        if n == 0 && bufs.iter().any(|b| !b.is_empty()) {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        while self.conn.wants_write() {
            if self.conn.write_tls(&mut NonBlocking(&self.tcp))? == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
        }
        Ok(())
    }
}
