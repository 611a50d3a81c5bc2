// An event as a person reads it: the node's sentence ("agent reviewer failed: exit 1") cut
// around its subject's name, so that the name can be a link to the subject's page while the
// rest stays text. Pure: the renderer is components/event.tsx.
import type { TroupeEvent } from "./cursor";
import { humanise, tone } from "./format";
import { TAIL } from "./names";

/** The sentence in three parts: `before` + `name` + `after` is the whole text. */
export interface Split {
  before: string;
  /** The subject's name as it appears in the text; null when it does not. */
  name: string | null;
  after: string;
}

/**
 * Cuts `text` around `name`. The sentence reads "<kind word> <name> <what happened>", so the
 * name is looked for right after the first word first (a name that is also a word of the
 * kind, "agent agent", is then cut where it names), then anywhere; not found (or no name),
 * the whole text is `before`.
 */
export function splitSentence(text: string, name: string | null | undefined): Split {
  if (!name) return { before: text, name: null, after: "" };
  const space = text.indexOf(" ");
  const at = space >= 0 && text.startsWith(name, space + 1) ? space + 1 : text.startsWith(name) ? 0 : text.indexOf(name);
  if (at < 0) return { before: text, name: null, after: "" };
  return { before: text.slice(0, at), name, after: text.slice(at + name.length) };
}

/**
 * A generated id's end, as people tell ids apart (a UUIDv7 begins with its minute): "@node"
 * and dashes left out, as many hex digits as the server names a task by. Anything else (a service's name, a member's) is left whole.
 */
export function shortId(id: string, length = TAIL): string {
  const bare = id.split("@")[0].replace(/-/g, "");
  return /^[0-9a-f]+$/i.test(bare) && bare.length > length + 4 ? bare.slice(-length) : id;
}

/** An entity's id ("<uuid>@<node>"), not a service's or supervisor's name ("coordinator"). */
function entityId(id: string): boolean {
  return id.includes("@") || shortId(id) !== id;
}

const PAGES: Record<string, string> = {
  AGENT: "/agents/",
  TASK: "/tasks/",
  SWARM: "/swarms/",
  VM: "/vms/",
  // Hosts have no page of their own: the hosts view scrolls to and outlines the one asked for.
  HOST: "/hosts?focus=",
  // An approval's events are about its task.
  APPROVAL: "/tasks/",
};

/**
 * The page of an event's subject: by the subject's kind when the node knows it (AGENT, TASK,
 * SWARM, HOST, VM), else (a subject gone) by the event kind's first word when the subject is
 * an entity's id (AGENT_REMOVED → the agent's page, which says it was removed); null when
 * there is none (no subject, a cluster member, a service, an unknown kind).
 */
export function subjectHref(kind: string, subject: string | null | undefined, subjectKind?: string | null): string | null {
  if (!subject) return null;
  const base = subjectKind ? PAGES[subjectKind.toUpperCase()] : entityId(subject) ? PAGES[kind.split("_")[0]] : undefined;
  return base ? `${base}${encodeURIComponent(subject)}` : null;
}

/** What an event row shows: text around the subject, which is a link when it has a page. */
export interface EventParts extends Split {
  /** The subject as shown: its name, or its id shortened when the node has no name for it. */
  name: string | null;
  href: string | null;
  /** The full id, for the tooltip. */
  title: string | null;
  /** The name is not the sentence's own but the short id put after it, in brackets. */
  appended: boolean;
}

type Readable = Pick<TroupeEvent, "kind" | "subject"> & Partial<Pick<TroupeEvent, "text" | "subjectName" | "subjectKind">>;

/** The sentence a row shows: the node's `text` (the kind in words when it has none). */
export function eventText(e: Readable): string {
  return e.text || humanise(e.kind);
}

/**
 * An event cut for showing: around its subject's name when the node named it; around its id
 * (shown shortened) when the sentence holds the bare id; else the sentence with the short id
 * after it in brackets; the sentence alone when it has no subject.
 */
export function eventParts(e: Readable): EventParts {
  const text = eventText(e);
  const subject = e.subject ?? null;
  const href = subjectHref(e.kind, subject, e.subjectKind);
  if (!subject) return { before: text, name: null, after: "", href: null, title: null, appended: false };
  if (e.subjectName) {
    const s = splitSentence(text, e.subjectName);
    if (s.name !== null) return { ...s, href, title: subject, appended: false };
  }
  const byId = splitSentence(text, subject);
  if (byId.name !== null) return { ...byId, name: shortId(subject), href, title: subject, appended: false };
  return { before: `${text} (`, name: e.subjectName ?? shortId(subject), after: ")", href, title: subject, appended: true };
}

/** Whether an event is about `subject`: its id or its name holds the words typed (case-insensitive for the name). */
export function subjectMatches(e: Readable, subject: string): boolean {
  if (!subject) return true;
  if ((e.subject ?? "").includes(subject)) return true;
  return Boolean(e.subjectName && e.subjectName.toLowerCase().includes(subject.toLowerCase()));
}

const AS_STATE: Record<string, string> = { ALERT: "FAILED", ESCALATED: "FAILED", OPENED: "OPEN", STARTED: "RUNNING", EXPIRED: "CANCELLED" };

/**
 * The state an event kind's tone is read from, by its last word (TASK_SUCCEEDED → SUCCEEDED,
 * AGENT_BREAKER_OPENED → OPEN); null when that word is no state (AGENT_SPAWNED).
 */
export function kindState(kind: string): string | null {
  if (kind.endsWith("_HALF_OPEN")) return "HALF_OPEN";
  const last = kind.slice(kind.lastIndexOf("_") + 1);
  const state = AS_STATE[last] ?? last;
  return tone(state) === "idle" ? null : state;
}
