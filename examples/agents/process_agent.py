#!/usr/bin/env python3
"""A Troupe process agent: one long-lived process speaking JSON lines on stdin/stdout.

The protocol is in docs/agent-protocol.md. This is the reference agent, and Troupe's system
tests rely on exactly what it does. Its state is a counter, {"count": N}, which checkpoints
save and restores replace. Each task runs in a thread of its own, so several can be in
flight and each can be cancelled.

A task's payload is an object naming an "op":
  echo {value}       the value (the whole payload when it has none)
  add {n=1}          adds n to the counter; {"count": N}
  get                {"count": N}
  sleep {ms}         sleeps in steps of at most 100 ms, with progress after each
  wait_file {path}   waits until the file exists, with progress about every second
  fail {message}     fails the attempt with that message
  crash              the process exits at once with status 3
  mute {ms}          writes nothing for ms (heartbeats included), then answers
  hang               writes nothing ever again (heartbeats included)
  spin {ms}          burns CPU for ms
  garbage            writes a line that is not JSON and one of an unknown type
  pid                {"pid", "pgid"} of the process
  env                the process's environment
"""

import json
import os
import sys
import threading
import time

# Held for every write to stdout, so lines never interleave. `hang` and `mute` hold it to
# silence the agent.
out_lock = threading.Lock()

state_lock = threading.Lock()
count = 0

# The tasks in flight: task id -> the Event set when Troupe cancels that task.
running = {}
running_lock = threading.Lock()


class Failed(Exception):
    """The task fails: it is answered with ok=false and this text."""


class Cancelled(Exception):
    """Troupe cancelled the task: it ends without a result."""


def write_line(text):
    """The only way to stdout: one line, flushed at once."""
    with out_lock:
        sys.stdout.write(text + "\n")
        sys.stdout.flush()


def send(message):
    write_line(json.dumps(message, separators=(",", ":")))


def note(text):
    """A line for Troupe's log (Troupe copies stderr there)."""
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


def is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def integer(payload, key, default):
    value = payload.get(key, default)
    if not is_int(value):
        raise Failed("%s must be an integer, not %s" % (key, json.dumps(value)))
    return value


def heartbeat(interval):
    while True:
        time.sleep(interval)
        send({"type": "heartbeat"})


def perform(task_id, payload, cancelled):
    """Runs one task; returns its value, or raises Failed or Cancelled."""
    global count
    if not isinstance(payload, dict):
        raise Failed('a task payload must be an object with an "op", not %s' % json.dumps(payload)[:200])
    op = payload.get("op")
    if op == "echo":
        return payload.get("value", payload)
    if op == "add":
        n = integer(payload, "n", 1)
        with state_lock:
            count += n
            return {"count": count}
    if op == "get":
        with state_lock:
            return {"count": count}
    if op == "sleep":
        ms = integer(payload, "ms", 0)
        slept = 0
        while slept < ms:
            step = min(100, ms - slept)
            if cancelled.wait(step / 1000):
                raise Cancelled
            slept += step
            send({"type": "progress", "id": task_id, "fraction": slept / ms})
        return {"slept_ms": ms}
    if op == "wait_file":
        path = payload.get("path")
        if not isinstance(path, str):
            raise Failed('wait_file needs a string "path"')
        next_progress = time.monotonic() + 1
        while not os.path.exists(path):
            if cancelled.wait(0.02):
                raise Cancelled
            if time.monotonic() >= next_progress:
                next_progress += 1
                send({"type": "progress", "id": task_id, "note": "waiting for " + path})
        return {"waited": path}
    if op == "fail":
        message = payload.get("message")
        raise Failed(message if isinstance(message, str) else "failed on purpose")
    if op == "crash":
        os._exit(3)
    if op == "hang":
        out_lock.acquire()
        while True:
            time.sleep(3600)
    if op == "mute":
        ms = integer(payload, "ms", 0)
        with out_lock:
            time.sleep(max(ms, 0) / 1000)
        return {"muted_ms": ms}
    if op == "spin":
        ms = integer(payload, "ms", 0)
        end = time.monotonic() + ms / 1000
        while time.monotonic() < end:
            if cancelled.is_set():
                raise Cancelled
        return {"spun_ms": ms}
    if op == "garbage":
        write_line("this is not json")
        write_line('{"type":"bogus"}')
        return {"garbage": True}
    if op == "pid":
        return {"pid": os.getpid(), "pgid": os.getpgid(0)}
    if op == "env":
        return dict(os.environ)
    raise Failed("unknown op %s" % op)


def run(task_id, attempt, payload, cancelled):
    """A task's thread: performs it and sends its result, unless it was cancelled."""
    try:
        result = {"ok": True, "value": perform(task_id, payload, cancelled)}
    except Cancelled:
        return
    except Failed as e:
        result = {"ok": False, "error": str(e)}
    finally:
        with running_lock:
            if running.get(task_id) is cancelled:
                del running[task_id]
    # The attempt, so Troupe can tell this result from a late one of an earlier attempt.
    send({"type": "result", "id": task_id, "attempt": attempt, **result})


def start_task(task_id, attempt, payload):
    cancelled = threading.Event()
    with running_lock:
        # A new attempt of a task still running here supersedes the old one.
        previous = running.get(task_id)
        if previous is not None:
            previous.set()
        running[task_id] = cancelled
    threading.Thread(target=run, args=(task_id, attempt, payload, cancelled), daemon=True).start()


def handle(message):
    """Answers one line from Troupe."""
    global count
    kind, ident = message.get("type"), message.get("id")
    if kind == "task":
        start_task(ident, message.get("attempt"), message.get("payload"))
    elif kind == "cancel":
        with running_lock:
            cancelled = running.get(ident)
        if cancelled is not None:
            cancelled.set()
    elif kind == "checkpoint":
        with state_lock:
            send({"type": "state", "id": ident, "state": {"count": count}})
    elif kind == "restore":
        state = message.get("state")
        with state_lock:
            if isinstance(state, dict) and is_int(state.get("count")):
                count = state["count"]
            else:
                note("restore: not a state of this agent, kept mine: %s" % json.dumps(state)[:200])
            send({"type": "state", "id": ident, "state": {"count": count}})
    elif kind == "message":
        with state_lock:
            send({"type": "reply", "id": ident, "payload": {"echo": message.get("payload"), "count": count}})
    elif kind == "shutdown":
        os._exit(0)
    elif kind == "error":
        note("troupe could not understand a line of mine: %s" % message.get("message"))
    # Any other type is for a newer agent: ignored.


def main():
    # Troupe sends UTF-8; a bad byte makes a malformed line, not a crash.
    sys.stdin.reconfigure(encoding="utf-8", errors="replace")
    interval_ms = int(os.environ.get("TROUPE_HEARTBEAT_MS") or 5000)
    send({"type": "ready", "name": "process_agent.py", "version": "1"})
    # 10 ms is Troupe's floor; it also keeps a zero from spinning.
    threading.Thread(target=heartbeat, args=(max(interval_ms, 10) / 1000,), daemon=True).start()
    send({"type": "log", "level": "info", "message": "process agent %d started" % os.getpid()})
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        try:
            message = json.loads(line)
        except ValueError:
            message = None
        if isinstance(message, dict):
            handle(message)
        else:
            note("not a protocol line, skipped: %s" % line[:200])
    # stdin closed: Troupe is gone. os._exit ends the process at once, whatever the task
    # threads are doing (a hung one holds the output lock).
    os._exit(0)


if __name__ == "__main__":
    main()
