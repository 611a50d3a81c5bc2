import { signal } from "@preact/signals";
import { absolute, relative } from "../lib/format";

/**
 * One shared clock for every relative label (not one timer per row). It ticks each second
 * while a label shown in the last minute was younger than a minute ("12 seconds ago" must
 * move), and each 5 s otherwise.
 */
export const now = signal(Date.now());
let youngShownAt = 0;
let ticks = 0;

/** Whether the clock moves on this one-second tick. */
export function shouldTick(tick: number, at: number, youngShown: number): boolean {
  return tick % 5 === 0 || at - youngShown < 60_000;
}

if (typeof setInterval === "function")
  setInterval(() => {
    const t = Date.now();
    if (shouldTick(++ticks, t, youngShownAt)) now.value = t;
  }, 1000);

/** A time shown relative ("5 minutes ago") with the absolute one as its tooltip and datetime. */
export function Time({ at }: { at: string | null | undefined }) {
  if (!at) return <span>—</span>;
  // The shared clock may be up to a tick behind a time that just arrived: never show it as future.
  const t = Math.max(now.value, Date.now());
  if (Math.abs(t - new Date(at).getTime()) < 60_000) youngShownAt = t;
  return (
    <time dateTime={at} title={absolute(at)}>
      {relative(at, t)}
    </time>
  );
}
