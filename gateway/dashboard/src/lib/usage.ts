// An agent's CPU and memory over time (`Agent.usageHistory`), as the charts on its page draw
// them.
import { byteUnit } from "./format";

/** One point of `usageHistory`, as it arrives (Int64 may come as a string). */
export interface UsageSample {
  at: string;
  /** Null for the first point, or after its processes were replaced (a gap in the chart). */
  cpuCores: number | null;
  rssBytes: number | string;
}

export const USAGE_QUERY = `query($id: ID!, $minutes: Int!) { agent(id: $id) { id usageHistory(minutes: $minutes) { at cpuCores rssBytes } } }`;

export interface UsageSeries {
  /** Unix seconds, oldest first. */
  xs: number[];
  /** Cores busy; null where not known (drawn as a gap, not as zero). */
  cpu: (number | null)[];
  /** Resident memory in `unit`. */
  rss: number[];
  /** MiB, or GiB once the largest point is a GiB or more. */
  unit: string;
  /** The newest point's memory in bytes; null when there is none. */
  latestRss: number | null;
}

/** The samples as chart series: oldest first, each time once, memory in one readable unit. */
export function usageSeries(samples: UsageSample[]): UsageSeries {
  const points = samples
    .map((s) => ({ x: new Date(s.at).getTime() / 1000, cpu: s.cpuCores === null || s.cpuCores === undefined ? null : Number(s.cpuCores), rss: Number(s.rssBytes) }))
    .filter((p) => Number.isFinite(p.x))
    .sort((a, b) => a.x - b.x)
    .filter((p, i, all) => i === 0 || p.x !== all[i - 1].x);
  const { unit, scale } = byteUnit(points.reduce((m, p) => Math.max(m, p.rss), 0));
  return {
    xs: points.map((p) => p.x),
    cpu: points.map((p) => (p.cpu !== null && Number.isFinite(p.cpu) ? p.cpu : null)),
    rss: points.map((p) => p.rss / scale),
    unit,
    latestRss: points.length ? points[points.length - 1].rss : null,
  };
}
