"""What the benches' drivers share: percentiles, GraphQL requests, the fake server's figures, the
report's shape."""

import json
import urllib.request


def percentile(values, p):
    """The nearest-rank percentile of `values` (unsorted is fine); None when empty."""
    if not values:
        return None
    s = sorted(values)
    rank = max(1, -(-len(s) * p // 100))  # ceil(n * p / 100), at least 1
    return s[int(min(len(s), rank)) - 1]


def dist_ms(seconds):
    """p50 / p99 / max / mean / n of durations given in seconds, in milliseconds."""
    if not seconds:
        return {"n": 0, "p50": None, "p99": None, "max": None, "mean": None}
    ms = [v * 1000.0 for v in seconds]
    return {
        "n": len(ms),
        "p50": round(percentile(ms, 50), 3),
        "p99": round(percentile(ms, 99), 3),
        "max": round(max(ms), 3),
        "mean": round(sum(ms) / len(ms), 3),
    }


def gql(url, token, query, variables=None):
    """One GraphQL request to a node's gateway at `url` (its data, or RuntimeError)."""
    req = urllib.request.Request(
        url + "/graphql",
        data=json.dumps({"query": query, "variables": variables or {}}).encode(),
        headers={"content-type": "application/json", "authorization": "Bearer " + token},
    )
    with urllib.request.urlopen(req, timeout=30) as r:
        body = json.loads(r.read())
    if body.get("errors"):
        raise RuntimeError(body["errors"])
    return body["data"]


def get_json(url, timeout=30):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.loads(r.read())


def server_stats(base_url):
    return get_json(base_url.rstrip("/") + "/stats")


def server_gaps(base_url, prefix):
    """From the fake server's trace of the requests tagged `prefix…`: per tag (one task),
    the time between an answer written and the next request of the same task arriving, as
    the server saw it (the client's whole turn-around between two model calls), seconds."""
    doc = get_json(base_url.rstrip("/") + "/trace?prefix=" + prefix, timeout=120)
    by_tag = {}
    for tag, results, arrived, answered in doc["rows"]:
        by_tag.setdefault(tag, []).append((results, arrived, answered))
    gaps = []
    for rows in by_tag.values():
        rows.sort()
        for (_, _, answered), (_, arrived, _) in zip(rows, rows[1:]):
            gaps.append(arrived - answered)
    return gaps, len(doc["rows"])


def stats_delta(before, after):
    keys = ("requests", "toolReplies", "finalReplies", "errors", "cpuSeconds")
    out = {k: round(after[k] - before[k], 3) for k in keys}
    out["timerLagMs"] = after.get("timerLagMs")
    out["maxOpenConnections"] = after.get("maxOpenConnections")
    return out


def server_reset(base_url):
    """Clears the fake server's counts, timer lags and trace (one loop's figures each)."""
    req = urllib.request.Request(base_url.rstrip("/") + "/reset", data=b"", method="POST")
    with urllib.request.urlopen(req, timeout=30) as r:
        r.read()


def finish(report, json_out):
    """Prints the report (and writes it to json_out, if given); the exit status: 0 if no task failed."""
    text = json.dumps(report, indent=2)
    if json_out:
        with open(json_out, "w") as f:
            f.write(text)
    print(text)
    return 0 if report["failed"] == 0 else 1
