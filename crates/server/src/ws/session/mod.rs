//! One WebSocket connection, from the welcome frame to the close handshake.
//!
//! One task per connection runs one `select!` over four events: shutdown, frames waiting in the
//! outbox, the socket becoming readable, and the ping/read-timeout timer. Design points:
//!
//! - **Coalesced writes.** Everything queued in the outbox is taken at once and written with one
//!   vectored write; under load frames batch by themselves, a lone frame goes out at once.
//! - **No idle buffers.** The task waits for readiness, not inside a `read` call, so an idle
//!   connection owns no read buffer; one is allocated when bytes arrive and freed once they are
//!   parsed.
//! - **Publishing never waits on this task.** Publishers only push into the bounded outbox; a full
//!   outbox or a write stuck past `write_timeout` closes this connection with 4008, nobody else.

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use hubbub::outbox::{Closed, OutFrame, Pushed};
use hubbub::stats::Counters;
use hubbub::{Connection, Recovery, StreamPosition, SubscribeOptions, Subscribed};
use hubbub_proto::client::{self, Request};
use hubbub_proto::deflate::Agreed;
use hubbub_proto::frame::{self, FrameError, Message, OpCode, Role};
use hubbub_proto::server::{self as reply, ChannelPosition};
use hubbub_proto::{CloseCode, ErrorCode, time};
use serde_json::value::RawValue;
use tokio::time::{Instant, sleep_until, timeout};
use tokio_util::sync::CancellationToken;

use crate::access::rate;
use crate::access::rejections::Limit;
use crate::access::{Access, Identity, UserSlot};
use crate::settings::Settings;
use crate::ws::transport::Transport;

mod access;

use access::{RateLimited, expiry_instant, user_channel};

/// How many queued frames go into one vectored write.
const MAX_IOVECS: usize = 128;
/// How long a closing connection waits for its last frames and the peer's close frame.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

fn position_of(s: &Subscribed) -> ChannelPosition {
    let (recovered, replayed, reason) = match s.recovery {
        None => (None, None, None),
        Some(Recovery::Recovered { replayed }) => (Some(true), Some(replayed), None),
        Some(Recovery::NotRecovered { reason }) => (Some(false), None, Some(reason)),
    };
    ChannelPosition {
        channel: s.channel.clone(),
        offset: s.position.offset,
        epoch: s.position.epoch.clone(),
        recovered,
        replayed,
        reason,
    }
}

/// What woke the session loop.
enum Wake {
    Shutdown,
    Outbox,
    Readable(io::Result<()>),
    Timer,
}

/// Why the session loop stopped.
#[derive(Debug)]
enum End {
    /// The peer closed the TCP connection or it failed.
    Gone,
    /// The peer sent a close frame (with this code, if any); we answer it.
    PeerClosed(Option<u16>),
    /// We close with this code and reason.
    Close(CloseCode, String),
}

struct Session {
    stream: Transport,
    rbuf: BytesMut,
    assembler: frame::Assembler,
    conn: Connection,
    settings: Arc<Settings>,
    /// Frames taken from the outbox and not yet fully written; kept between writes so its
    /// capacity is reused.
    pending: VecDeque<OutFrame>,
    /// Bytes of `pending[0]` already written.
    partial: usize,
    last_read: Instant,
    last_ping: Instant,
    shutdown: CancellationToken,
    /// Set once the close sequence runs, so its writes are not cut short by the shutdown token.
    closing: bool,
    errors_window: Instant,
    errors: u32,
    access: Arc<Access>,
    /// Who the connection is, once a token was accepted.
    identity: Option<Identity>,
    /// The user's connection slot (`limits.max_connections_per_user`), held while connected.
    _user_slot: Option<UserSlot>,
    /// With `auth.required`: when a connection that has not authenticated is closed.
    auth_deadline: Option<Instant>,
    /// When the current token expires, on the monotonic clock (fixed once per token, so the timer
    /// has a stable target).
    token_expiry: Option<Instant>,
    /// Whether `token_expiring` went out for the current token.
    expiry_warned: bool,
    /// Client frames this minute (`limits.client_frames_per_minute`).
    frames: rate::Counter,
    /// Echo mode (`websocket.echo_path`).
    echo: bool,
    /// permessage-deflate, when negotiated: client messages may arrive compressed.
    deflate: Option<Agreed>,
    /// With `auth.required`: the path's `auto_subscribe` channels, subscribed once the client
    /// has authenticated (until then it receives nothing fanned out).
    deferred_subscribe: Vec<String>,
}

