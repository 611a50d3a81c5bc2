#!/usr/bin/env python3
"""A fake OpenAI-compatible model server for the LLM loop benchmark.

`POST /v1/chat/completions` waits `--delay-ms` (50 ms) and then answers, without streaming:

- while the conversation holds fewer than `--steps - 1` tool results (messages with a
  `tool_call_id`), one tool call of `--tool` with `--arguments` (a JSON object);
- else a final text answer.

So a task is `--steps` model calls (10: 9 asking for the tool, 1 final). Every reply carries
`usage`. Nothing is parsed as JSON: the tool results are counted in the raw body (the pattern
`"tool_call_id"` cannot occur inside a JSON string, where its quotes would be escaped), so
the server stays cheap at the 20,000 calls/s that 1,000 loops of 50 ms ask for.

A request whose body holds `bench-id:<tag>` (the bench puts it in the task's prompt) is
traced: its arrival and the moment its answer was written, per tag, so the time a client
took between an answer and its next call can be read back (`GET /trace`).

Other routes: `GET /stats` (counts, the server's timer lag, its CPU time), `GET /trace`
(`?prefix=<tag prefix>`), `POST /reset`, `GET /healthz`.

A raw asyncio protocol (on uvloop when installed) instead of a web framework: one process
serves thousands of keep-alive connections, and the per-request cost is a few tens of µs.
HTTP/1.1 with keep-alive, `Content-Length` or chunked request bodies, pipelined requests
answered in order. Prints `PORT <n>` once listening.
"""

import argparse
import asyncio
import json
import re
import resource
import signal
import sys
import time

TOOL_RESULT = b'"tool_call_id"'
TAG = re.compile(rb"bench-id:([A-Za-z0-9_.\-]+)")
STREAM = re.compile(rb'"stream"\s*:\s*true')


class Stats:
    def __init__(self):
        self.reset()

    def reset(self):
        self.requests = 0
        self.tool_replies = 0
        self.final_replies = 0
        self.other = 0
        self.errors = 0
        self.connections = 0
        self.open_connections = getattr(self, "open_connections", 0)
        self.max_open_connections = self.open_connections
        self.lags = []  # how late each timer fired, seconds
        self.trace = []  # (tag, n tool results, arrived, answered)
        self.started = time.time()
        r = resource.getrusage(resource.RUSAGE_SELF)
        self.cpu0 = r.ru_utime + r.ru_stime


def percentile(sorted_values, p):
    if not sorted_values:
        return None
    i = min(len(sorted_values) - 1, max(0, int(round(p / 100.0 * len(sorted_values) + 0.5)) - 1))
    return sorted_values[i]


class Config:
    def __init__(self, a):
        self.delay = a.delay_ms / 1000.0
        self.steps = a.steps
        self.tool = a.tool
        self.arguments = json.dumps(json.loads(a.arguments), separators=(",", ":"))
        self.arguments_json = json.dumps(self.arguments)  # as a JSON string
        self.model = a.model
        self.text = a.final_text
        self.trace = not a.no_trace


