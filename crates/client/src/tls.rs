//! `wss://` and `https://` for the client: the connection is plain TCP or rustls over it.
//!
//! Trust comes from the system's roots (`rustls-native-certs`, which also honours the usual
//! `SSL_CERT_FILE` and `SSL_CERT_DIR`), or from [`Tls::with_ca_file`] for a hub with its own
//! (for example self-signed) certificate.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, RootCertStore};

use crate::Error;

/// Which certificates a TLS connection trusts.
#[derive(Clone)]
pub struct Tls(Arc<ClientConfig>);

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tls(..)")
    }
}

impl Tls {
    /// The system's roots (built once per process).
    pub fn native() -> Tls {
        static NATIVE: OnceLock<Tls> = OnceLock::new();
        NATIVE.get_or_init(|| Tls::from_roots(native_roots())).clone()
    }

    /// The system's roots plus the certificates in a PEM file (a private CA, or a self-signed
    /// hub certificate).
    pub fn with_ca_file(path: &std::path::Path) -> Result<Tls, Error> {
        let mut roots = native_roots();
        let certs = CertificateDer::pem_file_iter(path)
            .map_err(|e| Error::Tls(format!("{}: {e}", path.display())))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| Error::Tls(format!("{}: {e}", path.display())))?;
        if certs.is_empty() {
            return Err(Error::Tls(format!("{}: no certificate in the file", path.display())));
        }
        for cert in certs {
            roots.add(cert).map_err(|e| Error::Tls(format!("{}: {e}", path.display())))?;
        }
        Ok(Tls::from_roots(roots))
    }

    fn from_roots(roots: RootCertStore) -> Tls {
        let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map(|b| b.with_root_certificates(roots).with_no_client_auth());
        match config {
            Ok(c) => Tls(Arc::new(c)),
            Err(e) => unreachable!("ring supports the default protocol versions: {e}"),
        }
    }

    /// Wraps `tcp` in TLS for `host`.
    pub async fn connect(&self, host: &str, tcp: TcpStream) -> Result<Conn, Error> {
        let name = ServerName::try_from(host.to_owned()).map_err(|e| Error::Tls(format!("{host}: {e}")))?;
        let tls = tokio_rustls::TlsConnector::from(self.0.clone())
            .connect(name, tcp)
            .await
            .map_err(|e| Error::Tls(format!("handshake with {host}: {e}")))?;
        Ok(Conn::Tls(Box::new(tls)))
    }
}

fn native_roots() -> RootCertStore {
    let mut roots = RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    roots
}

/// A connection to a hub: plain TCP, or TLS over TCP.
#[derive(Debug)]
pub enum Conn {
    /// `ws://`, `http://`.
    Plain(TcpStream),
    /// `wss://`, `https://`.
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl AsyncRead for Conn {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Conn::Plain(s) => s.is_write_vectored(),
            Conn::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_flush(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// Opens `host:port` (from `local_ip` if given), with TLS when `tls` is given.
pub async fn open(host: &str, port: u16, local_ip: Option<std::net::IpAddr>, tls: Option<&Tls>) -> Result<Conn, Error> {
    let tcp = crate::connect_tcp(host, port, local_ip).await?;
    match tls {
        None => Ok(Conn::Plain(tcp)),
        Some(t) => t.connect(host, tcp).await,
    }
}
