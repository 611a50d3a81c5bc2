"""Alert delivery latency: from an event to its webhook, through the front door.

A release `troupe serve` is given a webhook channel (a receiver in this process, on
loopback) and a rule taking TASK_DEAD. An exec agent running `false` takes tasks with one
attempt each, submitted over GraphQL at a steady rate: each task's death is its own alert
(its own subject), so each is a notice sent at once. The latency of one alert is the time
the receiver got it minus the event's own time (`troupe.at` in the body, stamped when the
event was written, before its commit): it covers the commit, the notifier, the delivery's
own commit and the HTTP request. Target (BENCHMARKS.md): p99 < 200 ms.

    python3 benches/alerts/run.py [--troupe target/release/troupe] [--alerts 300] [--rate 20]
    make bench-alerts
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "llm_loop"))
from benchlib import dist_ms, gql  # noqa: E402

received = []  # (received at, body)
lock = threading.Lock()
arrived = threading.Condition(lock)


class Receiver(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        now = time.time()
        with arrived:
            received.append((now, json.loads(body)))
            arrived.notify_all()
        self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass




def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--troupe", default=os.environ.get("TROUPE_BIN", "target/release/troupe"))
    ap.add_argument("--alerts", type=int, default=300)
    ap.add_argument("--rate", type=float, default=20.0, help="tasks submitted per second")
    ap.add_argument("--out", default="target/alerts-bench.json")
    args = ap.parse_args()

    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    data = tempfile.mkdtemp(prefix="troupe-alerts-bench-")
    config = os.path.join(data, "troupe.toml")
    with open(config, "w") as f:
        f.write(
            f'[[alert_channels]]\nname = "bench"\nkind = "webhook"\n'
            f'url = "http://127.0.0.1:{server.server_address[1]}/"\n\n'
            '[[alert_rules]]\nname = "dead"\nkinds = ["TASK_DEAD"]\nseverity = "critical"\nchannels = ["bench"]\n'
        )
    node = subprocess.Popen(
        [args.troupe, "serve", "--data-dir", data, "--listen", "127.0.0.1:0",
         "--cluster-listen", "127.0.0.1:0", "--config", config, "--simulated-hosts", "0",
         # Every task fails on purpose: the breaker must not stop the agent taking more.
         "--breaker-failures", "1000000000"],
        stderr=subprocess.DEVNULL,
    )
    try:
        addr_file = os.path.join(data, "gateway.addr")
        for _ in range(300):
            if os.path.exists(addr_file) and open(addr_file).read().strip():
                break
            time.sleep(0.1)
        url = "http://" + open(addr_file).read().strip()
        token = open(os.path.join(data, "admin.token")).read().strip()
        gql(url, token, 'mutation { spawnAgent(input: { name: "doomed", capabilities: ["doomed"], '
                        'maxConcurrentTasks: 8, backend: { exec: { command: ["false"] } } }) { id } }')
        submit = 'mutation($p: JSON!) { submitTask(input: { capability: "doomed", payload: $p, maxAttempts: 1 }) { id } }'
        started = time.time()
        for i in range(args.alerts):
            due = started + i / args.rate
            if due > time.time():
                time.sleep(due - time.time())
            gql(url, token, submit, {"p": {"n": i}})
        with arrived:
            arrived.wait_for(lambda: len(received) >= args.alerts, timeout=120)
        latencies = []
        for at, body in received:
            event_at = datetime.fromisoformat(body["troupe"]["at"].replace("Z", "+00:00")).timestamp()
            latencies.append(at - event_at)
        report = {
            "alerts": args.alerts,
            "received": len(received),
            "rate_per_s": args.rate,
            "event_to_webhook_ms": dist_ms(latencies),
            "troupe": args.troupe,
        }
        os.makedirs(os.path.dirname(args.out), exist_ok=True)
        with open(args.out, "w") as f:
            json.dump(report, f, indent=2)
        print(json.dumps(report, indent=2))
    finally:
        node.terminate()
        node.wait(timeout=30)
        server.shutdown()


if __name__ == "__main__":
    main()
