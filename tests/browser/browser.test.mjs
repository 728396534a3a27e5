// The hub's own pages in a real browser: Debian's Chromium (/usr/bin/chromium) driven by
// playwright-core against the hubbub binary cargo built. scripts/test installs both.
// Screenshots go to test-artifacts/browser/. Under CI a missing Chromium fails the run.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdirSync, mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { freePort, root, startHub, stop } from "../support/hub-process.mjs";

const CHROMIUM = process.env.TEST_CHROMIUM ?? "/usr/bin/chromium";
const ARTIFACTS = join(root, "test-artifacts", "browser");
const ADMIN_KEY = "admin-key-0123456789abcdef";

const haveChromium = existsSync(CHROMIUM);
if (!haveChromium) {
  const why = `Chromium is not at ${CHROMIUM}: install it with apt-get install chromium (scripts/test does this as root)`;
  if (process.env.CI === "true") throw new Error(why);
  console.error(`!!! SKIPPED browser tests: ${why}`);
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function api(port, path, body, key) {
  const headers = { "content-type": "application/json" };
  if (key) headers.authorization = `Bearer ${key}`;
  const r = await fetch(`http://127.0.0.1:${port}${path}`, body ? { method: "POST", headers, body: JSON.stringify(body) } : { headers });
  return { status: r.status, body: await r.json() };
}

/** Polls `check` until it returns something truthy, or fails with `what`. */
async function until(what, check, ms = 10_000) {
  const deadline = Date.now() + ms;
  let last;
  while (Date.now() < deadline) {
    try {
      last = await check();
      if (last) return last;
    } catch (e) {
      last = e;
    }
    await sleep(100);
  }
  throw new Error(`timed out waiting for ${what} (last: ${last instanceof Error ? last.message : JSON.stringify(last)})`);
}

let browser;
before(async () => {
  if (!haveChromium) return;
  mkdirSync(ARTIFACTS, { recursive: true });
  const { chromium } = await import("playwright-core");
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
      "--disable-sync", "--disable-quic", "--no-first-run"],
  });
});
after(async () => browser?.close());

const subscribers = async (port, channel) =>
  (await api(port, "/api/v1/channels")).body.data.channels.find((c) => c.name === channel)?.subscribers ?? 0;

test("/ws/test connects, subscribes, shows a published event, and recovers from a hub restart by itself",
  { skip: !haveChromium }, async () => {
    const port = await freePort();
    let hub = await startHub(port);
    const page = await browser.newPage();
    try {
      await page.goto(`http://127.0.0.1:${port}/ws/test`);
      await page.waitForSelector('#status[data-state="open"]');
      await page.fill("#channels", "browser_room");
      await page.click("#subscribe");
      await until("the page's subscription", async () => (await subscribers(port, "browser_room")) === 1);
      const r = await api(port, "/api/v1/publish", { channel: "browser_room", event: { type: "hello_browser", n: 1 } });
      assert.equal(r.status, 200);
      await page.waitForSelector('#log :text("hello_browser")');
      await page.screenshot({ path: join(ARTIFACTS, "ws-test-live.png") });

      // Restart the hub on the same port: the page must notice, reconnect and resubscribe unaided.
      await stop(hub);
      await page.waitForSelector('#status[data-state="reconnecting"]');
      await page.screenshot({ path: join(ARTIFACTS, "ws-test-reconnecting.png") });
      hub = await startHub(port);
      await page.waitForSelector('#status[data-state="open"]', { timeout: 20_000 });
      await until("the resubscription after restart", async () => (await subscribers(port, "browser_room")) === 1, 20_000);
      await api(port, "/api/v1/publish", { channel: "browser_room", event: { type: "after_restart", n: 2 } });
      await page.waitForSelector('#log :text("after_restart")');
      await page.screenshot({ path: join(ARTIFACTS, "ws-test-after-restart.png") });
    } finally {
      await page.close();
      await stop(hub);
    }
  });

