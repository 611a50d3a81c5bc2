// The backend of a new agent (spawn form, a swarm's members): a choice of every backend the
// API takes, then only the chosen one's fields, each labelled.
import { BACKENDS, BACKEND_KINDS, newDraft, type BackendDraft, type FieldSpec } from "../lib/backend";
import { Choice, Field } from "./forms";

export function BackendFields({ draft, onChange, prefix = "" }: { draft: BackendDraft; onChange: (d: BackendDraft) => void; prefix?: string }) {
  const set = (key: string) => (v: string) => onChange({ ...draft, fields: { ...draft.fields, [key]: v } });
  return (
    <>
      <Choice label={`${prefix}Backend`} value={draft.type} options={BACKEND_KINDS} onChange={(type) => onChange(newDraft(type))} />
      {BACKENDS[draft.type].map((spec) => (
        <SpecField key={`${draft.type}.${spec.key}`} spec={spec} label={`${prefix}${spec.label}`} value={draft.fields[spec.key] ?? ""} onInput={set(spec.key)} />
      ))}
    </>
  );
}

function SpecField({ spec, label, value, onInput }: { spec: FieldSpec; label: string; value: string; onInput: (v: string) => void }) {
  if (spec.kind === "choice") return <Choice label={label} value={value} options={spec.options ?? []} onChange={onInput} />;
  if (spec.kind === "lines")
    return (
      <label class="filter wide">
        <span>{label}</span>
        <textarea rows={2} value={value} spellcheck={false} onInput={(e) => onInput((e.target as HTMLTextAreaElement).value)} />
      </label>
    );
  return <Field label={label} value={value} onInput={onInput} required={spec.required} type={spec.kind === "number" ? "number" : "text"} min={spec.kind === "number" ? 0 : undefined} placeholder={spec.placeholder} />;
}
