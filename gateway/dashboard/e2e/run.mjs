// The dashboard end to end, in Debian's Chromium against a real `troupe serve`: sign in,
// spawn an agent, submit a task and watch it succeed, see the overview's charts start from
// the node's history on a fresh load (the latency chart drawn), a stopped agent's page (no
// checkpoint offered, Stop confirmed by its name on one line), no view wider than a 400 px
// window, tasks named as the server names them, crash an agent and see it restart in
// the tree, pause and resume, create a VM and migrate it, create a swarm, approve an LLM
// agent's held tool call from the approvals inbox and read its task's transcript, follow an
// exec agent's log, send a test alert through a working and a broken channel, restart the gateway
// and see the event stream resume with nothing missing, preview a fault experiment and follow
// it to its report, a viewer sees no controls, and
// axe-core finds no serious violation on any view. Screenshots of each view go to
// target/dashboard-e2e/.
//
//   node e2e/run.mjs            (TROUPE_BIN: the troupe binary, default target/debug/troupe)
import { createRequire } from "node:module";
import { createServer } from "node:http";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Node, ROOT, browser, fakeLlm, outDir, until } from "./harness.mjs";

const require = createRequire(import.meta.url);
const AXE = readFileSync(require.resolve("axe-core/axe.min.js"), "utf8");
const SHOTS = outDir("dashboard-e2e");
const TIMEOUT = 30_000;

// Alert channels for the alerts view: a webhook to this receiver (it answers 200 and keeps
// what it got) and one to a port nothing listens on (taken from the OS, then closed), so a
// delivery fails; retried after 100 ms, then given up on.
const received = [];
const receiver = createServer((req, res) => {
  let body = "";
  req.on("data", (d) => (body += d));
  req.on("end", () => {
    received.push({ url: req.url, body });
    res.end("ok");
  });
});
const listen = (server) => new Promise((r) => server.listen(0, "127.0.0.1", () => r(server.address().port)));
const receiverPort = await listen(receiver);
const closed = createServer();
const closedPort = await listen(closed);
await new Promise((r) => closed.close(r));
const configDir = mkdtempSync(join(tmpdir(), "troupe-e2e-config-"));
const config = join(configDir, "alerts.toml");
writeFileSync(
  config,
  `[[alert_channels]]
name = "e2e-hook"
kind = "webhook"
url = "http://127.0.0.1:${receiverPort}/alerts"

[[alert_channels]]
name = "e2e-broken"
kind = "webhook"
url = "http://127.0.0.1:${closedPort}/alerts"

[[alert_rules]]
name = "e2e-hosts"
kinds = ["HOST_FAILED"]
channels = ["e2e-hook"]
`,
);

// History sampled each 200 ms (10 s by default) so the overview's charts have some within the
// run; breakers that open only after 1,000 failures in a row, so a failing agent can end
// hundreds of tasks DEAD.
const node = new Node(["--fault-injection", "--simulated-hosts", "2", "--history-interval-ms", "200", "--config", config, "--alert-retry-ms", "100,100", "--breaker-failures", "1000"]);
const results = [];
let failed = 0;

async function step(name, body) {
  const t0 = Date.now();
  try {
    await body();
    results.push(`ok    ${name} (${Date.now() - t0} ms)`);
    console.log(`ok    ${name}`);
  } catch (e) {
    failed++;
    results.push(`FAIL  ${name}: ${e.message}`);
    console.log(`FAIL  ${name}\n      ${e.stack?.split("\n").slice(0, 4).join("\n      ")}`);
  }
}

async function signIn(page, token) {
  await page.goto(`${node.url}/`);
  await page.getByLabel("Token").fill(token);
  await page.getByLabel("Token").press("Enter");
  await page.getByRole("navigation", { name: "Views" }).waitFor({ timeout: TIMEOUT });
}

async function shot(page, name) {
  await page.screenshot({ path: join(SHOTS, `${name}.png`), fullPage: true });
}

/** axe-core on the page as it is now: serious and critical violations fail the step. */
async function axe(page, name) {
  // Injected once per loaded page: the other colour scheme's run reuses it.
  if (!(await page.evaluate(() => "axe" in window))) await page.evaluate(AXE);
  const found = await page.evaluate(async () => {
    // eslint-disable-next-line no-undef
    const r = await axe.run(document, { resultTypes: ["violations"] });
    return r.violations.filter((v) => v.impact === "serious" || v.impact === "critical").map((v) => `${v.id} (${v.impact}): ${v.nodes.length}× e.g. ${v.nodes[0]?.target.join(" ")}`);
  });
  if (found.length) throw new Error(`axe on ${name}: ${found.join("; ")}`);
}

/** Waits until nothing on the page says it is still loading (`aria-busy`, as `Loading` and busy buttons do). */
const settled = (page) => page.locator('[aria-busy="true"]').first().waitFor({ state: "detached", timeout: TIMEOUT });

/** Opens a view by its path (a deep link: the gateway serves the app at every view's path). */
async function open(page, path) {
  await page.goto(`${node.url}${path}`);
}

const expectText = (page, text, timeout = TIMEOUT) => page.getByText(text, { exact: false }).first().waitFor({ timeout });

await node.start();
const b = await browser();
// bypassCSP only so that axe-core can be injected; the app itself runs under the gateway's CSP
// (a CSP violation would show as a failed load below, in the context without it).
const admin = await b.newContext({ bypassCSP: true, viewport: { width: 1280, height: 900 } });
const page = await admin.newPage();
const consoleErrors = [];
page.on("console", (m) => m.type() === "error" && consoleErrors.push(m.text()));
page.on("pageerror", (e) => consoleErrors.push(e.message));

const ids = {};
let llm = null;

