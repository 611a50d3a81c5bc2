import { icon, tone } from "../lib/format";

/** A state shown by text and icon as well as colour. */
export function Status({ state, label }: { state: string | null | undefined; label?: string }) {
  const t = tone(state);
  return (
    <span class={`status tone-${t}`}>
      <span aria-hidden="true" class="status-icon">
        {icon(t)}
      </span>
      {label ?? state ?? "UNKNOWN"}
    </span>
  );
}
