// hubbub browser and Node client: connect, subscribe (restored after every reconnect, resuming
// from the last (offset, epoch) seen per channel), unsubscribe, ping, events as callbacks or async
// iteration. No dependencies: it needs only a WebSocket implementation (browsers; Node >= 22, or
// Node 20 with --experimental-websocket; or pass `WebSocket` in the options).
//
// Reconnection: exponential backoff with full jitter (defaults from seed 000: 2 s, x1.5, up to
// 30 s), reset after a connection that stayed up `stableAfter` ms; a heartbeat watchdog closes and
// reconnects a socket that has been silent for `heartbeatTimeout` (default 2.5 x the hub's
// heartbeat interval); close codes that mean "do not retry as is" (1002, 1007, 1009) end it.
//
// Authentication: `options.token` is a JWT string or a function returning one (sync or async). It
// is sent in an `auth` frame before anything else on every connection; with a function, a fresh
// token is fetched for every connection and when the hub says `token_expiring`, and a 4001 close
// (token refused or expired) reconnects; with a fixed string, 4001 ends the client.

const TERMINAL_CLOSE_CODES = new Set([1002, 1007, 1009]);
const REPLY_TYPES = new Set(["error", "pong", "subscribed", "unsubscribed", "authenticated", "published", "token_expiring"]);

export class HubbubClient {
  /**
   * @param {string} url e.g. "ws://127.0.0.1:8000/ws?client_name=me"
   * @param {object} [options]
   */
  constructor(url, options = {}) {
    this.url = url;
    this.options = {
      initialDelay: 2000,
      factor: 1.5,
      maxDelay: 30000,
      stableAfter: 30000,
      heartbeatTimeout: undefined,
      reconnect: true,
      WebSocket: globalThis.WebSocket,
      random: Math.random,
      token: undefined,
      ...options,
    };
    if (typeof this.options.WebSocket !== "function") {
      throw new Error("no WebSocket implementation: pass options.WebSocket (Node 20: run with --experimental-websocket)");
    }
    /** channel -> { offset, epoch } for channels this client wants */
    this.channels = new Map();
    this.listeners = new Map();
    this.pending = new Map();
    this.nextId = 1;
    this.delay = this.options.initialDelay;
    this.closedByUser = false;
    this.queue = [];
    this.waiters = [];
    this.ws = null;
    this.welcome = null;
    this._connect();
  }

  /** Registers `fn` for "event", "open", "close", "reconnecting", "error", "message", "recovery". */
  on(name, fn) {
    if (!this.listeners.has(name)) this.listeners.set(name, new Set());
    this.listeners.get(name).add(fn);
    return () => this.listeners.get(name).delete(fn);
  }

  _emit(name, value) {
    for (const fn of this.listeners.get(name) ?? []) {
      try {
        fn(value);
      } catch (e) {
        queueMicrotask(() => { throw e; });
      }
    }
  }

  /** Subscribes; resolves with the hub's `subscribed` reply (rejects with an `error` frame). */
  subscribe(channels) {
    const list = Array.isArray(channels) ? channels : [channels];
    for (const ch of list) if (!this.channels.has(ch)) this.channels.set(ch, null);
    return this._request({ type: "subscribe", channels: list });
  }

  /** Unsubscribes; resolves with the `unsubscribed` reply. */
  unsubscribe(channels) {
    const list = Array.isArray(channels) ? channels : [channels];
    for (const ch of list) this.channels.delete(ch);
    return this._request({ type: "unsubscribe", channels: list });
  }

  /**
   * Publishes `event` (an object) into `channel`, where the hub's channel rules let clients
   * publish; resolves with the `published` reply, rejects with the `error` frame
   * (`permission_denied` where clients may not publish).
   */
  publish(channel, event) {
    return this._request({ type: "publish", channel, event });
  }

  /** Application-level ping; resolves with the `pong`. */
  ping() {
    return this._request({ type: "ping", data: {} });
  }

  /** Events as an async iterator: `for await (const e of client.events()) …`. */
  async *events() {
    while (!this.closedByUser) {
      if (this.queue.length) {
        yield this.queue.shift();
        continue;
      }
      const next = await new Promise((resolve) => this.waiters.push(resolve));
      if (next === null) return;
      yield next;
    }
  }

  /** Closes for good (no reconnect). */
  close() {
    this.closedByUser = true;
    clearTimeout(this.retryTimer);
    clearTimeout(this.watchdog);
    for (const w of this.waiters.splice(0)) w(null);
    this.ws?.close(1000);
  }

