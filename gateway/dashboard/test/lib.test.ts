import { describe, expect, it } from "vitest";
import { Cursor, normalise, type TroupeEvent } from "../src/lib/cursor";
import { Debounced, FrameQueue, atMost } from "../src/lib/live";
import { absolute, bytes, duration, humanise, relative, tone } from "../src/lib/format";
import { mergeHistory, quantile, TaskRates, type HistorySample } from "../src/lib/metrics";
import { match } from "../src/lib/router";
import { toApiError } from "../src/lib/gql";

const ev = (seq: number, kind = "TASK_QUEUED", subject: string | null = null, at = "2026-11-24T12:00:00.000Z"): TroupeEvent => ({ seq, kind, subject, at, data: {} });

describe("Cursor", () => {
  it("accepts each seq once, in order, and keeps the resume point in the variables it re-sends", () => {
    const c = new Cursor(10);
    const sent = c.variables; // the very object graphql-ws sends again on reconnect
    expect([11, 12, 12, 11, 13].map((s) => c.accept(s))).toEqual([true, true, false, false, true]);
    expect(sent.after).toBe(13);
    expect(c.after).toBe(13);
  });

  it("replays after a reconnect without a gap or a duplicate", () => {
    const c = new Cursor(0);
    const seen: number[] = [];
    const deliver = (seqs: number[]) => seqs.forEach((s) => c.accept(s) && seen.push(s));
    deliver([1, 2, 3]);
    // The connection drops; the server replays from `after` (3) and some it sent twice.
    const resumeFrom = c.variables.after;
    deliver([2, 3, 4, 5].filter((s) => s > resumeFrom - 2));
    expect(seen).toEqual([1, 2, 3, 4, 5]);
  });

  it("keeps the kinds filter only when there is one", () => {
    expect(new Cursor(5).variables).toEqual({ after: 5 });
    expect(new Cursor(5, ["TASK_"]).variables).toEqual({ after: 5, kinds: ["TASK_"] });
  });

  it("normalises Int64 seqs that arrive as strings", () => {
    expect(normalise({ ...ev(1), seq: "42" as unknown as number }).seq).toBe(42);
  });
});

describe("FrameQueue", () => {
  it("applies everything pushed within a frame as one batch", () => {
    const frames: (() => void)[] = [];
    const batches: number[][] = [];
    const q = new FrameQueue<number>((b) => batches.push(b), () => false, (run) => frames.push(run));
    q.push(1);
    q.push(2);
    q.push(3);
    expect(frames).toHaveLength(1);
    frames.shift()!();
    expect(batches).toEqual([[1, 2, 3]]);
  });

  it("holds items while paused and applies them on resume", () => {
    let paused = true;
    const frames: (() => void)[] = [];
    const batches: number[][] = [];
    const q = new FrameQueue<number>((b) => batches.push(b), () => paused, (run) => frames.push(run));
    q.push(1);
    q.push(2);
    expect(frames).toHaveLength(0);
    expect(q.pending()).toBe(2);
    paused = false;
    q.resume();
    frames.shift()!();
    expect(batches).toEqual([[1, 2]]);
    expect(q.pending()).toBe(0);
  });
});

describe("Debounced", () => {
  function harness() {
    let paused = false;
    const timers: (() => void)[] = [];
    let runs = 0;
    const d = new Debounced(() => runs++, 150, () => paused, (run) => timers.push(run), () => timers.splice(0));
    return { d, timers, runs: () => runs, pause: (p: boolean) => (paused = p) };
  }

  it("runs once for a burst of pokes", () => {
    const h = harness();
    h.d.poke();
    h.d.poke();
    expect(h.timers).toHaveLength(1);
    h.timers.shift()!();
    expect(h.runs()).toBe(1);
  });

  it("holds a run whose time comes during a pause until the pause ends", () => {
    const h = harness();
    // Poked before the pause; its time comes during it: the page must not change.
    h.d.poke();
    h.pause(true);
    h.timers.shift()!();
    expect(h.runs()).toBe(0);
    h.d.resume(); // the switch changed, still paused
    expect(h.runs()).toBe(0);
    h.pause(false);
    h.d.resume();
    expect(h.runs()).toBe(1);
    h.d.resume();
    expect(h.runs()).toBe(1);
  });

  it("a run cancelled is not made", () => {
    const h = harness();
    h.d.poke();
    h.d.cancel();
    expect(h.timers).toHaveLength(0);
    h.d.resume();
    expect(h.runs()).toBe(0);
  });
});

