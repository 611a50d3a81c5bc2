// Agents: a list paged on the server with its filters in the query string (state,
// capability, project, label), windowed so that it stays fast at 10,000+ rows, a spawn form;
// and an agent's page, live through agentUpdates, with its controls, checkpoints, tasks,
// messages, usage (and its processes' CPU and memory over the last hour), log (exec and
// process agents) and timeline of events, each told as a sentence.
import { useEffect, useMemo, useRef, useState } from "preact/hooks";
import { gql, type ApiError } from "../lib/gql";
import { useEvents, useLive, useQuery, useRefreshOn } from "../lib/hooks";
import { usePaged, useLiveList } from "../lib/paging";
import { EVENT_FIELDS, normalise, type TroupeEvent } from "../lib/cursor";
import { navigate, query, setQuery } from "../lib/router";
import { bytes, count } from "../lib/format";
import { USAGE_QUERY, usageSeries, type UsageSample } from "../lib/usage";
import { Grid } from "../components/grid";
import { Status } from "../components/status";
import { Chart } from "../components/chart";
import { EventLine } from "../components/event";
import { Time } from "../components/time";
import { Action } from "../components/actions";
import { Pending, EntityPage } from "../components/entity";
import { ErrorBox, FilterInput, KeyValues, Loading, NewPill, Page, Section, Select } from "../components/page";
import { LogPane, hasLog } from "./logs";
import { shortIds, taskName } from "../lib/names";
import { CreateForm, Field, Labels, parseLabels, parseList } from "../components/forms";
import { BackendFields } from "../components/backend";
import { backendInput, limitsInput, newDraft, type BackendDraft } from "../lib/backend";
import { canAct } from "../lib/session";

export const AGENT_STATES = ["DEFINED", "STARTING", "RUNNING", "PAUSED", "UNHEALTHY", "RECOVERING", "STOPPING", "STOPPED", "FAILED"];
const PAGE = 200;

interface AgentRow {
  id: string;
  name: string;
  node: string;
  project: string;
  state: string;
  backend: string;
  capabilities: string[];
  runningTasks: number;
  /** Int64: may arrive as a string. */
  tasksSucceeded: number | string;
  tasksFailed: number | string;
  restarts: number;
  updatedAt: string;
}

const LIST = `query($first: Int, $after: String, $state: AgentState, $capability: String, $project: String, $labels: [LabelInput!]) {
  agents(first: $first, after: $after, state: $state, capability: $capability, project: $project, labels: $labels) {
    nodes { id name node project state backend capabilities runningTasks tasksSucceeded tasksFailed restarts updatedAt }
    pageInfo { hasNextPage endCursor }
    totalCount missingNodes
  }
}`;

