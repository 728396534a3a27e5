//! A small HTTP/1.1 client for the hub's JSON API (one request per connection; publishing tools and
//! tests need nothing more).

use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use serde_json::Value;

use crate::Error;
use crate::tls::Tls;

/// A hub's HTTP API at `base` (`http://host:port`), with an optional API key.
#[derive(Debug, Clone)]
pub struct Api {
    host: String,
    port: u16,
    api_key: Option<String>,
    /// For `https://`: which certificates to trust.
    tls: Option<Tls>,
}

/// A reply: status and parsed JSON body.
#[derive(Debug, Clone)]
pub struct Reply {
    /// The HTTP status.
    pub status: u16,
    /// The body, parsed (`Null` when empty or not JSON).
    pub body: Value,
    /// The `Retry-After` header, if any.
    pub retry_after: Option<String>,
    /// The body as text (for non-JSON endpoints such as `/metrics`).
    pub text: String,
    /// The `Content-Type` header, if any.
    pub content_type: Option<String>,
}

/// One HTTP/1.1 connection reused for successive requests.
pub struct KeepAlive {
    api: Api,
    sender: hyper::client::conn::http1::SendRequest<Full<bytes::Bytes>>,
}

impl KeepAlive {
    /// `POST path` with a raw JSON body; returns the status.
    pub async fn post_raw(&mut self, path: &str, body: String) -> Result<u16, Error> {
        self.sender.ready().await.map_err(|e| Error::Http(0, e.to_string()))?;
        let mut req = Request::builder()
            .method("POST")
            .uri(path)
            .header("host", format!("{}:{}", self.api.host, self.api.port))
            .header("content-type", "application/json");
        if let Some(key) = &self.api.api_key {
            req = req.header("authorization", format!("Bearer {key}"));
        }
        let req = req.body(Full::new(bytes::Bytes::from(body))).map_err(|e| Error::Http(0, e.to_string()))?;
        let res = self.sender.send_request(req).await.map_err(|e| Error::Http(0, e.to_string()))?;
        let status = res.status().as_u16();
        res.into_body().collect().await.map_err(|e| Error::Http(status, e.to_string()))?;
        Ok(status)
    }
}

impl Api {
    /// An API client for `base`, e.g. `http://127.0.0.1:8000` (or `https://…`, trusting the
    /// system's roots; see [`Api::with_tls`]).
    pub fn new(base: &str, api_key: Option<String>) -> Result<Api, Error> {
        let uri: ::http::Uri =
            base.parse().map_err(|e: ::http::uri::InvalidUri| Error::Url(base.into(), e.to_string()))?;
        let secure = uri.scheme_str().is_some_and(|s| s.eq_ignore_ascii_case("https"));
        let host = uri.host().ok_or_else(|| Error::Url(base.into(), "no host".into()))?.to_string();
        let port = uri.port_u16().unwrap_or(if secure { 443 } else { 80 });
        Ok(Api { host, port, api_key, tls: secure.then(Tls::native) })
    }

    /// For an `https://` hub: trust `tls` instead of the system's roots.
    pub fn with_tls(mut self, tls: Tls) -> Api {
        if self.tls.is_some() {
            self.tls = Some(tls);
        }
        self
    }

    async fn open(&self) -> Result<crate::tls::Conn, Error> {
        crate::tls::open(&self.host, self.port, None, self.tls.as_ref()).await
    }

    /// `GET path`.
    pub async fn get(&self, path: &str) -> Result<Reply, Error> {
        self.request("GET", path, None).await
    }

    /// `POST path` with a JSON body.
    pub async fn post(&self, path: &str, body: &Value) -> Result<Reply, Error> {
        self.request("POST", path, Some(body.to_string())).await
    }

    /// `POST path` with a raw body (tests send malformed JSON with it).
    pub async fn post_raw(&self, path: &str, body: String) -> Result<Reply, Error> {
        self.request("POST", path, Some(body)).await
    }

    /// Publishes `event` on `channel`; returns the API's `data` object.
    pub async fn publish(&self, channel: &str, event: &Value) -> Result<Value, Error> {
        let r = self.post("/api/v1/publish", &serde_json::json!({"channel": channel, "event": event})).await?;
        if r.status != 200 {
            return Err(Error::Http(r.status, r.body.to_string()));
        }
        Ok(r.body["data"].clone())
    }

    /// A persistent (keep-alive) connection for many requests in a row, e.g. a benchmark.
    pub async fn keep_alive(&self) -> Result<KeepAlive, Error> {
        let stream = self.open().await?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| Error::Http(0, e.to_string()))?;
        tokio::spawn(conn);
        Ok(KeepAlive { api: self.clone(), sender })
    }

    async fn request(&self, method: &str, path: &str, body: Option<String>) -> Result<Reply, Error> {
        let stream = self.open().await?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| Error::Http(0, e.to_string()))?;
        tokio::spawn(conn);
        let mut req =
            Request::builder().method(method).uri(path).header("host", format!("{}:{}", self.host, self.port));
        if body.is_some() {
            req = req.header("content-type", "application/json");
        }
        if let Some(key) = &self.api_key {
            req = req.header("authorization", format!("Bearer {key}"));
        }
        let req = req
            .body(Full::new(bytes::Bytes::from(body.unwrap_or_default())))
            .map_err(|e| Error::Http(0, e.to_string()))?;
        let res = sender.send_request(req).await.map_err(|e| Error::Http(0, e.to_string()))?;
        let status = res.status().as_u16();
        let retry_after = res.headers().get("retry-after").and_then(|v| v.to_str().ok()).map(str::to_owned);
        let content_type = res.headers().get("content-type").and_then(|v| v.to_str().ok()).map(str::to_owned);
        let bytes = res.into_body().collect().await.map_err(|e| Error::Http(status, e.to_string()))?.to_bytes();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        let text = String::from_utf8_lossy(&bytes).into_owned();
        Ok(Reply { status, body, retry_after, text, content_type })
    }
}
