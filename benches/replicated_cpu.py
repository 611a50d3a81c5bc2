#!/usr/bin/env python3
"""Where a replicated write's CPU goes: per node and per thread, through the front door.

    benches/replicated_cpu.py [BIN] [--seconds S] [--clients N]

Starts one node with 64 echo agents and submits tasks to it from CLIENTS clients (default
1) over GraphQL for SECONDS (default 8) after a short warm-up; then the same with three
nodes on loopback (a leads, b and c join; the agents on b), submitting to b. Prints the
rate, and for each node the CPU time per acknowledged task and, by thread name, the CPU
and the voluntary context switches per task (read from /proc: the node's workers are
`tokio-rt-worker`, the Raft runtime `troupe-raft` (its blocking pool too), the log's writer
`troupe-raft-log` with its files' flush thread `chunked_wal_flu`, the store's writer
`troupe-store-wr`) and the log entries per task. A context switch here is a thread
that waited being woken: each costs both cores CPU on a virtual machine, so a change that
saves hand-offs shows in the counts first. The client is Python, on the same cores: compare
rates only within one run. With PERF="<perf record options>", `perf record` runs on the
nodes PERFNODES (default "abc") during the three nodes' measure, into ./perf.data (for
instance PERF="-e sched:sched_wakeup --call-graph dwarf,16384" PERFNODES=b, then
`perf script` shows who woke whom). BIN defaults to target/release/troupe.
"""
import argparse
import collections
import http.client
import json
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import urllib.request

parser = argparse.ArgumentParser()
parser.add_argument("bin", nargs="?", default="target/release/troupe")
parser.add_argument("--seconds", type=float, default=8)
parser.add_argument("--clients", type=int, default=1)
args = parser.parse_args()
BIN = os.path.realpath(args.bin)
ROOT = tempfile.mkdtemp(prefix="troupe-replicated-cpu-")
env = dict(os.environ, TROUPE_COOKIE="bench-replicated-cpu", RUST_LOG="warn")
TICK = os.sysconf("SC_CLK_TCK")
procs = {}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(name, port, join=None):
    d = f"{ROOT}/{name}"
    os.makedirs(d)
    cmd = [BIN, "serve", "--data-dir", d, "--listen", "127.0.0.1:0", "--node-name", name,
           "--cluster-listen", f"127.0.0.1:{port}", "--log-format", "text"]
    if join:
        cmd += ["--join", f"127.0.0.1:{join}"]
    log = open(f"{ROOT}/{name}.log", "w")
    procs[name] = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=log, stdin=subprocess.DEVNULL)
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            addr = open(f"{d}/gateway.addr").read().strip()
            with urllib.request.urlopen(f"http://{addr}/healthz", timeout=2) as r:
                if r.status == 200:
                    return addr
        except Exception:
            pass
        time.sleep(0.05)
    raise SystemExit(f"node {name} did not come up; see {ROOT}/{name}.log")


def threads(pid):
    """CPU ticks and voluntary context switches of each thread name of process `pid`."""
    cpu, switches = collections.Counter(), collections.Counter()
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            stat = open(f"/proc/{pid}/task/{tid}/stat").read()
            status = open(f"/proc/{pid}/task/{tid}/status").read()
        except OSError:
            continue
        name = stat[stat.index("(") + 1:stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2:].split()
        cpu[name] += int(fields[11]) + int(fields[12])
        switches[name] += int(status.split("voluntary_ctxt_switches:")[1].split()[0])
    return cpu, switches


def gql(addr, token, query, variables):
    body = json.dumps({"query": query, "variables": variables}).encode()
    headers = {"content-type": "application/json", "authorization": "Bearer " + token}
    req = urllib.request.Request(f"http://{addr}/graphql", body, headers)
    with urllib.request.urlopen(req, timeout=30) as r:
        answer = json.loads(r.read())
    assert "errors" not in answer, answer
    return answer


