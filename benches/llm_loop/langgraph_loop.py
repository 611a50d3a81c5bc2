#!/usr/bin/env python3
"""The LLM agent loop in LangGraph, for the ratio against Troupe's: the same fake model
server, the same 10-step loop (9 tool calls, then an answer), each step checkpointed durably.

A `StateGraph` over `MessagesState`: an `agent` node calling `ChatOpenAI` (langchain-openai,
pointed at the fake server with a dummy key) with one tool bound, a `ToolNode` running a
trivial local tool, `tools_condition` between them: the textbook ReAct loop. The checkpointer
is `AsyncSqliteSaver` (langgraph-checkpoint-sqlite) on a file, WAL mode as it sets it and
SQLite's default `synchronous=FULL`, and the graph runs with `durability="sync"`: each
super-step's checkpoint is committed before the next step starts, as Troupe commits each
step before the next.

`--agents` runs (1,000) go at once on one asyncio loop, each with its own `thread_id`,
each running `--tasks-per-agent` tasks one after the other. Reported (JSON with --json-out,
and a few lines on stdout):

- wall time (first start to last end), tasks/s, model calls/s; the ideal wall time is
  tasks-per-agent x steps x the model's delay;
- per step, from the times taken around each model call inside the node:
  `overhead` = start of model call k - end of model call k-1 (the tool node, the
  checkpoints, the graph's own work); `stepMinusDelay` = end of call k - end of call k-1
  - the model's delay (the issue's "step wall time minus the model's 50 ms", which also
  holds the HTTP client's and the fake server's own time); the first call's start after
  the run's start and the run's end after the last call;
- the fake server's view: the time between an answer written and the same task's next
  request arriving.
"""

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
import traceback
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib  # noqa: E402


def build(model_url, tool_name, delay):
    import httpx
    from langchain_core.messages import AIMessage
    from langchain_core.tools import StructuredTool
    from langchain_openai import ChatOpenAI
    from langgraph.graph import START, MessagesState, StateGraph
    from langgraph.prebuilt import ToolNode, tools_condition

    memory = {"bench": "a value"}

    def memory_get(key: str) -> str:
        """Reads a key of the shared memory."""
        return json.dumps({"key": key, "value": memory.get(key), "version": 1})

    tool = StructuredTool.from_function(memory_get, name=tool_name, description="Reads a key of the shared memory.")
    # One client for every run, with room for every run's connection (httpx's default pool
    # is 100 kept alive).
    limits = httpx.Limits(max_connections=4096, max_keepalive_connections=4096)
    http = httpx.AsyncClient(limits=limits, timeout=httpx.Timeout(120.0))
    model = ChatOpenAI(
        model="fake-model",
        base_url=model_url.rstrip("/") + "/v1",
        api_key="sk-dummy",
        http_async_client=http,
        max_retries=2,
        timeout=120,
    ).bind_tools([tool])

    calls = {}  # thread id -> [(start, end)] of each model call

    async def agent(state: MessagesState, config):
        tid = config["configurable"]["thread_id"]
        began = time.time()
        reply = await model.ainvoke(state["messages"])
        calls.setdefault(tid, []).append((began, time.time()))
        return {"messages": [reply]}

    g = StateGraph(MessagesState)
    g.add_node("agent", agent)
    g.add_node("tools", ToolNode([tool]))
    g.add_edge(START, "agent")
    g.add_conditional_edges("agent", tools_condition)
    g.add_edge("tools", "agent")
    return g, calls, http, AIMessage


