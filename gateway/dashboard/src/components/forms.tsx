// Forms and small displays shared by the entity views: labelled fields, the parsing of what
// an operator types (lists, labels, JSON), a JSON value, a capacity bar, labels as chips.
// The backend fields of a new agent are in backend.tsx.
import type { ComponentChildren } from "preact";
import { useState } from "preact/hooks";
import { canAct } from "../lib/session";
import { ApiError } from "../lib/gql";
import { toast } from "./actions";

/** "a, b ,c" → ["a", "b", "c"]. */
export function parseList(text: string): string[] {
  return text
    .split(",")
    .map((s) => s.trim())
    .filter(Boolean);
}

/** "team=red, tier=gpu" → [{key, value}]; a part without "=" is INVALID_INPUT. */
export function parseLabels(text: string): { key: string; value: string }[] {
  return parseList(text).map((part) => {
    const eq = part.indexOf("=");
    if (eq <= 0) throw new ApiError(`"${part}" is not a label: write key=value`, "INVALID_INPUT");
    return { key: part.slice(0, eq).trim(), value: part.slice(eq + 1).trim() };
  });
}

/** JSON text → its value; bad JSON is INVALID_INPUT with the parser's reason. */
export function parseJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new ApiError(`the payload is not JSON: ${(e as Error).message}`, "INVALID_INPUT");
  }
}

export function Field(props: { label: string; value: string; onInput: (v: string) => void; required?: boolean; type?: string; placeholder?: string; min?: number }) {
  return (
    <label class="filter">
      <span>{props.label}</span>
      <input
        type={props.type ?? "text"}
        value={props.value}
        required={props.required}
        placeholder={props.placeholder}
        min={props.min}
        onInput={(e) => props.onInput((e.target as HTMLInputElement).value)}
      />
    </label>
  );
}

export function TextArea(props: { label: string; value: string; onInput: (v: string) => void; rows?: number }) {
  return (
    <label class="filter wide">
      <span>{props.label}</span>
      <textarea rows={props.rows ?? 3} value={props.value} spellcheck={false} onInput={(e) => props.onInput((e.target as HTMLTextAreaElement).value)} />
    </label>
  );
}

/** A required choice; `blank` adds a first option "" with that text ("any", "the placer's choice"). */
export function Choice({ label, value, options, onChange, blank }: { label: string; value: string; options: string[]; onChange: (v: string) => void; blank?: string }) {
  return (
    <label class="filter">
      <span>{label}</span>
      <select value={value} onChange={(e) => onChange((e.target as HTMLSelectElement).value)}>
        {blank !== undefined ? <option value="">{blank}</option> : null}
        {options.map((o) => (
          <option key={o} value={o}>
            {o}
          </option>
        ))}
      </select>
    </label>
  );
}

/**
 * A form behind a disclosure button ("Spawn agent…"), shown only to operators and admins;
 * `submit` runs the mutation, errors show as a toast with the API's code.
 */
export function CreateForm({ open: label, submitLabel, submit, children }: { open: string; submitLabel: string; submit: () => Promise<unknown>; children: ComponentChildren }) {
  const [shown, setShown] = useState(false);
  const [busy, setBusy] = useState(false);
  if (!canAct.value) return null;
  return (
    <div class="create">
      <button class="btn btn-primary" aria-expanded={shown} onClick={() => setShown(!shown)}>
        {label}…
      </button>
      {shown ? (
        <form
          class="inline card"
          aria-label={label}
          onSubmit={async (e) => {
            e.preventDefault();
            setBusy(true);
            try {
              await submit();
              setShown(false);
            } catch (err) {
              const a = err instanceof ApiError ? err : new ApiError(String(err), "ERROR");
              toast(a.message, "error", a.code);
            } finally {
              setBusy(false);
            }
          }}
        >
          {children}
          <button class="btn btn-primary" type="submit" disabled={busy} aria-busy={busy}>
            {busy ? `${submitLabel}…` : submitLabel}
          </button>
        </form>
      ) : null}
    </div>
  );
}

export function Json({ value, label }: { value: unknown; label: string }) {
  if (value === null || value === undefined) return <p class="muted">None.</p>;
  return (
    <pre class="json" aria-label={label} tabIndex={0}>
      {JSON.stringify(value, null, 2)}
    </pre>
  );
}

/**
 * A bar's tone. A capacity meter warns near its limit and is bad at it; a progress bar (a
 * host's drain) is never warned about, and full it is done, so good.
 */
export function barTone(ratio: number, kind: "meter" | "progress" = "meter"): "" | "ok" | "warn" | "bad" {
  if (kind === "progress") return ratio >= 1 ? "ok" : "";
  return ratio >= 1 ? "bad" : ratio >= 0.8 ? "warn" : "";
}

/** A share of a whole as a bar, with the figures as text beside it. */
export function Bar({ used, limit, label, unit = "", kind = "meter" }: { used: number; limit: number; label: string; unit?: string; kind?: "meter" | "progress" }) {
  const ratio = limit > 0 ? used / limit : 0;
  const tone = barTone(ratio, kind);
  const pct = Math.round(Math.min(1, ratio) * 100);
  return (
    <div class="bar-row">
      <div class={`bar ${tone}`} role="meter" aria-label={label} aria-valuemin={0} aria-valuemax={limit} aria-valuenow={used} aria-valuetext={`${used} of ${limit}${unit}`}>
        <span style={{ width: `${pct}%` }} />
      </div>
      <span class="muted">
        {used} / {limit}
        {unit} ({pct} %)
      </span>
    </div>
  );
}

export function Labels({ labels }: { labels: { key: string; value: string }[] }) {
  if (!labels.length) return <span class="muted">none</span>;
  return <span>{labels.map((l) => `${l.key}=${l.value}`).join(", ")}</span>;
}
