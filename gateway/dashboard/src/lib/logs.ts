// An exec or process agent's lines (stderr, an exec task's stdout, a process's `log` lines):
// its last ones (`agentLogs`), then each new one (`agentLogLines`) from the last seq held, so
// a reconnect resumes there; at most KEEP_LINES are held, the oldest dropped first.
import { useEffect, useRef, useState } from "preact/hooks";
import { gql, subscribe, type ApiError } from "./gql";
import { FrameQueue, paused } from "./live";

export interface LogLine {
  seq: number;
  at: string;
  /** `stdout`, `stderr`, or `log` (a process agent's, prefixed by its level). */
  stream: string;
  line: string;
  taskId: string | null;
}

export const KEEP_LINES = 1000;

const FIELDS = "seq at stream line taskId";
const LAST = `query($id: ID!, $limit: Int) { agentLogs(id: $id, limit: $limit) { ${FIELDS} } }`;
const FOLLOW = `subscription($id: ID!, $after: Int64) { agentLogLines(id: $id, after: $after) { ${FIELDS} } }`;

/** `held` then the lines of `fresh` past its last seq (Int64 seqs may come as strings), the last `keep` of them. */
export function appendLines(held: LogLine[], fresh: LogLine[], keep = KEEP_LINES): LogLine[] {
  let last = held.length ? held[held.length - 1].seq : -Infinity;
  const added: LogLine[] = [];
  for (const l of fresh) {
    const seq = Number(l.seq);
    if (seq <= last) continue;
    last = seq;
    added.push(seq === l.seq ? l : { ...l, seq });
  }
  if (!added.length) return held;
  const all = held.concat(added);
  return all.length > keep ? all.slice(all.length - keep) : all;
}

export interface AgentLog {
  lines: LogLine[] | null;
  error: ApiError | null;
}

export function useAgentLog(id: string, keep = KEEP_LINES): AgentLog {
  const [lines, setLines] = useState<LogLine[] | null>(null);
  const [error, setError] = useState<ApiError | null>(null);
  const queue = useRef<FrameQueue<LogLine>>();
  if (!queue.current) queue.current = new FrameQueue<LogLine>((batch) => setLines((held) => appendLines(held ?? [], batch, keep)));
  useEffect(() => {
    const q = queue.current!;
    let dispose: (() => void) | null = null;
    let gone = false;
    const unpause = paused.subscribe(() => q.resume());
    void gql<{ agentLogs: LogLine[] }>(LAST, { id, limit: keep })
      .then((d) => {
        if (gone) return;
        const first = appendLines([], d.agentLogs, keep);
        setLines(first);
        // The very object graphql-ws sends again on a resubscribe: it carries the last seq seen.
        const variables = { id, after: first.length ? first[first.length - 1].seq : 0 };
        dispose = subscribe<{ agentLogLines: LogLine }>(FOLLOW, variables, {
          next: (d) => {
            const seq = Number(d.agentLogLines.seq);
            if (seq <= variables.after) return;
            variables.after = seq;
            q.push(d.agentLogLines);
            setError(null);
          },
          error: (e) => setError(e),
        });
      })
      .catch((e: ApiError) => {
        if (gone) return;
        setError(e);
        setLines((held) => held ?? []);
      });
    return () => {
      gone = true;
      unpause();
      dispose?.();
    };
  }, [id, keep]);
  return { lines, error };
}
