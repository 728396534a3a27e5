// The JavaScript client against a real hubbub process (the binary cargo built), with Node's test
// runner. Run: node --experimental-websocket --test clients/js/test/   (Node 22+: no flag needed)
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, writeFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { HubbubClient } from "../hubbub.js";
import { freePort, startHub, stop } from "../../../tests/support/hub-process.mjs";

async function publish(port, channel, event) {
  const r = await fetch(`http://127.0.0.1:${port}/api/v1/publish`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ channel, event }),
  });
  assert.equal(r.status, 200);
  return (await r.json()).data;
}

const next = (it, ms = 5000) => {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no event within ${ms} ms`)), ms);
  });
  return Promise.race([it.next().then((r) => r.value), timeout]).finally(() => clearTimeout(timer));
};

test("subscribes, receives events by callback and async iteration, pings", async () => {
  const port = await freePort();
  const hub = await startHub(port);
  const client = new HubbubClient(`ws://127.0.0.1:${port}/ws?client_name=js`);
  try {
    const seen = [];
    client.on("event", (e) => seen.push(e));
    const reply = await client.subscribe(["news"]);
    assert.equal(reply.type, "subscribed");
    assert.equal(client.welcome.type, "connection_ack");
    await publish(port, "news", { type: "headline", n: 1 });
    const it = client.events();
    const e = await next(it);
    assert.deepEqual([e.type, e.n, e.channel, e.offset], ["headline", 1, "news", 1]);
    assert.equal(seen.length, 1);
    assert.equal((await client.ping()).type, "pong");
    await assert.rejects(client.subscribe(["bad name"]), (err) => err.code === "invalid_channel");
  } finally {
    client.close();
    await stop(hub);
  }
});

test("large events arrive intact over permessage-deflate, which Node's WebSocket negotiates", async () => {
  const port = await freePort();
  const hub = await startHub(port);
  const client = new HubbubClient(`ws://127.0.0.1:${port}/ws`);
  try {
    await client.subscribe(["scores"]);
    const players = Array.from({ length: 50 }, (_, i) => ({ id: i, name: `player ${i}`, score: i * 11 }));
    await publish(port, "scores", { type: "scoreboard", players });
    await publish(port, "scores", { type: "tick" }); // small: goes out uncompressed on the same socket
    const it = client.events();
    assert.deepEqual((await next(it)).players, players);
    assert.equal((await next(it)).type, "tick");
    const metrics = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
    assert.match(metrics, /^hubbub_deflated_publications_total 1$/m, "the scoreboard went out compressed");
  } finally {
    client.close();
    await stop(hub);
  }
});

test("reconnects after the hub restarts and resumes without gap or duplicate", async () => {
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), "hubbub-js-"));
  const config = join(dir, "hub.toml");
  writeFileSync(
    config,
    `[history]\nstore = "disk"\npath = ${JSON.stringify(join(dir, "data"))}\n\n[[channels]]\npattern = "h:*"\nhistory_size = 100\nhistory_ttl = "1h"\n`,
  );
  let hub = await startHub(port, config);
  const client = new HubbubClient(`ws://127.0.0.1:${port}/ws`, { initialDelay: 200, random: () => 1 });
  const reconnecting = [];
  client.on("reconnecting", (r) => reconnecting.push(r));
  try {
    await client.subscribe(["h:feed"]);
    const it = client.events();
    await publish(port, "h:feed", { n: 1 });
    assert.equal((await next(it)).n, 1);
    await stop(hub); // the client gets 1001 and starts reconnecting
    hub = await startHub(port, config);
    await publish(port, "h:feed", { n: 2 }); // likely before the client is back: recovered from history
    await publish(port, "h:feed", { n: 3 });
    const got = [(await next(it, 10000)).n, (await next(it, 10000)).n];
    assert.deepEqual(got, [2, 3]);
    await publish(port, "h:feed", { n: 4 });
    assert.equal((await next(it)).n, 4, "no duplicate before 4");
    assert.ok(reconnecting.length >= 1);
    assert.equal(reconnecting[0].code, 1001);
  } finally {
    client.close();
    await stop(hub);
    rmSync(dir, { recursive: true, force: true });
  }
});

test("a silent socket is reconnected by the heartbeat watchdog", async () => {
  const port = await freePort();
  const hub = await startHub(port);
  const client = new HubbubClient(`ws://127.0.0.1:${port}/ws`, { heartbeatTimeout: 300, initialDelay: 50 });
  try {
    const reconnect = new Promise((resolve) => client.on("reconnecting", resolve));
    const r = await reconnect;
    assert.equal(r.code, 4000, "closed by the watchdog, not by the hub");
  } finally {
    client.close();
    await stop(hub);
  }
});

/** An HS256 JWT made with Node's crypto (the tests need no JWT library). */
async function hs256(secret, claims) {
  const { createHmac } = await import("node:crypto");
  const b64 = (v) => Buffer.from(JSON.stringify(v)).toString("base64url");
  const body = `${b64({ alg: "HS256", typ: "JWT" })}.${b64(claims)}`;
  return `${body}.${createHmac("sha256", secret).update(body).digest("base64url")}`;
}

test("authenticates with a token function, publishes where allowed, is refused where not", async () => {
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), "hubbub-js-auth-"));
  const config = join(dir, "hub.toml");
  const secret = "js-test-secret-at-least-32-bytes-long";
  writeFileSync(
    config,
    `[auth]\nhmac_secret = "${secret}"\nrequired = true\n\n[[channels]]\npattern = "chat:*"\npublish = "authenticated"\n`,
  );
  const hub = await startHub(port, config);
  let tokensMade = 0;
  const token = () => {
    tokensMade++;
    return hs256(secret, { sub: "js-user", exp: Math.floor(Date.now() / 1000) + 600 });
  };
  const client = new HubbubClient(`ws://127.0.0.1:${port}/ws`, { token });
  const listener = new HubbubClient(`ws://127.0.0.1:${port}/ws`, { token });
  try {
    await listener.subscribe(["chat:lobby"]);
    const it = listener.events();
    const reply = await client.publish("chat:lobby", { type: "said", text: "hello" });
    assert.deepEqual([reply.type, reply.channel, reply.delivered], ["published", "chat:lobby", 1]);
    const e = await next(it);
    assert.deepEqual([e.type, e.text], ["said", "hello"]);
    await assert.rejects(client.publish("news", { text: "no" }), (err) => err.code === "permission_denied");
    assert.ok(tokensMade >= 2, "one token per connection");
  } finally {
    client.close();
    listener.close();
    await stop(hub);
    rmSync(dir, { recursive: true, force: true });
  }
});