try {
  await step("the app loads under its Content-Security-Policy with nothing from another origin", async () => {
    const strict = await b.newContext();
    const p = await strict.newPage();
    const external = [];
    const violations = [];
    p.on("request", (r) => !r.url().startsWith(node.url) && !r.url().startsWith("data:") && external.push(r.url()));
    p.on("console", (m) => /Content Security Policy/i.test(m.text()) && violations.push(m.text()));
    await p.goto(`${node.url}/agents?state=RUNNING`);
    await p.getByLabel("Token").waitFor({ timeout: TIMEOUT });
    await p.goto(`${node.url}/graphiql#token=${node.token}`);
    await p.locator(".graphiql-container").waitFor({ timeout: TIMEOUT });
    await strict.close();
    if (external.length) throw new Error(`requests to other origins: ${external.join(", ")}`);
    if (violations.length) throw new Error(`CSP violations: ${violations.join("; ")}`);
  });

  await step("a wrong token is refused with the API's message and code", async () => {
    await page.goto(`${node.url}/`);
    await page.getByLabel("Token").fill("not-a-token");
    await page.getByRole("button", { name: "Sign in" }).click();
    await expectText(page, "UNAUTHENTICATED");
  });

  await step("sign in; the overview shows this node UP, its work running", async () => {
    await signIn(page, node.token);
    const members = page.getByRole("table").first();
    await members.getByText("UP").waitFor({ timeout: TIMEOUT });
    await members.getByText("runs", { exact: true }).waitFor({ timeout: TIMEOUT });
    await shot(page, "overview");
  });

  await step("spawn an agent from the agents view", async () => {
    await page.goto(`${node.url}/agents`);
    await page.getByRole("button", { name: /spawn agent/i }).first().click().catch(() => {});
    await page.getByLabel(/^name/i).first().fill("e2e-echo");
    const caps = page.getByLabel(/capabilities/i).first();
    await caps.fill("e2e");
    await page.getByRole("button", { name: /^spawn/i }).last().click();
    await page.waitForURL(/\/agents\/[^/]+$/, { timeout: TIMEOUT });
    ids.agent = decodeURIComponent(page.url().split("/").pop());
    await expectText(page, "RUNNING");
    await shot(page, "agent");
  });

  await step("submit a task from the tasks view and watch it succeed live", async () => {
    // Aimed at a capability no agent has yet: it waits QUEUED on its page until the test
    // spawns an agent that has it, then the page follows it to SUCCEEDED.
    await page.goto(`${node.url}/tasks`);
    await page.getByRole("button", { name: "Submit task…" }).click();
    await page.getByLabel("Capability", { exact: true }).fill("e2e-later");
    await page.getByLabel("Payload (JSON)").fill('{"hello": "dashboard"}');
    await page.getByRole("button", { name: "Submit", exact: true }).click();
    await page.waitForURL(/\/tasks\/[^/]+$/, { timeout: TIMEOUT });
    ids.task = decodeURIComponent(page.url().split("/").pop());
    const head = page.locator(".page-head");
    await head.getByText("QUEUED").waitFor({ timeout: TIMEOUT });
    await expectText(page, "no agent has capability");
    await node.gql(`mutation { spawnAgent(input: { name: "e2e-later", backend: { builtin: { kind: "echo" } }, capabilities: ["e2e-later"] }) { id } }`);
    await head.getByText("SUCCEEDED").waitFor({ timeout: TIMEOUT });
    await page.getByLabel("Result").getByText('"dashboard"').waitFor({ timeout: TIMEOUT });
    // Its agent by name (the id on hover), and the task named as the server names it
    // ("e2e-later · 5e1c2a", as events say) in its title and in the list.
    const agentLink = page.getByRole("region", { name: "Task", exact: true }).getByRole("link", { name: "e2e-later", exact: true });
    await agentLink.waitFor({ timeout: TIMEOUT });
    const { name } = (await node.gql(`query($id: ID!) { task(id: $id) { name } }`, { id: ids.task })).task;
    if (!(await head.locator("#page-title").textContent()).includes(`Task ${name}`)) throw new Error(`the title does not name the task ${name}`);
    await shot(page, "task");
    // Found again by its agent's name in the tasks list, by the same name.
    await open(page, "/tasks?agent=e2e-later");
    await page.getByRole("link", { name, exact: true }).waitFor({ timeout: TIMEOUT });
    await page.locator("p.muted", { hasText: /^1 task$/ }).waitFor({ timeout: TIMEOUT });
    await open(page, "/agents?capability=e2e-later");
    await page.locator("p.muted", { hasText: /^1 agent$/ }).waitFor({ timeout: TIMEOUT });
    await open(page, "/tasks?agent=nobody-by-this-name");
    await expectText(page, "No agent is named nobody-by-this-name.");
  });

  await step("the overview's charts start from the node's history when the page opens", async () => {
    for (let i = 0; i < 5; i++) await node.gql(`mutation { submitTask(input: { capability: "e2e-later", payload: "history", maxAttempts: 1 }) { id } }`);
    const sample = await until("a history sample with a task succeeded", async () => {
      const h = (await node.gql(`{ history(minutes: 5) { at succeeded } }`)).history;
      return h.filter((s) => s.succeeded > 0).pop();
    });
    // The page opens a whole second after that sample: its live points are all from then on,
    // so a non-zero point at or before the sample's second can only be the history's.
    const at = Date.parse(sample.at) / 1000;
    while (Date.now() / 1000 < Math.floor(at) + 1) await new Promise((r) => setTimeout(r, 50));
    await open(page, "/");
    const chart = page.locator("figure.chart", { hasText: "Tasks ended per second" });
    await until("the throughput chart to show a point from before the page opened", async () => {
      const first = await chart.getAttribute("data-first-nonzero");
      return first !== null && Number(first) <= Math.floor(at);
    }, TIMEOUT);
    const cpu = page.locator("figure.chart", { hasText: "CPU, cores busy" });
    if (Number(await cpu.getAttribute("data-points")) < 2) throw new Error("the node's CPU chart has no history");
    // The latency chart draws the history's p50 (a NaN among its points once left it empty)
    // and says its latest value in words.
    const latency = page.locator("figure.chart", { hasText: "Task latency" });
    await latency.getByRole("img", { name: /p50: \d/ }).waitFor({ timeout: TIMEOUT });
    await until("the latency chart to draw the history's latency", () =>
      latency.evaluate((figure) => {
        const canvas = figure.querySelector("canvas");
        // Pixels of any of its series' colours (p50 and p99 may be one value, drawn one over the other).
        const colours = ["--running", "--warn", "--bad"].map((c) => (getComputedStyle(document.documentElement).getPropertyValue(c).trim().match(/[0-9a-f]{2}/gi) ?? []).map((h) => parseInt(h, 16)));
        if (!canvas || colours.some((c) => c.length !== 3)) return false;
        const px = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
        let drawn = 0;
        for (let i = 0; i < px.length; i += 4) if (px[i + 3] > 200 && colours.some(([r, g, b]) => Math.abs(px[i] - r) + Math.abs(px[i + 1] - g) + Math.abs(px[i + 2] - b) < 40)) drawn++;
        return drawn > 10;
      }),
    );
    await page.getByRole("link", { name: "All VMs", exact: true }).waitFor({ timeout: TIMEOUT });
    await settled(page);
    await shot(page, "overview-history");
  });

  await step("create a VM from the VMs view and migrate it, watching the phases", async () => {
    await page.goto(`${node.url}/vms`);
    await page.getByRole("button", { name: "Create VM…" }).click();
    await page.getByLabel("VM name").fill("e2e-vm");
    await page.getByRole("button", { name: "Create", exact: true }).click();
    await page.waitForURL(/\/vms\/[^/]+$/, { timeout: TIMEOUT });
    ids.vm = decodeURIComponent(page.url().split("/").pop());
    await page.locator(".page-head").getByText("RUNNING").waitFor({ timeout: TIMEOUT });
    const before = (await node.gql(`query($id: ID!) { vm(id: $id) { hostId } }`, { id: ids.vm })).vm.hostId;
    await page.getByRole("button", { name: "Migrate", exact: true }).click();
    const phases = page.getByRole("list", { name: "Migration phases" });
    await phases.waitFor({ timeout: TIMEOUT });
    await until("the migration to end", async () => {
      const m = (await node.gql(`query($id: ID!) { vm(id: $id) { hostId migration { phase error } } }`, { id: ids.vm })).vm;
      if (m.migration?.phase === "FAILED") throw new Error(`the migration failed: ${m.migration.error}`);
      return m.migration?.phase === "SUCCEEDED" && m.hostId !== before;
    });
    await phases.locator("[aria-current=step], li").filter({ hasText: "SUCCEEDED" }).waitFor({ timeout: TIMEOUT });
    await expectText(page, "Seen here:");
    await shot(page, "vm-migrated");
  });

  await step("create a swarm from the swarms view and see its members", async () => {
    await page.goto(`${node.url}/swarms`);
    await page.getByRole("button", { name: "Create swarm…" }).click();
    await page.getByLabel("Swarm name").fill("e2e-swarm");
    await page.getByLabel("Members", { exact: true }).fill("3");
    await page.getByRole("button", { name: "Create", exact: true }).click();
    await page.waitForURL(/\/swarms\/[^/]+$/, { timeout: TIMEOUT });
    ids.swarm = decodeURIComponent(page.url().split("/").pop());
    const members = page.getByRole("table", { name: "Members" });
    await until("three members running on the swarm's page", async () => (await members.locator(".status", { hasText: "RUNNING" }).count()) === 3);
    // A swarm task's subtasks are tasks, named on its page as everywhere.
    await node.gql(`mutation($id: ID!) { submitSwarmTask(id: $id, input: { mode: SINGLE, payload: "hi" }) { id } }`, { id: ids.swarm });
    const sub = await until("the swarm task's subtask", async () => (await node.gql(`query($id: ID!) { swarm(id: $id) { tasks(first: 1) { subtasks } } }`, { id: ids.swarm })).swarm.tasks[0]?.subtasks[0]);
    const { name } = (await node.gql(`query($id: ID!) { task(id: $id) { name } }`, { id: sub })).task;
    await page.getByRole("table", { name: /^Swarm tasks/ }).getByRole("link", { name, exact: true }).waitFor({ timeout: TIMEOUT });
    await shot(page, "swarm");
  });

  await step("pause and resume the agent from its page", async () => {
    await page.goto(`${node.url}/agents/${encodeURIComponent(ids.agent)}`);
    await page.getByRole("button", { name: "Pause", exact: true }).click();
    await expectText(page, "PAUSED");
    await page.getByRole("button", { name: "Resume", exact: true }).click();
    await until("the agent to run again", async () => (await node.gql(`query($id: ID!) { agent(id: $id) { state } }`, { id: ids.agent })).agent.state === "RUNNING");
    await page.locator(".page-head").getByText("RUNNING").waitFor({ timeout: TIMEOUT });
  });

  await step("agent page: the breaker fits its column; a stopped agent is not wanted running and offers no checkpoint; Stop asks for its name in one line", async () => {
    await page.setViewportSize({ width: 1400, height: 900 });
    try {
      const id = (await node.gql(`mutation { spawnAgent(input: { name: "e2e-stopped", backend: { builtin: { kind: "counter" } } }) { id } }`)).spawnAgent.id;
      await open(page, `/agents/${encodeURIComponent(id)}`);
      await page.locator(".page-head").getByText("RUNNING").waitFor({ timeout: TIMEOUT });
      await page.getByRole("button", { name: "Create checkpoint" }).waitFor({ timeout: TIMEOUT });
      const over = await page.locator(".kv > div", { has: page.locator("dt", { hasText: /^Breaker$/ }) }).evaluate((item) => {
        const right = item.getBoundingClientRect().right;
        return [...item.querySelectorAll("*")].some((e) => e.getBoundingClientRect().right > right + 1);
      });
      if (over) throw new Error("the breaker runs out of its column");
      await page.getByRole("button", { name: "Stop", exact: true }).click();
      const dialog = page.getByRole("dialog");
      const label = dialog.locator("label");
      // "Type <name> to confirm" on one line: the name is no line of its own.
      const [top, codeTop] = await Promise.all([label.evaluate((l) => l.getBoundingClientRect().top), label.locator("code").evaluate((c) => c.getBoundingClientRect().top)]);
      if (codeTop - top > 8) throw new Error("the name to type stands on a line of its own");
      await dialog.getByRole("textbox").fill("e2e-stopped");
      await dialog.getByRole("button", { name: "Stop", exact: true }).click();
      await page.locator(".page-head").getByText("STOPPED").waitFor({ timeout: TIMEOUT });
      const wanted = page.locator(".kv > div", { has: page.locator("dt", { hasText: /^Wanted running$/ }) }).locator("dd");
      await wanted.getByText("no", { exact: true }).waitFor({ timeout: TIMEOUT });
      await page.getByRole("region", { name: "Checkpoints" }).getByText("A checkpoint is taken from a running agent").waitFor({ timeout: TIMEOUT });
      if (await page.getByRole("button", { name: "Create checkpoint" }).count()) throw new Error("a stopped agent offers Create checkpoint");
    } finally {
      await page.setViewportSize({ width: 1280, height: 900 });
    }
  });

  await step("at 400 px the page never scrolls sideways: tables and the tree scroll in their own box", async () => {
    await page.setViewportSize({ width: 400, height: 800 });
    try {
      for (const path of ["/", "/swarms", "/tree", `/agents/${encodeURIComponent(ids.agent)}`, `/swarms/${encodeURIComponent(ids.swarm)}`]) {
        await open(page, path);
        await page.locator("#page-title").waitFor({ timeout: TIMEOUT });
        await page.waitForLoadState("networkidle").catch(() => {});
        await settled(page);
        const [scroll, client] = await page.evaluate(() => [document.documentElement.scrollWidth, document.documentElement.clientWidth]);
        if (scroll > client) throw new Error(`${path} is ${scroll} px wide in a ${client} px window`);
      }
      await shot(page, "narrow-tree");
    } finally {
      await page.setViewportSize({ width: 1280, height: 900 });
    }
  });

  await step("spawn form: a quoted argument stays one word (sh -c \"tr a-z A-Z\") and the agent's task is upper-cased", async () => {
    await open(page, "/agents");
    await page.getByRole("button", { name: "Spawn agent…" }).click();
    await page.getByLabel("Name", { exact: true }).fill("e2e-upper");
    // A select's accessible name includes its chosen option: match the label's start.
    await page.getByRole("combobox", { name: /^Backend/ }).selectOption("exec");
    await page.getByLabel("Command", { exact: true }).fill('sh -c "tr a-z A-Z"');
    await page.getByLabel(/capabilities/i).first().fill("e2e-upper");
    await page.getByRole("button", { name: "Spawn", exact: true }).click();
    await page.waitForURL(/\/agents\/[^/]+$/, { timeout: TIMEOUT });
    const id = decodeURIComponent(page.url().split("/").pop());
    const spec = (await node.gql(`query($id: ID!) { agent(id: $id) { backend } }`, { id })).agent;
    const t = await node.gql(`mutation { submitTask(input: { capability: "e2e-upper", payload: "hello troupe", maxAttempts: 1 }) { id } }`);
    const done = await until("the upper-casing task to end", async () => {
      const task = (await node.gql(`query($id: ID!) { task(id: $id) { state result error } }`, { id: t.submitTask.id })).task;
      return ["SUCCEEDED", "FAILED", "DEAD"].includes(task.state) ? task : null;
    });
    if (done.state !== "SUCCEEDED" || done.result !== "HELLO TROUPE") throw new Error(`the task ended ${done.state} with ${JSON.stringify(done.result)} (${done.error}); backend ${spec.backend}`);
  });

  await step("the tree shows a sub-team's members, below what one query reaches, with no page error", async () => {
    const errorsBefore = consoleErrors.length;
    const team = (await node.gql(`mutation { createSwarm(input: { name: "e2e-team", templates: [{ count: 2, agent: { name: "e2e-lead", backend: { builtin: { kind: "echo" } } } }] }) { id members { id } } }`)).createSwarm;
    const sub = (
      await node.gql(`mutation($p: ID!, $l: ID!) { createSwarm(input: { name: "e2e-sub", parent: $p, leader: $l, templates: [{ count: 1, agent: { name: "e2e-subm", backend: { builtin: { kind: "echo" } } } }] }) { id members { id } } }`, {
        p: team.id,
        l: team.members[0].id,
      })
    ).createSwarm;
    const esc = (x) => x.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
    await open(page, "/tree");
    const subItem = page.getByRole("treeitem", { name: new RegExp(`^SWARM ${esc(sub.id)} `) });
    await subItem.waitFor({ timeout: TIMEOUT });
    // The sub-team's members supervisor is at the query's edge: collapsed, read when opened.
    await subItem.getByRole("button", { name: "Show what members supervises" }).click();
    await page.getByRole("treeitem", { name: new RegExp(`^AGENT ${esc(sub.members[0].id)} `) }).waitFor({ timeout: TIMEOUT });
    const errors = consoleErrors.slice(errorsBefore).filter((m) => !/Failed to load resource|WebSocket connection|net::/.test(m));
    if (errors.length) throw new Error(`page errors: ${errors.join("; ")}`);
    await shot(page, "tree-sub-team");
  });

  await step("the events view lists the events already stored when it opens, without Load older", async () => {
    const last = Number((await node.gql("{ node { lastSeq } }")).node.lastSeq);
    await open(page, "/events");
    await until(`the events view to open on the newest page (up to seq ${last})`, async () => {
      const m = /(\d+) events?, seq (\d+)–(\d+)/.exec((await page.locator(".events-summary").textContent()) ?? "");
      return m && Number(m[1]) > 1 && Number(m[3]) >= last;
    });
    await page.getByRole("grid", { name: /Events/ }).getByRole("row").nth(2).waitFor({ timeout: TIMEOUT });
  });

  await step("events read as sentences: an agent's name links to its page, which charts its processes' CPU and memory (or says it runs none)", async () => {
    // The spawn of e2e-echo (from the agents view, above), found by its name in the subject filter.
    await open(page, "/events?kinds=AGENT_SPAWNED&subject=e2e-echo");
    const row = page.locator(".events [role=row]").filter({ hasText: "agent e2e-echo was spawned" });
    const link = row.getByRole("link", { name: "e2e-echo", exact: true });
    await link.waitFor({ timeout: TIMEOUT });
    const [href, title] = [await link.getAttribute("href"), await link.getAttribute("title")];
    if (href !== `/agents/${encodeURIComponent(ids.agent)}` || title !== ids.agent) throw new Error(`the name links to ${href} (title ${title}), not agent ${ids.agent}`);
    await row.locator(".status", { hasText: "AGENT_SPAWNED" }).waitFor({ timeout: TIMEOUT });
    await link.click();
    await page.waitForURL(`**/agents/${encodeURIComponent(ids.agent)}`, { timeout: TIMEOUT });
    // No agent spawned so far runs a process of its own (e2e-echo is builtin; e2e-upper's exec
    // process lives only during a task): e2e-echo's page says so, and a process agent has the charts.
    await page.getByRole("region", { name: "Process usage" }).getByText("No process usage recorded (this agent runs no process, or has not been sampled yet)").waitFor({ timeout: TIMEOUT });
    const agent = join(ROOT, "examples/agents/process_agent.py");
    const proc = (await node.gql(`mutation($input: SpawnAgentInput!) { spawnAgent(input: $input) { id } }`, { input: { name: "e2e-proc", backend: { process: { command: ["python3", agent] } } } })).spawnAgent.id;
    await until("two samples of e2e-proc's usage", async () => (await node.gql(`query($id: ID!) { agent(id: $id) { usageHistory(minutes: 5) { at } } }`, { id: proc })).agent.usageHistory.length >= 2);
    await open(page, `/agents/${encodeURIComponent(proc)}`);
    for (const title of ["CPU of its processes, cores busy", "Memory of its processes (RSS)"]) {
      const chart = page.locator("figure.chart", { hasText: title });
      await chart.getByRole("img", { name: new RegExp(`^${title.replace(/[()]/g, "\\$&")}.*Latest:`) }).waitFor({ timeout: TIMEOUT });
      if (Number(await chart.getAttribute("data-points")) < 2) throw new Error(`the chart "${title}" has under two points`);
    }
    await shot(page, "agent-usage");
    await node.gql(`mutation($id: ID!) { removeAgent(id: $id) { id } }`, { id: proc });
  });

  await step("relative times tick: a new event reads \"just now\", then \"… seconds ago\" without a reload", async () => {
    // A browser context of its own, whose clock the test moves on instead of waiting 10 s.
    const timed = await b.newContext({ viewport: { width: 1280, height: 900 } });
    try {
      await timed.clock.install();
      const p = await timed.newPage();
      await signIn(p, node.token);
      await open(p, "/events");
      await p.getByRole("grid", { name: /Events/ }).waitFor({ timeout: TIMEOUT });
      // Off the list, so that new rows show at once rather than behind the "N new" pill.
      await p.mouse.move(0, 0);
      const before = Number((await node.gql("{ node { lastSeq } }")).node.lastSeq);
      await node.gql(`mutation { spawnAgent(input: { name: "e2e-clock", backend: { builtin: { kind: "echo" } } }) { id } }`);
      const seq = (await node.gql(`query($a: Int64) { events(after: $a, kinds: ["AGENT_SPAWNED"]) { seq } }`, { a: before })).events[0].seq;
      const row = p.locator(".events [role=row]").filter({ has: p.getByRole("gridcell", { name: String(seq), exact: true }) });
      await row.locator("time").filter({ hasText: "just now" }).waitFor({ timeout: TIMEOUT });
      // "just now" holds for 10 s; 11 s later the shared clock's next tick must move it on by
      // itself, with no reload.
      await timed.clock.fastForward(11_000);
      await row.locator("time").filter({ hasText: /\d+ seconds? ago/ }).waitFor({ timeout: TIMEOUT });
    } finally {
      await timed.close();
    }
  });

  await step("crash an agent and see it restart in the tree", async () => {
    const d = await node.gql(`mutation { spawnAgent(input: { name: "e2e-crasher", backend: { builtin: { kind: "panic" } }, capabilities: ["crash"] }) { id } }`);
    ids.crasher = d.spawnAgent.id;
    await page.goto(`${node.url}/tree`);
    const item = page.getByRole("treeitem", { name: new RegExp(`AGENT ${ids.crasher.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")} `) });
    await item.waitFor({ timeout: TIMEOUT });
    await node.gql(`mutation($a: ID!) { submitTask(input: { agentId: $a, payload: {}, maxAttempts: 1 }) { id } }`, { a: ids.crasher });
    await until("the crashed agent's restart to show in the tree", async () => /[1-9]\d* restart/.test((await item.getAttribute("aria-label")) ?? ""));
    await shot(page, "tree");
  });

  await step("the overview's recent alerts are the newest ones, however many came before them", async () => {
    await node.gql(`mutation { spawnAgent(input: { name: "e2e-doomed", backend: { builtin: { kind: "fail" } }, capabilities: ["e2e-doomed"], maxConcurrentTasks: 64 }) { id } }`);
    // More TASK_DEAD alerts than the 500 the overview once read from the oldest end.
    const batch = `mutation { ${Array.from({ length: 100 }, (_, i) => `t${i}: submitTask(input: { capability: "e2e-doomed", payload: ${i}, maxAttempts: 1 }) { id }`).join(" ")} }`;
    await Promise.all(Array.from({ length: 6 }, () => node.gql(batch)));
    const newest = await until("the 600 tasks to be dead", async () => {
      const dead = (await node.gql(`{ events(kinds: ["TASK_DEAD"], last: 1000) { subject } }`)).events;
      return dead.length >= 600 && dead[dead.length - 1].subject;
    });
    await open(page, "/");
    const tail = newest.split("@")[0].replaceAll("-", "").slice(-6);
    const alerts = page.getByRole("table", { name: "Recent alerts" });
    await alerts.getByText(`e2e-doomed · ${tail}`).first().waitFor({ timeout: TIMEOUT });
    // Its page names it the same way, and its failed attempt's agent by name.
    await open(page, `/tasks/${encodeURIComponent(newest)}`);
    await page.locator("#page-title").getByText(`e2e-doomed · ${tail}`).waitFor({ timeout: TIMEOUT });
    await page.getByRole("table", { name: "Failed attempts" }).getByRole("link", { name: "e2e-doomed", exact: true }).waitFor({ timeout: TIMEOUT });
  });

  await step("approvals: a held tool call is listed in the inbox as it is asked for; approving it there lets the task finish", async () => {
    // Not a swarm member, the agent's troupe_memory_get fails: an error result the model echoes.
    llm = await fakeLlm(["--tool", "troupe_memory_get", "--tool-args", '{"key":"launch"}']);
    const backend = { llm: { baseUrl: llm.url, model: "tiny", tools: ["troupe_*"], approval: { tools: ["troupe_memory_*"] } } };
    const d = await node.gql(`mutation($input: SpawnAgentInput!) { spawnAgent(input: $input) { id } }`, { input: { name: "e2e-careful", backend } });
    ids.llmAgent = d.spawnAgent.id;
    await open(page, "/approvals");
    await expectText(page, "No tool call is waiting");
    const t = await node.gql(`mutation($a: ID!) { submitTask(input: { agentId: $a, payload: "go", maxAttempts: 1 }) { id } }`, { a: ids.llmAgent });
    ids.llmTask = t.submitTask.id;
    const card = page.getByRole("listitem", { name: "troupe_memory_get for e2e-careful" });
    await card.waitFor({ timeout: TIMEOUT });
    await card.getByLabel("Arguments of troupe_memory_get").getByText('{"key":"launch"}').waitFor({ timeout: TIMEOUT });
    // Named as everywhere: aimed at the agent, by its name and the end of its id.
    const { name } = (await node.gql(`query($id: ID!) { task(id: $id) { name } }`, { id: ids.llmTask })).task;
    await card.getByRole("link", { name, exact: true }).waitFor({ timeout: TIMEOUT });
    // Why it is held has the card's width, not one narrow column of it.
    const [held, list] = await Promise.all([card.locator(".kv > div", { has: page.locator("dt", { hasText: "Held because" }) }).evaluate((d) => d.getBoundingClientRect().width), card.locator(".kv").evaluate((d) => d.getBoundingClientRect().width)]);
    if (held < list * 0.9) throw new Error(`"Held because" has ${held} of ${list} px`);
    const views = page.getByRole("navigation", { name: "Views" });
    await views.getByRole("link", { name: "Approvals 1 waiting" }).waitFor({ timeout: TIMEOUT });
    await shot(page, "approvals");
    await card.getByLabel("Note or reason (optional)").fill("looks fine");
    await card.getByRole("button", { name: "Approve", exact: true }).click();
    await card.waitFor({ state: "detached", timeout: TIMEOUT });
    await expectText(page, "No tool call is waiting");
    await views.getByRole("link", { name: "Approvals", exact: true }).waitFor({ timeout: TIMEOUT });
    await until("the task to succeed", async () => (await node.gql(`query($id: ID!) { task(id: $id) { state } }`, { id: ids.llmTask })).task.state === "SUCCEEDED");
    const all = (await node.gql(`{ approvals(pending: false) { taskId state note } }`)).approvals.filter((a) => a.taskId === ids.llmTask);
    if (all.length !== 1 || all[0].state !== "APPROVED" || all[0].note !== "looks fine") throw new Error(`the approval reads ${JSON.stringify(all)}`);
  });

  await step("the transcript of a finished LLM task shows its tool call, its (error) result and the approval", async () => {
    await page.goto(`${node.url}/tasks/${encodeURIComponent(ids.llmTask)}`);
    await page.locator(".page-head").getByText("SUCCEEDED").waitFor({ timeout: TIMEOUT });
    const transcript = page.getByRole("region", { name: "Transcript" });
    await transcript.getByText("Model call 2").waitFor({ timeout: TIMEOUT });
    await transcript.getByLabel("Arguments of troupe_memory_get").getByText('{"key":"launch"}').waitFor({ timeout: TIMEOUT });
    const result = transcript.getByLabel("Result (error)");
    await result.waitFor({ timeout: TIMEOUT });
    const content = ((await result.textContent()) ?? "").trim();
    if (!content) throw new Error("the tool's result is empty");
    // The model's last reply echoes the result it was given.
    await transcript.locator(".reply").filter({ hasText: `echo: ${content.slice(0, 40)}` }).waitFor({ timeout: TIMEOUT });
    // The approval: why it was held, and apart from it the operator's note.
    const approvals = transcript.getByRole("table", { name: "Approvals of its tool calls" });
    await approvals.getByRole("columnheader", { name: "Held because" }).waitFor({ timeout: TIMEOUT });
    await approvals.getByRole("columnheader", { name: "Note" }).waitFor({ timeout: TIMEOUT });
    await approvals.getByRole("cell", { name: "looks fine", exact: true }).waitFor({ timeout: TIMEOUT });
    await transcript.getByText("2 model calls").waitFor({ timeout: TIMEOUT });
    await shot(page, "transcript");
  });

  await step("a running LLM task's transcript follows live: held, then rejected, then answered", async () => {
    const t = await node.gql(`mutation($a: ID!) { submitTask(input: { agentId: $a, payload: "again", maxAttempts: 1 }) { id } }`, { a: ids.llmAgent });
    await page.goto(`${node.url}/tasks/${encodeURIComponent(t.submitTask.id)}`);
    const transcript = page.getByRole("region", { name: "Transcript" });
    await transcript.getByText("Waiting for an operator's decision.").waitFor({ timeout: TIMEOUT });
    // Its progress is the note its agent reported, with no fraction: the call it waits on.
    await page.getByRole("region", { name: "Progress" }).getByText(/^AWAITING_APPROVAL: troupe_memory_get/).waitFor({ timeout: TIMEOUT });
    const held = (await node.gql(`{ approvals { id taskId } }`)).approvals.find((a) => a.taskId === t.submitTask.id);
    if (!held) throw new Error("no pending approval for the task");
    await node.gql(`mutation($id: ID!) { rejectCall(id: $id, reason: "not today") { state } }`, { id: held.id });
    await transcript.getByLabel("Result (error)").getByText("rejected by an operator: not today").waitFor({ timeout: TIMEOUT });
    await transcript.locator(".reply").filter({ hasText: "echo: rejected by an operator: not today" }).waitFor({ timeout: TIMEOUT });
    await page.locator(".page-head").getByText("SUCCEEDED").waitFor({ timeout: TIMEOUT });
  });

  await step("a decision the API refuses shows its code and message", async () => {
    const t = await node.gql(`mutation($a: ID!) { submitTask(input: { agentId: $a, payload: "third", maxAttempts: 1 }) { id } }`, { a: ids.llmAgent });
    await open(page, "/approvals");
    const card = page.getByRole("listitem", { name: "troupe_memory_get for e2e-careful" });
    await card.waitFor({ timeout: TIMEOUT });
    // Paused, the inbox does not hear that another operator rejected it meanwhile.
    await page.getByLabel("Pause live").check();
    const held = (await node.gql(`{ approvals { id taskId } }`)).approvals.find((a) => a.taskId === t.submitTask.id);
    await node.gql(`mutation($id: ID!) { rejectCall(id: $id, reason: "someone else") { state } }`, { id: held.id });
    await card.getByRole("button", { name: "Approve", exact: true }).click();
    await page.locator(".toast-error").filter({ hasText: "CONFLICT" }).waitFor({ timeout: TIMEOUT });
    await page.getByLabel("Pause live").uncheck();
    await card.waitFor({ state: "detached", timeout: TIMEOUT });
  });

  await step("an exec agent's log pane shows what it writes to stderr, following new lines", async () => {
    const script = 'read -r p; echo "e2e-stderr $p" >&2; echo "{\\"ok\\":1}"';
    const d = await node.gql(`mutation($input: SpawnAgentInput!) { spawnAgent(input: $input) { id } }`, { input: { name: "e2e-exec", backend: { exec: { command: ["/bin/sh", "-c", script] } } } });
    ids.execAgent = d.spawnAgent.id;
    const submit = (payload) => node.gql(`mutation($a: ID!, $p: JSON!) { submitTask(input: { agentId: $a, payload: $p, maxAttempts: 1 }) { id } }`, { a: ids.execAgent, p: payload });
    const before = (await submit("before")).submitTask.id;
    await page.goto(`${node.url}/agents/${encodeURIComponent(ids.execAgent)}`);
    const log = page.getByRole("log", { name: /Agent log/ });
    await log.locator(".log-stderr", { hasText: 'e2e-stderr "before"' }).waitFor({ timeout: TIMEOUT });
    // A line's task by its name, as the task is named everywhere.
    const { name } = (await node.gql(`query($id: ID!) { task(id: $id) { name } }`, { id: before })).task;
    await log.locator(".log-stderr", { hasText: 'e2e-stderr "before"' }).getByRole("link", { name, exact: true }).waitFor({ timeout: TIMEOUT });
    // Written while the page is open: it comes by the subscription, not a reload.
    await submit("while watching");
    await log.locator(".log-stderr", { hasText: 'e2e-stderr "while watching"' }).waitFor({ timeout: TIMEOUT });
    await log.locator(".log-stdout", { hasText: '{"ok":1}' }).first().waitFor({ timeout: TIMEOUT });
    await shot(page, "agent-log");
  });

  await step("alerts: a test through the working channel is DELIVERED, through the broken one FAILED with its error", async () => {
    await open(page, "/alerts");
    const channels = page.getByRole("table", { name: "Alert channels" });
    const deliveries = page.getByRole("table", { name: "Alert deliveries, newest first" });
    const channel = (name) => channels.getByRole("row").filter({ hasText: name });
    await page.getByRole("table", { name: "Alert rules" }).getByText("e2e-hosts").waitFor({ timeout: TIMEOUT });
    await channel("e2e-hook").getByRole("button", { name: "Send test" }).click();
    await channel("e2e-hook").getByRole("status").getByText("DELIVERED").waitFor({ timeout: TIMEOUT });
    await deliveries.getByRole("row").filter({ hasText: "A test of the alert channel e2e-hook" }).filter({ hasText: "DELIVERED" }).first().waitFor({ timeout: TIMEOUT });
    if (!received.some((r) => r.url === "/alerts")) throw new Error("the receiver got no test notice");
    await channel("e2e-broken").getByRole("button", { name: "Send test" }).click();
    const failedRow = deliveries.getByRole("row").filter({ hasText: "A test of the alert channel e2e-broken" }).filter({ hasText: "FAILED" }).first();
    await failedRow.waitFor({ timeout: TIMEOUT });
    await failedRow.getByText("no answer").waitFor({ timeout: TIMEOUT });
    // The filter keeps only the failed ones, and the overview links to them.
    await page.getByLabel("Outcome").selectOption("FAILED");
    await page.waitForURL(/outcome=FAILED/, { timeout: TIMEOUT });
    await until("only failed deliveries listed", async () => (await deliveries.locator("tbody tr").count()) > 0 && (await deliveries.locator("tbody tr:not([data-outcome=FAILED])").count()) === 0);
    await shot(page, "alerts");
    await open(page, "/");
    await page.getByRole("link", { name: /alert deliver(y|ies) failed/ }).click();
    await page.waitForURL(/\/alerts\?outcome=FAILED/, { timeout: TIMEOUT });
  });

  await step("events: restart the gateway, the stream resumes with nothing missing and nothing twice", async () => {
    await page.goto(`${node.url}/events`);
    await page.getByRole("grid", { name: /Events/ }).waitFor({ timeout: TIMEOUT });
    const before = Number((await node.gql("{ node { lastSeq } }")).node.lastSeq);
    await node.gql(`mutation { a: spawnAgent(input: { name: "e2e-before", backend: { builtin: { kind: "echo" } } }) { id } }`);
    await page.locator(".events-summary").filter({ hasText: /events?, seq/ }).waitFor({ timeout: TIMEOUT });
    await node.stop();
    await page.getByText(/reconnecting/i).first().waitFor({ timeout: TIMEOUT });
    await node.start();
    await node.gql(`mutation { spawnAgent(input: { name: "e2e-after", backend: { builtin: { kind: "echo" } } }) { id } }`);
    const last = Number((await node.gql("{ node { lastSeq } }")).node.lastSeq);
    // Contiguous (no gap, no duplicate) and covering every event since before the restart.
    await until(`the events view to cover seq ${before + 1}–${last} without a gap`, async () => {
      const text = (await page.locator(".events-summary").textContent()) ?? "";
      const m = /(\d+) events?, seq (\d+)–(\d+)/.exec(text);
      if (!m) return null;
      const [count, lo, hi] = [Number(m[1]), Number(m[2]), Number(m[3])];
      if (count !== hi - lo + 1) throw new Error(`a gap or a duplicate: ${text}`);
      return lo <= before + 1 && hi >= last ? text : null;
    }, 60_000);
    await shot(page, "events");
  });

  await step("experiments: a dry run names the agent a crash would hit and what its supervisor expects; started, its page follows it live to PASSED and its report", async () => {
    const before = (await node.gql("{ experiments { id } }")).experiments.length;
    await open(page, "/experiments");
    const form = page.getByRole("form", { name: "Start an experiment" });
    await form.getByLabel("Experiment name").fill("e2e-crash");
    const fault = form.getByRole("group", { name: "Fault 1" });
    await fault.getByRole("combobox", { name: /^Action/ }).selectOption("CRASH");
    await fault.getByLabel("Kinds", { exact: true }).fill("AGENT");
    // A selector that matches nothing: the API's refusal is shown with its code.
    await fault.getByLabel("Ids", { exact: true }).fill("no-such-agent");
    await form.getByRole("button", { name: "Preview (dry run)" }).click();
    await form.getByRole("alert").getByText("INVALID_INPUT").waitFor({ timeout: TIMEOUT });
    // The agent spawned from the agents view, by its id: the one target, whatever the seed.
    await fault.getByLabel("Ids", { exact: true }).fill(ids.agent);
    await form.getByLabel("Recover within (ms)").fill("20000");
    await form.getByRole("button", { name: "Preview (dry run)" }).click();
    const target = page.getByRole("table", { name: "The targets the dry run picked" }).getByRole("row").filter({ hasText: "e2e-echo" });
    await target.getByText("RESTART").first().waitFor({ timeout: TIMEOUT });
    if ((await target.getByRole("link", { name: "e2e-echo" }).getAttribute("title")) !== ids.agent) throw new Error("the target's id is not on its name");
    if ((await node.gql("{ experiments { id } }")).experiments.length !== before) throw new Error("the dry run started an experiment");
    await shot(page, "experiments-dry-run");
    await form.getByRole("button", { name: "Start", exact: true }).click();
    await page.waitForURL(/\/experiments\/[^/]+$/, { timeout: TIMEOUT });
    ids.experiment = decodeURIComponent(page.url().split("/").pop());
    // Followed by its subscription, never reloaded: it ends PASSED (or says why not).
    const state = await until("the experiment to end on its page", async () => {
      const s = ((await page.locator(".page-head .status").first().textContent()) ?? "").replace(/[^A-Z_]/g, "");
      return ["PASSED", "FAILED", "ABORTED"].includes(s) ? s : null;
    }, 60_000);
    const report = page.getByRole("region", { name: "Report" });
    await report.waitFor({ timeout: TIMEOUT });
    if (state !== "PASSED") throw new Error(`the experiment ended ${state}: ${await report.textContent()}`);
    const verdict = ((await report.locator(".status").first().textContent()) ?? "").trim();
    if (!verdict.endsWith("PASS")) throw new Error(`the report's verdict reads ${verdict}`);
    await report.getByRole("table", { name: "Invariants" }).getByRole("row").filter({ hasText: "TREE_RESTORED" }).getByText("held").first().waitFor({ timeout: TIMEOUT });
    const hit = page.getByRole("table", { name: "Injections, in order" }).getByRole("row").filter({ hasText: "e2e-echo" });
    await hit.locator(".status.tone-ok", { hasText: "RECOVERED" }).waitFor({ timeout: TIMEOUT });
    await hit.getByText("RESTART").first().waitFor({ timeout: TIMEOUT });
    await shot(page, "experiment");
    await page.getByRole("navigation", { name: "Views" }).getByRole("link", { name: "Experiments" }).click();
    await page.getByRole("table", { name: "Experiments, newest first" }).getByRole("row").filter({ hasText: "e2e-crash" }).getByText("PASSED").first().waitFor({ timeout: TIMEOUT });
  });

  await step("a viewer sees no controls", async () => {
    const t = await node.gql(`mutation { createToken(input: { role: VIEWER, name: "e2e-viewer" }) { secret } }`);
    const viewer = await b.newContext();
    const vp = await viewer.newPage();
    await vp.goto(`${node.url}/`);
    await vp.getByLabel("Token").fill(t.createToken.secret);
    await vp.getByLabel("Token").press("Enter");
    await vp.getByRole("navigation", { name: "Views" }).waitFor({ timeout: TIMEOUT });
    await vp.goto(`${node.url}/agents/${encodeURIComponent(ids.agent)}`);
    await vp.locator(".page-head").getByText("RUNNING").waitFor({ timeout: TIMEOUT });
    for (const name of ["Pause", "Stop", "Restart", "Remove"]) {
      if (await vp.getByRole("button", { name, exact: true }).count()) throw new Error(`a viewer is shown "${name}"`);
    }
    await vp.goto(`${node.url}/tree`);
    await vp.getByRole("tree").waitFor({ timeout: TIMEOUT });
    if (await vp.getByRole("button", { name: "Restart", exact: true }).count()) throw new Error("a viewer is shown Restart in the tree");
    await vp.goto(`${node.url}/alerts`);
    await vp.getByRole("table", { name: "Alert channels" }).waitFor({ timeout: TIMEOUT });
    if (await vp.getByRole("button", { name: "Send test" }).count()) throw new Error("a viewer is shown Send test on the alerts view");
    // Experiments are the admin's: a viewer is told so, with no form and no kill switch.
    for (const path of ["/experiments", `/experiments/${encodeURIComponent(ids.experiment ?? "none")}`]) {
      await vp.goto(`${node.url}${path}`);
      await vp.getByText("Fault experiments are for admins").waitFor({ timeout: TIMEOUT });
      for (const name of ["Start", "Preview (dry run)", "Stop", "Halt all faults"]) {
        if (await vp.getByRole("button", { name, exact: true }).count()) throw new Error(`a viewer is shown "${name}" at ${path}`);
      }
    }
    await viewer.close();
  });

  const views = () => [
    ["overview", "/"],
    ["tree", "/tree"],
    ["agents", "/agents"],
    ["agent", `/agents/${encodeURIComponent(ids.agent ?? "none")}`],
    ["tasks", "/tasks"],
    ["task", `/tasks/${encodeURIComponent(ids.task ?? "none")}`],
    ["swarms", "/swarms"],
    ["swarm", `/swarms/${encodeURIComponent(ids.swarm ?? "none")}`],
    ["hosts", "/hosts"],
    ["vms", "/vms"],
    ["vm", `/vms/${encodeURIComponent(ids.vm ?? "none")}`],
    ["events", "/events"],
    ["approvals", "/approvals"],
    ["alerts", "/alerts"],
    ["experiments", "/experiments"],
    ["experiment", `/experiments/${encodeURIComponent(ids.experiment ?? "none")}`],
    ["llm-task", `/tasks/${encodeURIComponent(ids.llmTask ?? "none")}`],
    ["exec-agent", `/agents/${encodeURIComponent(ids.execAgent ?? "none")}`],
  ];

  // Each view is opened once and checked in both colour schemes: switching the emulated
  // scheme restyles the page as it stands, with no reload.
  await step("axe-core: no serious violation on any view, light and dark", async () => {
    const problems = [];
    for (const [name, path] of views()) {
      await page.emulateMedia({ colorScheme: "light" });
      await open(page, path);
      await page.locator("#page-title").waitFor({ timeout: TIMEOUT });
      await page.waitForLoadState("networkidle").catch(() => {});
      await settled(page);
      for (const scheme of ["light", "dark"]) {
        await page.emulateMedia({ colorScheme: scheme });
        await shot(page, scheme === "light" ? `view-${name}` : `view-${name}-dark`);
        try {
          await axe(page, `${name} (${scheme})`);
        } catch (e) {
          problems.push(e.message);
        }
      }
    }
    if (problems.length) throw new Error(problems.join("\n      "));
  });

  await step("no script error in the console", async () => {
    const real = consoleErrors.filter((m) => !/Failed to load resource|WebSocket connection|ERR_CONNECTION_REFUSED|net::/.test(m));
    if (real.length) throw new Error(real.slice(0, 5).join("; "));
  });
} finally {
  await b.close();
  await llm?.stop();
  if (failed) console.log(`\nnode log (tail):\n${node.log.slice(-3000)}`);
  await node.remove();
  receiver.close();
  rmSync(configDir, { recursive: true, force: true });
}

console.log(`\n${results.join("\n")}\n\n${results.filter((r) => r.startsWith("ok")).length} passed, ${failed} failed; screenshots in ${SHOTS}`);
process.exit(failed ? 1 : 0);