async def run(a):
    from langchain_core.messages import HumanMessage
    from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

    graph, calls, http, AIMessage = build(a.model_url, a.tool, a.delay_ms / 1000.0)
    workdir = tempfile.mkdtemp(prefix="llm-loop-langgraph-", dir=a.work_dir)
    db = os.path.join(workdir, "checkpoints.sqlite")
    tag = a.tag or f"lg-{uuid.uuid4().hex[:8]}"
    runs = {}  # thread id -> (start, end, ok, why)
    errors = []

    async with AsyncSqliteSaver.from_conn_string(db) as saver:
        await saver.setup()
        app = graph.compile(checkpointer=saver)
        # One warm-up task outside the figures (imports, the pool's first connection, the
        # tables), tagged apart.
        await app.ainvoke(
            {"messages": [HumanMessage(content=f"bench-id:{tag}warm warm up")]},
            {"configurable": {"thread_id": f"{tag}warm"}, "recursion_limit": 4 * a.steps + 8},
            durability="sync",
        )
        benchlib.server_reset(a.model_url)
        before = benchlib.server_stats(a.model_url)

        async def one_agent(i):
            for r in range(a.tasks_per_agent):
                tid = f"{tag}-{i}-{r}"
                began = time.time()
                try:
                    out = await app.ainvoke(
                        {"messages": [HumanMessage(content=f"bench-id:{tid} Plan the release.")]},
                        {"configurable": {"thread_id": tid}, "recursion_limit": 4 * a.steps + 8},
                        durability="sync",
                    )
                    last = out["messages"][-1]
                    replies = sum(1 for m in out["messages"] if isinstance(m, AIMessage))
                    ok = isinstance(last, AIMessage) and not last.tool_calls and replies == a.steps
                    why = None if ok else f"ended with {replies} replies, last {type(last).__name__}"
                except Exception as e:  # noqa: BLE001 - a failed run is counted, not fatal
                    ok, why = False, f"{type(e).__name__}: {e}"
                    if len(errors) < 3:
                        errors.append(traceback.format_exc())
                runs[tid] = (began, time.time(), ok, why)

        t0 = time.time()
        await asyncio.gather(*(one_agent(i) for i in range(a.agents)))
        t1 = time.time()
        after = benchlib.server_stats(a.model_url)
        checkpoints = None
        try:
            async with saver.conn.execute("SELECT count(*) FROM checkpoints") as cur:
                checkpoints = (await cur.fetchone())[0]
        except Exception:  # noqa: BLE001
            pass
    await http.aclose()

    delay = a.delay_ms / 1000.0
    overhead, minus_delay, first, last = [], [], [], []
    for tid, (began, ended, ok, _) in runs.items():
        cs = calls.get(tid, [])
        if not ok or not cs:
            continue
        first.append(cs[0][0] - began)
        last.append(ended - cs[-1][1])
        for (_, prev_end), (start, end) in zip(cs, cs[1:]):
            overhead.append(start - prev_end)
            minus_delay.append(end - prev_end - delay)
    gaps, traced = benchlib.server_gaps(a.model_url, tag + "-")
    n_ok = sum(1 for v in runs.values() if v[2])
    model_calls = sum(len(calls.get(t, [])) for t in runs)
    wall = t1 - t0
    ideal = a.tasks_per_agent * a.steps * delay
    report = {
        "system": "langgraph",
        "versions": versions(),
        "agents": a.agents,
        "tasksPerAgent": a.tasks_per_agent,
        "tasks": len(runs),
        "succeeded": n_ok,
        "failed": len(runs) - n_ok,
        "failures": sorted({v[3] for v in runs.values() if not v[2]})[:5],
        "wallSeconds": round(wall, 3),
        "idealWallSeconds": round(ideal, 3),
        "ratioToIdeal": round(ideal / wall, 4) if wall else None,
        "tasksPerSecond": round(n_ok / wall, 1),
        "modelCallsPerSecond": round(model_calls / wall, 1),
        "idealTasksPerSecond": round(a.agents / (a.steps * delay), 1),
        "modelCalls": model_calls,
        "overheadPerStepMs": benchlib.dist_ms(overhead),
        "stepMinusDelayMs": benchlib.dist_ms(minus_delay),
        "firstCallAfterStartMs": benchlib.dist_ms(first),
        "endAfterLastCallMs": benchlib.dist_ms(last),
        "serverGapMs": benchlib.dist_ms(gaps),
        "server": benchlib.stats_delta(before, after),
        "checkpointRows": checkpoints,
        "errorSamples": errors,
        "processCpuSeconds": round(sum(os.times()[:2]), 2),
    }
    if not a.keep:
        for f in os.listdir(workdir):
            os.remove(os.path.join(workdir, f))
        os.rmdir(workdir)
    return report


def versions():
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for p in ("langgraph", "langgraph-checkpoint-sqlite", "langchain-openai", "langchain-core", "openai", "httpx"):
        try:
            out[p] = version(p)
        except PackageNotFoundError:
            pass
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model-url", required=True, help="the fake model server, without /v1")
    p.add_argument("--agents", type=int, default=1000, help="concurrent runs")
    p.add_argument("--tasks-per-agent", type=int, default=1)
    p.add_argument("--steps", type=int, default=10, help="model calls per task (as the server scripts it)")
    p.add_argument("--delay-ms", type=float, default=50.0, help="the server's delay (for the ideal)")
    p.add_argument("--tool", default="troupe_memory_get", help="the tool name the server scripts")
    p.add_argument("--work-dir", default=None, help="where the SQLite file goes [default: the temp dir]")
    p.add_argument("--tag", default=None, help="the bench-id prefix of this run's prompts")
    p.add_argument("--keep", action="store_true", help="keep the SQLite file")
    p.add_argument("--json-out", default=None)
    a = p.parse_args()
    try:
        import uvloop  # type: ignore

        uvloop.install()
    except ImportError:
        pass
    report = asyncio.run(run(a))
    return benchlib.finish(report, a.json_out)


if __name__ == "__main__":
    sys.exit(main())
