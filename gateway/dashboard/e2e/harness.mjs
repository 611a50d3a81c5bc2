// What the end-to-end run and the benches share: a real `troupe serve` on loopback (its own
// data dir, ports chosen by the OS) and Debian's Chromium driven by playwright-core. Nothing
// is downloaded: the browser is the one `make deps` installed.
import { spawn } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { chromium } from "playwright-core";

export const ROOT = resolve(import.meta.dirname ?? new URL(".", import.meta.url).pathname, "../../..");

export function troupeBin() {
  const bin = process.env.TROUPE_BIN ?? join(ROOT, "target/debug/troupe");
  if (!existsSync(bin)) throw new Error(`no troupe binary at ${bin}: build it (cargo build --bin troupe) or set TROUPE_BIN`);
  return bin;
}

export function chromiumPath() {
  for (const p of [process.env.CHROMIUM, "/usr/bin/chromium", "/usr/bin/chromium-browser"]) if (p && existsSync(p)) return p;
  throw new Error("no Chromium: `make deps` installs Debian's chromium package (or set CHROMIUM)");
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Waits for `probe` to answer truthy, polling; fails with `what` after `ms`. */
export async function until(what, probe, ms = 30_000) {
  const end = Date.now() + ms;
  let last;
  while (Date.now() < end) {
    try {
      const v = await probe();
      if (v) return v;
    } catch (e) {
      last = e;
    }
    await sleep(100);
  }
  throw new Error(`timed out waiting for ${what}${last ? `: ${last.message}` : ""}`);
}

/** A node: `start()` runs it (again, on the same data dir and port after `stop()`). */
export class Node {
  constructor(extra = []) {
    this.dir = mkdtempSync(join(tmpdir(), "troupe-e2e-"));
    this.extra = extra;
    this.port = 0;
    this.proc = null;
  }

  async start() {
    const addrFile = join(this.dir, "gateway.addr");
    rmSync(addrFile, { force: true });
    const args = ["serve", "--data-dir", this.dir, "--listen", `127.0.0.1:${this.port}`, "--cluster-listen", "127.0.0.1:0", ...this.extra];
    this.proc = spawn(troupeBin(), args, { stdio: ["ignore", "ignore", "pipe"], env: { ...process.env, RUST_LOG: process.env.RUST_LOG ?? "warn" } });
    this.log = "";
    this.proc.stderr.on("data", (d) => {
      this.log = (this.log + d).slice(-20_000);
    });
    const addr = await until("the gateway's address", () => existsSync(addrFile) && readFileSync(addrFile, "utf8").trim());
    this.url = `http://${addr}`;
    this.port = Number(addr.split(":").pop());
    this.token = readFileSync(join(this.dir, "admin.token"), "utf8").trim();
    await until("the node to be ready", async () => (await fetch(`${this.url}/healthz`)).ok);
    return this;
  }

  async stop() {
    if (!this.proc) return;
    const p = this.proc;
    this.proc = null;
    const exited = new Promise((r) => p.once("exit", r));
    p.kill("SIGTERM");
    await Promise.race([exited, sleep(15_000).then(() => p.kill("SIGKILL"))]);
    await exited;
  }

  async remove() {
    await this.stop();
    rmSync(this.dir, { recursive: true, force: true });
  }

  /** A GraphQL call as the admin (or with `token`); throws on errors. */
  async gql(query, variables = {}, token = this.token) {
    const r = await fetch(`${this.url}/graphql`, {
      method: "POST",
      headers: { "content-type": "application/json", authorization: `Bearer ${token}` },
      body: JSON.stringify({ query, variables }),
    });
    const body = await r.json();
    if (body.errors?.length) throw new Error(`${body.errors[0].extensions?.code}: ${body.errors[0].message}`);
    return body.data;
  }
}

export async function browser() {
  return chromium.launch({ executablePath: chromiumPath(), headless: true, args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"] });
}

export function outDir(name) {
  const dir = join(ROOT, "target", name);
  mkdirSync(dir, { recursive: true });
  return dir;
}

/**
 * The fake model server the Rust tests use (tests/fixtures/fake_llm.py, OpenAI-compatible) on
 * loopback: `url` is an llm agent's baseUrl; `stop()` closes its stdin, which ends it.
 */
export async function fakeLlm(args = []) {
  const proc = spawn("python3", [join(ROOT, "tests/fixtures/fake_llm.py"), ...args], { stdio: ["pipe", "pipe", "inherit"] });
  const exited = new Promise((r) => proc.once("exit", r));
  const port = await new Promise((resolve, reject) => {
    let out = "";
    const timer = setTimeout(() => reject(new Error("fake_llm.py did not say its port")), 10_000);
    proc.stdout.on("data", (d) => {
      out += d;
      const m = /PORT (\d+)/.exec(out);
      if (m) {
        clearTimeout(timer);
        resolve(Number(m[1]));
      }
    });
    exited.then((code) => reject(new Error(`fake_llm.py exited (${code}) before it listened`)));
  });
  return {
    url: `http://127.0.0.1:${port}`,
    async stop() {
      proc.stdin.end();
      await Promise.race([exited, sleep(5000).then(() => proc.kill("SIGKILL"))]);
    },
  };
}
