#!/usr/bin/env python3
"""MCP tool calls per second through Troupe's front door, two ways (and a third that joins them).

  target/mcp-venv/bin/python benches/llm_loop/mcp_calls.py [--seconds S] [--clients 1,16,64]
        [--modes agent,server] [--procs P]

Starts `troupe serve` (TROUPE_BIN, default target/release/troupe) on loopback with a fresh
data dir (troupe_loop.Node), then for each mode and each client count runs N closed-loop
clients (each keeps one call in flight) for --seconds after --warmup seconds:

- `agent`: MCP servers as Troupe agents. One `mcp` agent, `calc`, whose command is the
  tests' stdio server (tests/fixtures/mcp_server.py under target/mcp-venv's python), with
  `maxConcurrentTasks` --agent-slots. A call is a `submitTask(input: {capability:
  "mcp:calc/charge", payload: {amount: i}, maxAttempts: 1})` over GraphQL (HTTP, keep-alive),
  which the agent runs by calling the server's `charge` tool (its cheapest: answers a string);
  the call ends when the task's terminal event arrives on a graphql-transport-ws
  `events(kinds: [TASK_…])` subscription (one per client process, a small RFC 6455 client
  below: target/mcp-venv has no websocket package). Latency: the client's clock, submit sent
  to terminal event received; and the node's, the task's `createdAt` to its terminal event's
  `at`. For a sample of tasks, `createdAt → startedAt` (queued) and `startedAt → finishedAt`
  (the tool call).
- `server`: Troupe as an MCP server. N sessions of the Python `mcp` SDK's `Client` on
  `/mcp` (streamable HTTP, the admin token as bearer), each calling --server-tool
  (`list_agents`, first 10, by default: a read that runs the `agents` GraphQL query; or
  `get_task` of one task) in a loop. Latency: `call_tool` sent to answered.
- `graphql` (not run by default): the `server` mode's read as a plain GraphQL POST of the
  same document, the baseline that tells /mcp's own cost from the query's.
- `echo` (not run by default): the `agent` mode's tasks (capability `echo`) to a builtin
  `echo` agent, the baseline that tells the mcp backend's cost from the task path's.
- `mcp-submit` (not run by default): the two joined: `/mcp`'s `submit_task` with `wait`
  (default) of `mcp:calc/charge`, i.e. what a coding agent sees calling a supervised MCP
  server's tool through Troupe.

The clients run in --procs worker processes (this script with --worker), the N clients split
among them, all starting at the same instant, since one Python process of clients saturates
a core long before the node does. Calls that began in the warm-up or ended after the window
are not counted. Also reported: the CPU seconds of the node, of the MCP server process and of
the client processes per call, and the load average (uptime) before each run.

Prints a table; --json-out FILE writes every figure (default
target/llm-loop-bench/mcp-<time>.json).
"""

import argparse
import asyncio
import base64
import json
import os
import struct
import subprocess
import sys
import time
import urllib.request
from datetime import datetime

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
import benchlib  # noqa: E402
from troupe_loop import COOKIE, DEFAULT_BIN, TERMINAL, Node, cpu_seconds, rss_mib  # noqa: E402,F401

DEFAULT_PY = os.path.join(ROOT, "target", "mcp-venv", "bin", "python")
FIXTURE = os.path.join(ROOT, "tests", "fixtures", "mcp_server.py")
AGENT = "calc"
TOOL = "charge"
CAPABILITY = f"mcp:{AGENT}/{TOOL}"


def ts(text):
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


# ---------------------------------------------------------------- a tiny websocket client