/// What a session starts with besides its socket.
pub struct Start {
    /// The effective settings.
    pub settings: Arc<Settings>,
    /// Token checks, permissions, limits.
    pub access: Arc<Access>,
    /// Channels to subscribe on connect (per path).
    pub auto_subscribe: Vec<String>,
    /// Cancelled at shutdown.
    pub shutdown: CancellationToken,
    /// The identity from a token presented in the upgrade request, with its user slot.
    pub identity: Option<(Identity, Option<UserSlot>)>,
    /// `websocket.echo_path`: echo messages instead of speaking the hub protocol.
    pub echo: bool,
    /// permessage-deflate, when the handshake negotiated it.
    pub deflate: Option<Agreed>,
}

/// Serves one upgraded connection until it ends, then leaves every channel.
pub async fn run(stream: Transport, leftover: Bytes, conn: Connection, start: Start) {
    let Start { settings, access, mut auto_subscribe, shutdown, identity, echo, deflate } = start;
    let now = Instant::now();
    let (identity, user_slot) = identity.map_or((None, None), |(i, s)| (Some(i), s));
    let auth_deadline =
        (settings.auth.required && identity.is_none() && !echo).then(|| now + settings.auth.token_timeout);
    if let Some(channel) = identity.as_ref().and_then(|i| user_channel(&settings, i)) {
        auto_subscribe.push(channel);
    }
    if let Some(user) = identity.as_ref().and_then(|i| i.user.as_deref()) {
        conn.shared().set_ack_owner(user);
    }
    // `leftover` is a view into hyper's 8 KiB read buffer: copy what it holds (usually nothing)
    // and let the buffer go, or every idle connection keeps 8 KiB alive.
    let rbuf = BytesMut::from(&leftover[..]);
    drop(leftover);
    let mut s = Session {
        stream,
        rbuf,
        assembler: frame::Assembler::default(),
        conn,
        settings,
        pending: VecDeque::new(),
        partial: 0,
        last_read: now,
        last_ping: now,
        shutdown: shutdown.clone(),
        closing: false,
        errors_window: now,
        errors: 0,
        access,
        identity,
        _user_slot: user_slot,
        auth_deadline,
        expiry_warned: false,
        token_expiry: None,
        frames: rate::Counter::new(now),
        echo,
        deflate,
        deferred_subscribe: Vec::new(),
    };
    s.token_expiry = s.identity.as_ref().and_then(|i| i.expires_at).map(expiry_instant);
    // Plaintext rustls decrypted along with the upgrade request but hyper did not read.
    if s.stream.is_tls()
        && let Err(end) = s.read_some()
    {
        s.finish(end).await;
        s.conn.close().await;
        return;
    }
    let end = s.drive(auto_subscribe, &shutdown).await;
    tracing::debug!(client_id = %s.conn.shared().client_id, ?end, "session ended");
    s.finish(end).await;
    s.conn.close().await;
}