  _request(frame) {
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      if (this.ws?.readyState === 1) this.ws.send(JSON.stringify({ ...frame, id }));
      else this.pending.get(id).frame = { ...frame, id };
    });
  }

  _connect() {
    const ws = new this.options.WebSocket(this.url);
    this.ws = ws;
    this.connectedAt = 0;
    ws.onopen = () => {
      this.connectedAt = Date.now();
      this._emit("open", undefined);
    };
    ws.onmessage = (m) => this._onMessage(m.data);
    ws.onerror = (e) => this._emit("error", e);
    ws.onclose = (e) => this._onClose(e);
  }

  _armWatchdog() {
    clearTimeout(this.watchdog);
    const ms = this.options.heartbeatTimeout ?? (this.welcome?.heartbeat_interval ? this.welcome.heartbeat_interval * 2500 : 0);
    if (ms > 0) this.watchdog = setTimeout(() => this.ws?.close(4000), ms);
  }

  _onMessage(text) {
    this._armWatchdog();
    let msg;
    try {
      msg = JSON.parse(text);
    } catch {
      return;
    }
    this._emit("message", msg);
    switch (msg.type) {
      case "connection_ack":
        this.welcome = msg;
        this._armWatchdog();
        this._restore(this.ws);
        return;
      case "token_expiring":
        if (typeof this.options.token === "function") this._authenticate(this.ws);
        break;
      case "heartbeat":
        return;
      case "subscribed":
        for (const p of msg.positions ?? []) {
          if (!this.channels.has(p.channel)) continue;
          const known = this.channels.get(p.channel);
          // Keep our position when the hub recovered from it; otherwise start from the hub's.
          if (!(p.recovered === true && known && known.epoch === p.epoch)) {
            this.channels.set(p.channel, { offset: p.offset, epoch: p.epoch });
          }
          if (p.recovered === false) this._emit("recovery", p);
        }
        break;
    }
    if (msg.id !== undefined && this.pending.has(msg.id)) {
      const { resolve, reject } = this.pending.get(msg.id);
      this.pending.delete(msg.id);
      (msg.type === "error" ? reject : resolve)(msg);
      return;
    }
    if (REPLY_TYPES.has(msg.type)) return;
    if (typeof msg.channel === "string" && typeof msg.offset === "number") {
      const p = this.channels.get(msg.channel);
      if (p) p.offset = msg.offset;
    }
    this._emit("event", msg);
    const waiter = this.waiters.shift();
    if (waiter) waiter(msg);
    else this.queue.push(msg);
  }

  /** Sends an `auth` frame with the configured token (a fresh one when `token` is a function). */
  async _authenticate(ws) {
    const t = this.options.token;
    if (t === undefined) return;
    try {
      const token = typeof t === "function" ? await t() : t;
      if (ws.readyState === 1) ws.send(JSON.stringify({ type: "auth", token }));
    } catch (e) {
      this._emit("error", e);
    }
  }

  /** After (re)connecting: authenticate, then resubscribe everything, with `since` where known. */
  async _restore(ws) {
    await this._authenticate(ws);
    if (ws !== this.ws || ws.readyState !== 1) return;
    const channels = [...this.channels.keys()];
    if (channels.length) {
      const since = {};
      for (const [ch, p] of this.channels) if (p && p.epoch) since[ch] = { offset: p.offset, epoch: p.epoch };
      const frame = { type: "subscribe", channels };
      if (Object.keys(since).length) frame.since = since;
      ws.send(JSON.stringify(frame));
    }
    for (const p of this.pending.values()) {
      if (p.frame) {
        ws.send(JSON.stringify(p.frame));
        delete p.frame;
      }
    }
  }

  _onClose(e) {
    clearTimeout(this.watchdog);
    // Requests already sent on this connection will get no answer.
    for (const [id, p] of this.pending) {
      if (!p.frame) {
        this.pending.delete(id);
        p.reject(new Error(`connection closed (${e.code}) before the hub answered`));
      }
    }
    this._emit("close", e);
    const refusedForGood = e.code === 4001 && typeof this.options.token !== "function";
    if (this.closedByUser || !this.options.reconnect || TERMINAL_CLOSE_CODES.has(e.code) || refusedForGood) {
      for (const w of this.waiters.splice(0)) w(null);
      return;
    }
    if (this.connectedAt && Date.now() - this.connectedAt >= this.options.stableAfter) {
      this.delay = this.options.initialDelay;
    }
    // Full jitter: anywhere between 0 and the current delay.
    const wait = Math.floor(this.options.random() * this.delay);
    this._emit("reconnecting", { in: wait, code: e.code });
    this.retryTimer = setTimeout(() => this._connect(), wait);
    this.delay = Math.min(this.delay * this.options.factor, this.options.maxDelay);
  }
}

export default HubbubClient;
