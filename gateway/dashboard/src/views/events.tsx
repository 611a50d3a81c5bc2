// The live event stream: kind and subject filters in the query string, newest first, rows
// that never move under the reader (new ones wait behind a pill while scrolled or paused),
// and "load older" for what came before. It opens on the newest page of the log, read at the
// seq the live stream then starts after, so the two meet with no gap and no overlap. Each row
// reads as a sentence, its subject's name a link; a row opened shows its data below.
import { useEffect, useRef, useState } from "preact/hooks";
import { gql, type ApiError } from "../lib/gql";
import { useEvents } from "../lib/hooks";
import { EVENT_FIELDS, mergeNewestFirst, normalise, type TroupeEvent } from "../lib/cursor";
import { query, setQuery } from "../lib/router";
import { eventText, subjectMatches } from "../lib/sentence";
import { count } from "../lib/format";
import { Grid } from "../components/grid";
import { Time } from "../components/time";
import { ErrorBox, FilterInput, NewPill, Page, Section } from "../components/page";
import { EventData, EventKind, EventSentence, hasData } from "../components/event";

/** The most events kept on the page: memory stays flat however long it streams. */
export const KEEP = 2000;
const OLDER = 200;
/** The least time between two redraws of the live rows. */
const LIVE_EVERY_MS = 100;

/** Of one of `kinds` (prefixes), about `subject` (part of its id, or of its name in any case). */
export function matches(e: TroupeEvent, kinds: string[], subject: string): boolean {
  return (kinds.length === 0 || kinds.some((k) => e.kind.startsWith(k))) && subjectMatches(e, subject);
}

/** "12 events, seq 40–51": what the page holds, so a gap or a duplicate shows. */
export function summary(events: TroupeEvent[]): string {
  if (!events.length) return "0 events";
  let lo = Infinity;
  let hi = -Infinity;
  for (const e of events) {
    lo = Math.min(lo, e.seq);
    hi = Math.max(hi, e.seq);
  }
  return `${count(events.length, "event")}, seq ${lo}–${hi}`;
}

/**
 * The page of matching events just before `before`, stepping back through the log 1,000 at a
 * time until `want` match or it begins; `exhausted` once nothing older is kept.
 */
async function olderPage(before: number, kinds: string[], subject: string, want: number): Promise<{ found: TroupeEvent[]; exhausted: boolean }> {
  const found: TroupeEvent[] = [];
  while (found.length < want && before > 1) {
    const after = Math.max(0, before - 1 - 1000);
    const d = await gql<{ events: TroupeEvent[] }>(`query($after: Int64, $first: Int) { events(after: $after, first: $first) { ${EVENT_FIELDS} } }`, { after, first: 1000 });
    const page = d.events.map(normalise).filter((e) => e.seq < before && matches(e, kinds, subject));
    found.unshift(...page);
    before = after + 1;
    if (after === 0) break;
  }
  return { found: found.reverse(), exhausted: before <= 1 };
}

