import { signal } from "@preact/signals";
import { absolute, relative } from "../lib/format";

/** One shared clock for every relative label (not one timer per row). */
export const now = signal(Date.now());
if (typeof setInterval === "function") setInterval(() => (now.value = Date.now()), 5000);

/** A time shown relative ("5 minutes ago") with the absolute one as its tooltip and datetime. */
export function Time({ at }: { at: string | null | undefined }) {
  if (!at) return <span>—</span>;
  return (
    <time dateTime={at} title={absolute(at)}>
      {relative(at, now.value)}
    </time>
  );
}
