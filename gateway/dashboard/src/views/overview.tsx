// The overview: the cluster's members, counts by state, throughput and latency (the node's
// history, then live from the event stream), the node's CPU and memory, and the recent alerts.
import { useEffect, useMemo, useRef, useState } from "preact/hooks";
import { gql } from "../lib/gql";
import { useEvents, useQuery, useRefreshOn } from "../lib/hooks";
import { EVENT_FIELDS, mergeNewestFirst, normalise, type TroupeEvent } from "../lib/cursor";
import { FAILED_COUNT, failedLine } from "../lib/alerts";
import { ALERT_KINDS, HISTORY_QUERY, mergeHistory, TaskRates, type HistorySample } from "../lib/metrics";
import { subjectHref } from "../lib/sentence";
import { Chart } from "../components/chart";
import { Status } from "../components/status";
import { Time } from "../components/time";
import { ErrorBox, Loading, Page, Section } from "../components/page";
import { EventData, EventKind, EventSentence } from "../components/event";

const AGENT_STATES = ["RUNNING", "STARTING", "PAUSED", "RECOVERING", "UNHEALTHY", "STOPPING", "STOPPED", "DEFINED", "FAILED"];
const TASK_STATES = ["QUEUED", "RUNNING", "AWAITING_APPROVAL", "SUCCEEDED", "FAILED", "CANCELLED", "EXPIRED", "DEPENDENCY_FAILED", "DEAD"];

const key = (s: string) => s.toLowerCase().replace(/_(\w)/g, (_, c: string) => c.toUpperCase());

const COUNTS = `{
  agentStateCounts { state count }
  ${TASK_STATES.map((s) => `t_${key(s)}: tasks(state: ${s}, first: 1) { totalCount }`).join("\n  ")}
  hosts { id state }
  swarms { id status }
  vms(first: 1000) { nodes { state } pageInfo { hasNextPage } }
}`;

interface Counts {
  [k: string]: unknown;
  agentStateCounts?: { state: string; count: number }[];
  hosts: { id: string; state: string }[];
  swarms: { id: string; status: string }[];
  vms: { nodes: { state: string }[]; pageInfo: { hasNextPage: boolean } };
}

interface Member {
  name: string;
  address: string;
  role: string;
  state: string;
  lag: number | null;
  appliedLag: number | null;
  working: boolean | null;
  incarnation: number;
  lastHeartbeat: string | null;
}

const CLUSTER = `{ cluster { leader term commitIndex members { name address role state lag appliedLag working incarnation lastHeartbeat } } }`;

function tally<T>(items: T[], of: (t: T) => string): [string, number][] {
  const m = new Map<string, number>();
  for (const i of items) m.set(of(i), (m.get(of(i)) ?? 0) + 1);
  return [...m.entries()].sort();
}

/** `all` is the link's words: "All VMs" (a title lower-cased would read "All vms"). */
function CountList({ title, href, all, counts }: { title: string; href: string; all: string; counts: [string, number][] }) {
  const total = counts.reduce((n, [, c]) => n + c, 0);
  return (
    <Section title={`${title} (${total})`} actions={<a href={href}>{all}</a>}>
      {counts.filter(([, n]) => n > 0).length === 0 ? (
        <p class="empty">None.</p>
      ) : (
        <ul class="row" aria-label={`${title} by state`}>
          {counts
            .filter(([, n]) => n > 0)
            .map(([state, n]) => (
              <li key={state} class="row">
                <a href={`${href}?state=${state}`}>
                  <Status state={state} label={`${state} ${n}`} />
                </a>
              </li>
            ))}
        </ul>
      )}
    </Section>
  );
}

