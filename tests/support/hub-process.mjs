// The hubbub binary as a child process, for the JavaScript client tests (clients/js/test) and the
// browser tests (tests/browser). TEST_HUBBUB_BINARY names the binary (scripts/test sets it to the
// one cargo just built); it must not be a HUBBUB_* variable, which the hub would read as a setting.
import { spawn } from "node:child_process";
import { createServer } from "node:net";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";

export const root = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
export const BIN = process.env.TEST_HUBBUB_BINARY ?? join(root, "target", "debug", "hubbub");

/** A loopback port nothing listens on right now. */
export const freePort = () =>
  new Promise((resolve) => {
    const s = createServer().listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });

/** Starts `hubbub serve` on `port` (with a config file, if given) and waits until it answers. */
export async function startHub(port, config) {
  const args = ["serve", "--bind", `127.0.0.1:${port}`];
  if (config) args.push("--config", config);
  const child = spawn(BIN, args, { stdio: "ignore" });
  for (let i = 0; i < 200; i++) {
    if (child.exitCode !== null) break;
    try {
      await fetch(`http://127.0.0.1:${port}/`);
      return child;
    } catch {}
    await new Promise((r) => setTimeout(r, 50));
  }
  child.kill("SIGKILL");
  throw new Error(`hubbub did not start on port ${port} (${BIN})`);
}

/** SIGTERM (graceful shutdown) and wait for the exit. */
export const stop = (child) => new Promise((resolve) => { child.once("exit", resolve); child.kill("SIGTERM"); });
