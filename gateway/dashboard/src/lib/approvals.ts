// Tool calls an LLM agent's policy holds for an operator: the list (`approvals`), kept current
// by `approvalUpdates` (each approval when requested and when decided), and the two decisions.
import { useEffect, useRef, useState } from "preact/hooks";
import { gql } from "./gql";
import { useQuery, useSubscription, type QueryState } from "./hooks";
import { Debounced, FrameQueue, paused } from "./live";

export interface Approval {
  /** `<task id>/<step>/<call id>`. */
  id: string;
  taskId: string;
  agentId: string;
  step: number;
  callId: string;
  tool: string;
  /** JSON text as the model wrote it. */
  arguments: string;
  reason: string;
  state: "PENDING" | "APPROVED" | "REJECTED";
  requestedAt: string;
  expiresAt: string | null;
  note: string | null;
  decidedBy: string | null;
  decidedAt: string | null;
}

export const APPROVAL_FIELDS = "id taskId agentId step callId tool arguments reason state requestedAt expiresAt note decidedBy decidedAt";

const LIST = `query($pending: Boolean!) { approvals(pending: $pending) { ${APPROVAL_FIELDS} } }`;
const UPDATES = `subscription($after: Int64) { approvalUpdates(after: $after) { id state } }`;

export function approve(id: string, note: string): Promise<{ approveCall: Approval }> {
  return gql(`mutation($id: ID!, $note: String) { approveCall(id: $id, note: $note) { ${APPROVAL_FIELDS} } }`, { id, note: note.trim() || null });
}

export function reject(id: string, reason: string): Promise<{ rejectCall: Approval }> {
  return gql(`mutation($id: ID!, $reason: String) { rejectCall(id: $id, reason: $reason) { ${APPROVAL_FIELDS} } }`, { id, reason: reason.trim() || null });
}

/** The pending ones first by when they were asked for, then the decided ones newest first. */
export function inboxOrder(approvals: Approval[]): Approval[] {
  const pending = approvals.filter((a) => a.state === "PENDING").sort((a, b) => a.requestedAt.localeCompare(b.requestedAt));
  const decided = approvals.filter((a) => a.state !== "PENDING").sort((a, b) => (b.decidedAt ?? b.requestedAt).localeCompare(a.decidedAt ?? a.requestedAt));
  return [...pending, ...decided];
}

export interface Approvals extends Omit<QueryState<{ approvals: Approval[] }>, "data"> {
  rows: Approval[];
  /** The first read answered. */
  loaded: boolean;
  /** Leaves out one just decided here, before the stream says so. */
  hide: (id: string) => void;
}

/**
 * `approvals(pending)`, read again after what `approvalUpdates` sends. The stream starts at
 * the node's last event seq taken before the first read, so nothing asked for in between is
 * missed, and a reconnect replays from there (one more read) rather than losing an update.
 */
export function useApprovals(pending: boolean): Approvals {
  const [cursor, setCursor] = useState<{ after?: number } | null>(null);
  const [hidden, setHidden] = useState<Set<string>>(new Set());
  useEffect(() => {
    void gql<{ node: { lastSeq: number | string } }>("{ node { lastSeq } }").then(
      (d) => setCursor({ after: Number(d.node.lastSeq) }),
      () => setCursor({}),
    );
  }, []);
  const list = useQuery<{ approvals: Approval[] }>(LIST, { pending }, cursor === null);
  const refetch = useRef(list.refetch);
  refetch.current = list.refetch;
  const again = useRef<Debounced>();
  if (!again.current) again.current = new Debounced(() => void refetch.current(), 150);
  const queue = useRef<FrameQueue<unknown>>();
  if (!queue.current) queue.current = new FrameQueue<unknown>(() => again.current!.poke());
  useEffect(() => {
    const q = queue.current!;
    const d = again.current!;
    const unpause = paused.subscribe(() => {
      q.resume();
      d.resume();
    });
    return () => {
      unpause();
      d.cancel();
    };
  }, []);
  useSubscription(UPDATES, cursor ?? {}, { next: (d) => queue.current!.push(d), error: () => void refetch.current() }, cursor === null);
  const rows = (list.data?.approvals ?? []).filter((a) => !hidden.has(a.id));
  return {
    rows: inboxOrder(rows),
    loaded: list.data !== null,
    error: list.error,
    loading: list.loading || cursor === null,
    refetch: list.refetch,
    hide: (id) => setHidden((h) => new Set(h).add(id)),
  };
}