class WebSocket:
    """Just enough of RFC 6455 for a graphql-transport-ws subscription: text frames out
    (masked), text/ping/close in (fragments joined)."""

    def __init__(self, reader, writer):
        self.r, self.w = reader, writer

    @classmethod
    async def connect(cls, host, port, path, protocol):
        reader, writer = await asyncio.open_connection(host, port, limit=1 << 24)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write(
            (
                f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: {protocol}\r\n\r\n"
            ).encode()
        )
        head = await reader.readuntil(b"\r\n\r\n")
        if b" 101 " not in head.split(b"\r\n", 1)[0]:
            raise RuntimeError(f"websocket refused: {head[:300]!r}")
        return cls(reader, writer)

    def _frame(self, opcode, data):
        mask = os.urandom(4)
        n = len(data)
        if n < 126:
            head = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
        elif n < 65536:
            head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
        else:
            head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(data))
        self.w.write(head + mask + masked)

    async def send_json(self, obj):
        self._frame(0x1, json.dumps(obj).encode())
        await self.w.drain()

    async def recv(self):
        """The next text message (str), or None when closed."""
        parts = []
        while True:
            b0, b1 = await self.r.readexactly(2)
            opcode, n = b0 & 0x0F, b1 & 0x7F
            if n == 126:
                (n,) = struct.unpack("!H", await self.r.readexactly(2))
            elif n == 127:
                (n,) = struct.unpack("!Q", await self.r.readexactly(8))
            mask = await self.r.readexactly(4) if b1 & 0x80 else None
            data = await self.r.readexactly(n)
            if mask:
                data = bytes(b ^ mask[i % 4] for i, b in enumerate(data))
            if opcode == 0x8:
                return None
            if opcode == 0x9:
                self._frame(0xA, data)
                await self.w.drain()
                continue
            if opcode == 0xA:
                continue
            parts.append(data)
            if b0 & 0x80:
                return b"".join(parts).decode()

    def close(self):
        self.w.close()


class Ends:
    """The tasks' terminal events, from `events(after, kinds)` over graphql-transport-ws:
    per task id (kind, node's at, received at) and a future for whoever waits for it."""

    def __init__(self):
        self.seen = {}
        self.waiting = {}
        self.ready = asyncio.Event()
        self.error = None

    def wait(self, task_id):
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        if task_id in self.seen:
            fut.set_result(self.seen.pop(task_id))
        else:
            self.waiting[task_id] = fut
        return fut

    async def follow(self, addr, token, after):
        host, port = addr.rsplit(":", 1)
        query = "subscription($after: Int64, $kinds: [String!]) { events(after: $after, kinds: $kinds) { kind subject at } }"
        try:
            ws = await WebSocket.connect(host, int(port), "/graphql/ws", "graphql-transport-ws")
            await ws.send_json({"type": "connection_init", "payload": {"authorization": f"Bearer {token}"}})
            while True:
                text = await ws.recv()
                if text is None:
                    raise RuntimeError("the subscription's socket closed")
                m = json.loads(text)
                t = m.get("type")
                if t == "connection_ack":
                    await ws.send_json({"id": "1", "type": "subscribe", "payload": {"query": query, "variables": {"after": after, "kinds": TERMINAL}}})
                    self.ready.set()
                elif t == "ping":
                    await ws.send_json({"type": "pong"})
                elif t == "next":
                    if m["payload"].get("errors"):
                        raise RuntimeError(json.dumps(m["payload"]["errors"])[:1000])
                    e = m["payload"]["data"]["events"]
                    got = (e["kind"], e["at"], time.time())
                    fut = self.waiting.pop(e["subject"], None)
                    if fut is not None:
                        fut.set_result(got)
                    else:
                        self.seen[e["subject"]] = got
                elif t in ("error", "complete"):
                    raise RuntimeError(f"subscription ended: {text[:1000]}")
        except Exception as e:  # noqa: BLE001
            self.error = f"{type(e).__name__}: {e}"
            for fut in self.waiting.values():
                if not fut.done():
                    fut.set_exception(RuntimeError(self.error))
            self.ready.set()


# ---------------------------------------------------------------- the workers


async def gql(http, url, query, variables=None):
    r = await http.post(url, json={"query": query, "variables": variables or {}})
    body = r.json()
    if body.get("errors"):
        raise RuntimeError(json.dumps(body["errors"])[:1000])
    return body["data"]


async def window_cpu(w, out):
    """This process's CPU seconds over the counted window."""
    await asyncio.sleep(max(0, w["begin"] - time.time()))
    c0 = time.process_time()
    await asyncio.sleep(max(0, w["end"] - time.time()))
    out["cpu"] = time.process_time() - c0


