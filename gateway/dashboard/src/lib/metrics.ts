// Live throughput and latency from the event stream: a task's latency is the time from its
// TASK_QUEUED to its end (TASK_SUCCEEDED, TASK_FAILED, TASK_DEAD, TASK_CANCELLED), bucketed by
// the second it ended. Bounded: a minute of buckets and the open tasks seen queued.
import type { TroupeEvent } from "./cursor";

export const ENDS = ["TASK_SUCCEEDED", "TASK_FAILED", "TASK_DEAD", "TASK_CANCELLED", "TASK_EXPIRED"];

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
  series(now: number): { xs: number[]; ended: number[]; failed: number[]; p50: number[]; p95: number[] } {
    const xs: number[] = [];
    const ended: number[] = [];
    const failed: number[] = [];
    const p50: number[] = [];
    const p95: number[] = [];
    for (const s of [...this.buckets.keys()]) if (s <= now - this.window) this.buckets.delete(s);
    for (let s = now - this.window + 1; s <= now; s++) {
      const b = this.buckets.get(s);
      xs.push(s);
      ended.push(b?.ended ?? 0);
      failed.push(b?.failed ?? 0);
      p50.push(b ? quantile(b.latencies, 0.5) : NaN);
      p95.push(b ? quantile(b.latencies, 0.95) : NaN);
    }
    return { xs, ended, failed, p50, p95 };
  }
}

/** The q-quantile (nearest rank) of `values`; NaN when empty. */
export function quantile(values: number[], q: number): number {
  if (values.length === 0) return NaN;
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