export function AgentsView() {
  const q = query.value;
  const filters = { state: q.get("state") || null, capability: q.get("capability") || null, project: q.get("project") || null, label: q.get("label") ?? "" };
  let labels: { key: string; value: string }[] | null = null;
  let labelError = "";
  try {
    labels = filters.label ? parseLabels(filters.label) : null;
  } catch (e) {
    labelError = (e as Error).message;
  }
  const list = usePaged<AgentRow>(LIST, { state: filters.state, capability: filters.capability, project: filters.project, labels }, (d) => d.agents, PAGE);
  const reading = useRef(false);
  const live = useLiveList(list, ["AGENT_"], reading, PAGE);

  return (
    <Page title="Agents" actions={<SpawnForm />}>
      <div class="filters" role="search" aria-label="Filter agents">
        <Select label="State" value={filters.state ?? ""} options={AGENT_STATES} onChange={(v) => setQuery({ state: v })} />
        <FilterInput label="Capability" value={filters.capability ?? ""} onChange={(v) => setQuery({ capability: v.trim() })} placeholder="press / to filter" />
        <label class="filter">
          <span>Project</span>
          <input type="search" value={filters.project ?? ""} onInput={(e) => setQuery({ project: (e.target as HTMLInputElement).value.trim() })} />
        </label>
        <label class="filter">
          <span>Label (key=value, …)</span>
          <input type="search" value={filters.label} onInput={(e) => setQuery({ label: (e.target as HTMLInputElement).value })} />
        </label>
        <NewPill count={live.changes} onShow={live.show} />
      </div>
      {labelError ? <p class="error" role="alert">{labelError}</p> : null}
      <ErrorBox error={list.error} />
      {list.missing.length ? <p class="error">Not included (unreachable): {list.missing.join(", ")}</p> : null}
      <p class="muted" aria-live="polite">
        {list.total === null ? "" : `${count(list.total, "agent")}${list.rows.length < list.total ? `, ${list.rows.length} loaded (more load as you scroll)` : ""}`}
      </p>
      <div onPointerEnter={() => (reading.current = true)} onPointerLeave={() => (reading.current = false)}>
        {list.loading && !list.rows.length ? (
          <Loading what="agents" />
        ) : (
          <Grid
            label="Agents"
            rows={list.rows}
            total={list.total ?? undefined}
            rowKey={(a) => a.id}
            onOpen={(a) => navigate(`/agents/${encodeURIComponent(a.id)}`)}
            onEnd={list.next}
            height={560}
            empty="No agent matches. Spawn one, or change the filters."
            columns={[
              { title: "Name", width: "minmax(140px, 1.2fr)", cell: (a) => <a href={`/agents/${encodeURIComponent(a.id)}`}>{a.name}</a> },
              { title: "State", width: "130px", cell: (a) => <Status state={a.state} /> },
              { title: "Node", width: "100px", cell: (a) => a.node },
              { title: "Backend", width: "minmax(100px, 1fr)", cell: (a) => <span class="mono">{a.backend}</span> },
              { title: "Capabilities", width: "minmax(100px, 1fr)", cell: (a) => a.capabilities.join(", ") || "—" },
              { title: "Running", width: "64px", cell: (a) => a.runningTasks },
              { title: "Done", width: "130px", cell: (a) => tasksDone(a) },
              { title: "Restarts", width: "70px", cell: (a) => a.restarts },
              { title: "Changed", width: "120px", cell: (a) => <Time at={a.updatedAt} /> },
            ]}
          />
        )}
      </div>
    </Page>
  );
}

/** The tasks an agent finished, compact: runningTasks alone reads 0 for an idle agent that ran many. */
export function tasksDone(a: { tasksSucceeded: number | string; tasksFailed: number | string }): string {
  return `${String(a.tasksSucceeded)} ok · ${String(a.tasksFailed)} failed`;
}

function SpawnForm() {
  const [name, setName] = useState("");
  const [backend, setBackend] = useState<BackendDraft>(newDraft("builtin"));
  const [caps, setCaps] = useState("");
  const [concurrency, setConcurrency] = useState("");
  const [project, setProject] = useState("");
  const [labels, setLabels] = useState("");
  const [limits, setLimits] = useState<Record<string, string>>({});
  const limit = (key: string) => (v: string) => setLimits({ ...limits, [key]: v });
  return (
    <CreateForm
      open="Spawn agent"
      submitLabel="Spawn"
      submit={async () => {
        const input = {
          name: name.trim(),
          backend: backendInput(backend),
          capabilities: parseList(caps),
          maxConcurrentTasks: concurrency.trim() ? Number(concurrency) : null,
          project: project.trim() || null,
          labels: parseLabels(labels),
          limits: limitsInput(limits),
        };
        const d = await gql<{ spawnAgent: { id: string } }>(`mutation($input: SpawnAgentInput!) { spawnAgent(input: $input) { id } }`, { input });
        navigate(`/agents/${encodeURIComponent(d.spawnAgent.id)}`);
      }}
    >
      <Field label="Name" value={name} onInput={setName} required />
      <BackendFields draft={backend} onChange={setBackend} />
      <Field label="Capabilities (comma-separated)" value={caps} onInput={setCaps} />
      <Field label="Max concurrent tasks" type="number" min={1} value={concurrency} onInput={setConcurrency} placeholder="1" />
      <Field label="Project" value={project} onInput={setProject} placeholder="default" />
      <Field label="Labels (key=value, …)" value={labels} onInput={setLabels} />
      <Field label="Memory limit (MiB)" type="number" min={1} value={limits.memoryMiB ?? ""} onInput={limit("memoryMiB")} />
      <Field label="CPU time limit (s)" type="number" min={1} value={limits.cpuSeconds ?? ""} onInput={limit("cpuSeconds")} />
      <Field label="Open files limit" type="number" min={1} value={limits.openFiles ?? ""} onInput={limit("openFiles")} />
      <Field label="CPU cores (cgroup)" value={limits.cpuCores ?? ""} onInput={limit("cpuCores")} placeholder="0.5" />
    </CreateForm>
  );
}