describe("atMost", () => {
  it("runs on a frame no sooner than its interval after the last run", () => {
    let t = 1000;
    const waits: number[] = [];
    const timers: (() => void)[] = [];
    const frames: (() => void)[] = [];
    const schedule = atMost(100, (run) => frames.push(run), () => t, (run, ms) => (waits.push(ms), timers.push(run)));
    const batches: number[][] = [];
    const q = new FrameQueue<number>((b) => batches.push(b), () => false, schedule);
    q.push(1);
    expect(waits).toEqual([0]); // the first batch waits for nothing but a frame
    timers.shift()!();
    frames.shift()!();
    expect(batches).toEqual([[1]]);
    t += 16;
    q.push(2);
    q.push(3);
    expect(waits).toEqual([0, 84]); // the next one keeps 100 ms from the last
    t += 84;
    timers.shift()!();
    frames.shift()!();
    expect(batches).toEqual([[1], [2, 3]]);
  });
});

describe("format", () => {
  const now = Date.parse("2026-11-24T12:00:00Z");
  it("relative times", () => {
    expect(relative("2026-11-24T11:59:55Z", now)).toBe("just now");
    expect(relative("2026-11-24T12:00:03Z", now)).toBe("just now");
    expect(relative("2026-11-24T11:59:45Z", now)).toBe("15 seconds ago");
    expect(relative("2026-11-24T11:58:00Z", now)).toBe("2 minutes ago");
    expect(relative("2026-11-24T12:00:00.400Z", now)).toBe("just now");
    expect(relative("2026-11-24T14:00:00Z", now)).toBe("in 2 hours");
    expect(relative("garbage", now)).toBe("—");
  });
  it("absolute times to the second", () => {
    expect(absolute("garbage")).toBe("—");
    expect(absolute(new Date(2026, 10, 24, 9, 5, 7))).toBe("2026-11-24 09:05:07");
  });
  it("sizes and durations", () => {
    expect(bytes(512)).toBe("512 B");
    expect(bytes(1536)).toBe("1.5 KiB");
    expect(bytes(3 * 1024 ** 3)).toBe("3.0 GiB");
    expect(duration(250)).toBe("250 ms");
    expect(duration(1234)).toBe("1.2 s");
    expect(duration(65_000)).toBe("1 min 5 s");
    expect(duration(3_720_000)).toBe("1 h 2 min");
  });
  it("one fixed map from state to tone", () => {
    expect(tone("SUCCEEDED")).toBe("ok");
    expect(tone("RUNNING")).toBe("running");
    expect(tone("PAUSED")).toBe("warn");
    expect(tone("DEAD")).toBe("bad");
    expect(tone("STOPPED")).toBe("idle");
    expect(tone(undefined)).toBe("idle");
    expect(humanise("TASK_SUCCEEDED")).toBe("Task succeeded");
  });
});

describe("TaskRates", () => {
  it("counts ends per second and measures queued-to-ended latency", () => {
    const r = new TaskRates(5);
    r.add(ev(1, "TASK_QUEUED", "t1", "2026-11-24T12:00:00.000Z"));
    r.add(ev(2, "TASK_QUEUED", "t2", "2026-11-24T12:00:00.500Z"));
    r.add(ev(3, "TASK_SUCCEEDED", "t1", "2026-11-24T12:00:01.100Z"));
    r.add(ev(4, "TASK_DEAD", "t2", "2026-11-24T12:00:01.700Z"));
    const s = r.series(Date.parse("2026-11-24T12:00:02Z") / 1000);
    expect(s.xs).toHaveLength(5);
    const i = s.xs.indexOf(Date.parse("2026-11-24T12:00:01Z") / 1000);
    expect(s.ended[i]).toBe(2);
    expect(s.failed[i]).toBe(1);
    expect(s.p50[i]).toBe(1100);
    expect(s.p95[i]).toBe(1200);
    // A second with no task ended is a gap (null): uPlot draws no chart at all around a NaN.
    expect(s.p50[i + 1]).toBeNull();
  });
  it("forgets what is older than its window", () => {
    const r = new TaskRates(2);
    r.add(ev(1, "TASK_SUCCEEDED", "t1", "2026-11-24T12:00:00.000Z"));
    const s = r.series(Date.parse("2026-11-24T12:00:10Z") / 1000);
    expect(s.ended).toEqual([0, 0]);
  });
  it("quantiles by nearest rank", () => {
    expect(quantile([5, 1, 3], 0.5)).toBe(3);
    expect(quantile([], 0.5)).toBeNull();
  });
});

