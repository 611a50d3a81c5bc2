// Data hooks: a query with its loading and error states, refetched on demand; a subscription
// tied to a component's life.
import { useEffect, useRef, useState, useCallback } from "preact/hooks";
import { gql, subscribe, ApiError, type Sink } from "./gql";
import { eventStream, type TroupeEvent } from "./cursor";
import { Debounced, FrameQueue, atMost, paused } from "./live";

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
 * The cluster's events as they happen (kinds optional), delivered in batches of one frame,
 * or of at least `everyMs` when given. `after` replays from a cursor; without it only new
 * events come. `skip` holds the stream back (until the cursor to start from is known).
 */
export function useEvents(onBatch: (events: TroupeEvent[]) => void, kinds?: string[], after?: number, skip = false, everyMs?: number): void {
  const key = JSON.stringify([kinds ?? null, after ?? null, skip, everyMs ?? null]);
  const ref = useRef(onBatch);
  ref.current = onBatch;
  useEffect(() => {
    if (skip) return;
    const queue = new FrameQueue<TroupeEvent>((batch) => ref.current(batch), undefined, everyMs ? atMost(everyMs) : undefined);
    const stream = eventStream({ kinds, after, onEvent: (e) => queue.push(e) });
    // What waited while live updates were paused is applied when they resume.
    const unpause = paused.subscribe(() => queue.resume());
    return () => {
      unpause();
      stream.close();
    };
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [key]);
}

/**
 * Calls `refetch` (at most once per `ms`) whenever an event of one of `kinds` (prefixes,
 * e.g. "AGENT_") arrives, optionally only for a subject.
 */
export function useRefreshOn(refetch: () => void, prefixes: string[], subject?: string, ms = 500): void {
  const run = useRef(refetch);
  run.current = refetch;
  const again = useRef<Debounced>();
  if (!again.current) again.current = new Debounced(() => run.current(), ms);
  useEvents((batch) => {
    if (batch.some((e) => prefixes.some((p) => e.kind.startsWith(p)) && (!subject || e.subject === subject))) again.current!.poke();
  });
  useEffect(() => {
    const d = again.current!;
    const unpause = paused.subscribe(() => d.resume());
    return () => {
      unpause();
      d.cancel();
    };
  }, []);
}

export interface Live<T> {
  data: T | null;
  error: ApiError | null;
  /** The stream ended: a task reached its end, or the entity was removed. */
  ended: boolean;
  /** Shows a mutation's answer at once, before the stream brings it. */
  set: (value: T) => void;
}

/**
 * An entity kept live by its `…Updates(id)` subscription, which sends it now and then at
 * every change; while live updates are paused the latest waits and is shown on resume.
 */
export function useLive<T>(query: string, id: string, field: string): Live<T> {
  const [data, setData] = useState<T | null>(null);
  const [error, setError] = useState<ApiError | null>(null);
  const [ended, setEnded] = useState(false);
  const queue = useRef<FrameQueue<T>>();
  if (!queue.current) queue.current = new FrameQueue<T>((batch) => setData(batch[batch.length - 1]));
  useEffect(() => {
    const q = queue.current!;
    return paused.subscribe(() => q.resume());
  }, []);
  useSubscription<Record<string, T>>(
    query,
    { id },
    {
      next: (d) => {
        queue.current!.push(d[field]);
        setError(null);
      },
      error: (e) => setError(e),
      complete: () => setEnded(true),
    },
  );
  return { data, error, ended, set: setData };
}