async def worker_agent(w):
    import httpx2

    addr, token = w["addr"], w["token"]
    url = f"http://{addr}/graphql"
    limits = httpx2.Limits(max_connections=w["clients"] + 4, max_keepalive_connections=w["clients"] + 4)
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, limits=limits, timeout=120)
    last = (await gql(http, url, "{ node { lastSeq } }"))["node"]["lastSeq"]
    ends = Ends()
    follower = asyncio.create_task(ends.follow(addr, token, last))
    await asyncio.wait_for(ends.ready.wait(), 30)
    if ends.error:
        raise RuntimeError(ends.error)
    # Open the connections before the start.
    await asyncio.gather(*(gql(http, url, "{ me { role } }") for _ in range(w["clients"])))
    begin, end = w["begin"], w["end"]
    submit = "mutation($input: SubmitTaskInput!) { submitTask(input: $input) { id createdAt } }"
    out = {"client": [], "node": [], "ids": [], "failed": 0, "errors": []}

    async def client(c):
        i = 0
        await asyncio.sleep(max(0, w["start"] - time.time()))
        while time.time() < end:
            i += 1
            t0 = time.time()
            try:
                d = (await gql(http, url, submit, {"input": {"capability": w["capability"], "payload": {"amount": i}, "maxAttempts": 1}}))["submitTask"]
                kind, at, t1 = await ends.wait(d["id"])
            except Exception as e:  # noqa: BLE001
                out["failed"] += 1
                if len(out["errors"]) < 5:
                    out["errors"].append(f"{type(e).__name__}: {e}"[:500])
                await asyncio.sleep(0.05)
                continue
            if t0 < begin or t1 > end:
                continue
            if kind != "TASK_SUCCEEDED":
                out["failed"] += 1
                if len(out["errors"]) < 5:
                    out["errors"].append(f"{kind} {d['id']}")
                continue
            out["client"].append(t1 - t0)
            out["node"].append(ts(at) - ts(d["createdAt"]))
            if len(out["ids"]) < 200:
                out["ids"].append(d["id"])

    await asyncio.gather(window_cpu(w, out), *(client(c) for c in range(w["clients"])))
    follower.cancel()
    await http.aclose()
    return out


LIST_AGENTS = "query($capability: String, $state: AgentState, $first: Int) { agents(capability: $capability, state: $state, first: $first) { totalCount nodes { id name node state capabilities runningTasks restarts lastError } } }"
GET_TASK = "query($id: ID!) { task(id: $id) { id state agentId capability attempts result error } }"


async def worker_graphql(w):
    """The `server` mode's read as a plain GraphQL POST (the same document /mcp runs)."""
    import httpx2

    url = f"http://{w['addr']}/graphql"
    limits = httpx2.Limits(max_connections=w["clients"] + 4, max_keepalive_connections=w["clients"] + 4)
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {w['token']}"}, limits=limits, timeout=120)
    await asyncio.gather(*(gql(http, url, "{ me { role } }") for _ in range(w["clients"])))
    doc = LIST_AGENTS if w["tool"] == "list_agents" else GET_TASK
    begin, end = w["begin"], w["end"]
    out = {"client": [], "node": [], "ids": [], "failed": 0, "errors": []}

    async def client(c):
        await asyncio.sleep(max(0, w["start"] - time.time()))
        while time.time() < end:
            t0 = time.time()
            try:
                await gql(http, url, doc, w["arguments"])
            except Exception as e:  # noqa: BLE001
                out["failed"] += 1
                if len(out["errors"]) < 5:
                    out["errors"].append(f"{type(e).__name__}: {e}"[:500])
                await asyncio.sleep(0.05)
                continue
            t1 = time.time()
            if t0 >= begin and t1 <= end:
                out["client"].append(t1 - t0)

    await asyncio.gather(window_cpu(w, out), *(client(c) for c in range(w["clients"])))
    await http.aclose()
    return out


async def worker_server(w):
    import httpx2
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client

    url = f"http://{w['addr']}/mcp"
    begin, end = w["begin"], w["end"]
    out = {"client": [], "node": [], "ids": [], "failed": 0, "errors": []}
    tool, arguments = w["tool"], w["arguments"]
    opened = asyncio.Semaphore(8)  # sessions initialised at once
    ready = []

    async def client(c):
        http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {w['token']}"}, timeout=120)
        async with opened:
            cm = Client(streamable_http_client(url, http_client=http))
            session = await cm.__aenter__()
        ready.append(c)
        try:
            await asyncio.sleep(max(0, w["start"] - time.time()))
            while time.time() < end:
                t0 = time.time()
                try:
                    r = await session.call_tool(tool, arguments)
                    t1 = time.time()
                    bad = bool(r.is_error)
                except Exception as e:  # noqa: BLE001
                    t1, bad = time.time(), True
                    r = e
                if bad:
                    out["failed"] += 1
                    if len(out["errors"]) < 5:
                        out["errors"].append(str(getattr(r, "content", r))[:500])
                    await asyncio.sleep(0.05)
                    continue
                if t0 < begin or t1 > end:
                    continue
                out["client"].append(t1 - t0)
        finally:
            await cm.__aexit__(None, None, None)
            await http.aclose()

    await asyncio.gather(window_cpu(w, out), *(client(c) for c in range(w["clients"])))
    out["sessions"] = len(ready)
    return out


