#!/usr/bin/env python3
"""The LLM loop benchmark: one fake model server, then the Troupe loop and the LangGraph loop
against it in the same run, one after the other, and one table.

    python benches/llm_loop/run.py [--agents 1000] [--only troupe|langgraph]

TROUPE_BIN names the troupe binary (default target/release/troupe). Each side's whole
report is kept as JSON in --out-dir (default target/llm-loop-bench/<time>).

The issue's targets, read off the table: Troupe's overhead per step p99 <= 2 ms, and its
loop throughput >= 80 % of what the model's latency allows (ratio to ideal >= 0.8).
"""

import argparse
import json
import os
import signal
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


def start_server(a):
    args = [sys.executable, os.path.join(HERE, "fake_model.py"), "--delay-ms", str(a.delay_ms), "--steps", str(a.steps), "--tool", a.tool]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=sys.stderr, text=True)
    line = proc.stdout.readline()
    if not line.startswith("PORT "):
        proc.kill()
        raise SystemExit(f"the fake model server did not start: {line!r}")
    return proc, f"http://127.0.0.1:{int(line.split()[1])}"


def side(a, name, url, out_dir):
    script = {"troupe": "troupe_loop.py", "langgraph": "langgraph_loop.py"}[name]
    out = os.path.join(out_dir, f"{name}.json")
    args = [
        sys.executable, os.path.join(HERE, script),
        "--model-url", url,
        "--agents", str(a.agents),
        "--tasks-per-agent", str(a.tasks_per_agent),
        "--steps", str(a.steps),
        "--delay-ms", str(a.delay_ms),
        "--tool", a.tool,
        "--json-out", out,
    ]
    if name == "troupe" and a.keep:
        args.append("--keep")
    print(f"==> {name}: {a.agents} agents x {a.tasks_per_agent} task(s) x {a.steps} steps", file=sys.stderr, flush=True)
    began = time.time()
    load_before = os.getloadavg()[0]
    rc = subprocess.call(args, stdout=subprocess.DEVNULL)
    load_after = os.getloadavg()[0]
    print(f"    {name} done in {time.time() - began:.1f} s (exit {rc})", file=sys.stderr, flush=True)
    if not os.path.exists(out):
        return None
    with open(out) as f:
        report = json.load(f)
    # Other work on the machine shows here: the run's own processes take about one core.
    report["loadAverage1m"] = [round(load_before, 2), round(load_after, 2)]
    return report


def fmt(v, unit=""):
    if v is None:
        return "-"
    if isinstance(v, float):
        v = f"{v:,.3f}" if abs(v) < 10 else f"{v:,.1f}"
    else:
        v = f"{v:,}"
    return f"{v}{unit}"


def dist(d):
    if not d or not d.get("n"):
        return "-"
    return f"{d['p50']:.2f} / {d['p99']:.2f}"


def table(reports, a):
    rows = [
        ("tasks succeeded / submitted", lambda r: f"{r['succeeded']:,} / {r['tasks']:,}"),
        ("wall time, s", lambda r: fmt(r["wallSeconds"])),
        ("ideal wall time, s", lambda r: fmt(r["idealWallSeconds"])),
        ("ratio to ideal (target >= 0.8)", lambda r: fmt(r["ratioToIdeal"])),
        ("tasks/s (ideal)", lambda r: f"{fmt(r['tasksPerSecond'])} ({fmt(r['idealTasksPerSecond'])})"),
        ("model calls/s", lambda r: fmt(r["modelCallsPerSecond"])),
        ("overhead per step p50/p99, ms (target p99 <= 2)", lambda r: dist(r["overheadPerStepMs"])),
        ("  of which after the result (brief's gap)", lambda r: dist(r.get("gapAfterResultMs"))),
        ("step wall - model delay p50/p99, ms", lambda r: dist(r["stepMinusDelayMs"])),
        ("answer -> next request at the server p50/p99, ms", lambda r: dist(r["serverGapMs"])),
        ("first model call after start p50/p99, ms", lambda r: dist(r["firstCallAfterStartMs"])),
        ("end after last model call p50/p99, ms", lambda r: dist(r.get("endAfterLastReplyMs") or r.get("endAfterLastCallMs"))),
        ("fake server timer lag p99, ms", lambda r: fmt((r["server"].get("timerLagMs") or {}).get("p99"))),
        ("fake server CPU, s", lambda r: fmt(r["server"].get("cpuSeconds"))),
        ("machine load average before / after", lambda r: " / ".join(str(v) for v in r["loadAverage1m"])),
    ]
    names = [n for n in ("troupe", "langgraph") if reports.get(n)]
    w0 = max(len(r[0]) for r in rows) + 2
    w = 24
    lines = [f"LLM loop: {a.agents} agents x {a.tasks_per_agent} task(s) x {a.steps} steps, model {a.delay_ms:g} ms"]
    lines.append("".ljust(w0) + "".join(n.ljust(w) for n in names))
    for label, f in rows:
        cells = []
        for n in names:
            try:
                cells.append(str(f(reports[n])).ljust(w))
            except (KeyError, TypeError):
                cells.append("-".ljust(w))
        lines.append(label.ljust(w0) + "".join(cells))
    if "troupe" in names and "langgraph" in names:
        t, l = reports["troupe"], reports["langgraph"]
        if t["tasksPerSecond"] and l["tasksPerSecond"]:
            lines.append(f"troupe / langgraph throughput: {t['tasksPerSecond'] / l['tasksPerSecond']:.1f}x")
    if "troupe" in names:
        lines.append(f"troupe binary: {reports['troupe']['binary']}")
    if "langgraph" in names:
        lines.append("langgraph: " + ", ".join(f"{k} {v}" for k, v in reports["langgraph"]["versions"].items()))
    return "\n".join(lines)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--agents", type=int, default=1000)
    p.add_argument("--tasks-per-agent", type=int, default=1)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--delay-ms", type=float, default=50.0)
    p.add_argument("--tool", default="troupe_memory_get")
    p.add_argument("--only", choices=["troupe", "langgraph"], default=None)
    p.add_argument("--out-dir", default=None)
    p.add_argument("--keep", action="store_true", help="keep the troupe node's data dir and log")
    a = p.parse_args()
    out_dir = a.out_dir or os.path.join(ROOT, "target", "llm-loop-bench", time.strftime("%Y%m%d-%H%M%S"))
    os.makedirs(out_dir, exist_ok=True)
    server, url = start_server(a)
    reports = {}
    try:
        for name in ("troupe", "langgraph"):
            if a.only in (None, name):
                reports[name] = side(a, name, url, out_dir)
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
    text = table(reports, a)
    with open(os.path.join(out_dir, "summary.txt"), "w") as f:
        f.write(text + "\n")
    print(text)
    print(f"(reports in {out_dir})")
    ok = all(r and r["failed"] == 0 for r in reports.values())
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
