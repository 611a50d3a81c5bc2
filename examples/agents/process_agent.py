#!/usr/bin/env python3
"""A Troupe process agent: one long-lived process speaking JSON lines on stdin/stdout.

The protocol is in docs/agent-protocol.md. This agent keeps a counter as its state (so it
can be checkpointed and restored) and runs each task in a thread of its own, so several
tasks can be in flight and each can be cancelled. Troupe's system tests use it.

Task payloads are objects with an "op": echo, add, get, sleep, wait_file, fail, crash,
mute, hang, spin, garbage, pid, env.
"""

import json
import os
import sys
import threading
import time

out_lock = threading.Lock()
state_lock = threading.Lock()
count = 0
cancelled = set()
cancel_lock = threading.Lock()


def send(message):
    """Writes one line; every write goes through here so lines never interleave."""
    with out_lock:
        sys.stdout.write(json.dumps(message) + "\n")
        sys.stdout.flush()


def is_cancelled(task_id):
    with cancel_lock:
        return task_id in cancelled


def heartbeat(interval):
    while True:
        time.sleep(interval)
        send({"type": "heartbeat"})


def run(task_id, payload):
    global count
    if not isinstance(payload, dict):
        return send({"type": "result", "id": task_id, "ok": False,
                     "error": "a task payload must be an object with an \"op\""})
    op = payload.get("op")
    ok = lambda value: send({"type": "result", "id": task_id, "ok": True, "value": value})
    if op == "echo":
        ok(payload.get("value", payload))
    elif op == "add":
        with state_lock:
            count += int(payload.get("n", 1))
            ok({"count": count})
    elif op == "get":
        with state_lock:
            ok({"count": count})
    elif op == "sleep":
        ms = int(payload.get("ms", 0))
        slept = 0
        while slept < ms:
            step = min(100, ms - slept)
            time.sleep(step / 1000)
            slept += step
            if is_cancelled(task_id):
                return
            send({"type": "progress", "id": task_id, "fraction": slept / ms})
        ok({"slept_ms": ms})
    elif op == "wait_file":
        path = payload["path"]
        last = time.monotonic()
        while not os.path.exists(path):
            if is_cancelled(task_id):
                return
            time.sleep(0.02)
            if time.monotonic() - last >= 1:
                last = time.monotonic()
                send({"type": "progress", "id": task_id, "note": "waiting for " + path})
        ok({"waited": path})
    elif op == "fail":
        send({"type": "result", "id": task_id, "ok": False,
              "error": payload.get("message", "failed on purpose")})
    elif op == "crash":
        os._exit(3)
    elif op == "hang":
        # Holding the output lock silences everything, heartbeats included.
        out_lock.acquire()
        while True:
            time.sleep(3600)
    elif op == "mute":
        # Silent for a while (heartbeats too), then back.
        with out_lock:
            time.sleep(int(payload.get("ms", 0)) / 1000)
        ok({"muted_ms": payload.get("ms", 0)})
    elif op == "spin":
        ms = int(payload.get("ms", 0))
        end = time.monotonic() + ms / 1000
        while time.monotonic() < end:
            pass
        ok({"spun_ms": ms})
    elif op == "garbage":
        with out_lock:
            sys.stdout.write("this is not json\n")
            sys.stdout.write(json.dumps({"type": "bogus"}) + "\n")
            sys.stdout.flush()
        ok({"garbage": True})
    elif op == "pid":
        ok({"pid": os.getpid(), "pgid": os.getpgid(0)})
    elif op == "env":
        ok(dict(os.environ))
    else:
        send({"type": "result", "id": task_id, "ok": False, "error": "unknown op %s" % op})


def main():
    global count
    interval = max(int(os.environ.get("TROUPE_HEARTBEAT_MS", "5000")), 10) / 1000
    threading.Thread(target=heartbeat, args=(interval,), daemon=True).start()
    send({"type": "ready", "name": "process_agent.py", "version": "1"})
    send({"type": "log", "level": "info", "message": "process agent %d ready" % os.getpid()})
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        try:
            message = json.loads(line)
            kind = message.get("type")
        except (ValueError, AttributeError):
            sys.stderr.write("not a protocol line: %r\n" % line[:200])
            continue
        if kind == "task":
            with cancel_lock:
                cancelled.discard(message["id"])
            threading.Thread(target=run, args=(message["id"], message.get("payload")), daemon=True).start()
        elif kind == "cancel":
            with cancel_lock:
                cancelled.add(message.get("id"))
        elif kind == "checkpoint":
            with state_lock:
                send({"type": "state", "id": message.get("id"), "state": {"count": count}})
        elif kind == "restore":
            with state_lock:
                count = int((message.get("state") or {}).get("count", 0))
                send({"type": "state", "id": message.get("id"), "state": {"count": count}})
        elif kind == "message":
            with state_lock:
                send({"type": "reply", "id": message.get("id"),
                      "payload": {"echo": message.get("payload"), "count": count}})
        elif kind == "shutdown":
            os._exit(0)
        elif kind == "error":
            sys.stderr.write("troupe says: %s\n" % message.get("message"))
        # Anything else is for a newer agent: ignored.
    os._exit(0)


if __name__ == "__main__":
    main()