class Http(asyncio.Protocol):
    """One connection: parses requests, answers them in order."""

    def __init__(self, server):
        self.server = server
        self.buf = bytearray()
        self.transport = None
        self.busy = False  # a request of this connection is being answered
        self.head = None  # the parsed head of a request whose body is not all here yet
        self.closed = False

    def connection_made(self, transport):
        self.transport = transport
        st = self.server.stats
        st.connections += 1
        st.open_connections += 1
        st.max_open_connections = max(st.max_open_connections, st.open_connections)

    def connection_lost(self, exc):
        self.closed = True
        self.server.stats.open_connections -= 1

    def data_received(self, data):
        self.buf += data
        if not self.busy:
            self.next_request()

    def fail(self, status, why):
        self.server.stats.errors += 1
        self.write(status, b"application/json", json.dumps({"error": {"message": why}}).encode(), close=True)

    def next_request(self):
        """Takes the next whole request off the buffer, if there is one, and starts it."""
        if self.head is None:
            head_end = self.buf.find(b"\r\n\r\n")
            if head_end < 0:
                if len(self.buf) > 65536:
                    self.fail(431, "request head too large")
                return
            lines = bytes(self.buf[:head_end]).decode("latin-1").split("\r\n")
            try:
                method, target, version = lines[0].split(" ", 2)
            except ValueError:
                self.fail(400, "bad request line")
                return
            headers = {}
            for line in lines[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            chunked = "chunked" in headers.get("transfer-encoding", "").lower()
            try:
                length = 0 if chunked else int(headers.get("content-length", "0"))
            except ValueError:
                self.fail(400, "bad content-length")
                return
            # The head is parsed once, however many pieces the body comes in.
            self.head = (method, target, version, headers, head_end + 4, chunked, length)
        method, target, version, headers, start, chunked, length = self.head
        if chunked:
            body, end = dechunk(self.buf, start)
            if body is None:
                return  # not all here yet
        else:
            if len(self.buf) < start + length:
                return
            body = bytes(self.buf[start : start + length])
            end = start + length
        del self.buf[:end]
        self.head = None
        conn = headers.get("connection", "").lower()
        self.keep = not (conn == "close" or (version == "HTTP/1.0" and conn != "keep-alive"))
        self.busy = True
        self.server.handle(self, method, target, body)

    def write(self, status, ctype, body, close=False):
        if self.closed:
            return
        reason = {200: "OK", 400: "Bad Request", 404: "Not Found", 431: "Too Large"}.get(status, "Error")
        keep = self.keep if not close else False
        head = (
            f"HTTP/1.1 {status} {reason}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
            f"Connection: {'keep-alive' if keep else 'close'}\r\n\r\n"
        ).encode()
        self.transport.write(head + body)
        if not keep:
            self.transport.close()
            self.closed = True
            return
        self.busy = False
        if self.buf:
            self.next_request()

    keep = True


def dechunk(buf, pos):
    """The body of a chunked message starting at `pos`, and where it ends; (None, 0) if
    not all of it is here yet."""
    out = bytearray()
    while True:
        eol = buf.find(b"\r\n", pos)
        if eol < 0:
            return None, 0
        size = int(bytes(buf[pos:eol]).split(b";")[0].strip() or b"0", 16)
        pos = eol + 2
        if size == 0:
            # trailers, up to an empty line
            end = buf.find(b"\r\n", pos)
            while end > pos:
                pos = end + 2
                end = buf.find(b"\r\n", pos)
            if end < 0:
                return None, 0
            return bytes(out), end + 2
        if len(buf) < pos + size + 2:
            return None, 0
        out += buf[pos : pos + size]
        pos += size + 2


class Server:
    def __init__(self, config):
        self.c = config
        self.stats = Stats()
        self.loop = asyncio.get_event_loop()
        self.seq = 0

    def handle(self, conn, method, target, body):
        path = target.split("?", 1)[0]
        if method == "POST" and path.endswith("/chat/completions"):
            self.chat(conn, body)
        elif method == "GET" and path == "/stats":
            conn.write(200, b"application/json", json.dumps(self.stats_doc()).encode())
        elif method == "GET" and path == "/trace":
            query = target.split("?", 1)[1] if "?" in target else ""
            prefix = ""
            for part in query.split("&"):
                if part.startswith("prefix="):
                    prefix = part[len("prefix=") :]
            rows = [r for r in self.stats.trace if r[0].startswith(prefix)]
            doc = {"fields": ["tag", "toolResults", "arrived", "answered"], "rows": rows}
            conn.write(200, b"application/json", json.dumps(doc).encode())
        elif method == "POST" and path == "/reset":
            self.stats.reset()
            conn.write(200, b"application/json", b"{}")
        elif method == "GET" and path in ("/healthz", "/"):
            conn.write(200, b"text/plain", b"ok")
        else:
            self.stats.other += 1
            conn.write(404, b"application/json", b'{"error":{"message":"not found"}}')

    def chat(self, conn, body):
        st = self.stats
        st.requests += 1
        arrived = time.time()
        if STREAM.search(body):
            conn.write(400, b"application/json", b'{"error":{"message":"the fake model does not stream"}}')
            st.errors += 1
            return
        results = body.count(TOOL_RESULT)
        m = TAG.search(body) if self.c.trace else None
        tag = m.group(1).decode() if m else None
        # The timer's own clock has a millisecond's grain (libuv); lateness is measured
        # with the monotonic clock.
        due = time.monotonic() + self.c.delay
        self.loop.call_later(self.c.delay, self.answer, conn, results, tag, arrived, due, len(body))

    def answer(self, conn, results, tag, arrived, due, size):
        st = self.stats
        st.lags.append(time.monotonic() - due)
        self.seq += 1
        n = self.seq
        usage = f'"usage":{{"prompt_tokens":{size // 4},"completion_tokens":12,"total_tokens":{size // 4 + 12}}}'
        if results < self.c.steps - 1:
            st.tool_replies += 1
            arguments = self.c.arguments_json
            message = (
                f'{{"role":"assistant","content":null,"tool_calls":[{{"id":"call_{n}","type":"function",'
                f'"function":{{"name":"{self.c.tool}","arguments":{arguments}}}}}]}}'
            )
            finish = "tool_calls"
        else:
            st.final_replies += 1
            message = f'{{"role":"assistant","content":{json.dumps(self.c.text)}}}'
            finish = "stop"
        doc = (
            f'{{"id":"chatcmpl-{n}","object":"chat.completion","created":{int(arrived)},"model":"{self.c.model}",'
            f'"choices":[{{"index":0,"message":{message},"logprobs":null,"finish_reason":"{finish}"}}],{usage}}}'
        )
        conn.write(200, b"application/json", doc.encode())
        if tag is not None:
            st.trace.append((tag, results, arrived, time.time()))

    def stats_doc(self):
        st = self.stats
        lags = sorted(st.lags)
        r = resource.getrusage(resource.RUSAGE_SELF)
        ms = lambda v: None if v is None else round(v * 1000, 3)
        return {
            "requests": st.requests,
            "toolReplies": st.tool_replies,
            "finalReplies": st.final_replies,
            "otherRequests": st.other,
            "errors": st.errors,
            "connections": st.connections,
            "openConnections": st.open_connections,
            "maxOpenConnections": st.max_open_connections,
            "timerLagMs": {"p50": ms(percentile(lags, 50)), "p99": ms(percentile(lags, 99)), "max": ms(lags[-1] if lags else None)},
            "cpuSeconds": round(r.ru_utime + r.ru_stime - st.cpu0, 3),
            "sinceSeconds": round(time.time() - st.started, 3),
            "delayMs": self.c.delay * 1000,
            "steps": self.c.steps,
            "tool": self.c.tool,
        }


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0: any free port (printed as PORT <n>)")
    p.add_argument("--delay-ms", type=float, default=50.0, help="how long each model call takes")
    p.add_argument("--steps", type=int, default=10, help="model calls per task (the last one answers)")
    p.add_argument("--tool", default="troupe_memory_get", help="the tool every non-final reply calls")
    p.add_argument("--arguments", default='{"key": "bench"}', help="the tool call's arguments (a JSON object)")
    p.add_argument("--model", default="fake-model", help="the model named in the replies")
    p.add_argument("--final-text", default="done", help="the final answer")
    p.add_argument("--no-trace", action="store_true", help="keep no per-request trace")
    p.add_argument("--backlog", type=int, default=4096)
    a = p.parse_args()
    try:
        import uvloop  # type: ignore

        uvloop.install()
    except ImportError:
        pass
    config = Config(a)
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    server = Server(config)
    srv = loop.run_until_complete(
        loop.create_server(lambda: Http(server), a.host, a.port, backlog=a.backlog, reuse_address=True)
    )
    port = srv.sockets[0].getsockname()[1]
    print(f"PORT {port}", flush=True)
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, loop.stop)
    try:
        loop.run_forever()
    finally:
        srv.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
