// An event as people read it, wherever one is shown (the events view, the overview's alerts,
// every entity's timeline): its sentence with the subject's name a link to the subject's page
// (the full id on hover), its kind as a small label, and its raw data behind a disclosure.
import type { TroupeEvent } from "../lib/cursor";
import { eventParts, kindState } from "../lib/sentence";
import { Status } from "./status";
import { Time } from "./time";

/** "agent <reviewer> failed: exit 1", the name a link to the agent's page. */
export function EventSentence({ event }: { event: TroupeEvent }) {
  const p = eventParts(event);
  // The node had no name for it: the short id stands in, in the id's type.
  const id = p.name !== null && p.name !== event.subjectName && p.name !== p.title;
  const name =
    p.name === null ? null : p.href ? (
      <a href={p.href} title={p.title ?? undefined} class={id ? "mono" : undefined}>
        {p.name}
      </a>
    ) : (
      <span title={p.title ?? undefined} class={id ? "mono" : undefined}>
        {p.name}
      </span>
    );
  return (
    <span class="event-text">
      {p.before}
      {name}
      {p.after}
    </span>
  );
}

/** The event's kind (AGENT_FAILED), small, in the tone of the state it tells of. */
export function EventKind({ kind }: { kind: string }) {
  return <Status state={kindState(kind)} label={kind} />;
}

export function hasData(data: unknown): boolean {
  if (data === null || data === undefined) return false;
  return typeof data !== "object" || Object.keys(data as object).length > 0;
}

/** The event's data as JSON, closed until asked for; nothing when it has none. */
export function EventData({ data, open = false, label = "data" }: { data: unknown; open?: boolean; label?: string }) {
  if (!hasData(data)) return null;
  return (
    <details class="event-data" open={open}>
      <summary>{label}</summary>
      <pre class="json">{JSON.stringify(data, null, 2)}</pre>
    </details>
  );
}

/** One line of a timeline: when, the sentence, the kind and seq, the data behind a disclosure. */
export function EventLine({ event: e }: { event: TroupeEvent }) {
  return (
    <>
      <Time at={e.at} /> <EventSentence event={e} /> <EventKind kind={e.kind} /> <span class="muted">#{e.seq}</span>
      <EventData data={e.data} />
    </>
  );
}
