#!/usr/bin/env python3
"""The LLM agent loop in Troupe, driven through the front door as a user's client drives it:
GraphQL over HTTP, and a graphql-transport-ws subscription for the tasks' ends.

Starts `troupe serve` itself (TROUPE_BIN, default target/release/troupe) on loopback with a
fresh data dir, then:

1. makes the `llm` agents as members of swarms (`createSwarm` with one template of
   `--swarm-size` members, until `--agents`), each swarm's memory holding the key the
   scripted tool reads. The agents' backend: the fake server's `baseUrl`, `tools` offering
   only `--tool` (`troupe_memory_get`: the cheapest of Troupe's own tools that does real
   work through the node, a read of the swarm's memory; it needs the agent to be in a swarm),
   `maxSteps` the loop's steps, one task at a time;
2. subscribes to the tasks' terminal events (`events(after: lastSeq, kinds: [...])`);
3. submits one task per agent (`--tasks-per-agent`) in one `submitTasks` (one commit; all
   start together), each payload tagged `bench-id:<tag>` for the fake server's trace;
4. waits until every task has ended, then reads each task's `transcript` (batched queries).

Figures (JSON with --json-out, and on stdout):

- wall time (submit sent to the last terminal event received), tasks/s, model calls/s, and
  the ratio to the ideal: tasks-per-agent x steps x the model's delay, all agents at once;
  the node's own wall time too (last finishedAt - first createdAt);
- Troupe's own overhead per step, from the transcripts (a reply's `at` is taken when its
  answer has been read, before its commit; a result's `at` when the tool has answered,
  before its commit; `latencyMs` is the model call's, whole milliseconds, cut down):
  - `overheadPerStep`: at(reply k) - at(reply k-1) - latencyMs(reply k): the reply's
    commit, the tool call, the result's commit, the next request's making;
  - `gapAfterResult` (the brief's figure): at(reply k) - at(result k-1) - latencyMs(reply k):
    the result's commit and the next request's making;
  - `stepMinusDelay`: at(reply k) - at(reply k-1) - the model's delay (the same figure as
    the LangGraph side's, HTTP client and fake server included);
  - `replyCommitAndTool`: at(result k) - at(reply k);
  - the first call after the task started, the end after the last reply;
  Since latencyMs is cut down to a whole millisecond, the figures that subtract it are
  0-1 ms above the truth (0.5 ms on average).
- the fake server's view: an answer written to the same task's next request arriving.
"""

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_BIN = os.path.join(os.path.dirname(os.path.dirname(HERE)), "target", "release", "troupe")
TERMINAL = ["TASK_SUCCEEDED", "TASK_FAILED", "TASK_DEAD", "TASK_CANCELLED", "TASK_EXPIRED", "TASK_DEPENDENCY_FAILED"]
COOKIE = "troupe-llm-bench-cookie"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ts(text):
    """An RFC 3339 date-time as seconds since the epoch."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def cpu_seconds(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            after = f.read().rsplit(")", 1)[1].split()
        return (int(after[11]) + int(after[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def rss_mib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return None


class Node:
    """A `troupe serve` process of ours, on a fresh data dir."""

    def __init__(self, binary, work_dir, keep, extra):
        self.dir = tempfile.mkdtemp(prefix="llm-loop-troupe-", dir=work_dir)
        self.keep = keep
        self.log_path = os.path.join(self.dir, "node.log")
        args = [
            binary, "serve",
            "--data-dir", os.path.join(self.dir, "data"),
            "--listen", "127.0.0.1:0",
            "--node-name", "llm-bench",
            "--cluster-listen", f"127.0.0.1:{free_port()}",
        ] + extra
        env = dict(os.environ, TROUPE_COOKIE=COOKIE, RUST_LOG=os.environ.get("TROUPE_BENCH_RUST_LOG", "warn"))
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(args, env=env, stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log)
        self.addr = self.token = None

    async def up(self, session, within=120):
        deadline = time.time() + within
        data = os.path.join(self.dir, "data")
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"troupe serve exited with {self.proc.returncode}: see {self.log_path}")
            try:
                with open(os.path.join(data, "gateway.addr")) as f:
                    addr = f.read().strip()
                with open(os.path.join(data, "admin.token")) as f:
                    token = f.read().strip()
                async with session.get(f"http://{addr}/healthz") as r:
                    if r.status == 200:
                        self.addr, self.token = addr, token
                        return
            except (OSError, Exception):  # noqa: BLE001 - not up yet
                pass
            await asyncio.sleep(0.05)
        raise RuntimeError(f"the node did not come up within {within} s: see {self.log_path}")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        if not self.keep:
            shutil.rmtree(self.dir, ignore_errors=True)


class Gql:
    def __init__(self, session, node):
        self.s = session
        self.url = f"http://{node.addr}/graphql"
        self.headers = {"Authorization": f"Bearer {node.token}"}

    async def __call__(self, query, variables=None, tries=5):
        for attempt in range(tries):
            async with self.s.post(self.url, json={"query": query, "variables": variables or {}}, headers=self.headers) as r:
                body = await r.json(content_type=None)
            errors = body.get("errors")
            if not errors:
                return body["data"]
            # BACKPRESSURE and the like: a pause, then again.
            if attempt + 1 < tries and any("BACKPRESSURE" in json.dumps(e) or "UNAVAILABLE" in json.dumps(e) for e in errors):
                await asyncio.sleep(0.2 * (attempt + 1))
                continue
            raise RuntimeError(f"GraphQL errors: {json.dumps(errors)[:2000]}")


class Ends:
    """The terminal events, from a graphql-transport-ws subscription."""

    def __init__(self):
        self.seen = {}  # task id -> (kind, node's at, received)
        self.changed = asyncio.Event()
        self.error = None

    async def follow(self, session, node, after):
        url = f"ws://{node.addr}/graphql/ws"
        query = "subscription($after: Int64, $kinds: [String!]) { events(after: $after, kinds: $kinds) { seq kind subject at } }"
        try:
            async with session.ws_connect(url, protocols=("graphql-transport-ws",), heartbeat=None, max_msg_size=0) as ws:
                await ws.send_json({"type": "connection_init", "payload": {"authorization": f"Bearer {node.token}"}})
                self.ws = ws
                async for msg in ws:
                    m = json.loads(msg.data)
                    t = m.get("type")
                    if t == "connection_ack":
                        await ws.send_json({"id": "1", "type": "subscribe", "payload": {"query": query, "variables": {"after": after, "kinds": TERMINAL}}})
                        self.subscribed.set()
                    elif t == "ping":
                        await ws.send_json({"type": "pong"})
                    elif t == "next":
                        if m["payload"].get("errors"):
                            self.error = json.dumps(m["payload"]["errors"])[:2000]
                            self.changed.set()
                            return
                        e = m["payload"]["data"]["events"]
                        self.seen[e["subject"]] = (e["kind"], e["at"], time.time())
                        self.changed.set()
                    elif t in ("error", "complete"):
                        self.error = f"subscription ended: {msg.data[:2000]}"
                        self.changed.set()
                        return
        except Exception as e:  # noqa: BLE001
            self.error = f"subscription failed: {type(e).__name__}: {e}"
            self.changed.set()

    subscribed = None


async def run(a):
    import aiohttp

    tag = a.tag or f"tr-{uuid.uuid4().hex[:8]}"
    binary = a.troupe_bin
    if not os.path.exists(binary):
        raise SystemExit(f"no troupe binary at {binary} (TROUPE_BIN)")
    extra = a.serve_arg or []
    node = Node(binary, a.work_dir, a.keep, extra)
    connector = aiohttp.TCPConnector(limit=a.clients, force_close=False)
    timeout = aiohttp.ClientTimeout(total=None, sock_read=600)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        try:
            await node.up(session)
            return await drive(a, session, node, tag)
        finally:
            node.stop()


async def drive(a, session, node, tag):
    gql = Gql(session, node)
    delay = a.delay_ms / 1000.0
    base = a.model_url.rstrip("/")

    # 1. The agents, as members of swarms whose memory holds the key the tool reads.
    t_setup = time.time()
    llm = {
        "baseUrl": base,
        "model": "fake-model",
        "tools": [a.tool],
        "maxSteps": a.steps,
        "timeoutMs": int(a.task_timeout_s * 1000),
    }
    create = """mutation($input: CreateSwarmInput!) { createSwarm(input: $input) { id size members { id } } }"""
    setmem = """mutation($id: ID!, $key: String!, $value: JSON!) { setSwarmMemory(id: $id, key: $key, value: $value) { version } }"""
    spawn = """mutation($input: SpawnAgentInput!) { spawnAgent(input: $input) { id } }"""
    agents = []
    if a.no_swarm:
        sem = asyncio.Semaphore(a.clients)

        async def one(i):
            async with sem:
                d = await gql(spawn, {"input": {"name": f"llm-{i}", "backend": {"llm": llm}, "capabilities": ["llm-bench"], "maxConcurrentTasks": 1}})
                return d["spawnAgent"]["id"]

        agents = await asyncio.gather(*(one(i) for i in range(a.agents)))
    else:
        sizes = [a.swarm_size] * (a.agents // a.swarm_size) + ([a.agents % a.swarm_size] if a.agents % a.swarm_size else [])
        sem = asyncio.Semaphore(a.swarm_clients)

        async def swarm(j, size):
            async with sem:
                spec = {"name": "llm", "backend": {"llm": llm}, "capabilities": ["llm-bench"], "maxConcurrentTasks": 1}
                d = await gql(create, {"input": {"name": f"{tag}-swarm-{j}", "topology": "MESH", "templates": [{"count": size, "agent": spec}]}})
                sid = d["createSwarm"]["id"]
                await gql(setmem, {"id": sid, "key": a.memory_key, "value": {"note": "a value the tool reads", "swarm": j}})
                return [m["id"] for m in d["createSwarm"]["members"]]

        for ids in await asyncio.gather(*(swarm(j, s) for j, s in enumerate(sizes))):
            agents.extend(ids)
    setup_s = time.time() - t_setup
    if len(agents) != a.agents:
        raise RuntimeError(f"made {len(agents)} agents, not {a.agents}")

    # 2. The subscription, from the newest event on.
    last_seq = (await gql("{ node { lastSeq } }"))["node"]["lastSeq"]
    ends = Ends()
    ends.subscribed = asyncio.Event()
    follower = asyncio.create_task(ends.follow(session, node, last_seq))
    await asyncio.wait_for(ends.subscribed.wait(), 30)
    await asyncio.sleep(0.2)  # the subscribe message's way in: events are read from after lastSeq anyway

    # 3. One submitTasks with every task.
    benchlib.server_reset(a.model_url)
    before = benchlib.server_stats(a.model_url)
    cpu0 = cpu_seconds(node.proc.pid)
    tasks = []
    for r in range(a.tasks_per_agent):
        for i, agent in enumerate(agents):
            tasks.append({"key": f"t{i}-{r}", "task": {"agentId": agent, "payload": f"bench-id:{tag}-{i}-{r} Plan the release.", "maxAttempts": 1}})
    submit = "mutation($tasks: [GraphTaskInput!]!) { submitTasks(tasks: $tasks) { id } }"
    t0 = time.time()
    if a.submit == "batch":
        ids = [t["id"] for t in (await gql(submit, {"tasks": tasks}))["submitTasks"]]
    else:
        one = "mutation($input: SubmitTaskInput!) { submitTask(input: $input) { id } }"
        sem = asyncio.Semaphore(a.clients)

        async def each(t):
            async with sem:
                return (await gql(one, {"input": t["task"]}))["submitTask"]["id"]

        ids = await asyncio.gather(*(each(t) for t in tasks))
    t_submitted = time.time()

    # 4. Until every task has ended (or the deadline).
    want = set(ids)
    deadline = t0 + a.wait_s
    while not want.issubset(ends.seen.keys()):
        if ends.error:
            raise RuntimeError(ends.error)
        left = deadline - time.time()
        if left <= 0:
            break
        ends.changed.clear()
        try:
            await asyncio.wait_for(ends.changed.wait(), min(left, 5))
        except asyncio.TimeoutError:
            pass
    done_ids = want & ends.seen.keys()
    t_end = max((ends.seen[i][2] for i in done_ids), default=time.time())
    cpu1 = cpu_seconds(node.proc.pid)
    rss = rss_mib(node.proc.pid)
    after = benchlib.server_stats(a.model_url)
    follower.cancel()

    # 5. The transcripts.
    fields = "id state error createdAt startedAt finishedAt transcript { step kind latencyMs at isError content }"
    records = {}
    sem = asyncio.Semaphore(4)

    async def batch(chunk):
        async with sem:
            q = "query {" + " ".join(f't{k}: task(id: "{i}") {{ {fields} }}' for k, i in enumerate(chunk)) + "}"
            d = await gql(q)
            for v in d.values():
                if v:
                    records[v["id"]] = v

    await asyncio.gather(*(batch(ids[k : k + a.read_batch]) for k in range(0, len(ids), a.read_batch)))

    return figures(a, tag, ids, records, ends, t0, t_submitted, t_end, setup_s, before, after, cpu0, cpu1, rss, delay, node)


def figures(a, tag, ids, records, ends, t0, t_submitted, t_end, setup_s, before, after, cpu0, cpu1, rss, delay, node):
    overhead, gap, minus_delay, commit_tool, first, last, latency = [], [], [], [], [], [], []
    states, errors, tool_errors, bad_shape, sample = {}, [], [], 0, None
    model_calls = 0
    created, finished = [], []
    for i in ids:
        t = records.get(i)
        if not t:
            states["UNREAD"] = states.get("UNREAD", 0) + 1
            continue
        states[t["state"]] = states.get(t["state"], 0) + 1
        if t["error"] and len(errors) < 5:
            errors.append(t["error"][:500])
        created.append(ts(t["createdAt"]))
        if t["finishedAt"]:
            finished.append(ts(t["finishedAt"]))
        steps = t["transcript"]
        replies = {s["step"]: s for s in steps if s["kind"] == "REPLY"}
        results = {s["step"]: s for s in steps if s["kind"] != "REPLY"}
        model_calls += len(replies)
        for s in results.values():
            if sample is None:
                sample = s["content"]
            if s["isError"] and len(tool_errors) < 5:
                tool_errors.append((s["content"] or "")[:300])
        if t["state"] != "SUCCEEDED":
            continue
        if len(replies) != a.steps or len(results) != a.steps - 1:
            bad_shape += 1
        for k in sorted(replies):
            r = replies[k]
            at, lat = ts(r["at"]), (r["latencyMs"] or 0) / 1000.0
            latency.append(lat)
            if k == 1 and t["startedAt"]:
                first.append(at - ts(t["startedAt"]) - lat)
            if k - 1 in replies:
                prev = ts(replies[k - 1]["at"])
                overhead.append(at - prev - lat)
                minus_delay.append(at - prev - delay)
                if k - 1 in results:
                    gap.append(at - ts(results[k - 1]["at"]) - lat)
            if k in results:
                commit_tool.append(ts(results[k]["at"]) - at)
        if replies and t["finishedAt"]:
            last.append(ts(t["finishedAt"]) - ts(replies[max(replies)]["at"]))
    gaps, _ = benchlib.server_gaps(a.model_url, tag + "-")
    succeeded = states.get("SUCCEEDED", 0)
    wall = t_end - t0
    node_wall = (max(finished) - min(created)) if finished and created else None
    ideal = a.tasks_per_agent * a.steps * delay
    cpu = (cpu1 - cpu0) if cpu0 is not None and cpu1 is not None else None
    kinds = {}
    for v in ends.seen.values():
        kinds[v[0]] = kinds.get(v[0], 0) + 1
    return {
        "system": "troupe",
        "binary": a.troupe_bin,
        "agents": a.agents,
        "swarms": None if a.no_swarm else -(-a.agents // a.swarm_size),
        "tool": a.tool,
        "tasksPerAgent": a.tasks_per_agent,
        "tasks": len(ids),
        "succeeded": succeeded,
        "failed": len(ids) - succeeded,
        "states": states,
        "terminalEvents": kinds,
        "errors": errors,
        "toolErrorSamples": tool_errors,
        "toolResultSample": (sample or "")[:300],
        "wrongShape": bad_shape,
        "setupSeconds": round(setup_s, 2),
        "submitSeconds": round(t_submitted - t0, 3),
        "wallSeconds": round(wall, 3),
        "nodeWallSeconds": round(node_wall, 3) if node_wall else None,
        "idealWallSeconds": round(ideal, 3),
        "ratioToIdeal": round(ideal / wall, 4) if wall else None,
        "tasksPerSecond": round(succeeded / wall, 1) if wall else None,
        "modelCallsPerSecond": round(model_calls / wall, 1) if wall else None,
        "idealTasksPerSecond": round(a.agents / (a.steps * delay), 1),
        "modelCalls": model_calls,
        "overheadPerStepMs": benchlib.dist_ms(overhead),
        "gapAfterResultMs": benchlib.dist_ms(gap),
        "stepMinusDelayMs": benchlib.dist_ms(minus_delay),
        "replyCommitAndToolMs": benchlib.dist_ms(commit_tool),
        "modelLatencyMs": benchlib.dist_ms(latency),
        "firstCallAfterStartMs": benchlib.dist_ms(first),
        "endAfterLastReplyMs": benchlib.dist_ms(last),
        "serverGapMs": benchlib.dist_ms(gaps),
        "server": benchlib.stats_delta(before, after),
        "nodeCpuSeconds": round(cpu, 2) if cpu is not None else None,
        "nodeCpuMsPerModelCall": round(cpu * 1000 / model_calls, 3) if cpu and model_calls else None,
        "nodeRssMiB": rss,
        "nodeLog": node.log_path if a.keep else None,
    }


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model-url", required=True, help="the fake model server, without /v1")
    p.add_argument("--troupe-bin", default=os.environ.get("TROUPE_BIN", DEFAULT_BIN))
    p.add_argument("--agents", type=int, default=1000)
    p.add_argument("--tasks-per-agent", type=int, default=1)
    p.add_argument("--steps", type=int, default=10, help="model calls per task (as the server scripts it)")
    p.add_argument("--delay-ms", type=float, default=50.0, help="the server's delay (for the ideal)")
    p.add_argument("--tool", default="troupe_memory_get", help="the tool offered (and scripted by the server)")
    p.add_argument("--memory-key", default="bench", help="the swarm memory key the tool reads")
    p.add_argument("--swarm-size", type=int, default=100, help="members per swarm")
    p.add_argument("--swarm-clients", type=int, default=2, help="swarms created at once")
    p.add_argument("--no-swarm", action="store_true", help="plain agents (spawnAgent); a memory tool then answers an error")
    p.add_argument("--submit", choices=["batch", "each"], default="batch", help="one submitTasks, or a submitTask each")
    p.add_argument("--clients", type=int, default=64, help="HTTP requests at once")
    p.add_argument("--read-batch", type=int, default=50, help="tasks read per query")
    p.add_argument("--task-timeout-s", type=float, default=600)
    p.add_argument("--wait-s", type=float, default=900, help="longest wait for the tasks")
    p.add_argument("--work-dir", default=None, help="where the data dir goes [default: the temp dir]")
    p.add_argument("--serve-arg", action="append", help="an extra flag for troupe serve (repeatable)")
    p.add_argument("--tag", default=None)
    p.add_argument("--keep", action="store_true", help="keep the data dir and the node's log")
    p.add_argument("--json-out", default=None)
    a = p.parse_args()
    report = asyncio.run(run(a))
    return benchlib.finish(report, a.json_out)


if __name__ == "__main__":
    sys.exit(main())