export function EventsView() {
  const kinds = (query.value.get("kinds") ?? "").split(",").map((k) => k.trim().toUpperCase()).filter(Boolean);
  const subject = query.value.get("subject") ?? "";
  const [rows, setRows] = useState<TroupeEvent[]>([]);
  const [waiting, setWaiting] = useState<TroupeEvent[]>([]);
  const [error, setError] = useState<ApiError | null>(null);
  const [exhausted, setExhausted] = useState(false);
  /** The row opened (click or Enter): its data shows below the list. */
  const [opened, setOpened] = useState<TroupeEvent | null>(null);
  const reading = useRef(false);
  const list = useRef<HTMLDivElement>(null);

  /** The seq the live stream starts after: the newest when the view (or its filter) opened. */
  const [start, setStart] = useState<number | null>(null);
  const [loaded, setLoaded] = useState(false);
  const generation = useRef(0);

  useEffect(() => {
    const mine = ++generation.current;
    setRows([]);
    setWaiting([]);
    setExhausted(false);
    setLoaded(false);
    setStart(null);
    setOpened(null);
    void (async () => {
      try {
        const last = Number((await gql<{ node: { lastSeq: number | string } }>("{ node { lastSeq } }")).node.lastSeq);
        if (mine !== generation.current) return;
        setStart(last);
        const { found, exhausted } = await olderPage(last + 1, kinds, subject, OLDER);
        if (mine !== generation.current) return;
        setRows((r) => mergeNewestFirst(r, found, KEEP));
        setExhausted(exhausted);
        setError(null);
      } catch (e) {
        if (mine === generation.current) setError(e as ApiError);
      } finally {
        if (mine === generation.current) setLoaded(true);
      }
    })();
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [kinds.join(","), subject]);

  useEvents(
    (batch) => {
      const fresh = batch.filter((e) => matches(e, kinds, subject));
      if (!fresh.length) return;
      const scrolled = (list.current?.querySelector(".grid-body")?.scrollTop ?? 0) > 0;
      if (reading.current || scrolled) setWaiting((w) => mergeNewestFirst(fresh, w, KEEP));
      else setRows((r) => mergeNewestFirst(fresh, r, KEEP));
    },
    undefined,
    start ?? undefined,
    start === null,
    // Ten redraws a second at most: at 100 events a second a redraw per frame spent most
    // of each frame on style, layout and paint for rows nobody can read that fast.
    LIVE_EVERY_MS,
  );

  const showWaiting = () => {
    setRows((r) => mergeNewestFirst(waiting, r, KEEP));
    setWaiting([]);
    list.current?.querySelector(".grid-body")?.scrollTo({ top: 0 });
  };

  const loadOlder = async () => {
    try {
      const before = rows.length ? rows[rows.length - 1].seq : (start ?? Number((await gql<{ node: { lastSeq: number } }>("{ node { lastSeq } }")).node.lastSeq)) + 1;
      const { found, exhausted } = await olderPage(before, kinds, subject, OLDER);
      if (exhausted) setExhausted(true);
      setRows((r) => mergeNewestFirst(r, found, KEEP + OLDER));
      setError(null);
    } catch (e) {
      const err = e as ApiError;
      if (err.code === "INVALID_INPUT") setExhausted(true);
      else setError(err);
    }
  };

  return (
    <Page title="Events">
      <div class="filters">
        <FilterInput label="Kinds (comma-separated prefixes, e.g. TASK_,AGENT_FAILED)" value={query.value.get("kinds") ?? ""} onChange={(v) => setQuery({ kinds: v })} />
        <label class="filter">
          <span>Subject (name or id)</span>
          <input type="search" value={subject} onInput={(e) => setQuery({ subject: (e.target as HTMLInputElement).value })} />
        </label>
        <NewPill count={waiting.length} onShow={showWaiting} />
      </div>
      <ErrorBox error={error} />
      <div ref={list} class="events" onPointerEnter={() => (reading.current = true)} onPointerLeave={() => (reading.current = false)}>
        <Grid
          label="Events, newest first"
          rows={rows}
          rowKey={(e) => String(e.seq)}
          onOpen={setOpened}
          empty={loaded ? "No event matches: this list fills as the cluster's events happen." : "Loading the newest events…"}
          columns={[
            { title: "Seq", width: "80px", cell: (e) => e.seq },
            { title: "When", width: "130px", cell: (e) => <Time at={e.at} /> },
            {
              title: "Event",
              width: "minmax(240px, 1fr)",
              cell: (e) => (
                <span title={eventText(e)}>
                  <EventSentence event={e} />
                </span>
              ),
            },
            { title: "Kind", width: "230px", cell: (e) => <EventKind kind={e.kind} /> },
            {
              title: "Data",
              width: "70px",
              cell: (e) =>
                hasData(e.data) ? (
                  <button class="link" aria-expanded={opened?.seq === e.seq} aria-controls={opened ? "event-opened" : undefined} aria-label={`Data of event ${e.seq}`} onClick={() => setOpened(opened?.seq === e.seq ? null : e)}>
                    {"{…}"}
                  </button>
                ) : (
                  <span class="muted">—</span>
                ),
            },
          ]}
          height={560}
        />
      </div>
      {opened ? <Opened event={opened} onClose={() => setOpened(null)} /> : null}
      <div class="row">
        <button class="btn" onClick={() => void loadOlder()} disabled={exhausted}>
          {exhausted ? "No older events kept" : "Load older"}
        </button>
        <span class="muted events-summary" aria-live="off">
          {summary([...waiting, ...rows])} (at most {KEEP} kept live)
        </span>
      </div>
    </Page>
  );
}

/** The row opened: its sentence, kind, subject's full id and time, and its data as JSON. */
function Opened({ event: e, onClose }: { event: TroupeEvent; onClose: () => void }) {
  return (
    <div id="event-opened">
      <Section
        title={`Event ${e.seq}`}
        actions={
          <button class="btn" onClick={onClose}>
            Close
          </button>
        }
      >
        <p>
          <EventSentence event={e} /> <EventKind kind={e.kind} />
        </p>
        <p class="muted">
          <Time at={e.at} />
          {e.subject ? (
            <>
              {" "}
              · subject <span class="mono">{e.subject}</span>
              {e.subjectKind ? ` (${e.subjectKind === "VM" ? "VM" : e.subjectKind.toLowerCase()})` : ""}
            </>
          ) : null}
        </p>
        {hasData(e.data) ? <EventData data={e.data} open /> : <p class="empty">No data.</p>}
      </Section>
    </div>
  );
}