interface Agent extends AgentRow {
  owner: string;
  pinned: boolean;
  wantedRunning: boolean;
  labels: { key: string; value: string }[];
  maxConcurrentTasks: number;
  tasksSucceeded: number;
  tasksFailed: number;
  messagesWaiting: number;
  topics: string[];
  lastError: string | null;
  createdAt: string;
  breaker: { state: string; consecutiveFailures: number };
  tokenUsage: { totalTokens: number };
  usage: { rssBytes: number; cpuSeconds: number; processes: number } | null;
  checkpoints: { id: string; createdAt: string; description: string; sizeBytes: number }[];
  messages: { id: string; from: string | null; priority: string; outcome: string; error: string | null; at: string }[];
}

const AGENT_FIELDS = `id name node project state backend capabilities runningTasks restarts updatedAt owner pinned wantedRunning
  labels { key value } maxConcurrentTasks tasksSucceeded tasksFailed messagesWaiting topics lastError createdAt
  breaker { state consecutiveFailures } tokenUsage { totalTokens } usage { rssBytes cpuSeconds processes }
  checkpoints { id createdAt description sizeBytes } messages { id from priority outcome error at }`;

const UPDATES = `subscription($id: ID!) { agentUpdates(id: $id) { ${AGENT_FIELDS} } }`;

function mutate(name: string) {
  return (id: string) => gql<Record<string, Agent>>(`mutation($id: ID!) { ${name}(id: $id) { ${AGENT_FIELDS} } }`, { id });
}

export function AgentControls({ agent, onChange }: { agent: Pick<Agent, "id" | "name" | "state">; onChange?: (a: Agent) => void }) {
  const s = agent.state;
  const run = (name: string) => async () => {
    const d = await mutate(name)(agent.id);
    onChange?.(d[name]);
  };
  const idle = ["DEFINED", "STOPPED", "FAILED"].includes(s);
  return (
    <>
      {idle ? <Action label="Start" run={run("startAgent")} done={`${agent.name} starting`} variant="primary" /> : null}
      {s === "RUNNING" ? <Action label="Pause" run={run("pauseAgent")} done={`${agent.name} paused`} /> : null}
      {s === "PAUSED" ? <Action label="Resume" run={run("resumeAgent")} done={`${agent.name} resumed`} /> : null}
      {!idle && s !== "STOPPING" ? <Action label="Stop" run={run("stopAgent")} confirm={agent.name} consequence="Its running tasks are stopped and requeued; it stays stopped until started." /> : null}
      <Action label="Restart" run={run("restartAgent")} done={`${agent.name} restarting`} />
      <Action label="Remove" variant="danger" run={() => gql(`mutation($id: ID!) { removeAgent(id: $id) { id } }`, { id: agent.id })} confirm={agent.name} consequence="It is stopped and forgotten; its checkpoints go with it." done={`${agent.name} removed`} />
    </>
  );
}

