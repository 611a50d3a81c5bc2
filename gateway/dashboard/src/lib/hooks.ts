// Data hooks: a query with its loading and error states, refetched on demand; a subscription
// tied to a component's life.
import { useEffect, useRef, useState, useCallback } from "preact/hooks";
import { gql, subscribe, ApiError, type Sink } from "./gql";
import { eventStream, type TroupeEvent } from "./cursor";
import { FrameQueue } from "./live";

export interface QueryState<T> {
  data: T | null;
  error: ApiError | null;
  loading: boolean;
  refetch: () => Promise<void>;
}

/** Runs `query` when `variables` change; `refetch` runs it again (keeping the old data shown). */
export function useQuery<T>(query: string, variables: Record<string, unknown> = {}, skip = false): QueryState<T> {
  const key = JSON.stringify(variables);
  const [data, setData] = useState<T | null>(null);
  const [error, setError] = useState<ApiError | null>(null);
  const [loading, setLoading] = useState(!skip);
  const generation = useRef(0);
  const refetch = useCallback(async () => {
    const mine = ++generation.current;
    setLoading(true);
    try {
      const d = await gql<T>(query, JSON.parse(key));
      if (mine === generation.current) {
        setData(d);
        setError(null);
      }
    } catch (e) {
      if (mine === generation.current) setError(e as ApiError);
    } finally {
      if (mine === generation.current) setLoading(false);
    }
  }, [query, key]);
  useEffect(() => {
    if (!skip) void refetch();
  }, [refetch, skip]);
  return { data, error, loading, refetch };
}

/** A subscription for as long as the component lives (or until `variables` change). */
export function useSubscription<T>(query: string, variables: Record<string, unknown>, sink: Sink<T>, skip = false): void {
  const key = JSON.stringify(variables);
  const sinkRef = useRef(sink);
  sinkRef.current = sink;
  useEffect(() => {
    if (skip) return;
    return subscribe<T>(query, JSON.parse(key), {
      next: (v) => sinkRef.current.next(v),
      error: (e) => sinkRef.current.error?.(e),
      complete: () => sinkRef.current.complete?.(),
    });
  }, [query, key, skip]);
}

/**
 * The cluster's events as they happen (kinds optional), delivered in batches of one frame.
 * `after` replays from a cursor; without it only new events come.
 */
export function useEvents(onBatch: (events: TroupeEvent[]) => void, kinds?: string[], after?: number): void {
  const key = JSON.stringify([kinds ?? null, after ?? null]);
  const ref = useRef(onBatch);
  ref.current = onBatch;
  useEffect(() => {
    const queue = new FrameQueue<TroupeEvent>((batch) => ref.current(batch));
    const stream = eventStream({ kinds, after, onEvent: (e) => queue.push(e) });
    return () => stream.close();
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [key]);
}

/**
 * Calls `refetch` (at most once per `ms`) whenever an event of one of `kinds` (prefixes,
 * e.g. "AGENT_") arrives, optionally only for a subject.
 */
export function useRefreshOn(refetch: () => void, prefixes: string[], subject?: string, ms = 500): void {
  const timer = useRef<ReturnType<typeof setTimeout> | null>(null);
  useEvents((batch) => {
    const hit = batch.some((e) => prefixes.some((p) => e.kind.startsWith(p)) && (!subject || e.subject === subject));
    if (hit && !timer.current) {
      timer.current = setTimeout(() => {
        timer.current = null;
        refetch();
      }, ms);
    }
  });
  useEffect(() => () => {
    if (timer.current) clearTimeout(timer.current);
  }, []);
}
