#!/usr/bin/env python3
"""Where a replicated write's CPU goes: per node and per thread, through the front door.

    benches/replicated_cpu.py [BIN] [--seconds S] [--clients N] [--rounds R]

Starts one node, and three nodes on loopback (a leads, b and c join), each with 64 echo
agents (the three nodes' on b). Then, ROUNDS times (default 5), submits tasks over GraphQL
from CLIENTS clients (default 1) for SECONDS (default 4) to the one node, then as long to
b. The two are measured in turn because this machine's speed drifts from minute to minute
(its neighbours on the host): a ratio of two measures taken apart carries the drift, and
each round's ratio does not. Prints each round's rates and CPU per task, then over all
rounds the rate, and for each node the CPU time per acknowledged task and, by thread name,
the CPU and the voluntary context switches per task (read from /proc: the node's workers
are `tokio-rt-worker`, the Raft runtime `troupe-raft` (its blocking pool too, and the
writes to the log's files), the files' flush thread `chunked_wal_flu` (builds before
December 2026 had a log writer `troupe-raft-log` between the two), the store's writer
`troupe-store-wr`) and the log entries per task; last, the three nodes' CPU per task
against one node's over all rounds and in the median round. A context switch here is a
thread that waited being woken: each costs both cores CPU on a virtual machine, so a change
that saves hand-offs shows in the counts first. The client is Python, on the same cores:
compare rates only within one run. With PERF="<perf record options>", `perf record` runs on the
nodes PERFNODES (default "abc") during the three nodes' last round, into ./perf.data (and
with "single" among them on the one node during its last round, into ./perf-single.data) (for
instance PERF="-e sched:sched_wakeup --call-graph dwarf,16384" PERFNODES=b, then
`perf script` shows who woke whom). With --idle S, each deployment is first measured idle for S seconds (its CPU a second by
thread: what it spends whether tasks come or not). BIN defaults to target/release/troupe.
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
parser.add_argument("--seconds", type=float, default=4)
parser.add_argument("--clients", type=int, default=1)
parser.add_argument("--rounds", type=int, default=5)
parser.add_argument("--idle", type=float, default=0,
                    help="first measure each deployment idle for this many seconds")
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


def measure(addr, token, names, seconds, perf_nodes=""):
    """One measure of `seconds` of load on `addr`: the tasks acknowledged, the time taken,
    the log entries written, and each node's CPU ticks and context switches by thread."""
    before = {n: threads(procs[n].pid) for n in names}
    perf = None
    if os.environ.get("PERF") and perf_nodes:
        pids = ",".join(str(procs[n].pid) for n in names if n in perf_nodes)
        out = "perf-single.data" if names == ["single"] else "perf.data"
        perf = subprocess.Popen(["perf", "record"] + os.environ["PERF"].split() + ["-p", pids, "-o", out,
                                "--", "sleep", str(max(seconds - 1, 1))],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    first = commit_index(addr, token)
    started = time.time()
    n = load(addr, token, seconds)
    took = time.time() - started
    if perf:
        perf.wait()
    entries = commit_index(addr, token) - first if first is not None else 0
    after = {name: threads(procs[name].pid) for name in names}
    used = {name: (after[name][0] - before[name][0], after[name][1] - before[name][1]) for name in names}
    return n, took, entries, used


def report(label, names, runs):
    """Prints what `runs` of one deployment add up to; returns its rate and CPU per task."""
    n = sum(r[0] for r in runs)
    took = sum(r[1] for r in runs)
    print(f"{label}, {args.clients} client(s): {n} tasks in {took:.1f} s, {n / took:.0f} tasks/s")
    if len(names) > 1:
        print(f"  {sum(r[2] for r in runs) / n:.2f} log entries per task")
    total = 0.0
    for name in names:
        cpu, switches = collections.Counter(), collections.Counter()
        for r in runs:
            cpu.update(r[3][name][0])
            switches.update(r[3][name][1])
        ms = sum(cpu.values()) / TICK * 1000 / n
        total += ms
        parts = ", ".join(f"{t} {v / TICK * 1000 / n:.3f} ms ({switches[t] / n:.1f} cs)" for t, v in cpu.most_common(5))
        print(f"  {name}: {ms:.3f} ms CPU per task [{parts}]")
    print(f"  all nodes: {total:.3f} ms CPU per task")
    return n / took, total


def idle(names, seconds):
    """Prints what `names` use idle over `seconds`, per second and by thread: the part of a
    task's CPU that is paid whether tasks come or not."""
    before = {n: threads(procs[n].pid) for n in names}
    time.sleep(seconds)
    after = {n: threads(procs[n].pid) for n in names}
    total = 0.0
    for name in names:
        cpu = collections.Counter(after[name][0])
        cpu.subtract(before[name][0])
        switches = collections.Counter(after[name][1])
        switches.subtract(before[name][1])
        ms = sum(cpu.values()) / TICK * 1000 / seconds
        total += ms
        parts = ", ".join(f"{t} {v / TICK * 1000 / seconds:.1f} ms ({switches[t] / seconds:.0f} cs)"
                          for t, v in cpu.most_common(4))
        print(f"  idle {name}: {ms:.1f} ms CPU a second [{parts}]")
    return total


def cpu_per_task(run, names):
    return sum(sum(run[3][name][0].values()) for name in names) / TICK * 1000 / run[0]


def spawn_echo_agents(addr, token):
    q = "mutation($i: SpawnAgentInput!) { spawnAgent(input: $i) { id } }"
    for i in range(64):
        gql(addr, token, q, {"i": {"name": f"echo-{i}", "backend": {"builtin": {"kind": "echo"}},
                                   "capabilities": ["echo"], "maxConcurrentTasks": 16}})


try:
    # Both deployments stay up and are measured in turn, round after round: the machine's
    # speed drifts (a virtual machine's neighbours), and a ratio of two measures taken
    # minutes apart carries the drift. The deployment not measured idles meanwhile.
    single = start("single", free_port())
    single_token = open(f"{ROOT}/single/admin.token").read().strip()
    spawn_echo_agents(single, single_token)
    a_port = free_port()
    start("a", a_port)
    b = start("b", free_port(), join=a_port)
    start("c", free_port(), join=a_port)
    token = open(f"{ROOT}/a/admin.token").read().strip()
    spawn_echo_agents(b, token)
    load(single, single_token, 1.5)
    load(b, token, 1.5)
    if args.idle:
        idle_one = idle(["single"], args.idle)
        idle_three = idle(list("abc"), args.idle)
        print(f"idle: one node {idle_one:.1f} ms CPU a second, three nodes {idle_three:.1f}")
    ones, threes = [], []
    for r in range(args.rounds):
        last = r == args.rounds - 1
        ones.append(measure(single, single_token, ["single"], args.seconds,
                            "single" if last and "single" in os.environ.get("PERFNODES", "") else ""))
        threes.append(measure(b, token, list("abc"), args.seconds,
                              os.environ.get("PERFNODES", "abc").replace("single", "") if last else ""))
        one_ms, three_ms = cpu_per_task(ones[-1], ["single"]), cpu_per_task(threes[-1], list("abc"))
        print(f"round {r + 1}: one node {ones[-1][0] / ones[-1][1]:.0f} tasks/s, {one_ms:.3f} ms CPU a task; "
              f"three nodes {threes[-1][0] / threes[-1][1]:.0f} tasks/s, {three_ms:.3f} ms: {three_ms / one_ms:.2f}x")
    one, one_ms = report("one node", ["single"], ones)
    three, three_ms = report("three nodes, via the follower b", list("abc"), threes)
    ratios = sorted(cpu_per_task(t, list("abc")) / cpu_per_task(o, ["single"]) for o, t in zip(ones, threes))
    print(f"three nodes / one node: rate {three / one:.2f}x; CPU per task {three_ms / one_ms:.2f}x over all rounds, "
          f"{ratios[len(ratios) // 2]:.2f}x the median round ({ratios[0]:.2f}-{ratios[-1]:.2f})")
finally:
    for p in procs.values():
        p.terminate()
    for p in procs.values():
        p.wait()
    shutil.rmtree(ROOT, ignore_errors=True)