impl Session {
    async fn drive(&mut self, auto_subscribe: Vec<String>, shutdown: &CancellationToken) -> End {
        let ws = &self.settings.websocket;
        let welcome = reply::welcome(
            &self.conn.shared().client_id,
            &ws.welcome_message,
            &ws.capabilities,
            // Whole seconds, as the seeds' clients read it; a sub-second interval shows as 1, not 0 (off).
            ws.heartbeat_interval.as_secs_f64().ceil() as u64,
            &time::now_iso(),
        );
        if !self.echo {
            self.reply(welcome);
        }
        if self.auth_deadline.is_some() {
            self.deferred_subscribe = auto_subscribe;
        } else if !self.echo {
            self.subscribe_given(auto_subscribe).await;
        }
        if !self.rbuf.is_empty()
            && let Err(end) = self.process_input().await
        {
            return end;
        }
        let cancelled = shutdown.cancelled();
        tokio::pin!(cancelled);
        let timer = sleep_until(self.next_deadline());
        tokio::pin!(timer);
        let mut reads_first = false;
        loop {
            // One hand-rolled select: every source keeps its waker in a fixed slot (token, outbox,
            // socket, timer), so going round the loop registers nothing in any waiter list.
            // Reads and writes take turns going first so neither can starve the other.
            reads_first = !reads_first;
            let wake = std::future::poll_fn(|cx| {
                if cancelled.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Wake::Shutdown);
                }
                if reads_first && let Poll::Ready(r) = self.stream.poll_read_ready(cx) {
                    return Poll::Ready(Wake::Readable(r));
                }
                if self.conn.outbox().poll_ready(cx).is_ready() {
                    return Poll::Ready(Wake::Outbox);
                }
                if !reads_first && let Poll::Ready(r) = self.stream.poll_read_ready(cx) {
                    return Poll::Ready(Wake::Readable(r));
                }
                if timer.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Wake::Timer);
                }
                Poll::Pending
            })
            .await;
            let step = match wake {
                Wake::Shutdown => Err(End::Close(CloseCode::GoingAway, CloseCode::GoingAway.reason().into())),
                Wake::Outbox => self.flush().await,
                Wake::Readable(Err(_)) => Err(End::Gone),
                Wake::Readable(Ok(())) => match self.read_some() {
                    Ok(()) => self.process_input().await,
                    Err(end) => Err(end),
                },
                Wake::Timer => {
                    let r = self.on_timer();
                    timer.as_mut().reset(self.next_deadline());
                    r
                }
            };
            if let Err(end) = step {
                return end;
            }
        }
    }

    fn next_deadline(&self) -> Instant {
        let ws = &self.settings.websocket;
        let mut at = (self.last_ping + ws.ping_interval).min(self.last_read + ws.read_timeout);
        if let Some(d) = self.auth_deadline {
            at = at.min(d);
        }
        if let Some((warn, expire)) = self.expiry_times() {
            at = at.min(if self.expiry_warned { expire } else { warn });
        }
        at
    }

    fn on_timer(&mut self) -> Result<(), End> {
        let ws = &self.settings.websocket;
        let now = Instant::now();
        if self.auth_deadline.is_some_and(|d| now >= d) {
            let wait = humantime::format_duration(self.settings.auth.token_timeout);
            self.access.rejections.hit(Limit::TokenTimeout);
            self.send_error(None, ErrorCode::Unauthorized, &format!("no auth frame within {wait}; closing (4001)"));
            return Err(End::Close(CloseCode::Unauthorized, "authentication timeout".into()));
        }
        if let Some((warn, expire)) = self.expiry_times() {
            if now >= expire {
                self.send_error(None, ErrorCode::Unauthorized, "token expired and no fresh one came; closing (4001)");
                return Err(End::Close(CloseCode::Unauthorized, "token expired".into()));
            }
            if now >= warn && !self.expiry_warned {
                self.expiry_warned = true;
                let exp = self.identity.as_ref().and_then(|i| i.expires_at).unwrap_or_default();
                self.reply(reply::token_expiring(exp, expire.saturating_duration_since(now).as_secs()));
            }
        }
        if now >= self.last_read + ws.read_timeout {
            Counters::add(&self.conn.hub().stats().counters.read_timeouts, 1);
            return Err(End::Close(
                CloseCode::Policy,
                format!("read timeout: nothing received for {}", humantime::format_duration(ws.read_timeout)),
            ));
        }
        if now >= self.last_ping + ws.ping_interval {
            self.last_ping = now;
            self.push(frame::server_frame(OpCode::Ping, b"hubbub"));
        }
        Ok(())
    }

    /// Reads what the socket has, without waiting.
    fn read_some(&mut self) -> Result<(), End> {
        if self.rbuf.capacity() - self.rbuf.len() < 1024 {
            self.rbuf.reserve(4096);
        }
        match self.stream.try_read_buf(&mut self.rbuf) {
            Ok(0) => Err(End::Gone),
            Ok(_) => {
                self.last_read = Instant::now();
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::Interrupted => Ok(()),
            Err(_) => Err(End::Gone),
        }
    }

    /// Handles every complete frame in the read buffer, then frees the buffer if it is empty.
    async fn process_input(&mut self) -> Result<(), End> {
        let max = self.settings.websocket.max_message_bytes as u64;
        loop {
            let frame = match frame::decode_with(&mut self.rbuf, max, Role::Server, self.deflate.is_some()) {
                Ok(Some(f)) => f,
                Ok(None) => {
                    if let Err(e) = self.assembler.check_incomplete(&self.rbuf) {
                        return Err(self.frame_error(e));
                    }
                    break;
                }
                Err(e) => return Err(self.frame_error(e)),
            };
            match self.assembler.push(frame, max) {
                Ok(Some(msg)) => self.on_message(msg).await?,
                Ok(None) => {}
                Err(e) => return Err(self.frame_error(e)),
            }
        }
        if self.rbuf.is_empty() && self.rbuf.capacity() > 0 {
            self.rbuf = BytesMut::new();
        }
        Ok(())
    }

    fn frame_error(&mut self, e: FrameError) -> End {
        match e {
            FrameError::TooBig(len, limit) => {
                self.send_error(
                    None,
                    ErrorCode::MessageTooBig,
                    &format!(
                        "a frame of {len} bytes is over the limit of {limit} bytes; split the data or raise websocket.max_message_bytes"
                    ),
                );
                End::Close(CloseCode::TooBig, format!("frame over {limit} bytes"))
            }
            FrameError::InflatesTooBig(limit) => {
                self.send_error(
                    None,
                    ErrorCode::MessageTooBig,
                    &format!(
                        "a compressed message inflates to over the limit of {limit} bytes; split the data or raise websocket.max_message_bytes"
                    ),
                );
                End::Close(CloseCode::TooBig, format!("message inflates to over {limit} bytes"))
            }
            FrameError::InvalidUtf8 => End::Close(CloseCode::InvalidPayload, CloseCode::InvalidPayload.reason().into()),
            FrameError::BadCompression => End::Close(CloseCode::InvalidPayload, "invalid compressed data".into()),
            FrameError::Protocol(why) => End::Close(CloseCode::ProtocolError, why.into()),
        }
    }

    async fn on_message(&mut self, msg: Message) -> Result<(), End> {
        if matches!(msg, Message::Text(_) | Message::Binary(_)) {
            match self.check_frame_rate() {
                Ok(()) => {}
                Err(RateLimited::Dropped) => return Ok(()),
                Err(RateLimited::Close) => {
                    return Err(End::Close(CloseCode::RateLimited, CloseCode::RateLimited.reason().into()));
                }
            }
        }
        match msg {
            Message::Text(bytes) if self.echo => {
                self.echo_back(OpCode::Text, &bytes);
                Ok(())
            }
            Message::Binary(bytes) if self.echo => {
                self.echo_back(OpCode::Binary, &bytes);
                Ok(())
            }
            Message::Text(bytes) => {
                let stats = self.conn.hub().stats();
                Counters::add(&stats.counters.messages_received, 1);
                stats.touch();
                let text = std::str::from_utf8(&bytes).unwrap_or_default();
                self.on_text(text).await
            }
            Message::Binary(_) => self.client_error(
                None,
                ErrorCode::BinaryNotSupported,
                "binary frames are not supported; send JSON as text frames",
            ),
            Message::Ping(payload) => {
                self.push(frame::server_frame(OpCode::Pong, &payload));
                Ok(())
            }
            Message::Pong(_) => Ok(()),
            Message::Close(c) => Err(End::PeerClosed(c.map(|(code, _)| code))),
        }
    }

    /// Echo mode: the message goes back as it came. With permessage-deflate every echo is
    /// compressed, at `websocket.compression_level`, or in stored blocks (level 0, valid for any
    /// window) when the client limited the hub's window. The hub's own frames may go out
    /// uncompressed, which RFC 7692 allows; the echo compresses everything because the
    /// conformance runner (kosoku 0.1.0) hands uncompressed messages on a compressed connection
    /// to the Autobahn cases as `str`, which they cannot hash (see docs/autobahn-results.md).
    fn echo_back(&self, opcode: OpCode, payload: &[u8]) {
        let frame = match self.deflate {
            Some(d) => {
                let level = if d.compresses_outgoing() { self.settings.websocket.compression_level } else { 0 };
                hubbub_proto::deflate::always_compressed_frame(opcode, payload, level)
            }
            None => frame::server_frame(opcode, payload),
        };
        self.push(frame);
    }

    async fn on_text(&mut self, text: &str) -> Result<(), End> {
        let frame = match client::parse(text) {
            Ok(f) => f,
            Err(e) => return self.client_error(e.id.as_deref(), e.code, &e.message),
        };
        let id = frame.id.as_deref();
        let now = time::now_iso();
        if self.auth_deadline.is_some() && !matches!(frame.request, Request::Auth { .. } | Request::Ping) {
            return self.client_error(
                id,
                ErrorCode::Unauthorized,
                "this hub requires a token: send {\"type\":\"auth\",\"token\":\"…\"} first",
            );
        }
        match frame.request {
            Request::Ping => self.reply(reply::pong(id, &now)),
            Request::Auth { token } => return self.on_auth(id, &token).await,
            Request::Publish { channel, event } => return self.on_publish(id, channel, event).await,
            Request::Subscribe(req) => {
                if let Err((code, why)) = self.may_subscribe(&req) {
                    return self.client_error(id, code, &why);
                }
                let opts = SubscribeOptions {
                    since: req
                        .since
                        .into_iter()
                        .map(|(ch, s)| (ch, StreamPosition { offset: s.offset, epoch: s.epoch }))
                        .collect(),
                    ack: req.ack,
                };
                match self.conn.subscribe_with(&req.channels, &opts).await {
                    Ok(subscribed) => {
                        let positions: Vec<ChannelPosition> = subscribed.iter().map(position_of).collect();
                        // Reply first, then the replay and the live frames held meanwhile.
                        self.reply(reply::subscribed(id, &req.channels, &positions, &now));
                        self.conn.go_live(&subscribed);
                    }
                    Err(e) => return self.client_error(id, e.code, &e.message),
                }
            }
            Request::Ack { channel, offset } => {
                if let Err(e) = self.conn.ack(&channel, offset).await {
                    return self.client_error(id, e.code, &e.message);
                }
            }
            Request::Unsubscribe(channels) => {
                self.conn.unsubscribe(&channels).await;
                self.reply(reply::unsubscribed(id, &channels, &now));
            }
        }
        Ok(())
    }

    /// Sends an error frame and counts it against the per-minute budget.
    fn client_error(&mut self, id: Option<&RawValue>, code: ErrorCode, message: &str) -> Result<(), End> {
        let now = Instant::now();
        if now.duration_since(self.errors_window) >= Duration::from_secs(60) {
            self.errors_window = now;
            self.errors = 0;
        }
        self.errors += 1;
        self.send_error(id, code, message);
        let max = self.settings.websocket.max_errors_per_minute;
        if self.errors > max {
            self.send_error(
                None,
                ErrorCode::TooManyErrors,
                &format!("more than {max} bad frames in a minute; closing (1008)"),
            );
            return Err(End::Close(CloseCode::Policy, "too many errors".into()));
        }
        Ok(())
    }

    fn send_error(&mut self, id: Option<&RawValue>, code: ErrorCode, message: &str) {
        Counters::add(&self.conn.hub().stats().counters.client_errors, 1);
        if let Some(limit) = Limit::of_error(code) {
            self.access.rejections.hit(limit);
        }
        self.reply(reply::error(id, code, message, &time::now_iso()));
    }

    fn reply(&self, json: String) {
        self.push(frame::server_text(json.as_bytes()));
    }

    fn push(&self, bytes: Bytes) {
        let pushed = self.conn.outbox().push(OutFrame { bytes, published_at: std::time::Instant::now() });
        let counters = &self.conn.hub().stats().counters;
        match pushed {
            Pushed::Overflowed => Counters::add(&counters.slow_consumer_disconnects, 1),
            Pushed::DroppedOldest(n) => Counters::add(&counters.dropped_frames, n as u64),
            Pushed::Queued | Pushed::Closed => {}
        }
    }

    /// Takes everything queued and writes it. One batch per wake-up: frames that arrive during
    /// the write wait for the next turn of the loop, so reads, pings and shutdown still get theirs.
    async fn flush(&mut self) -> Result<(), End> {
        match self.conn.outbox().take_all(&mut self.pending) {
            Ok(()) => {}
            Err(Closed::SlowConsumer) => {
                return Err(End::Close(CloseCode::SlowConsumer, "outbound queue overflowed".into()));
            }
            Err(Closed::Finished) => return Err(End::Gone),
        }
        if !self.pending.is_empty() {
            self.write_pending(self.settings.websocket.write_timeout).await?;
        }
        // A burst must not leave an idle connection holding a large queue.
        if self.pending.capacity() > 64 {
            self.pending = VecDeque::new();
        }
        // Writes that never block never yield; give the scheduler its turn.
        tokio::task::consume_budget().await;
        Ok(())
    }

    /// Writes `pending` completely, waiting for writability at most `limit` at a time.
    async fn write_pending(&mut self, limit: Duration) -> Result<(), End> {
        // With TLS, bytes rustls accepted may still wait for the socket after the last frame.
        while !self.pending.is_empty() || self.stream.has_unsent() {
            let step = if self.pending.is_empty() { self.stream.flush_unsent() } else { self.try_write() };
            match step {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    let wait = timeout(limit, self.stream.writable());
                    let shutdown = self.shutdown.clone();
                    tokio::select! {
                        r = wait => match r {
                            Ok(Ok(())) => {}
                            Ok(Err(_)) => return Err(End::Gone),
                            Err(_) => {
                                // An overflow that happened meanwhile was counted already.
                                if self.conn.outbox().closed() != Some(Closed::SlowConsumer) {
                                    Counters::add(&self.conn.hub().stats().counters.slow_consumer_disconnects, 1);
                                }
                                return Err(End::Close(CloseCode::SlowConsumer, "write timeout".into()));
                            }
                        },
                        // Shutting down while the peer does not read: give up on this batch (the
                        // close sequence gets its own short grace period).
                        _ = shutdown.cancelled(), if !self.closing => {
                            return Err(End::Close(CloseCode::GoingAway, CloseCode::GoingAway.reason().into()));
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Err(End::Gone),
            }
        }
        Ok(())
    }

    /// One vectored write of as many pending frames as fit; accounts for what was written.
    fn try_write(&mut self) -> io::Result<()> {
        let mut iov = [IoSlice::new(&[]); MAX_IOVECS];
        let mut n = 0;
        for (i, f) in self.pending.iter().take(MAX_IOVECS).enumerate() {
            iov[i] = IoSlice::new(if i == 0 { &f.bytes[self.partial..] } else { &f.bytes[..] });
            n += 1;
        }
        // A lone frame goes out with write(2): writev(2) costs more in the kernel for one buffer.
        let mut written =
            if n == 1 { self.stream.try_write(&iov[0])? } else { self.stream.try_write_vectored(&iov[..n])? };
        if written == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        let total = written as u64;
        let (mut frames, mut oldest) = (0u64, None);
        while written > 0 {
            let Some(front) = self.pending.front() else { break };
            let left = front.bytes.len() - self.partial;
            if written >= left {
                written -= left;
                self.partial = 0;
                if let Some(f) = self.pending.pop_front() {
                    oldest = Some(oldest.map_or(f.published_at, |o: std::time::Instant| o.min(f.published_at)));
                    frames += 1;
                }
            } else {
                self.partial += written;
                written = 0;
            }
        }
        self.conn.record_written(frames, total, oldest);
        Ok(())
    }

    async fn await_peer_close(&mut self) {
        let mut buf = BytesMut::new();
        loop {
            if self.stream.readable().await.is_err() {
                return;
            }
            buf.reserve(1024);
            match self.stream.try_read_buf(&mut buf) {
                Ok(0) => return,
                Ok(_) => loop {
                    // Only control frames (≤ 125 bytes) are of interest; anything larger, or a
                    // stream out of step after a protocol error, just ends the wait.
                    match frame::decode(&mut buf, 125, Role::Server) {
                        Ok(Some(f)) if f.opcode == OpCode::Close => return,
                        Ok(Some(_)) => {}
                        Ok(None) => break,
                        Err(_) => return,
                    }
                },
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => return,
            }
        }
    }

    /// Ends the connection politely: last frames, our close frame, the peer's close frame.
    async fn finish(&mut self, end: End) {
        self.closing = true;
        let mut peer_closed = false;
        let close = match end {
            End::Gone => return,
            End::PeerClosed(code) => {
                peer_closed = true;
                frame::server_close(code.unwrap_or(1000), "")
            }
            End::Close(code, reason) => {
                if code == CloseCode::SlowConsumer {
                    // The queue is what overflowed: keep only a half-written frame, since the
                    // close frame must not cut into it.
                    let keep = usize::from(self.partial > 0);
                    self.pending.truncate(keep);
                } else {
                    // What was queued before the close (events before shutdown, the error frame
                    // explaining a policy close) still goes out first.
                    let _ = self.conn.outbox().take_all(&mut self.pending);
                }
                tracing::debug!(code = code.as_u16(), %reason, "closing connection");
                frame::server_close(code.as_u16(), &reason)
            }
        };
        self.conn.outbox().close(Closed::Finished);
        self.pending.push_back(OutFrame { bytes: close, published_at: std::time::Instant::now() });
        if self.write_pending(CLOSE_GRACE).await.is_err() || peer_closed {
            // After the peer's close frame and our answer, the exchange is complete.
            return;
        }
        // Wait briefly for the peer's close frame (or EOF) so the peer sees a clean close.
        let _ = timeout(CLOSE_GRACE, self.await_peer_close()).await;
    }
}
