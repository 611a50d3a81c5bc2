// A live line chart (uPlot, canvas) with its text alternative: the latest values in words
// and a "show as table" toggle.
import uPlot from "uplot";
import "uplot/dist/uPlot.min.css";
import { useEffect, useRef, useState } from "preact/hooks";
import { fitRange, TIME_SPACE, TIME_STEPS, timeLabel } from "../lib/axis";
import type { Gap } from "../lib/metrics";

export interface Series {
  label: string;
  unit: string;
  /** CSS custom property holding its colour, so dark and light themes agree. */
  colour: string;
}

export interface ChartProps {
  title: string;
  /** x: unix seconds; ys: one array per series, null where there is no value (a gap). */
  xs: number[];
  ys: Gap[][];
  series: Series[];
  height?: number;
  /**
   * When given, the y axis runs from 0 to a little above the largest value, or to `floor`
   * when every value is 0 (see fitRange); otherwise uPlot picks the range.
   */
  floor?: number;
}

function css(name: string): string {
  return getComputedStyle(document.documentElement).getPropertyValue(name).trim() || "#888";
}

export function Chart({ title, xs, ys, series, height = 160, floor }: ChartProps) {
  const box = useRef<HTMLDivElement>(null);
  const plot = useRef<uPlot | null>(null);
  const [table, setTable] = useState(false);

  useEffect(() => {
    if (!box.current || table) return;
    const opts: uPlot.Options = {
      width: box.current.clientWidth || 400,
      height,
      legend: { show: true },
      // Room on the right for the half of the last time label that reaches past the plot.
      padding: [null, 28, null, null],
      cursor: { drag: { x: false, y: false } },
      scales: floor === undefined ? {} : { y: { range: (_, min, max) => fitRange(min, max, floor) } },
      axes: [
        {
          stroke: css("--muted"),
          grid: { stroke: css("--line") },
          space: TIME_SPACE,
          incrs: TIME_STEPS,
          values: (_u, splits, _axis, _space, step) => splits.map((s) => timeLabel(s, step)),
        },
        { stroke: css("--muted"), grid: { stroke: css("--line") }, size: 56 },
      ],
      series: [{}, ...series.map((s) => ({ label: `${s.label} (${s.unit})`, stroke: css(s.colour), width: 2, points: { show: false, filter: lonePoints, fill: css(s.colour) } }))],
      // Away from the cursor, the legend says each series' latest value (uPlot's says "--").
      hooks: { setCursor: [legendLatest], setData: [legendLatest] },
    };
    plot.current = new uPlot(opts, aligned(xs, ys), box.current);
    const resize = () => plot.current?.setSize({ width: box.current?.clientWidth || 400, height });
    addEventListener("resize", resize);
    return () => {
      removeEventListener("resize", resize);
      plot.current?.destroy();
      plot.current = null;
    };
  }, [table, series.length]);

  useEffect(() => {
    plot.current?.setData(aligned(xs, ys));
  }, [xs, ys]);

  // What the chart holds, for a test (or a curious operator) to read without the canvas.
  const firstNonZero = xs.find((_, i) => ys.some((y) => (y[i] ?? 0) > 0));
  const latest = series.map((s, i) => `${s.label}: ${round(lastValue(ys[i] ?? []))} ${s.unit}`).join(", ");
  return (
    <figure class="chart" data-points={xs.length} data-from={xs.length ? Math.round(xs[0]) : undefined} data-first-nonzero={firstNonZero === undefined ? undefined : Math.floor(firstNonZero)}>
      <figcaption>
        <span>{title}</span>
        <button class="link" aria-pressed={table} onClick={() => setTable(!table)}>
          {table ? "Show as chart" : "Show as table"}
        </button>
      </figcaption>
      {table ? (
        <table class="chart-table">
          <caption class="sr-only">{title}</caption>
          <thead>
            <tr>
              <th scope="col">Time</th>
              {series.map((s) => (
                <th scope="col" key={s.label}>
                  {s.label} ({s.unit})
                </th>
              ))}
            </tr>
          </thead>
          <tbody>
            {xs.slice(-20).map((x, k) => {
              const i = xs.length - Math.min(20, xs.length) + k;
              return (
                <tr key={x}>
                  <td>{new Date(x * 1000).toLocaleTimeString()}</td>
                  {ys.map((y, j) => (
                    <td key={j}>{round(y[i])}</td>
                  ))}
                </tr>
              );
            })}
          </tbody>
        </table>
      ) : (
        <div ref={box} class="chart-canvas" role="img" aria-label={`${title}. Latest: ${latest}`} />
      )}
    </figure>
  );
}

/**
 * The data as uPlot takes it, a value that is not a finite number made a gap: uPlot skips only
 * null, and one NaN makes a scale's range NaN, which leaves the whole chart empty.
 */
function aligned(xs: number[], ys: Gap[][]): uPlot.AlignedData {
  return [xs, ...ys.map((y) => y.map((v) => (v !== null && Number.isFinite(v) ? v : null)))];
}

/** A value with a gap on both sides makes no line: it is drawn as a dot, or it would not show at all. */
function lonePoints(u: uPlot, sidx: number): number[] | null {
  const y = u.data[sidx];
  const lone = [];
  for (let i = 0; i < y.length; i++) if (y[i] != null && y[i - 1] == null && y[i + 1] == null) lone.push(i);
  return lone.length ? lone : null;
}

/** With the cursor away, the legend shows each series at its newest value that is not a gap. */
function legendLatest(u: uPlot): void {
  if (u.cursor.idx != null) return;
  const idxs = u.data.map((y) => {
    for (let i = y.length - 1; i >= 0; i--) if (y[i] !== null && y[i] !== undefined) return i;
    return null;
  });
  u.setLegend({ idxs }, false);
}

/** The newest value that is not a gap (a second with no task ended has no latency). */
function lastValue(y: Gap[]): Gap | undefined {
  for (let i = y.length - 1; i >= 0; i--) if (y[i] !== null && Number.isFinite(y[i])) return y[i];
  return undefined;
}

function round(v: number | undefined | null): string {
  if (v === undefined || v === null || Number.isNaN(v)) return "—";
  return v >= 100 ? v.toFixed(0) : v.toFixed(1);
}
