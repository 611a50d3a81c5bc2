#!/usr/bin/env bash
# Peak memory of a snapshot handed to a joining member, through the front door.
#
#   benches/snapshot_memory.sh [BIN] [TASKS]
#
# Starts node a alone (on loopback, in a temporary directory), submits TASKS (default 800)
# tasks of 100 kB each over GraphQL (for a capability no agent has, so they stay queued and
# the replicated state holds them: about 100 MB), then starts b with --join: a builds a
# snapshot of its whole state and b receives and installs it. Prints each process's peak
# resident memory (VmHWM) before and after. BIN defaults to target/release/troupe.
set -euo pipefail
BIN=${1:-target/release/troupe}
TASKS=${2:-800}
BIN=$(realpath "$BIN")
DIR=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$DIR"' EXIT
cd "$DIR" && mkdir a b
export TROUPE_COOKIE=bench-snapshot-memory RUST_LOG=warn
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
A_HTTP=$(free_port) A_CLUSTER=$(free_port) B_HTTP=$(free_port) B_CLUSTER=$(free_port)
"$BIN" serve --node-name a --data-dir a --listen "127.0.0.1:$A_HTTP" --cluster-listen "127.0.0.1:$A_CLUSTER" 2>a/err.log >/dev/null &
A=$!
until [ -f a/admin.token ]; do sleep 0.2; done
python3 - "$TASKS" "$A_HTTP" <<'PY'
import json, sys, urllib.request, concurrent.futures
n, port = int(sys.argv[1]), sys.argv[2]
tok = open("a/admin.token").read().strip()
blob = "x" * 100_000
def one(i):
    body = {"query": "mutation($i: SubmitTaskInput!) { submitTask(input: $i) { id } }",
            "variables": {"i": {"capability": "nobody-has-it", "payload": {"i": i, "blob": blob}}}}
    r = urllib.request.Request(f"http://127.0.0.1:{port}/graphql", json.dumps(body).encode(),
        {"content-type": "application/json", "authorization": "Bearer " + tok})
    out = json.load(urllib.request.urlopen(r))
    assert "errors" not in out, out
with concurrent.futures.ThreadPoolExecutor(8) as ex:
    list(ex.map(one, range(n)))
PY
peak() { awk '/VmHWM/ { printf "%.0f MiB", $2 / 1024 }' "/proc/$1/status"; }
echo "a alone, $TASKS tasks: store $(du -sh a/troupe.redb | cut -f1), a's peak $(peak $A)"
"$BIN" serve --node-name b --data-dir b --listen "127.0.0.1:$B_HTTP" --cluster-listen "127.0.0.1:$B_CLUSTER" \
  --join "127.0.0.1:$A_CLUSTER" 2>b/err.log >/dev/null &
B=$!
# b writes its admin token once it has been admitted, that is once it installed the snapshot.
until [ -f b/admin.token ]; do sleep 0.2; done
echo "b joined: a's peak $(peak $A), b's peak $(peak $B), b's store $(du -sh b/troupe.redb | cut -f1)"