export function AgentView({ params }: { params: Record<string, string> }) {
  const id = params.id;
  const live = useLive<Agent>(UPDATES, id, "agentUpdates");
  const a = live.data;
  if (!a) return <Pending live={live} title={id} noun="agent" gone="REMOVED" />;
  return (
    <EntityPage live={live} noun="agent" gone="REMOVED" name={a.name} state={a.state} actions={<AgentControls agent={a} onChange={live.set} />}>
      <div class="cards">
        <Section title="Agent">
          <KeyValues
            items={[
              ["Id", <span class="mono">{a.id}</span>],
              ["Node", a.node],
              ["Project", a.project],
              ["Backend", <span class="mono">{a.backend}</span>],
              ["Capabilities", a.capabilities.join(", ") || "none"],
              ["Labels", <Labels labels={a.labels} />],
              ["Supervised by", <span class="mono">{a.owner}</span>],
              ["Wanted running", wanted(a)],
              ["Pinned to its node", a.pinned ? "yes" : "no"],
              ["Created", <Time at={a.createdAt} />],
              ["State since", <Time at={a.updatedAt} />],
              ["Last error", a.lastError],
            ]}
          />
        </Section>
        <Section title="Work and usage">
          <KeyValues
            items={[
              ["Running tasks", `${a.runningTasks} of ${a.maxConcurrentTasks}`],
              ["Succeeded", String(a.tasksSucceeded)],
              ["Failed", String(a.tasksFailed)],
              ["Restarts", String(a.restarts)],
              [
                "Breaker",
                <>
                  <Status state={a.breaker.state} /> <span class="muted">{count(a.breaker.consecutiveFailures, "consecutive failure")}</span>
                </>,
              ],
              ["Messages unanswered", String(a.messagesWaiting)],
              ["Topics", a.topics.join(", ") || "none"],
              ["Tokens used", String(a.tokenUsage.totalTokens)],
              ["Memory (RSS)", a.usage ? bytes(a.usage.rssBytes) : "no process"],
              ["CPU time", a.usage ? `${a.usage.cpuSeconds.toFixed(2)} s over ${count(a.usage.processes, "process", "processes")}` : "no process"],
            ]}
          />
        </Section>
      </div>
      <UsageCharts id={a.id} />
      {hasLog(a.backend) ? <LogPane id={a.id} /> : null}
      <Checkpoints agent={a} onRollback={live.set} />
      <AgentTasks id={a.id} />
      <Section title={a.messages.length ? `Messages (last ${a.messages.length})` : "Messages"}>
        {a.messages.length === 0 ? (
          <p class="empty">No message yet.</p>
        ) : (
          <div class="table-scroll">
            <table>
              <caption class="sr-only">Messages</caption>
              <thead>
                <tr>
                  <th scope="col">When</th>
                  <th scope="col">From</th>
                  <th scope="col">Priority</th>
                  <th scope="col">Outcome</th>
                </tr>
              </thead>
              <tbody>
                {[...a.messages].reverse().map((m) => (
                  <tr key={m.id}>
                    <td>
                      <Time at={m.at} />
                    </td>
                    <td class="mono">{m.from ?? "—"}</td>
                    <td>{m.priority}</td>
                    <td>
                      <Status state={m.outcome === "REPLIED" ? "SUCCEEDED" : "FAILED"} label={m.error ? `${m.outcome}: ${m.error}` : m.outcome} />
                    </td>
                  </tr>
                ))}
              </tbody>
            </table>
          </div>
        )}
      </Section>
      <Timeline subject={a.id} />
    </EntityPage>
  );
}

/**
 * `wantedRunning` is what the user asked for (true from a start until a stop), not what
 * happens: a FAILED agent is still wanted running, though its supervisor gave up on it.
 */
export function wanted(a: Pick<Agent, "wantedRunning" | "state">): string {
  if (!a.wantedRunning) return "no";
  return a.state === "FAILED" ? "yes, but it failed and its supervisor gave up restarting it" : "yes";
}