def worker_main(spec):
    w = json.loads(spec)
    fn = {"agent": worker_agent, "echo": worker_agent, "graphql": worker_graphql}.get(w["mode"], worker_server)
    out = asyncio.run(fn(w))
    sys.stdout.write(json.dumps(out) + "\n")
    sys.stdout.flush()


# ---------------------------------------------------------------- the driver


def post_gql(node, query, variables=None):
    req = urllib.request.Request(
        f"http://{node.addr}/graphql",
        data=json.dumps({"query": query, "variables": variables or {}}).encode(),
        headers={"Authorization": f"Bearer {node.token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=60) as r:
        body = json.loads(r.read())
    if body.get("errors"):
        raise RuntimeError(json.dumps(body["errors"])[:2000])
    return body["data"]


def node_up(node, within=120):
    data = os.path.join(node.dir, "data")
    deadline = time.time() + within
    while time.time() < deadline:
        if node.proc.poll() is not None:
            raise RuntimeError(f"troupe serve exited with {node.proc.returncode}: see {node.log_path}")
        try:
            with open(os.path.join(data, "gateway.addr")) as f:
                addr = f.read().strip()
            with open(os.path.join(data, "admin.token")) as f:
                token = f.read().strip()
            with urllib.request.urlopen(f"http://{addr}/healthz", timeout=2) as r:
                if r.status == 200:
                    node.addr, node.token = addr, token
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"the node did not come up within {within} s: see {node.log_path}")


def children(pid):
    """The pids of `pid`'s descendants."""
    kids = {}
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            with open(f"/proc/{p}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        kids.setdefault(ppid, []).append(int(p))
    out, todo = [], [pid]
    while todo:
        for k in kids.get(todo.pop(), []):
            out.append(k)
            todo.append(k)
    return out


def spawn_agent(node, a):
    spec = {
        "name": AGENT,
        "backend": {"mcp": {"command": [a.server_python, FIXTURE]}},
        "maxConcurrentTasks": a.agent_slots,
    }
    aid = post_gql(node, "mutation($input: SpawnAgentInput!) { spawnAgent(input: $input) { id } }", {"input": spec})["spawnAgent"]["id"]
    deadline = time.time() + 60
    while time.time() < deadline:
        ag = post_gql(node, "query($id: ID!) { agent(id: $id) { state capabilities lastError } }", {"id": aid})["agent"]
        # (`capabilities` lists the spec's only, not the server's tools: RUNNING is the sign.)
        if ag["state"] == "RUNNING":
            return aid, ag
        if ag["state"] in ("FAILED", "STOPPED"):
            raise RuntimeError(f"the mcp agent is {ag['state']}: {ag['lastError']}")
        time.sleep(0.1)
    raise RuntimeError(f"the mcp agent did not start: {ag}")


def cpu_total():
    """(busy, all) jiffies of the whole machine, from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + v[4]
    return sum(v) - idle, sum(v)


def loadavg():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def run_one(node, a, mode, clients, server_pid, extra):
    procs = max(1, min(a.procs, clients))
    split = [clients // procs + (1 if k < clients % procs else 0) for k in range(procs)]
    time.sleep(a.settle)
    load = loadavg()
    setup = 1.0 + 0.05 * clients  # the workers' own start (imports, sessions)
    start = time.time() + setup
    begin = start + a.warmup
    end = begin + a.seconds
    wmode = mode if mode in ("agent", "echo", "graphql") else "server"
    if mode in ("server", "graphql"):
        tool, arguments = a.server_tool, extra["server_args"]
    elif mode == "mcp-submit":
        tool, arguments = "submit_task", {"input": {"capability": CAPABILITY, "payload": {"amount": 1}, "maxAttempts": 1}}
    else:
        tool, arguments = None, None
    ws = []
    for n in split:
        spec = {"mode": wmode, "addr": node.addr, "token": node.token, "clients": n, "start": start, "begin": begin, "end": end, "tool": tool, "arguments": arguments,
                "capability": "echo" if mode == "echo" else CAPABILITY}
        ws.append(subprocess.Popen([sys.executable, os.path.abspath(__file__), "--worker", json.dumps(spec)], stdout=subprocess.PIPE, text=True))
    # CPU over the counted window only.
    time.sleep(max(0, begin - time.time()))
    ncpu0, scpu0, m0 = cpu_seconds(node.proc.pid), cpu_seconds(server_pid) if server_pid else None, cpu_total()
    time.sleep(max(0, end - time.time()))
    ncpu1, scpu1, m1 = cpu_seconds(node.proc.pid), cpu_seconds(server_pid) if server_pid else None, cpu_total()
    load_after = loadavg()
    outs = []
    for p in ws:
        o, _ = p.communicate(timeout=300)
        if p.returncode != 0:
            raise RuntimeError(f"a worker failed ({p.returncode})")
        outs.append(json.loads(o.strip().splitlines()[-1]))
    lat = [x for o in outs for x in o["client"]]
    node_lat = [x for o in outs for x in o["node"]]
    ids = [x for o in outs for x in o["ids"]]
    calls = len(lat)
    r = {
        "mode": mode,
        "tool": CAPABILITY if mode == "agent" else "echo" if mode == "echo" else (f"{tool} (GraphQL)" if mode == "graphql" else tool),
        "clients": clients,
        "procs": procs,
        "loadBefore": load,
        "loadAfter": load_after,
        # The whole machine's busy share over the window (all cores), and how much of it
        # was this bench's (node, MCP server, client processes): the rest is others'.
        "machineBusy": round((m1[0] - m0[0]) / (m1[1] - m0[1]), 3) if m1[1] > m0[1] else None,
        "seconds": a.seconds,
        "calls": calls,
        "callsPerSecond": round(calls / a.seconds, 1),
        "failed": sum(o["failed"] for o in outs),
        "errors": [e for o in outs for e in o["errors"]][:5],
        "latencyMs": benchlib.dist_ms(lat),
        "nodeLatencyMs": benchlib.dist_ms(node_lat) if node_lat else None,
        "nodeCpuSeconds": round(ncpu1 - ncpu0, 2),
        "nodeCpuMsPerCall": round((ncpu1 - ncpu0) * 1000 / calls, 3) if calls else None,
        "serverCpuMsPerCall": round((scpu1 - scpu0) * 1000 / calls, 3) if calls and scpu0 is not None and mode in ("agent", "mcp-submit") else None,
        "clientCpuMsPerCall": round(sum(o["cpu"] for o in outs) * 1000 / calls, 3) if calls else None,
        "nodeRssMiB": rss_mib(node.proc.pid),
    }
    ours = (ncpu1 - ncpu0) + ((scpu1 - scpu0) if scpu0 is not None else 0) + sum(o["cpu"] for o in outs)
    r["othersCores"] = round(r["machineBusy"] * (os.cpu_count() or 1) - ours / a.seconds, 2) if r["machineBusy"] is not None else None
    if ids:
        fields = "id createdAt startedAt finishedAt attempts"
        q = "query {" + " ".join(f't{k}: task(id: "{i}") {{ {fields} }}' for k, i in enumerate(ids[:200])) + "}"
        queued, running = [], []
        for t in post_gql(node, q).values():
            if t and t["startedAt"] and t["finishedAt"]:
                queued.append(ts(t["startedAt"]) - ts(t["createdAt"]))
                running.append(ts(t["finishedAt"]) - ts(t["startedAt"]))
        r["sampleQueuedMs"] = benchlib.dist_ms(queued)
        r["sampleRunMs"] = benchlib.dist_ms(running)
    return r


def fmt(v):
    return "-" if v is None else (f"{v:.1f}" if isinstance(v, float) else str(v))


def table(rows):
    head = ["mode", "clients", "procs", "load before", "others' cores", "calls/s", "p50 ms", "p99 ms", "node p50", "node p99", "failed", "node CPU ms/call", "server CPU ms/call", "client CPU ms/call"]
    lines = [head]
    for r in rows:
        nl = r.get("nodeLatencyMs") or {}
        lines.append([
            r["mode"], str(r["clients"]), str(r["procs"]), r["loadBefore"], fmt(r["othersCores"]), fmt(r["callsPerSecond"]),
            fmt(r["latencyMs"]["p50"]), fmt(r["latencyMs"]["p99"]), fmt(nl.get("p50")), fmt(nl.get("p99")),
            str(r["failed"]), fmt(r["nodeCpuMsPerCall"]), fmt(r["serverCpuMsPerCall"]), fmt(r["clientCpuMsPerCall"]),
        ])
    widths = [max(len(x[i]) for x in lines) for i in range(len(head))]
    out = []
    for k, x in enumerate(lines):
        out.append("| " + " | ".join(c.ljust(widths[i]) for i, c in enumerate(x)) + " |")
        if k == 0:
            out.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(out)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--seconds", type=float, default=10.0, help="the counted window of each run")
    p.add_argument("--warmup", type=float, default=2.0, help="seconds run before the window, not counted")
    p.add_argument("--settle", type=float, default=2.0, help="a pause before each run")
    p.add_argument("--clients", default="1,16,64", help="concurrent clients, a comma list: one run each")
    p.add_argument("--modes", default="agent,server", help="agent, server, mcp-submit, graphql, echo (comma list)")
    p.add_argument("--procs", type=int, default=2, help="client processes the clients are split among")
    p.add_argument("--agent-slots", type=int, default=1000, help="the mcp agent's maxConcurrentTasks")
    p.add_argument("--server-tool", default="list_agents", choices=["list_agents", "get_task"], help="the /mcp tool the `server` mode calls")
    p.add_argument("--server-python", default=DEFAULT_PY, help="the python the stdio MCP server runs under")
    p.add_argument("--troupe-bin", default=os.environ.get("TROUPE_BIN", DEFAULT_BIN))
    p.add_argument("--serve-arg", action="append", help="an extra flag for troupe serve (repeatable)")
    p.add_argument("--work-dir", default=None)
    p.add_argument("--keep", action="store_true", help="keep the data dir and the node's log")
    p.add_argument("--json-out", default=None)
    a = p.parse_args()
    if a.worker:
        return worker_main(a.worker)
    if not os.path.exists(a.troupe_bin):
        raise SystemExit(f"no troupe binary at {a.troupe_bin} (TROUPE_BIN)")
    modes = [m.strip() for m in a.modes.split(",") if m.strip()]
    counts = [int(c) for c in a.clients.split(",")]
    node = Node(a.troupe_bin, a.work_dir, a.keep, a.serve_arg or [])
    rows = []
    try:
        node_up(node)
        aid, agent = spawn_agent(node, a)
        if "echo" in modes:
            echo = {"name": "echo", "backend": {"builtin": {"kind": "echo"}}, "capabilities": ["echo"], "maxConcurrentTasks": a.agent_slots}
            post_gql(node, "mutation($input: SpawnAgentInput!) { spawnAgent(input: $input) { id } }", {"input": echo})
        server_pids = [p for p in children(node.proc.pid)]
        server_pid = server_pids[0] if server_pids else None
        # One call to see it works, and a task for get_task.
        first = post_gql(node, "mutation($input: SubmitTaskInput!) { submitTask(input: $input) { id } }", {"input": {"capability": CAPABILITY, "payload": {"amount": 1}, "maxAttempts": 1}})["submitTask"]["id"]
        for _ in range(100):
            t = post_gql(node, "query($id: ID!) { task(id: $id) { state result error } }", {"id": first})["task"]
            if t["state"] not in ("QUEUED", "RUNNING"):
                break
            time.sleep(0.05)
        by_cap = post_gql(node, "query($c: String) { agents(capability: $c) { totalCount } }", {"c": CAPABILITY})["agents"]["totalCount"]
        print(f"agents(capability: {CAPABILITY!r}).totalCount = {by_cap}", file=sys.stderr)
        print(f"node {node.addr}, agent {aid} capabilities {agent['capabilities']}, server pid {server_pid}; first call: {t}", file=sys.stderr)
        extra = {"server_args": {"first": 10} if a.server_tool == "list_agents" else {"id": first}}
        for mode in modes:
            for n in counts:
                r = run_one(node, a, mode, n, server_pid, extra)
                print(json.dumps(r), file=sys.stderr, flush=True)
                rows.append(r)
    finally:
        node.stop()
    report = {"binary": a.troupe_bin, "seconds": a.seconds, "warmup": a.warmup, "cores": os.cpu_count(), "runs": rows}
    out = a.json_out or os.path.join(ROOT, "target", "llm-loop-bench", time.strftime("mcp-%Y%m%d-%H%M%S.json"))
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as f:
        json.dump(report, f, indent=2)
    print(table(rows))
    print(f"\n(JSON: {out})")
    return 1 if any(r["failed"] for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
