"""The command line listing 10,000 agents, through the front door.

A release `troupe serve` is given 10,000 agents (defined over GraphQL, 16 clients at once);
then `troupe agents list` runs five times as a table and five times as JSON, each a whole
process (start, the 500-a-request pages, the output), its time from start to exit.
Target (BENCHMARKS.md): under 1 s.

    python3 benches/cli/run.py [--troupe target/release/troupe] [--agents 10000]
    make bench-cli
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "llm_loop"))
from benchlib import gql  # noqa: E402




def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--troupe", default=os.environ.get("TROUPE_BIN", "target/release/troupe"))
    ap.add_argument("--agents", type=int, default=10_000)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()

    data = tempfile.mkdtemp(prefix="troupe-cli-bench-")
    node = subprocess.Popen(
        [args.troupe, "serve", "--data-dir", data, "--listen", "127.0.0.1:0", "--cluster-listen", "127.0.0.1:0"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        addr_file = os.path.join(data, "gateway.addr")
        for _ in range(600):
            if os.path.exists(addr_file) and open(addr_file).read().strip():
                break
            time.sleep(0.1)
        url = "http://" + open(addr_file).read().strip()
        token = open(os.path.join(data, "admin.token")).read().strip()
        t0 = time.time()
        make = "mutation($n: String!) { createAgent(input: { name: $n, backend: { builtin: { kind: \"echo\" } } }) { id } }"
        with ThreadPoolExecutor(16) as pool:
            list(pool.map(lambda i: gql(url, token, make, {"n": f"bench-{i}"}), range(args.agents)))
        print(f"{args.agents} agents defined in {time.time() - t0:.1f} s", file=sys.stderr)
        env = dict(os.environ, TROUPE_URL=url, TROUPE_TOKEN=token)
        for output in ["table", "json"]:
            times = []
            for _ in range(args.runs):
                start = time.perf_counter()
                done = subprocess.run([args.troupe, "agents", "list", "-o", output], env=env, capture_output=True, text=True)
                times.append((time.perf_counter() - start) * 1000)
                if done.returncode != 0:
                    raise RuntimeError(done.stderr)
                rows = len(done.stdout.splitlines()) - 1 if output == "table" else len(json.loads(done.stdout))
                if rows != args.agents:
                    raise RuntimeError(f"listed {rows} of {args.agents}")
            times.sort()
            print(f"troupe agents list -o {output}, {args.agents} agents: median {times[len(times) // 2]:.0f} ms, "
                  f"min {times[0]:.0f}, max {times[-1]:.0f} ({args.runs} runs)")
    finally:
        node.terminate()
        node.wait(timeout=30)


if __name__ == "__main__":
    main()