function Checkpoints({ agent, onRollback }: { agent: Agent; onRollback: (a: Agent) => void }) {
  const [description, setDescription] = useState("");
  // Its backend is asked for its state, so only a running agent can answer (others get CONFLICT).
  const running = agent.state === "RUNNING";
  return (
    <Section
      title="Checkpoints"
      actions={
        running ? (
          <>
            <label class="filter">
              <span>Description</span>
              <input value={description} onInput={(e) => setDescription((e.target as HTMLInputElement).value)} />
            </label>
            <Action
              label="Create checkpoint"
              done="Checkpoint saved"
              run={async () => {
                await gql(`mutation($id: ID!, $d: String!) { checkpointAgent(id: $id, description: $d) { id } }`, { id: agent.id, d: description });
                setDescription("");
              }}
            />
          </>
        ) : canAct.value ? (
          <span class="muted">A checkpoint is taken from a running agent; this one is {agent.state}.</span>
        ) : null
      }
    >
      {agent.checkpoints.length === 0 ? (
        <p class="empty">No checkpoint kept.</p>
      ) : (
        <div class="table-scroll">
          <table>
            <caption class="sr-only">Checkpoints</caption>
            <thead>
              <tr>
                <th scope="col">Saved</th>
                <th scope="col">Description</th>
                <th scope="col">Size</th>
                <th scope="col">
                  <span class="sr-only">Actions</span>
                </th>
              </tr>
            </thead>
            <tbody>
              {[...agent.checkpoints].reverse().map((c) => (
                <tr key={c.id}>
                  <td>
                    <Time at={c.createdAt} />
                  </td>
                  <td>{c.description || <span class="muted">{c.id}</span>}</td>
                  <td>{bytes(c.sizeBytes)}</td>
                  <td>
                    <Action
                      label="Roll back"
                      confirm={agent.name}
                      consequence={`Its state goes back to the checkpoint of ${c.createdAt}; it restarts from there.`}
                      done={`${agent.name} rolled back`}
                      run={async () => {
                        const d = await gql<{ rollbackAgent: Agent }>(`mutation($id: ID!, $c: ID!) { rollbackAgent(id: $id, checkpointId: $c) { ${AGENT_FIELDS} } }`, { id: agent.id, c: c.id });
                        onRollback(d.rollbackAgent);
                      }}
                    />
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
    </Section>
  );
}

interface TaskRow {
  id: string;
  state: string;
  capability: string | null;
  agentName: string | null;
  attempts: number;
  createdAt: string;
  finishedAt: string | null;
  error: string | null;
}

function AgentTasks({ id }: { id: string }) {
  const tasks = useQuery<{ tasks: { nodes: TaskRow[]; totalCount: number } }>(`query($a: ID!) { tasks(agentId: $a, first: 20) { nodes { id state capability agentName attempts createdAt finishedAt error } totalCount } }`, { a: id });
  useRefreshOn(() => void tasks.refetch(), ["TASK_"], undefined, 1000);
  const rows = tasks.data?.tasks.nodes ?? [];
  const tails = shortIds(rows.map((t) => t.id));
  return (
    <Section title={`Tasks (${tasks.data?.tasks.totalCount ?? "…"})`} actions={<a href={`/tasks?agent=${encodeURIComponent(id)}`}>All its tasks</a>}>
      <ErrorBox error={tasks.error} />
      {rows.length === 0 ? (
        <p class="empty">{tasks.loading ? "Loading…" : "No task yet."}</p>
      ) : (
        <div class="table-scroll">
          <table>
            <caption class="sr-only">Its tasks</caption>
            <thead>
              <tr>
                <th scope="col">Task</th>
                <th scope="col">State</th>
                <th scope="col">Attempts</th>
                <th scope="col">Submitted</th>
                <th scope="col">Error</th>
              </tr>
            </thead>
            <tbody>
              {rows.map((t) => (
                <tr key={t.id}>
                  <td>
                    <a href={`/tasks/${encodeURIComponent(t.id)}`} title={t.id}>
                      {taskName(t, {}, tails)}
                    </a>
                  </td>
                  <td>
                    <Status state={t.state} />
                  </td>
                  <td>{t.attempts}</td>
                  <td>
                    <Time at={t.createdAt} />
                  </td>
                  <td>{t.error ?? ""}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
    </Section>
  );
}

/**
 * Its processes' CPU and memory over the last hour (one point per history interval), read
 * when the page opens and again every 10 s.
 */
function UsageCharts({ id }: { id: string }) {
  const [samples, setSamples] = useState<UsageSample[] | null>(null);
  const [error, setError] = useState<ApiError | null>(null);
  useEffect(() => {
    let gone = false;
    const load = () =>
      void gql<{ agent: { usageHistory: UsageSample[] } | null }>(USAGE_QUERY, { id, minutes: 60 }).then(
        (d) => {
          if (gone) return;
          setSamples(d.agent?.usageHistory ?? []);
          setError(null);
        },
        (e: ApiError) => !gone && setError(e),
      );
    load();
    const t = setInterval(load, 10_000);
    return () => {
      gone = true;
      clearInterval(t);
    };
  }, [id]);
  const series = useMemo(() => usageSeries(samples ?? []), [samples]);
  return (
    <Section title="Process usage">
      <ErrorBox error={error} />
      {samples === null ? (
        error ? null : (
          <Loading what="its usage" />
        )
      ) : series.xs.length === 0 ? (
        <p class="empty">No process usage recorded (this agent runs no process, or has not been sampled yet).</p>
      ) : (
        <div class="cards">
          {/* A null CPU point (the first, or processes replaced) is a gap in the line: uPlot draws nulls so. An idle agent's
              CPU is thousandths of a core, so the axis fits the values rather than uPlot's 0–100. */}
          <Chart title="CPU of its processes, cores busy, last hour" xs={series.xs} ys={[series.cpu]} series={[{ label: "cpu", unit: "cores", colour: "--running" }]} height={120} floor={0.01} />
          <Chart
            key={series.unit}
            title={`Memory of its processes (RSS), last hour${series.latestRss === null ? "" : `, now ${bytes(series.latestRss)}`}`}
            xs={series.xs}
            ys={[series.rss]}
            series={[{ label: "rss", unit: series.unit, colour: "--ok" }]}
            height={120}
          />
        </div>
      )}
    </Section>
  );
}

/**
 * An entity's events: the last 100 before the page opened (read through the node's index
 * of events by subject, however old), then each new one as it happens.
 */
export function Timeline({ subject, title = "Timeline" }: { subject: string; title?: string }) {
  const [events, setEvents] = useState<TroupeEvent[] | null>(null);
  useEffect(() => {
    let gone = false;
    void gql<{ events: TroupeEvent[] }>(`query($subject: ID) { events(subject: $subject, last: 100) { ${EVENT_FIELDS} } }`, { subject })
      .then((d) => !gone && setEvents((now) => merge(now ?? [], d.events.map(normalise))))
      .catch(() => !gone && setEvents((now) => now ?? []));
    return () => {
      gone = true;
    };
  }, [subject]);
  useEvents((batch) => {
    const mine = batch.filter((e) => e.subject === subject);
    if (mine.length) setEvents((now) => merge(now ?? [], mine));
  });
  return (
    <Section title={title} actions={<a href={`/events?subject=${encodeURIComponent(subject)}`}>In the event stream</a>}>
      {events === null ? (
        <Loading what="events" />
      ) : events.length === 0 ? (
        <p class="empty">No event about it lately.</p>
      ) : (
        <ol class="timeline" aria-label={title} tabIndex={0}>
          {events.slice(0, 100).map((e) => (
            <li key={e.seq}>
              <EventLine event={e} />
            </li>
          ))}
        </ol>
      )}
    </Section>
  );
}

/** Newest first, each seq once. */
function merge(a: TroupeEvent[], b: TroupeEvent[]): TroupeEvent[] {
  const bySeq = new Map<number, TroupeEvent>();
  for (const e of [...a, ...b]) bySeq.set(e.seq, e);
  return [...bySeq.values()].sort((x, y) => y.seq - x.seq).slice(0, 500);
}