describe("mergeHistory", () => {
  const T = Date.parse("2026-11-24T12:00:00Z") / 1000;
  const sample = (sec: number, ok: number, bad = 0, p50: number | null = 10): HistorySample => ({
    at: new Date((T + sec) * 1000).toISOString(),
    succeededPerSec: ok,
    failedPerSec: bad,
    latencyP50Ms: p50,
    latencyP99Ms: p50 === null ? null : p50 * 2,
    cpuCores: 0.5,
    rssBytes: "1048576",
  });
  const history = [sample(-30, 1), sample(-20, 2, 1), sample(-10, 0, 0, null), sample(0, 5), sample(10, 7)];

  it("prepends the samples from before the page opened and drops the live zeros from before it", () => {
    const r = new TaskRates(60);
    r.add(ev(1, "TASK_SUCCEEDED", "t1", new Date((T + 3) * 1000 + 200).toISOString()));
    const live = r.series(T + 5);
    // Opened at T + 1: the sample at T + 0 ended before, the one at T + 10 overlaps the live seconds.
    const m = mergeHistory(history, live, T + 1);
    expect(m.fromHistory).toBe(4);
    expect(m.xs).toEqual([T - 30, T - 20, T - 10, T, T + 1, T + 2, T + 3, T + 4, T + 5]);
    expect(m.ended).toEqual([1, 3, 0, 5, 0, 0, 1, 0, 0]);
    expect(m.failed.slice(0, 4)).toEqual([0, 1, 0, 0]);
    expect(m.p50.slice(0, 4)).toEqual([10, 10, null, 10]);
    expect(m.p99.slice(0, 4)).toEqual([20, 20, null, 20]);
    // The live part keeps its own p95 and has no p99; the history has no p95: gaps, never NaN.
    expect(m.p95.slice(0, 4).every((v) => v === null)).toBe(true);
    expect(m.p99.slice(4).every((v) => v === null)).toBe(true);
    for (const y of [m.ended, m.failed, m.p50, m.p95, m.p99]) expect(y.some((v) => Number.isNaN(v))).toBe(false);
  });

  it("counts each task once: the live task is not in a history sample and the xs only increase", () => {
    const r = new TaskRates(60);
    r.add(ev(1, "TASK_SUCCEEDED", "t1", new Date((T + 3) * 1000).toISOString()));
    const m = mergeHistory(history, r.series(T + 20), T + 1);
    expect(m.ended.reduce((a, b) => a + b, 0)).toBe(1 + 3 + 0 + 5 + 1);
    for (let i = 1; i < m.xs.length; i++) expect(m.xs[i]).toBeGreaterThan(m.xs[i - 1]);
  });

  it("after the live minute has slid past the opening, the history fills in up to the live window", () => {
    const r = new TaskRates(5);
    const live = r.series(T + 13);
    expect(live.xs[0]).toBe(T + 9);
    const m = mergeHistory(history, live, T - 100);
    expect(m.xs).toEqual([T - 30, T - 20, T - 10, T, T + 9, T + 10, T + 11, T + 12, T + 13]);
    expect(m.fromHistory).toBe(4);
  });

  it("shows the live series alone without history, and the history alone before a live point", () => {
    const live = new TaskRates(3).series(T);
    expect(mergeHistory([], live, T - 100).xs).toEqual(live.xs);
    expect(mergeHistory(history, { xs: [], ended: [], failed: [], p50: [], p95: [] }, T + 1).xs).toEqual([T - 30, T - 20, T - 10, T]);
  });
});

describe("router", () => {
  it("matches patterns and decodes parameters", () => {
    expect(match("/agents/:id", "/agents/a%40b")).toEqual({ id: "a@b" });
    expect(match("/agents", "/agents/x")).toBeNull();
    expect(match("/", "/")).toEqual({});
  });
});

describe("errors", () => {
  it("carry the API's message and code", () => {
    const e = toApiError([{ message: "no agent x", extensions: { code: "NOT_FOUND" } }]);
    expect(e.code).toBe("NOT_FOUND");
    expect(e.toString()).toBe("NOT_FOUND: no agent x");
    expect(toApiError({ code: 4403, reason: "Forbidden" }).message).toBe("Forbidden");
  });
});
