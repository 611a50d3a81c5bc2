// Server-side paging for the long lists (agents, tasks, VMs): pages of `first` rows fetched
// as the grid nears its end, the filters being part of the query; a change of filter starts
// again from the first page. Live changes do not move rows under the reader: they are
// counted, and the list reloads when the reader asks (or at once when nothing is loaded
// past the first page and the pointer is elsewhere).
import { useCallback, useEffect, useRef, useState } from "preact/hooks";
import { gql, type ApiError } from "./gql";
import { useEvents } from "./hooks";

export interface Connection<T> {
  nodes: T[];
  pageInfo: { hasNextPage: boolean; endCursor: string | null };
  totalCount?: number | string;
  missingNodes?: string[];
}

export interface Paged<T> {
  rows: T[];
  total: number | null;
  missing: string[];
  error: ApiError | null;
  loading: boolean;
  more: boolean;
  /** Fetches the next page (no-op while one is on its way or none is left). */
  next: () => void;
  /** Starts again from the first page. */
  reload: () => void;
}

/**
 * `query` takes `$first` and `$after` besides `variables`; `pick` finds the connection in
 * the answer.
 */
export function usePaged<T>(query: string, variables: Record<string, unknown>, pick: (data: any) => Connection<T>, first = 200): Paged<T> {
  const key = JSON.stringify(variables);
  const [rows, setRows] = useState<T[]>([]);
  const [total, setTotal] = useState<number | null>(null);
  const [missing, setMissing] = useState<string[]>([]);
  const [error, setError] = useState<ApiError | null>(null);
  const [loading, setLoading] = useState(true);
  const [more, setMore] = useState(false);
  const cursor = useRef<string | null>(null);
  const generation = useRef(0);
  const busy = useRef(false);

  const fetchPage = useCallback(
    async (fresh: boolean) => {
      if (busy.current && !fresh) return;
      const mine = fresh ? ++generation.current : generation.current;
      busy.current = true;
      setLoading(true);
      try {
        const data = await gql(query, { ...JSON.parse(key), first, after: fresh ? null : cursor.current });
        if (mine !== generation.current) return;
        const c = pick(data);
        cursor.current = c.pageInfo.endCursor;
        setMore(c.pageInfo.hasNextPage);
        setTotal(c.totalCount === undefined ? null : Number(c.totalCount));
        setMissing(c.missingNodes ?? []);
        setRows((r) => (fresh ? c.nodes : [...r, ...c.nodes]));
        setError(null);
      } catch (e) {
        if (mine === generation.current) setError(e as ApiError);
      } finally {
        if (mine === generation.current) {
          busy.current = false;
          setLoading(false);
        }
      }
    },
    [query, key, first],
  );

  useEffect(() => {
    cursor.current = null;
    void fetchPage(true);
  }, [fetchPage]);

  return {
    rows,
    total,
    missing,
    error,
    loading,
    more,
    next: () => {
      if (more) void fetchPage(false);
    },
    reload: () => void fetchPage(true),
  };
}

/**
 * Keeps a paged list current with the events of `prefixes`: reloaded (at most every
 * `ms`) while only its first page is loaded and the reader is not pointing at it; else the
 * changes are counted for a "N new" pill whose click reloads.
 */
export function useLiveList<T>(list: Paged<T>, prefixes: string[], reading: { current: boolean }, first = 200, ms = 1000): { changes: number; show: () => void } {
  const [changes, setChanges] = useState(0);
  const timer = useRef<ReturnType<typeof setTimeout> | null>(null);
  const latest = useRef(list);
  latest.current = list;
  useEvents((batch) => {
    const n = batch.filter((e) => prefixes.some((p) => e.kind.startsWith(p))).length;
    if (!n) return;
    if (latest.current.rows.length <= first && !reading.current) {
      if (!timer.current)
        timer.current = setTimeout(() => {
          timer.current = null;
          latest.current.reload();
        }, ms);
    } else setChanges((c) => c + n);
  });
  useEffect(() => () => {
    if (timer.current) clearTimeout(timer.current);
  }, []);
  return {
    changes,
    show: () => {
      setChanges(0);
      list.reload();
    },
  };
}
