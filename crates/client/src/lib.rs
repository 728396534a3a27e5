//! A Rust client for hubbub: connect over WebSocket, subscribe, receive events; publish through the
//! HTTP API. The CLI's `sub`/`pub` and the integration tests use it. Its WebSocket side is
//! `tokio-websockets`, an implementation independent of the hub's own framing, so every test also
//! checks the hub's wire format against a second implementation.

pub mod http;
pub mod tls;

use std::collections::VecDeque;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_websockets::{ClientBuilder, Message, WebSocketStream};

pub use tokio_websockets::CloseCode;

/// What can go wrong talking to a hub.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The URL could not be used.
    #[error("bad url {0}: {1}")]
    Url(String, String),
    /// TLS failed: an unreadable CA file, or a handshake the hub's certificate did not pass.
    #[error("tls: {0}")]
    Tls(String),
    /// The TCP connection failed.
    #[error("connect: {0}")]
    Io(#[from] std::io::Error),
    /// The WebSocket layer failed.
    #[error("websocket: {0}")]
    Ws(#[from] tokio_websockets::Error),
    /// The hub closed the connection.
    #[error("closed by the hub: {0:?} {1}")]
    Closed(Option<u16>, String),
    /// The hub sent something that is not JSON.
    #[error("hub sent invalid JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// Nothing arrived in time.
    #[error("timed out")]
    Timeout,
    /// The HTTP API answered with an error.
    #[error("http {0}: {1}")]
    Http(u16, String),
}

/// A WebSocket connection to a hub.
pub struct Client {
    ws: WebSocketStream<tls::Conn>,
    /// The welcome frame the hub sent.
    pub welcome: Value,
    unread: VecDeque<Value>,
}

impl Client {
    /// Connects to `url` (`ws://` or `wss://host:port/path?query`) and reads the welcome frame.
    /// `wss://` trusts the system's roots; see [`Client::connect_with_tls`] for others.
    pub async fn connect(url: &str) -> Result<Client, Error> {
        Client::connect_from(url, None).await
    }

    /// Like [`Client::connect`], trusting `tls` for `wss://`.
    pub async fn connect_with_tls(url: &str, tls: &tls::Tls) -> Result<Client, Error> {
        Client::open(url, None, Some(tls)).await
    }

    /// Like [`Client::connect`], binding the local side to `local_ip` first (the benchmark spreads
    /// connections over 127.0.0.x to get past the ephemeral port range).
    pub async fn connect_from(url: &str, local_ip: Option<std::net::IpAddr>) -> Result<Client, Error> {
        Client::open(url, local_ip, None).await
    }

    async fn open(url: &str, local_ip: Option<std::net::IpAddr>, tls: Option<&tls::Tls>) -> Result<Client, Error> {
        let uri: ::http::Uri =
            url.parse().map_err(|e: ::http::uri::InvalidUri| Error::Url(url.into(), e.to_string()))?;
        let secure = uri.scheme_str().is_some_and(|s| s.eq_ignore_ascii_case("wss"));
        let host = uri.host().ok_or_else(|| Error::Url(url.into(), "no host".into()))?.to_string();
        let port = uri.port_u16().unwrap_or(if secure { 443 } else { 80 });
        let native = tls::Tls::native;
        let tls = secure.then(|| tls.cloned().unwrap_or_else(native));
        let stream = tls::open(&host, port, local_ip, tls.as_ref()).await?;
        let (ws, _) = ClientBuilder::from_uri(uri).connect_on(stream).await?;
        let mut client = Client { ws, welcome: Value::Null, unread: VecDeque::new() };
        client.welcome = client.recv_raw().await?;
        Ok(client)
    }

    /// The `client_id` from the welcome frame.
    pub fn client_id(&self) -> &str {
        self.welcome["client_id"].as_str().unwrap_or_default()
    }

    /// Sends a JSON value as a text frame.
    pub async fn send_json(&mut self, value: &Value) -> Result<(), Error> {
        self.send_text(value.to_string()).await
    }

    /// Sends raw text (the tests use it to send malformed frames).
    pub async fn send_text(&mut self, text: String) -> Result<(), Error> {
        self.ws.send(Message::text(text)).await?;
        Ok(())
    }

    /// Sends a raw WebSocket message.
    pub async fn send_message(&mut self, msg: Message) -> Result<(), Error> {
        self.ws.send(msg).await?;
        Ok(())
    }

    /// Subscribes and waits for the `subscribed` reply (or an `error`), keeping any events that
    /// arrive meanwhile for [`Client::recv`].
    pub async fn subscribe(&mut self, channels: &[&str]) -> Result<Value, Error> {
        self.send_json(&serde_json::json!({"type": "subscribe", "channels": channels})).await?;
        self.wait_for(|v| v["type"] == "subscribed" || v["type"] == "error").await
    }

    /// Unsubscribes and waits for the `unsubscribed` reply.
    pub async fn unsubscribe(&mut self, channels: &[&str]) -> Result<Value, Error> {
        self.send_json(&serde_json::json!({"type": "unsubscribe", "channels": channels})).await?;
        self.wait_for(|v| v["type"] == "unsubscribed" || v["type"] == "error").await
    }

    /// Reads frames until one matches `pred`; the others are kept, in order, for [`Client::recv`].
    pub async fn wait_for(&mut self, pred: impl Fn(&Value) -> bool) -> Result<Value, Error> {
        if let Some(i) = self.unread.iter().position(&pred) {
            return Ok(self.unread.remove(i).unwrap_or_default());
        }
        loop {
            let v = self.recv_raw().await?;
            if pred(&v) {
                return Ok(v);
            }
            self.unread.push_back(v);
        }
    }

    /// The next JSON frame from the hub (heartbeats included).
    pub async fn recv(&mut self) -> Result<Value, Error> {
        match self.unread.pop_front() {
            Some(v) => Ok(v),
            None => self.recv_raw().await,
        }
    }

    /// The next JSON frame that is not a heartbeat.
    pub async fn recv_event(&mut self) -> Result<Value, Error> {
        loop {
            let v = self.recv().await?;
            if v["type"] != "heartbeat" {
                return Ok(v);
            }
        }
    }

    /// [`Client::recv`] with a time limit.
    pub async fn recv_timeout(&mut self, limit: Duration) -> Result<Value, Error> {
        tokio::time::timeout(limit, self.recv()).await.map_err(|_| Error::Timeout)?
    }

    /// Waits for the hub to close the connection; returns its close code and reason. Frames that
    /// arrive first are discarded.
    pub async fn closed(&mut self) -> (Option<u16>, String) {
        loop {
            match self.recv_raw().await {
                Ok(_) => continue,
                Err(Error::Closed(code, reason)) => return (code, reason),
                Err(e) => return (None, e.to_string()),
            }
        }
    }

    /// Closes the connection cleanly.
    pub async fn close(mut self) -> Result<(), Error> {
        self.ws.close().await?;
        Ok(())
    }

    async fn recv_raw(&mut self) -> Result<Value, Error> {
        loop {
            let msg = match self.ws.next().await {
                None => return Err(Error::Closed(None, "connection ended".into())),
                Some(m) => m?,
            };
            if let Some((code, reason)) = msg.as_close() {
                return Err(Error::Closed(Some(u16::from(code)), reason.to_string()));
            }
            if let Some(text) = msg.as_text() {
                return Ok(serde_json::from_str(text)?);
            }
        }
    }
}

/// Opens a TCP connection, optionally from a chosen local address.
pub async fn connect_tcp(host: &str, port: u16, local_ip: Option<std::net::IpAddr>) -> Result<TcpStream, Error> {
    let addr = tokio::net::lookup_host((host, port))
        .await?
        .next()
        .ok_or_else(|| Error::Url(host.into(), "does not resolve".into()))?;
    let stream = match local_ip {
        None => TcpStream::connect(addr).await?,
        Some(ip) => {
            let socket =
                if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
            socket.bind(std::net::SocketAddr::new(ip, 0))?;
            socket.connect(addr).await?
        }
    };
    stream.set_nodelay(true)?;
    Ok(stream)
}
