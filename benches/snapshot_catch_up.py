#!/usr/bin/env python3
"""A member that needs a snapshot catching up while the cluster writes on, through the front door.

    benches/snapshot_catch_up.py [BIN] [--every N] [--clients N] [--backlog S] [--within S] [--join]
                                 [--fill MB]

Starts nodes a, b and c on loopback (in a temporary directory) with a snapshot every N log
entries (default 100, so the log is purged past c within seconds), one echo agent on a, and
CLIENTS (default 16) clients submitting tasks to b one after another over GraphQL. c is
stopped with SIGTERM at once and started again after BACKLOG seconds (default 8) of writes,
which go on; then it must catch up with a's commit index (within 50 entries) while they
do. With --join, c is not stopped: a fourth node, d, joins after the backlog instead, and
must catch up the same way. Prints how long that took (or that it did not within WITHIN
seconds, default 90), how many snapshots the member installed on the way, the submits
acknowledged and failed, and the elections. With --fill, the state first holds about MB
megabytes of tasks queued for a capability no agent has (100 kB each), so that each snapshot
takes that much longer to send and install. BIN defaults to target/release/troupe.
"""
import argparse
import concurrent.futures
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.request

parser = argparse.ArgumentParser()
parser.add_argument("bin", nargs="?", default="target/release/troupe")
parser.add_argument("--every", type=int, default=100)
parser.add_argument("--clients", type=int, default=16)
parser.add_argument("--backlog", type=float, default=8)
parser.add_argument("--within", type=float, default=90)
parser.add_argument("--join", action="store_true", help="a new member d joins instead of c restarting")
parser.add_argument("--fill", type=int, default=0, help="megabytes of queued tasks in the state first")
args = parser.parse_args()
BIN = os.path.realpath(args.bin)
ROOT = tempfile.mkdtemp(prefix="troupe-snapshot-catch-up-")
env = dict(
    os.environ,
    TROUPE_COOKIE="bench-snapshot-catch-up",
    TROUPE_RAFT_SNAPSHOT_EVERY=str(args.every),
    RUST_LOG="warn,troupe_runtime::store::raft::machine=info",
)
INSTALLED = "installed a snapshot"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


CLUSTER = {name: free_port() for name in "abcd"}
LATE = "d" if args.join else "c"
procs = {}


def start(name):
    d = f"{ROOT}/{name}"
    os.makedirs(d, exist_ok=True)
    cmd = [BIN, "serve", "--data-dir", d, "--listen", "127.0.0.1:0", "--node-name", name,
           "--cluster-listen", f"127.0.0.1:{CLUSTER[name]}", "--log-format", "text"]
    if name != "a":
        cmd += ["--join", f"127.0.0.1:{CLUSTER['a']}"]
    log = open(f"{ROOT}/{name}.log", "a")
    procs[name] = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=log, stdin=subprocess.DEVNULL)


def addr(name):
    return open(f"{ROOT}/{name}/gateway.addr").read().strip()


def ready(name, within=120):
    deadline = time.time() + within
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(f"http://{addr(name)}/healthz", timeout=2) as r:
                if r.status == 200:
                    return
        except Exception:
            pass
        time.sleep(0.05)
    raise SystemExit(f"node {name} did not come up within {within} s; see {ROOT}/{name}.log")


def gql(name, query, token):
    body = json.dumps({"query": query}).encode()
    headers = {"content-type": "application/json", "authorization": "Bearer " + token}
    req = urllib.request.Request(f"http://{addr(name)}/graphql", body, headers)
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


def cluster(name, token):
    return gql(name, "{ cluster { commitIndex term } }", token)["data"]["cluster"]


def installed():
    log = f"{ROOT}/{LATE}.log"
    return open(log).read().count(INSTALLED) if os.path.exists(log) else 0


try:
    for name in "abc":
        start(name)
        ready(name)
    token = open(f"{ROOT}/a/admin.token").read().strip()
    spawn = ('mutation { spawnAgent(input: { name: "echo", backend: { builtin: { kind: "echo" } }, '
             'capabilities: ["catch-up"], maxConcurrentTasks: 16 }) { id } }')
    assert "errors" not in gql("a", spawn, token)
    blob = "x" * 100_000
    fill = ('mutation($p: JSON!) { submitTask(input: { capability: "nobody-has-it", payload: $p }) '
            '{ id } }')

    def filled(i):
        body = json.dumps({"query": fill, "variables": {"p": {"i": i, "blob": blob}}}).encode()
        headers = {"content-type": "application/json", "authorization": "Bearer " + token}
        req = urllib.request.Request(f"http://{addr('a')}/graphql", body, headers)
        with urllib.request.urlopen(req, timeout=30) as r:
            assert "errors" not in json.loads(r.read())

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        list(pool.map(filled, range(args.fill * 10)))
    term = cluster("a", token)["term"]
    stop, acked, failed = threading.Event(), [0], [0]
    submit = 'mutation { submitTask(input: { capability: "catch-up", payload: { n: 1 } }) { id } }'

    def client():
        while not stop.is_set():
            try:
                ok = "errors" not in gql("b", submit, token)
            except Exception:
                ok = False
            acked[0] += ok
            failed[0] += not ok

    if not args.join:
        procs["c"].send_signal(signal.SIGTERM)
        procs["c"].wait()
    clients = [threading.Thread(target=client) for _ in range(args.clients)]
    for t in clients:
        t.start()
    time.sleep(args.backlog)
    before = installed()
    behind = cluster("a", token)["commitIndex"]
    started = time.time()
    start(LATE)
    caught = None
    while time.time() - started < args.within:
        try:
            leader, late = cluster("a", token)["commitIndex"], cluster(LATE, token)["commitIndex"]
            if late >= leader - 50:
                caught = time.time() - started
                break
        except Exception:
            pass
        time.sleep(0.1)
    stop.set()
    for t in clients:
        t.join()
    late = "d joined" if args.join else "c started again"
    print(f"snapshot every {args.every} entries, {args.fill} MB of queued tasks, {args.clients} clients "
          f"through b, {late} after {args.backlog:.0f} s of writes ({behind} entries committed by then)")
    if caught is None:
        print(f"{LATE} did not catch up within {args.within:.0f} s (a's commit index "
              f"{cluster('a', token)['commitIndex']}; a joining node answers only once admitted)")
    else:
        print(f"{late} to caught up (within 50 entries of a's commit index): {caught:.1f} s")
    print(f"snapshots {LATE} installed meanwhile: {installed() - before}")
    print(f"submits acknowledged / failed: {acked[0]} / {failed[0]}; "
          f"elections: {cluster('a', token)['term'] - term}")
finally:
    for p in procs.values():
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs.values():
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()
    shutil.rmtree(ROOT, ignore_errors=True)
