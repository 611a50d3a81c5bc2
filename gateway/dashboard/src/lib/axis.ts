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

// The time axis: whole seconds and up, each tick labelled with the time of day alone.

/** The steps between time ticks, in seconds: never a fraction of one (uPlot's defaults label ":46.500"). */
export const TIME_STEPS = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 21600, 43200, 86400];

/** Room a label needs, in CSS pixels: "19:46:05" with space around it. */
export const TIME_SPACE = 64;

/**
 * A tick's label: hours, minutes and, while the ticks are less than a minute apart, seconds,
 * in the viewer's time zone ("19:46:05", "19:46"). One line, no date under it (uPlot's second
 * line was clipped at the chart's left edge).
 */
export function timeLabel(unixSeconds: number, step: number, timeZone?: string): string {
  const d = new Date(unixSeconds * 1000);
  return d.toLocaleTimeString("en-GB", {
    hour: "2-digit",
    minute: "2-digit",
    second: step < 60 ? "2-digit" : undefined,
    hour12: false,
    timeZone,
  });
}