def load(addr, token, seconds):
    """Submits from each client, one task after another, for `seconds`: the tasks acknowledged."""
    q = 'mutation($p: JSON!) { submitTask(input: { capability: "echo", payload: $p }) { id } }'
    host, port = addr.rsplit(":", 1)
    done, lock = [0], threading.Lock()
    stop = time.time() + seconds

    def client(c):
        conn = http.client.HTTPConnection(host, int(port))
        headers = {"content-type": "application/json", "authorization": "Bearer " + token}
        n = 0
        while time.time() < stop:
            conn.request("POST", "/graphql", json.dumps({"query": q, "variables": {"p": {"c": c, "i": n}}}), headers)
            answer = json.loads(conn.getresponse().read())
            assert "errors" not in answer, answer
            n += 1
        with lock:
            done[0] += n

    clients = [threading.Thread(target=client, args=(c,)) for c in range(args.clients)]
    for t in clients:
        t.start()
    for t in clients:
        t.join()
    return done[0]


def commit_index(addr, token):
    """The replicated log's commit index as `addr` knows it (None on a node alone)."""
    cluster = gql(addr, token, "{ cluster { commitIndex } }", {})["data"]["cluster"]
    index = cluster.get("commitIndex")
    return int(index) if index else None


def measure(label, addr, token, names):
    load(addr, token, 1.5)
    before = {n: threads(procs[n].pid) for n in names}
    perf = None
    if os.environ.get("PERF") and len(names) > 1:
        pids = ",".join(str(procs[n].pid) for n in names if n in os.environ.get("PERFNODES", "abc"))
        perf = subprocess.Popen(["perf", "record"] + os.environ["PERF"].split() + ["-p", pids, "-o", "perf.data",
                                "--", "sleep", str(max(args.seconds - 1, 1))],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    first = commit_index(addr, token)
    started = time.time()
    n = load(addr, token, args.seconds)
    took = time.time() - started
    if perf:
        perf.wait()
    print(f"{label}, {args.clients} client(s): {n} tasks in {took:.1f} s, {n / took:.0f} tasks/s")
    if first is not None:
        print(f"  {(commit_index(addr, token) - first) / n:.2f} log entries per task")
    total = 0.0
    for name in names:
        cpu, switches = threads(procs[name].pid)
        cpu, switches = cpu - before[name][0], switches - before[name][1]
        ms = sum(cpu.values()) / TICK * 1000 / n
        total += ms
        parts = ", ".join(f"{t} {v / TICK * 1000 / n:.3f} ms ({switches[t] / n:.1f} cs)" for t, v in cpu.most_common(5))
        print(f"  {name}: {ms:.3f} ms CPU per task [{parts}]")
    print(f"  all nodes: {total:.3f} ms CPU per task")
    return n / took


def spawn_echo_agents(addr, token):
    q = "mutation($i: SpawnAgentInput!) { spawnAgent(input: $i) { id } }"
    for i in range(64):
        gql(addr, token, q, {"i": {"name": f"echo-{i}", "backend": {"builtin": {"kind": "echo"}},
                                   "capabilities": ["echo"], "maxConcurrentTasks": 16}})


try:
    single = start("single", free_port())
    token = open(f"{ROOT}/single/admin.token").read().strip()
    spawn_echo_agents(single, token)
    one = measure("one node", single, token, ["single"])
    procs.pop("single").terminate()
    a_port = free_port()
    start("a", a_port)
    b = start("b", free_port(), join=a_port)
    start("c", free_port(), join=a_port)
    token = open(f"{ROOT}/a/admin.token").read().strip()
    spawn_echo_agents(b, token)
    three = measure("three nodes, via the follower b", b, token, ["a", "b", "c"])
    print(f"three nodes / one node: {three / one:.2f}x")
finally:
    for p in procs.values():
        p.terminate()
    for p in procs.values():
        p.wait()
    shutil.rmtree(ROOT, ignore_errors=True)
