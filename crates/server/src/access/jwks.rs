//! A JWKS (RFC 7517 key set) fetched over HTTP(S), cached by `kid`, refreshed on a timer and when
//! a token names a `kid` the cache lacks (at most once per `jwks_min_refresh`, so forged `kid`s
//! cannot turn the hub into a JWKS-server hammer). Rotation needs no restart: publish the new key
//! in the set, then sign with it.
//!
//! Only public keys (RSA, EC, OKP) are taken from a set: a symmetric `oct` key in a fetched
//! document would let whoever can read the document sign tokens.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use jsonwebtoken::DecodingKey;
use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::access::jwt::TokenError;

/// Largest JWKS document accepted.
const MAX_DOCUMENT: usize = 1 << 20;
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// The cached key set.
pub struct Jwks {
    url: String,
    min_refresh: Duration,
    keys: RwLock<HashMap<String, DecodingKey>>,
    /// Held while fetching, so concurrent unknown `kid`s cause one fetch; holds the last attempt.
    fetching: tokio::sync::Mutex<Option<Instant>>,
}

impl Jwks {
    /// Fetches the set now (in the background) and every `refresh` after.
    pub fn start(url: String, refresh: Duration, min_refresh: Duration) -> Arc<Jwks> {
        let jwks = Arc::new(Jwks { url, min_refresh, keys: RwLock::new(HashMap::new()), fetching: Default::default() });
        let weak = Arc::downgrade(&jwks);
        tokio::spawn(async move {
            loop {
                let Some(jwks) = weak.upgrade() else { return };
                jwks.refresh(true).await;
                drop(jwks);
                tokio::time::sleep(refresh).await;
            }
        });
        jwks
    }

    /// The key for `kid`, fetching the set again if it is unknown and the last fetch is older
    /// than `jwks_min_refresh`.
    pub async fn key(&self, kid: &str) -> Result<DecodingKey, TokenError> {
        if let Some(k) = self.cached(kid) {
            return Ok(k);
        }
        self.refresh(false).await;
        self.cached(kid).ok_or_else(|| TokenError(format!("unknown key id (kid {kid:?} is not in the JWKS)")))
    }

    fn cached(&self, kid: &str) -> Option<DecodingKey> {
        self.keys.read().unwrap_or_else(|e| e.into_inner()).get(kid).cloned()
    }

    async fn refresh(&self, scheduled: bool) {
        let mut last = self.fetching.lock().await;
        if !scheduled && last.is_some_and(|t| t.elapsed() < self.min_refresh) {
            return;
        }
        *last = Some(Instant::now());
        match tokio::time::timeout(FETCH_TIMEOUT, fetch(&self.url)).await {
            Ok(Ok(set)) => {
                let keys = usable_keys(&set);
                tracing::debug!(url = %self.url, keys = keys.len(), "JWKS loaded");
                *self.keys.write().unwrap_or_else(|e| e.into_inner()) = keys;
            }
            Ok(Err(e)) => tracing::warn!(url = %self.url, error = %e, "JWKS fetch failed; keeping the keys we had"),
            Err(_) => tracing::warn!(url = %self.url, "JWKS fetch timed out; keeping the keys we had"),
        }
    }
}

/// Public keys with a `kid`; others are skipped.
fn usable_keys(set: &JwkSet) -> HashMap<String, DecodingKey> {
    set.keys
        .iter()
        .filter(|k| !matches!(k.algorithm, AlgorithmParameters::OctetKey(_)))
        .filter_map(|k| Some((k.common.key_id.clone()?, DecodingKey::from_jwk(k).ok()?)))
        .collect()
}

/// GET `url` and parse it as a JWKS.
async fn fetch(url: &str) -> anyhow::Result<JwkSet> {
    let uri: hyper::Uri = url.parse()?;
    let https = uri.scheme_str() == Some("https");
    let host = uri.host().ok_or_else(|| anyhow::anyhow!("no host in {url}"))?.to_owned();
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    let tcp = TcpStream::connect((host.as_str(), port)).await?;
    let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
    let req = hyper::Request::get(path)
        .header(hyper::header::HOST, &host)
        .header(hyper::header::ACCEPT, "application/json")
        .body(Empty::<Bytes>::new())?;
    let res = if https {
        let tls = tls_connector().connect(rustls_pki(&host)?, tcp).await?;
        send(TokioIo::new(tls), req).await?
    } else {
        send(TokioIo::new(tcp), req).await?
    };
    Ok(serde_json::from_slice(&res)?)
}

async fn send<T>(io: T, req: hyper::Request<Empty<Bytes>>) -> anyhow::Result<Bytes>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await?;
    tokio::spawn(conn);
    let res = sender.send_request(req).await?;
    anyhow::ensure!(res.status().is_success(), "HTTP {}", res.status());
    let body = Limited::new(res.into_body(), MAX_DOCUMENT)
        .collect()
        .await
        .map_err(|e| anyhow::anyhow!("reading the JWKS: {e}"))?;
    Ok(body.to_bytes())
}

fn tls_connector() -> tokio_rustls::TlsConnector {
    let mut roots = tokio_rustls::rustls::RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    let config = tokio_rustls::rustls::ClientConfig::builder_with_provider(Arc::new(
        tokio_rustls::rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map(|b| b.with_root_certificates(roots).with_no_client_auth());
    match config {
        Ok(c) => tokio_rustls::TlsConnector::from(Arc::new(c)),
        Err(e) => unreachable!("ring supports the default protocol versions: {e}"),
    }
}

fn rustls_pki(host: &str) -> anyhow::Result<tokio_rustls::rustls::pki_types::ServerName<'static>> {
    Ok(tokio_rustls::rustls::pki_types::ServerName::try_from(host.to_owned())?)
}
