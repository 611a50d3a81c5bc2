// Formatting shared by every view: times (relative with the absolute one beside), sizes,
// durations, and the one fixed map from a state to its tone and icon.

const rtf = new Intl.RelativeTimeFormat("en", { numeric: "auto" });

const UNITS: [Intl.RelativeTimeFormatUnit, number][] = [
  ["year", 365 * 24 * 3600_000],
  ["month", 30 * 24 * 3600_000],
  ["day", 24 * 3600_000],
  ["hour", 3600_000],
  ["minute", 60_000],
  ["second", 1000],
];

/** "just now" (within 10 s either way: clocks differ a little), "5 minutes ago", "in 2 hours". */
export function relative(at: string | number | Date, now: number = Date.now()): string {
  const t = new Date(at).getTime();
  if (Number.isNaN(t)) return "—";
  const delta = t - now;
  if (Math.abs(delta) < 10_000) return "just now";
  for (const [unit, ms] of UNITS) {
    if (Math.abs(delta) >= ms || unit === "second") return rtf.format(Math.round(delta / ms), unit);
  }
  return "just now";
}

/** The absolute time, in the viewer's zone, to the second: "2026-11-24 12:03:07". */
export function absolute(at: string | number | Date): string {
  const d = new Date(at);
  if (Number.isNaN(d.getTime())) return "—";
  const p = (n: number) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
}

/** 1536 → "1.5 KiB". */
export function bytes(n: number | string | null | undefined): string {
  if (n === null || n === undefined) return "—";
  let v = Number(n);
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (Math.abs(v) >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return i === 0 ? `${v} B` : `${v.toFixed(v < 10 ? 1 : 0)} ${units[i]}`;
}

/**
 * The unit a series of sizes reads best in, by its largest (as `bytes` would put it, from MiB
 * up): 300 MiB → MiB, 1.5 GiB → GiB; `scale` is that unit's bytes.
 */
export function byteUnit(max: number): { unit: string; scale: number } {
  return Math.abs(max) >= 2 ** 30 ? { unit: "GiB", scale: 2 ** 30 } : { unit: "MiB", scale: 2 ** 20 };
}

/** 1234 → "1.2 s", 65000 → "1 min 5 s". */
export function duration(ms: number | string | null | undefined): string {
  if (ms === null || ms === undefined) return "—";
  const v = Number(ms);
  if (v < 1000) return `${Math.round(v)} ms`;
  if (v < 60_000) return `${(v / 1000).toFixed(v < 10_000 ? 1 : 0)} s`;
  const m = Math.floor(v / 60_000);
  const s = Math.round((v % 60_000) / 1000);
  if (m < 60) return s ? `${m} min ${s} s` : `${m} min`;
  const h = Math.floor(m / 60);
  return `${h} h ${m % 60} min`;
}

export type Tone = "ok" | "running" | "warn" | "bad" | "idle";

const ICONS: Record<Tone, string> = { ok: "✓", running: "●", warn: "▲", bad: "✕", idle: "○" };

const TONES: [Tone, string[]][] = [
  ["bad", ["FAILED", "DEAD", "DOWN", "UNREACHABLE", "CRASHED", "OPEN", "ERROR", "LOST", "ABORTED"]],
  ["warn", ["SUSPECT", "DEGRADED", "RETRYING", "PAUSED", "DRAINING", "MIGRATING", "HALF_OPEN", "MAINTENANCE", "STARTING", "STOPPING", "PENDING", "RESTARTING", "BACKOFF", "CANCELLED", "AWAITING_APPROVAL"]],
  ["running", ["RUNNING", "ACTIVE", "BUSY", "LEADER"]],
  ["ok", ["SUCCEEDED", "UP", "HEALTHY", "CLOSED", "READY", "COMPLETED", "PASSED", "IDLE", "DELIVERED"]],
];

/** The tone of a state; what is not known (DEFINED, STOPPED, QUEUED, LEFT…) is idle grey. */
export function tone(state: string | null | undefined): Tone {
  const s = (state ?? "").toUpperCase();
  for (const [t, states] of TONES) if (states.includes(s)) return t;
  return "idle";
}

export function icon(t: Tone): string {
  return ICONS[t];
}

/** "TASK_SUCCEEDED" → "Task succeeded". */
export function humanise(kind: string): string {
  const s = kind.toLowerCase().replace(/_/g, " ");
  return s.charAt(0).toUpperCase() + s.slice(1);
}

/** "1 agent", "3 agents", "0 agents"; `many` for a plural not made with an s ("processes"). */
export function count(n: number, one: string, many = `${one}s`): string {
  return `${n} ${n === 1 ? one : many}`;
}

export function compact(n: number): string {
  return new Intl.NumberFormat("en", { notation: "compact", maximumFractionDigits: 1 }).format(n);
}
