// Replayable subscriptions: the event stream is resumed from the last `seq` seen, so a
// reconnect (or a gateway restart) neither loses nor repeats an event.
import { subscribe, gql, type ApiError } from "./gql";
import { humanise } from "./format";

export interface TroupeEvent {
  seq: number;
  kind: string;
  at: string;
  subject: string | null;
  data: unknown;
  /** The event as a sentence: "agent reviewer failed: exit 1" (optional only for tests' sake; `normalise` fills it). */
  text?: string;
  /** The subject's bare name ("reviewer"); null when it has none or is gone. */
  subjectName?: string | null;
  /** AGENT, TASK, SWARM, HOST, VM or MEMBER, with `subjectName`. */
  subjectKind?: string | null;
}

export const EVENT_FIELDS = "seq kind at subject data text subjectName subjectKind";

/**
 * Tracks the cursor of one stream: `accept` answers whether an event is new (its seq above
 * the last one) and moves the cursor; `variables` is the object the subscription re-sends
 * on every reconnect, so its `after` always holds the cursor.
 */
export class Cursor {
  readonly variables: { after: number; kinds?: string[] };

  constructor(after: number, kinds?: string[]) {
    this.variables = kinds && kinds.length ? { after, kinds } : { after };
  }

  get after(): number {
    return this.variables.after;
  }

  accept(seq: number): boolean {
    if (seq <= this.variables.after) return false;
    this.variables.after = seq;
    return true;
  }
}

const SUBSCRIPTION = `subscription Events($after: Int64, $kinds: [String!]) { events(after: $after, kinds: $kinds) { ${EVENT_FIELDS} } }`;

export interface EventStreamOptions {
  /** Start after this seq; default: the node's newest (`node { lastSeq }`), i.e. only new ones. */
  after?: number;
  kinds?: string[];
  onEvent: (e: TroupeEvent) => void;
  onError?: (e: ApiError) => void;
}

export interface EventStream {
  cursor: Promise<Cursor>;
  close(): void;
}

/**
 * Seqs arrive as numbers or strings (Int64): normalise; and the sentence fields are always
 * there after it (the kind as the text, no name, if an answer lacks them).
 */
export function normalise(e: TroupeEvent): TroupeEvent {
  if (typeof e.seq === "number" && typeof e.text === "string" && e.subjectName !== undefined && e.subjectKind !== undefined) return e;
  return { ...e, seq: Number(e.seq), text: e.text ?? humanise(e.kind), subjectName: e.subjectName ?? null, subjectKind: e.subjectKind ?? null };
}

export function eventStream(opts: EventStreamOptions): EventStream {
  let dispose: (() => void) | null = null;
  let closed = false;
  const cursor = (async () => {
    let after = opts.after;
    if (after === undefined) {
      const d = await gql<{ node: { lastSeq: number | string } }>("{ node { lastSeq } }");
      after = Number(d.node.lastSeq);
    }
    const c = new Cursor(after, opts.kinds);
    if (!closed) {
      dispose = subscribe<{ events: TroupeEvent }>(SUBSCRIPTION, c.variables, {
        next: (d) => {
          const e = normalise(d.events);
          if (c.accept(e.seq)) opts.onEvent(e);
        },
        error: (e) => opts.onError?.(e),
      });
    }
    return c;
  })();
  cursor.catch((e) => opts.onError?.(e));
  return {
    cursor,
    close() {
      closed = true;
      dispose?.();
    },
  };
}

/** Rows newest first, each seq once, at most `keep` (the newest). */
export function mergeNewestFirst(a: TroupeEvent[], b: TroupeEvent[], keep: number): TroupeEvent[] {
  const seen = new Set<number>();
  const out: TroupeEvent[] = [];
  for (const e of [...a, ...b].sort((x, y) => y.seq - x.seq)) {
    if (seen.has(e.seq)) continue;
    seen.add(e.seq);
    out.push(e);
  }
  return out.slice(0, keep);
}
