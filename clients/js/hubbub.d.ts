/** A delivered event: the object as published, plus `channel`, `offset`, `timestamp` when absent. */
export interface HubbubEvent {
  type?: string;
  channel?: string;
  offset?: number;
  timestamp?: string;
  [key: string]: unknown;
}

export interface ChannelPosition {
  channel: string;
  offset: number;
  epoch: string;
  recovered?: boolean;
  replayed?: number;
  reason?: string;
}

export interface HubbubClientOptions {
  /** First reconnect delay in ms (default 2000). */
  initialDelay?: number;
  /** Delay growth per attempt (default 1.5). */
  factor?: number;
  /** Largest delay in ms (default 30000). */
  maxDelay?: number;
  /** A connection up this long resets the delay (default 30000 ms). */
  stableAfter?: number;
  /** Reconnect a socket silent this long (default 2.5 x the hub's heartbeat interval). */
  heartbeatTimeout?: number;
  /** Reconnect at all (default true). */
  reconnect?: boolean;
  /** A WebSocket implementation (default globalThis.WebSocket). */
  WebSocket?: unknown;
  /** Random source for jitter, in [0, 1) (default Math.random). */
  random?: () => number;
  /**
   * A JWT, or a function returning one, sent in an `auth` frame first on every connection. A
   * function is called again for each connection and on `token_expiring`, and a 4001 close then
   * reconnects; with a fixed string 4001 is final.
   */
  token?: string | (() => string | Promise<string>);
}

export class HubbubClient {
  constructor(url: string, options?: HubbubClientOptions);
  readonly url: string;
  /** The hub's welcome frame, once connected. */
  welcome: Record<string, unknown> | null;
  subscribe(channels: string | string[]): Promise<{ type: "subscribed"; channels: string[]; positions: ChannelPosition[] }>;
  unsubscribe(channels: string | string[]): Promise<{ type: "unsubscribed"; channels: string[] }>;
  ping(): Promise<{ type: "pong" }>;
  /** Publishes where the hub's channel rules let clients publish (else rejects with `permission_denied`). */
  publish(
    channel: string,
    event: Record<string, unknown>,
  ): Promise<{ type: "published"; channel: string; offset: number | null; delivered: number }>;
  on(name: "event", fn: (e: HubbubEvent) => void): () => void;
  on(name: "recovery", fn: (p: ChannelPosition) => void): () => void;
  on(name: "reconnecting", fn: (info: { in: number; code: number }) => void): () => void;
  on(name: "open" | "close" | "error" | "message", fn: (value: any) => void): () => void;
  events(): AsyncGenerator<HubbubEvent>;
  close(): void;
}

export default HubbubClient;
