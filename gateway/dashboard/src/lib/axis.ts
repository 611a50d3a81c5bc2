// The y range of a chart whose values sit near 0 (an idle agent's CPU, in cores).

/** Headroom above the largest value, so the line does not run along the chart's top edge. */
const HEADROOM = 1.1;

/**
 * From 0 to a little above the largest value; to `floor` when there is none above 0. uPlot's
 * own range makes a series of zeros read 0–100, which looks like percent and flattens the
 * line against the axis; a floor in the series' unit (0.01 cores) keeps its ticks honest.
 */
export function fitRange(min: number | null, max: number | null, floor: number): [number, number] {
  const lo = min !== null && Number.isFinite(min) && min < 0 ? min * HEADROOM : 0;
  const hi = max !== null && Number.isFinite(max) && max > 0 ? max * HEADROOM : floor;
  return [lo, hi];
}
