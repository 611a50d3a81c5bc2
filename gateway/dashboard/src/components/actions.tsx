// Controls: a button that runs a mutation (shown only to operators and admins), with a
// confirmation that names the entity for destructive ones, and the API's message and code
// when it fails.
import type { ComponentChildren } from "preact";
import { signal } from "@preact/signals";
import { useEffect, useRef, useState } from "preact/hooks";
import { canAct } from "../lib/session";
import type { ApiError } from "../lib/gql";

export interface Toast {
  id: number;
  text: string;
  code?: string;
  kind: "error" | "info";
}

export const toasts = signal<Toast[]>([]);
let nextToast = 1;

export function toast(text: string, kind: Toast["kind"] = "info", code?: string): void {
  const t = { id: nextToast++, text, kind, code };
  toasts.value = [...toasts.value.slice(-4), t];
  setTimeout(() => (toasts.value = toasts.value.filter((x) => x.id !== t.id)), kind === "error" ? 12_000 : 4000);
}

export function Toasts() {
  return (
    <div class="toasts" role="status" aria-live="polite">
      {toasts.value.map((t) => (
        <div key={t.id} class={`toast toast-${t.kind}`}>
          {t.code ? <strong>{t.code}</strong> : null} {t.text}
          <button class="link" aria-label="Dismiss" onClick={() => (toasts.value = toasts.value.filter((x) => x.id !== t.id))}>
            ×
          </button>
        </div>
      ))}
    </div>
  );
}

export interface ActionProps {
  label: string;
  run: () => Promise<unknown>;
  /** Destructive: the operator types this name to confirm. */
  confirm?: string;
  /** What the confirmation says will happen. */
  consequence?: string;
  done?: string;
  variant?: "primary" | "danger" | "plain";
  disabled?: boolean;
  children?: ComponentChildren;
}

/** Nothing at all for a viewer. */
export function Action({ label, run, confirm, consequence, done, variant = "plain", disabled }: ActionProps) {
  const [busy, setBusy] = useState(false);
  const [asking, setAsking] = useState(false);
  if (!canAct.value) return null;
  const go = async () => {
    setBusy(true);
    try {
      await run();
      if (done) toast(done);
    } catch (e) {
      const err = e as ApiError;
      toast(err.message, "error", err.code);
    } finally {
      setBusy(false);
    }
  };
  return (
    <>
      <button class={`btn btn-${variant}`} disabled={busy || disabled} aria-busy={busy} onClick={() => (confirm ? setAsking(true) : void go())}>
        {busy ? `${label}…` : label}
      </button>
      {asking && confirm ? (
        <Confirm
          title={`${label} ${confirm}?`}
          name={confirm}
          consequence={consequence}
          action={label}
          onCancel={() => setAsking(false)}
          onConfirm={() => {
            setAsking(false);
            void go();
          }}
        />
      ) : null}
    </>
  );
}

/** A modal dialog: the operator types the entity's name before the action is allowed. */
export function Confirm(props: { title: string; name: string; consequence?: string; action: string; onCancel: () => void; onConfirm: () => void }) {
  const dialog = useRef<HTMLDialogElement>(null);
  const [typed, setTyped] = useState("");
  useEffect(() => {
    const d = dialog.current;
    if (d && !d.open) d.showModal?.();
    return () => d?.close?.();
  }, []);
  const ok = typed.trim() === props.name;
  return (
    <dialog ref={dialog} class="confirm" aria-labelledby="confirm-title" onCancel={props.onCancel} onClose={props.onCancel}>
      <form
        method="dialog"
        onSubmit={(e) => {
          e.preventDefault();
          if (ok) props.onConfirm();
        }}
      >
        <h2 id="confirm-title">{props.title}</h2>
        {props.consequence ? <p>{props.consequence}</p> : null}
        <label>
          {/* One sentence: a label stacks its children, so the name must stay inside it. */}
          <span>
            Type <code>{props.name}</code> to confirm
          </span>
          <input autoFocus value={typed} onInput={(e) => setTyped((e.target as HTMLInputElement).value)} />
        </label>
        <div class="row">
          <button type="button" class="btn" onClick={props.onCancel}>
            Cancel
          </button>
          <button type="submit" class="btn btn-danger" disabled={!ok}>
            {props.action}
          </button>
        </div>
      </form>
    </dialog>
  );
}