test("/admin asks for the key, then draws live charts, lists channels and connections, and publishes",
  { skip: !haveChromium }, async () => {
    const port = await freePort();
    const dir = mkdtempSync(join(tmpdir(), "hubbub-admin-"));
    const config = join(dir, "hubbub.toml");
    writeFileSync(config, `[[server.api_keys]]\nname = "dashboard"\nkey = "${ADMIN_KEY}"\nscopes = ["admin"]\n`);
    const hub = await startHub(port, config);
    const page = await browser.newPage();
    const ws = new WebSocket(`ws://127.0.0.1:${port}/ws?client_name=dash-watcher`);
    const received = [];
    ws.onmessage = (m) => received.push(JSON.parse(m.data));
    const opened = new Promise((resolve, reject) => { ws.onopen = resolve; ws.onerror = reject; });
    let publishing;
    try {
      // Without the key the page shows why it has no data.
      await page.goto(`http://127.0.0.1:${port}/admin`);
      await page.waitForSelector('#status[data-state="error"]');
      assert.match(await page.textContent("#status"), /missing_api_key/);
      await page.fill("#key", "not-the-key-0123456789");
      await page.click("#use-key");
      await until("the wrong-key error", async () => /invalid_api_key/.test(await page.textContent("#status")));

      // A subscriber and a steady stream of publishes give the charts something to draw.
      await opened;
      ws.send(JSON.stringify({ type: "subscribe", channels: ["dash_feed"] }));
      await until("the subscription", async () => (await api(port, "/api/v1/channels", null, ADMIN_KEY)).body.data.channels.length === 1);
      publishing = setInterval(() => api(port, "/api/v1/publish", { channel: "dash_feed", event: { type: "tick" } }, ADMIN_KEY), 100);

      await page.fill("#key", ADMIN_KEY);
      await page.click("#use-key");
      await page.waitForSelector('#status[data-state="live"]');
      const points = () => page.getAttribute("#chart-connections", "data-points").then(Number);
      const first = await until("chart samples", async () => (await points()) >= 2 && (await points()));
      await until("the charts to move on", async () => (await points()) > first + 1);
      await until("the connection count", async () => (await page.textContent("#value-connections")).trim() === "1");
      await until("events/s in above zero", async () => parseFloat(await page.textContent("#value-events-in")) > 0);
      await until("deliveries/s above zero", async () => parseFloat(await page.textContent("#value-events-out")) > 0);
      for (const id of ["chart-events-in", "chart-events-out", "chart-latency", "chart-slow"]) {
        assert.ok(Number(await page.getAttribute(`#${id}`, "data-points")) >= 2, id);
      }
      assert.match(await page.textContent("#channels tbody"), /dash_feed/);
      assert.match(await page.textContent("#connections tbody"), /dash-watcher/);
      await page.screenshot({ path: join(ARTIFACTS, "admin-live.png"), fullPage: true });

      // The publish form reaches the subscriber.
      clearInterval(publishing);
      await page.fill("#pub-channel", "dash_feed");
      await page.fill("#pub-event", JSON.stringify({ type: "from_admin_form" }));
      await page.click("#publish-form button[type=submit]");
      await until("the published event", async () => received.some((m) => m.type === "from_admin_form"));
      await until("the publish result", async () => /1/.test(await page.textContent("#pub-result")));
      await page.fill("#bc-event", JSON.stringify({ type: "from_broadcast_form" }));
      await page.click("#broadcast-form button[type=submit]");
      await until("the broadcast event", async () => received.some((m) => m.type === "from_broadcast_form"));
    } finally {
      clearInterval(publishing);
      ws.close();
      await page.close();
      await stop(hub);
    }
  });

test("Chromium negotiates permessage-deflate: a large publication arrives intact, compressed once on the hub",
  { skip: !haveChromium }, async () => {
    const port = await freePort();
    const hub = await startHub(port);
    const page = await browser.newPage();
    try {
      await page.goto(`http://127.0.0.1:${port}/ws/test`);
      // A socket of the page's own, so the test sees what the browser negotiated.
      const extensions = await page.evaluate((url) => new Promise((resolve, reject) => {
        const ws = new WebSocket(url);
        window.bigEvents = [];
        ws.onmessage = (m) => {
          const msg = JSON.parse(m.data);
          if (msg.type === "subscribed") resolve(ws.extensions);
          if (msg.type === "scoreboard") window.bigEvents.push(msg);
        };
        ws.onopen = () => ws.send(JSON.stringify({ type: "subscribe", channels: ["deflate_room"] }));
        ws.onerror = reject;
      }), `ws://127.0.0.1:${port}/ws`);
      assert.match(extensions, /permessage-deflate/);
      assert.match(extensions, /server_no_context_takeover/);

      const players = Array.from({ length: 40 }, (_, i) => ({ id: i, name: `player ${i}`, score: i * 3 }));
      const r = await api(port, "/api/v1/publish", { channel: "deflate_room", event: { type: "scoreboard", players } });
      assert.equal(r.status, 200);
      const got = await until("the compressed event in the page", () => page.evaluate(() => window.bigEvents[0]));
      assert.deepEqual(got.players, players);
      const metrics = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
      assert.match(metrics, /^hubbub_deflated_publications_total 1$/m);
      const saved = (name) => Number(metrics.match(new RegExp(`^${name} (\\d+)$`, "m"))[1]);
      assert.ok(saved("hubbub_deflate_bytes_out_total") * 3 < saved("hubbub_deflate_bytes_in_total"), metrics);
    } finally {
      await page.close();
      await stop(hub);
    }
  });