export function Overview() {
  const cluster = useQuery<{ cluster: { leader: string | null; term: number; commitIndex: number; members: Member[] } }>(CLUSTER);
  const counts = useQuery<Counts>(COUNTS);
  useRefreshOn(() => void cluster.refetch(), ["MEMBER_", "LEADER_"], undefined, 300);
  useRefreshOn(() => void counts.refetch(), ["AGENT_", "TASK_", "HOST_", "VM_", "SWARM_"], undefined, 1500);
  useEffect(() => {
    const t = setInterval(() => void cluster.refetch(), 5000);
    return () => clearInterval(t);
  }, [cluster.refetch]);

  const rates = useRef(new TaskRates());
  // The second this page started listening: the live buckets before it are not known, the
  // node's history stands in for them.
  const opened = useRef(Math.floor(Date.now() / 1000));
  const [live, setLive] = useState(() => rates.current.series(opened.current));
  const [history, setHistory] = useState<HistorySample[]>([]);
  const series = useMemo(() => mergeHistory(history, live, opened.current), [history, live]);
  const node = useMemo(() => {
    const xs = history.map((h) => new Date(h.at).getTime() / 1000);
    return { xs, cpu: history.map((h) => Number(h.cpuCores)), rss: history.map((h) => Number(h.rssBytes) / 2 ** 20) };
  }, [history]);

  // The node's history, again every 10 s: once the page has been open past the live minute,
  // it fills in what slid out of the live window (and the CPU and memory chart moves on).
  useEffect(() => {
    let gone = false;
    const load = () =>
      void gql<{ history: HistorySample[] }>(HISTORY_QUERY, { minutes: 60 })
        .then((d) => !gone && setHistory(d.history))
        .catch(() => {});
    load();
    const t = setInterval(load, 10_000);
    return () => {
      gone = true;
      clearInterval(t);
    };
  }, []);
  const [alerts, setAlerts] = useState<TroupeEvent[]>([]);

  // The last alerts before this page opened (the newest 20 of the whole log, read through
  // its index by kind), then the new ones as they come.
  useEffect(() => {
    void gql<{ events: TroupeEvent[] }>(`query($kinds: [String!]) { events(kinds: $kinds, last: 20) { ${EVENT_FIELDS} } }`, { kinds: ALERT_KINDS })
      .catch(() => ({ events: [] as TroupeEvent[] }))
      .then((d) => setAlerts((now) => mergeNewestFirst(now, d.events.map(normalise), 20)));
  }, []);
  useEvents((batch) => {
    for (const e of batch) rates.current.add(e);
    const fresh = batch.filter((e) => ALERT_KINDS.includes(e.kind));
    if (fresh.length) setAlerts((now) => mergeNewestFirst(now, fresh, 20));
  });
  useEffect(() => {
    const t = setInterval(() => setLive(rates.current.series(Math.floor(Date.now() / 1000))), 1000);
    return () => clearInterval(t);
  }, []);

  const c = counts.data;
  // One pass on the server for every state (a count per state read every agent once each).
  const agentCounts = useMemo(() => AGENT_STATES.map((s) => [s, Number(c?.agentStateCounts?.find((x) => x.state === s)?.count ?? 0)] as [string, number]), [c]);
  const taskCounts = useMemo(() => TASK_STATES.map((s) => [s, Number((c?.[`t_${key(s)}`] as { totalCount: number } | undefined)?.totalCount ?? 0)] as [string, number]), [c]);
  const cl = cluster.data?.cluster;

  return (
    <Page title="Overview">
      <FailedDeliveries />
      <Section title="Cluster">
        <ErrorBox error={cluster.error} />
        {!cl ? (
          <Loading what="the cluster" />
        ) : (
          <>
            <p>
              Leader <strong>{cl.leader ?? "none (election under way, or this node is cut off)"}</strong> · term {cl.term} · commit index {cl.commitIndex}
            </p>
            <div class="table-scroll">
              <table>
                <caption class="sr-only">Cluster members</caption>
                <thead>
                  <tr>
                    <th scope="col">Member</th>
                    <th scope="col">State</th>
                    <th scope="col">Role</th>
                    <th scope="col">Address</th>
                    <th scope="col">Lag</th>
                    <th scope="col">Applied lag</th>
                    <th scope="col">Work</th>
                    <th scope="col">Last heartbeat</th>
                  </tr>
                </thead>
                <tbody>
                  {cl.members.map((m) => (
                    <tr key={m.name}>
                      <td>
                        {m.name}
                        {m.name === cl.leader ? " (leader)" : ""}
                      </td>
                      <td>
                        <Status state={m.state} />
                      </td>
                      <td>{m.role}</td>
                      <td class="mono">{m.address}</td>
                      <td>{m.lag ?? "—"}</td>
                      <td>{m.appliedLag ?? "—"}</td>
                      <td>{m.working === null ? "—" : m.working ? "runs" : "not running"}</td>
                      <td>
                        <Time at={m.lastHeartbeat} />
                      </td>
                    </tr>
                  ))}
                </tbody>
              </table>
            </div>
          </>
        )}
      </Section>
      <ErrorBox error={counts.error} />
      <div class="cards">
        <CountList title="Agents" href="/agents" all="All agents" counts={agentCounts} />
        <CountList title="Tasks" href="/tasks" all="All tasks" counts={taskCounts} />
        <CountList title="Swarms" href="/swarms" all="All swarms" counts={tally(c?.swarms ?? [], (s) => s.status)} />
        <CountList title="Hosts" href="/hosts" all="All hosts" counts={tally(c?.hosts ?? [], (h) => h.state)} />
        <CountList title={c?.vms.pageInfo.hasNextPage ? "VMs (first 1000)" : "VMs"} href="/vms" all="All VMs" counts={tally(c?.vms.nodes ?? [], (v) => v.state)} />
      </div>
      <div class="cards">
        <Section title="Throughput">
          <Chart
            title="Tasks ended per second, last hour"
            xs={series.xs}
            ys={[series.ended, series.failed]}
            series={[
              { label: "ended", unit: "tasks/s", colour: "--ok" },
              { label: "failed", unit: "tasks/s", colour: "--bad" },
            ]}
          />
        </Section>
        <Section title="Latency">
          <Chart
            title="Task latency, last hour"
            xs={series.xs}
            ys={[series.p50, series.p95, series.p99]}
            series={[
              { label: "p50", unit: "ms", colour: "--running" },
              { label: "p95", unit: "ms", colour: "--warn" },
              { label: "p99", unit: "ms", colour: "--bad" },
            ]}
            floor={1}
          />
        </Section>
        <Section title="This node">
          {/* An idle node's CPU sits near 0 cores too: the same fitted axis as an agent's. */}
          <Chart title="CPU, cores busy, last hour" xs={node.xs} ys={[node.cpu]} series={[{ label: "cpu", unit: "cores", colour: "--running" }]} height={120} floor={0.01} />
          <Chart title="Resident memory, last hour" xs={node.xs} ys={[node.rss]} series={[{ label: "rss", unit: "MiB", colour: "--ok" }]} height={120} floor={1} />
        </Section>
      </div>
      <Section title="Recent alerts" actions={<a href={`/events?kinds=${ALERT_KINDS.join(",")}`}>All alerts</a>}>
        {alerts.length === 0 ? (
          <p class="empty">No failures, open breakers or hosts down lately.</p>
        ) : (
          <div class="table-scroll">
            <table>
              <caption class="sr-only">Recent alerts</caption>
              <thead>
                <tr>
                  <th scope="col">When</th>
                  <th scope="col">What happened</th>
                  <th scope="col">Kind</th>
                  <th scope="col">Data</th>
                </tr>
              </thead>
              <tbody>
                {alerts.map((e) => (
                  <tr key={e.seq}>
                    <td>
                      <Time at={e.at} />
                    </td>
                    <td>
                      <EventSentence event={e} />
                    </td>
                    <td>
                      <EventKind kind={e.kind} />
                    </td>
                    <td>
                      <EventData data={e.data} />
                    </td>
                  </tr>
                ))}
              </tbody>
            </table>
          </div>
        )}
      </Section>
    </Page>
  );
}

/** "N alert deliveries failed", a link to them; nothing while none has. */
function FailedDeliveries() {
  const failed = useQuery<{ alertDeliveries: { id: string }[] }>(FAILED_COUNT);
  useRefreshOn(() => void failed.refetch(), ["ALERT_DELIVERY_FAILED"], undefined, 1000);
  const line = failedLine(failed.data?.alertDeliveries.length ?? 0);
  if (!line) return null;
  return (
    <p class="overview-alerts">
      <a href="/alerts?outcome=FAILED">
        <Status state="FAILED" label={line} />
      </a>
    </p>
  );
}

/** A link to an event subject's page (by its kind when known, else the event's), named by its id. */
export function SubjectLink({ kind, id, subjectKind }: { kind: string; id: string; subjectKind?: string | null }) {
  const href = subjectHref(kind, id, subjectKind);
  return href ? <a href={href}>{id}</a> : <span>{id}</span>;
}
