// Live throughput and latency from the event stream: a task's latency is the time from its
// TASK_QUEUED to its end (TASK_SUCCEEDED, or failed, dead, cancelled, expired, or its dependency failed), bucketed by
// the second it ended. Bounded: a minute of buckets and the open tasks seen queued.
import type { TroupeEvent } from "./cursor";

// The same ends as the node's history counts (gateway/src/history/tasks.rs).
export const ENDS = ["TASK_SUCCEEDED", "TASK_FAILED", "TASK_DEAD", "TASK_CANCELLED", "TASK_EXPIRED", "TASK_DEPENDENCY_FAILED"];

export interface Bucket {
  second: number;
  ended: number;
  failed: number;
  latencies: number[];
}

export class TaskRates {
  private queued = new Map<string, number>();
  private buckets = new Map<number, Bucket>();

  constructor(
    private readonly window = 60,
    private readonly maxOpen = 50_000,
  ) {}

  add(e: TroupeEvent): void {
    if (!e.subject) return;
    const at = new Date(e.at).getTime();
    if (e.kind === "TASK_QUEUED") {
      if (this.queued.size >= this.maxOpen) this.queued.delete(this.queued.keys().next().value as string);
      this.queued.set(e.subject, at);
      return;
    }
    if (!ENDS.includes(e.kind)) return;
    const second = Math.floor(at / 1000);
    let b = this.buckets.get(second);
    if (!b) {
      b = { second, ended: 0, failed: 0, latencies: [] };
      this.buckets.set(second, b);
    }
    b.ended++;
    if (e.kind !== "TASK_SUCCEEDED") b.failed++;
    const start = this.queued.get(e.subject);
    if (start !== undefined) {
      b.latencies.push(Math.max(0, at - start));
      this.queued.delete(e.subject);
    }
  }

  /** One point per second up to `now` (seconds), oldest first: tasks ended/s, failed/s, p50 and p95 latency (ms). */
  series(now: number): LiveSeries {
    const xs: number[] = [];
    const ended: number[] = [];
    const failed: number[] = [];
    const p50: Gap[] = [];
    const p95: Gap[] = [];
    for (const s of [...this.buckets.keys()]) if (s <= now - this.window) this.buckets.delete(s);
    for (let s = now - this.window + 1; s <= now; s++) {
      const b = this.buckets.get(s);
      xs.push(s);
      ended.push(b?.ended ?? 0);
      failed.push(b?.failed ?? 0);
      p50.push(b ? quantile(b.latencies, 0.5) : null);
      p95.push(b ? quantile(b.latencies, 0.95) : null);
    }
    return { xs, ended, failed, p50, p95 };
  }
}

/** The q-quantile (nearest rank) of `values`; null when empty. */
export function quantile(values: number[], q: number): number | null {
  if (values.length === 0) return null;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))];
}

/** Kinds worth an operator's attention, shown as the overview's recent alerts. */
export const ALERT_KINDS = [
  "AGENT_FAILED",
  "AGENT_UNHEALTHY",
  "AGENT_ALERT",
  "AGENT_BREAKER_OPENED",
  "TASK_DEAD",
  "SERVICE_FAILED",
  "SUPERVISOR_FAILED",
  "SUPERVISOR_ESCALATED",
  "SWARM_DEGRADED",
  "SWARM_FAILED",
  "HOST_UNREACHABLE",
  "HOST_DOWN",
  "HOST_FAILED",
  "VM_DOMAIN_MISSING",
  "VM_EVACUATION_FAILED",
  "VM_RESTARTED",
  "MEMBER_DOWN",
  "MEMBER_SUSPECT",
  "LEADER_CHANGED",
];

/** One of the node's `history` samples, as the overview asks for it. */
export interface HistorySample {
  at: string;
  succeededPerSec: number;
  failedPerSec: number;
  latencyP50Ms: number | null;
  latencyP99Ms: number | null;
  cpuCores: number;
  /** Int64: may arrive as a string. */
  rssBytes: number | string;
}

export const HISTORY_QUERY = `query($minutes: Int!) { history(minutes: $minutes) { at succeededPerSec failedPerSec latencyP50Ms latencyP99Ms cpuCores rssBytes } }`;

/**
 * A point with no value is null, never NaN: uPlot draws a null as a gap, while one NaN makes
 * the whole y range NaN (its min and max take it), so nothing of the chart is drawn.
 */
export type Gap = number | null;

export interface LiveSeries {
  xs: number[];
  ended: number[];
  failed: number[];
  p50: Gap[];
  p95: Gap[];
}

/** The live series with the node's history before it; p99 is the history's only (p95 the live's only). */
export interface MergedSeries extends LiveSeries {
  p99: Gap[];
  /** How many of the first points came from the history. */
  fromHistory: number;
}

/**
 * The node's history (one sample per interval, each covering the interval that ends at its
 * `at`), then the live per-second series, with no overlap: the live points start at the later
 * of the live window's start and `opened` (the second the page started hearing events; the
 * live buckets before it are zeros only because the page was not listening), and a sample is
 * kept only if its interval ends before then, so no task is counted on both sides of the seam.
 */
export function mergeHistory(history: HistorySample[], live: LiveSeries, opened: number): MergedSeries {
  const out: MergedSeries = { xs: [], ended: [], failed: [], p50: [], p95: [], p99: [], fromHistory: 0 };
  const first = live.xs.findIndex((x) => x >= opened);
  const from = first < 0 ? live.xs.length : first;
  const seam = from < live.xs.length ? live.xs[from] : Math.max(opened, (live.xs[live.xs.length - 1] ?? opened - 1) + 1);
  const num = (v: number | null) => (v === null || v === undefined ? null : Number(v));
  let last = -Infinity;
  for (const h of history) {
    const x = new Date(h.at).getTime() / 1000;
    if (!(x < seam) || x <= last) continue;
    last = x;
    out.xs.push(x);
    out.ended.push(Number(h.succeededPerSec) + Number(h.failedPerSec));
    out.failed.push(Number(h.failedPerSec));
    out.p50.push(num(h.latencyP50Ms));
    out.p95.push(null);
    out.p99.push(num(h.latencyP99Ms));
  }
  out.fromHistory = out.xs.length;
  for (let i = from; i < live.xs.length; i++) {
    out.xs.push(live.xs[i]);
    out.ended.push(live.ended[i]);
    out.failed.push(live.failed[i]);
    out.p50.push(live.p50[i]);
    out.p95.push(live.p95[i]);
    out.p99.push(null);
  }
  return out;
}
