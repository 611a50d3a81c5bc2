// Tasks: the list paged on the server with its filters in the query string (state, agent),
// the dead-letter queue with requeue, a submit form; and a task's page, live through
// taskUpdates, with its progress, attempts, payload and result, cancel and requeue, and the
// graph of what it depends on (drawn, with a text alternative), and an LLM task's transcript.
import { useEffect, useRef, useState } from "preact/hooks";
import { gql } from "../lib/gql";
import { useLive } from "../lib/hooks";
import { usePaged, useLiveList } from "../lib/paging";
import { navigate, query, setQuery } from "../lib/router";
import { count, duration } from "../lib/format";
import { shortIds, taskName, useAgentNames } from "../lib/names";
import { Grid } from "../components/grid";
import { Status } from "../components/status";
import { Time } from "../components/time";
import { Action } from "../components/actions";
import { ErrorBox, KeyValues, Loading, NewPill, Page, Section, Select } from "../components/page";
import { Choice, CreateForm, Field, Json, TextArea, parseJson, parseList } from "../components/forms";
import { Timeline } from "./agents";
import { Transcript } from "./transcript";

export const TASK_STATES = ["QUEUED", "RUNNING", "AWAITING_APPROVAL", "SUCCEEDED", "FAILED", "CANCELLED", "EXPIRED", "DEPENDENCY_FAILED", "DEAD"];
const ENDED = ["SUCCEEDED", "FAILED", "CANCELLED", "EXPIRED", "DEPENDENCY_FAILED", "DEAD"];
const PAGE = 200;

interface TaskRow {
  id: string;
  state: string;
  agentId: string | null;
  /** Null when it has no agent, or its agent is gone. */
  agentName: string | null;
  capability: string | null;
  attempts: number;
  failedAttempts: number;
  maxAttempts: number;
  createdAt: string;
  finishedAt: string | null;
  error: string | null;
  progress: { fraction: number | null; note: string | null } | null;
}

const ROW = "id state agentId agentName capability attempts failedAttempts maxAttempts createdAt finishedAt error progress { fraction note }";

const LIST = `query($first: Int, $after: String, $state: TaskState, $agentId: ID) {
  tasks(first: $first, after: $after, state: $state, agentId: $agentId) { nodes { ${ROW} } pageInfo { hasNextPage endCursor } totalCount missingNodes }
}`;
const DLQ = `query($first: Int, $after: String) {
  deadLetters(first: $first, after: $after) { nodes { ${ROW} } pageInfo { hasNextPage endCursor } totalCount missingNodes }
}`;

/**
 * The agent the filter names: an id (it has `@node`) as it is; a name looked up
 * (`agents(name:)`), the first of that name when several share it, with a note saying so.
 */
export function useAgentFilter(agent: string | null): { id: string | null; note: string } {
  const [found, setFound] = useState<{ name: string; id: string | null; note: string } | null>(null);
  const byName = !!agent && !agent.includes("@");
  useEffect(() => {
    if (!byName || !agent) return;
    let current = true;
    gql<{ agents: { nodes: { id: string }[] } }>(`query($n: String) { agents(name: $n, first: 2) { nodes { id } } }`, { n: agent })
      .then((d) => {
        const ids = d.agents.nodes.map((a) => a.id);
        const note = !ids.length ? `No agent is named ${agent}.` : ids.length > 1 ? `More than one agent is named ${agent}: the first one's tasks are shown; give an id for another.` : "";
        if (current) setFound({ name: agent, id: ids[0] ?? null, note });
      })
      .catch(() => current && setFound({ name: agent, id: null, note: "" }));
    return () => void (current = false);
  }, [agent, byName]);
  if (!byName || found?.name !== agent) return { id: agent, note: "" };
  return { id: found.id ?? agent, note: found.note };
}

export function TasksView() {
  const q = query.value;
  const dlq = q.get("view") === "dead";
  const state = q.get("state") || null;
  const agent = q.get("agent") || null;
  const named = useAgentFilter(agent);
  const list = usePaged<TaskRow>(dlq ? DLQ : LIST, dlq ? {} : { state, agentId: named.id }, (d) => (dlq ? d.deadLetters : d.tasks), PAGE);
  const reading = useRef(false);
  const live = useLiveList(list, ["TASK_"], reading, PAGE);
  const tails = shortIds(list.rows.map((t) => t.id));
  const columns = [
    {
      title: "Task",
      width: "minmax(140px, 1fr)",
      cell: (t: TaskRow) => (
        <a href={`/tasks/${encodeURIComponent(t.id)}`} title={t.id}>
          {taskName(t, {}, tails)}
        </a>
      ),
    },
    { title: "State", width: "150px", cell: (t: TaskRow) => <Status state={t.state} /> },
    {
      title: "Agent",
      width: "minmax(120px, 1fr)",
      cell: (t: TaskRow) =>
        t.agentId ? (
          <AgentLink id={t.agentId} name={t.agentName} />
        ) : (
          "—"
        ),
    },
    { title: "Capability", width: "110px", cell: (t: TaskRow) => t.capability ?? "—" },
    {
      title: "Attempts",
      width: "100px",
      cell: (t: TaskRow) => {
        const a = attemptsLabel(t);
        return <span title={a.starts}>{a.failed}</span>;
      },
    },
    { title: "Progress", width: "minmax(110px, 1fr)", cell: (t: TaskRow) => <Progress task={t} compact /> },
    { title: "Submitted", width: "120px", cell: (t: TaskRow) => <Time at={t.createdAt} /> },
    { title: "Error", width: "minmax(100px, 1fr)", cell: (t: TaskRow) => <span title={t.error ?? ""}>{t.error ?? ""}</span> },
  ];
  if (dlq)
    columns.push({
      title: "Requeue",
      width: "100px",
      cell: (t: TaskRow) => <Action label="Requeue" done={`Task ${taskName(t, {}, tails)} queued again`} run={async () => void (await gql(`mutation($id: ID!) { requeueTask(id: $id) { id } }`, { id: t.id }), list.reload())} />,
    });

  return (
    <Page title={dlq ? "Dead-letter queue" : "Tasks"} actions={<SubmitForm />}>
      <nav class="row tabs" aria-label="Task lists">
        <a href="/tasks" aria-current={dlq ? undefined : "page"}>
          All tasks
        </a>
        <a href="/tasks?view=dead" aria-current={dlq ? "page" : undefined}>
          Dead letters
        </a>
      </nav>
      {dlq ? (
        <p class="muted">Tasks that used up their attempts and wait here with their last error until requeued.</p>
      ) : (
        <div class="filters" role="search" aria-label="Filter tasks">
          <Select label="State" value={state ?? ""} options={TASK_STATES} onChange={(v) => setQuery({ state: v })} />
          <label class="filter">
            <span>Agent (name or id)</span>
            <input type="search" data-filter placeholder="press / to filter" value={agent ?? ""} onInput={(e) => setQuery({ agent: (e.target as HTMLInputElement).value.trim() })} />
          </label>
          <NewPill count={live.changes} onShow={live.show} />
        </div>
      )}
      <ErrorBox error={list.error} />
      {named.note ? <p class="muted">{named.note}</p> : null}
      {list.missing.length ? <p class="error">Not included (unreachable): {list.missing.join(", ")}</p> : null}
      <p class="muted" aria-live="polite">
        {list.total === null ? "" : `${count(list.total, "task")}${list.rows.length < list.total ? `, ${list.rows.length} loaded (more load as you scroll)` : ""}`}
      </p>
      <div onPointerEnter={() => (reading.current = true)} onPointerLeave={() => (reading.current = false)}>
        {list.loading && !list.rows.length ? (
          <Loading what="tasks" />
        ) : (
          <Grid
            label={dlq ? "Dead letters" : "Tasks"}
            rows={list.rows}
            total={list.total ?? undefined}
            rowKey={(t) => t.id}
            onOpen={(t) => navigate(`/tasks/${encodeURIComponent(t.id)}`)}
            onEnd={list.next}
            height={560}
            empty={dlq ? "The dead-letter queue is empty." : "No task matches."}
            columns={columns}
          />
        )}
      </div>
    </Page>
  );
}

/**
 * Attempts told against their limit: maxAttempts bounds failedAttempts, which requeueTask
 * resets to 0, while attempts counts every start, before a requeue too ("4 / 2" misled).
 */
export function attemptsLabel(t: { attempts: number; failedAttempts: number; maxAttempts: number }): { failed: string; starts: string } {
  return { failed: `${t.failedAttempts} of ${t.maxAttempts} failed`, starts: `${t.attempts} ${t.attempts === 1 ? "start" : "starts"}` };
}

function SubmitForm() {
  const [by, setBy] = useState("capability");
  const [target, setTarget] = useState("");
  const [payload, setPayload] = useState("{}");
  const [attempts, setAttempts] = useState("");
  const [deps, setDeps] = useState("");
  return (
    <CreateForm
      open="Submit task"
      submitLabel="Submit"
      submit={async () => {
        const t = target.trim();
        const input: Record<string, unknown> = { payload: parseJson(payload), dependsOn: parseList(deps) };
        if (by === "agent") input.agentId = t;
        else input.capability = t;
        if (attempts) input.maxAttempts = Number(attempts);
        const d = await gql<{ submitTask: { id: string } }>(`mutation($input: SubmitTaskInput!) { submitTask(input: $input) { id } }`, { input });
        navigate(`/tasks/${encodeURIComponent(d.submitTask.id)}`);
      }}
    >
      <Choice label="Run on" value={by} options={["capability", "agent"]} onChange={setBy} />
      <Field label={by === "agent" ? "Agent id" : "Capability"} value={target} onInput={setTarget} required />
      <TextArea label="Payload (JSON)" value={payload} onInput={setPayload} />
      <Field label="Max attempts" type="number" min={1} value={attempts} onInput={setAttempts} placeholder="3" />
      <Field label="Depends on (task ids, comma-separated)" value={deps} onInput={setDeps} />
    </CreateForm>
  );
}

function Progress({ task, compact }: { task: Pick<TaskRow, "state" | "progress">; compact?: boolean }) {
  // Only what the agent reported: a task that succeeded without reporting shows as done.
  const f = task.progress?.fraction;
  const note = task.progress?.note;
  if (f === null || f === undefined) {
    // A note with no fraction is news too: a held tool call says so ("AWAITING_APPROVAL: …").
    if (note) return compact ? <span title={note}>{note}</span> : <p class="progress-note">{note}</p>;
    const done = task.state === "SUCCEEDED";
    return <span class="muted">{compact ? (done ? "done" : "—") : done ? "Done; no progress was reported." : "No progress reported."}</span>;
  }
  const pct = Math.round(f * 100);
  return (
    <div class="bar-row">
      <div class="bar" role="progressbar" aria-label="Progress" aria-valuemin={0} aria-valuemax={100} aria-valuenow={pct}>
        <span style={{ width: `${pct}%` }} />
      </div>
      <span class="muted">
        {pct} %{!compact && note ? ` — ${note}` : ""}
      </span>
    </div>
  );
}

/** An agent by its name, its id on hover; by its id when its name is not known (it is gone). */
function AgentLink({ id, name }: { id: string; name: string | null | undefined }) {
  return (
    <a href={`/agents/${encodeURIComponent(id)}`} title={id} class={name ? undefined : "mono"}>
      {name ?? id}
    </a>
  );
}

/** Each failed attempt: when, on which agent (by name), and its error. */
function FailedAttempts({ errors }: { errors: Task["attemptErrors"] }) {
  const names = useAgentNames(errors.flatMap((e) => (e.agentId ? [e.agentId] : [])));
  return (
    <Section title="Failed attempts">
      <div class="table-scroll">
        <table>
          <caption class="sr-only">Failed attempts</caption>
          <thead>
            <tr>
              <th scope="col">Attempt</th>
              <th scope="col">When</th>
              <th scope="col">Agent</th>
              <th scope="col">Error</th>
            </tr>
          </thead>
          <tbody>
            {errors.map((e) => (
              <tr key={e.attempt}>
                <td>{e.attempt}</td>
                <td>
                  <Time at={e.at} />
                </td>
                <td>{e.agentId ? <AgentLink id={e.agentId} name={names[e.agentId] === e.agentId ? null : names[e.agentId]} /> : "—"}</td>
                <td>{e.error}</td>
              </tr>
            ))}
          </tbody>
        </table>
      </div>
    </Section>
  );
}

interface Task extends TaskRow {
  priority: string;
  timeoutMs: number | null;
  payload: unknown;
  result: unknown;
  waitingFor: string | null;
  startedAt: string | null;
  deadline: string | null;
  notBefore: string | null;
  dependsOn: string[];
  attemptErrors: { attempt: number; agentId: string | null; error: string; at: string }[];
}

const UPDATES = `subscription($id: ID!) { taskUpdates(id: $id) {
  ${ROW} priority timeoutMs payload result waitingFor startedAt deadline notBefore dependsOn
  attemptErrors { attempt agentId error at }
} }`;

export function TaskView({ params }: { params: Record<string, string> }) {
  const id = params.id;
  const live = useLive<Task>(UPDATES, id, "taskUpdates");
  const t = live.data;
  if (!t) {
    return <Page title={`Task ${shortIds([id]).get(id)}`}>{live.error ? <ErrorBox error={live.error} /> : <Loading what="the task" />}</Page>;
  }
  const ended = ENDED.includes(t.state);
  const attempts = attemptsLabel(t);
  return (
    <Page
      title={
        <>
          Task <span title={t.id}>{taskName(t)}</span> <Status state={t.state} />
        </>
      }
      actions={
        <>
          {!ended ? <Action label="Cancel" variant="danger" confirm={shortIds([t.id]).get(t.id)} consequence="A running attempt is stopped; the task ends CANCELLED." done="Task cancelled" run={() => gql(`mutation($id: ID!) { cancelTask(id: $id) { id } }`, { id: t.id })} /> : null}
          {ended && t.state !== "SUCCEEDED" ? <Action label="Requeue" done="Task queued again" run={() => gql(`mutation($id: ID!) { requeueTask(id: $id) { id } }`, { id: t.id })} /> : null}
        </>
      }
    >
      <ErrorBox error={live.error} />
      <div class="cards">
        <Section title="Task">
          <KeyValues
            items={[
              ["Id", <span class="mono">{t.id}</span>],
              ["Agent", t.agentId ? <AgentLink id={t.agentId} name={t.agentName} /> : "not yet chosen"],
              ["Capability", t.capability],
              ["Attempts", `${attempts.failed} (${attempts.starts})`],
              ["Priority", t.priority],
              ["Timeout", t.timeoutMs ? duration(t.timeoutMs) : "none"],
              ["Waiting for", t.waitingFor],
              ["Submitted", <Time at={t.createdAt} />],
              ["Started", <Time at={t.startedAt} />],
              ["Finished", <Time at={t.finishedAt} />],
              ["Deadline", <Time at={t.deadline} />],
              ["Not before", <Time at={t.notBefore} />],
            ]}
          />
        </Section>
        <Section title="Progress">
          <Progress task={t} />
          {t.error ? (
            <p class="error">
              <strong>Error</strong> {t.error}
            </p>
          ) : null}
        </Section>
      </div>
      <div class="cards">
        <Section title="Payload">
          <Json value={t.payload} label="Payload" />
        </Section>
        <Section title="Result">
          <Json value={t.result} label="Result" />
        </Section>
      </div>
      {t.attemptErrors.length ? <FailedAttempts errors={t.attemptErrors} /> : null}
      <Transcript task={t} />
      {t.dependsOn.length ? <DependencyGraph root={t} /> : null}
      <Timeline subject={t.id} />
    </Page>
  );
}

interface Dep {
  id: string;
  state: string;
  dependsOn: string[];
  capability?: string | null;
  agentName?: string | null;
}

/** Loads the tasks `root` depends on, and theirs, up to `depth` levels. */
async function dependencies(root: Dep, depth = 4): Promise<Map<string, Dep>> {
  const known = new Map<string, Dep>([[root.id, root]]);
  let frontier = root.dependsOn;
  for (let level = 0; level < depth && frontier.length; level++) {
    const wanted = [...new Set(frontier)].filter((id) => !known.has(id)).slice(0, 50);
    if (!wanted.length) break;
    const q = `query(${wanted.map((_, i) => `$i${i}: ID!`).join(", ")}) { ${wanted.map((_, i) => `t${i}: task(id: $i${i}) { id state dependsOn capability agentName }`).join(" ")} }`;
    const vars = Object.fromEntries(wanted.map((id, i) => [`i${i}`, id]));
    const d = await gql<Record<string, Dep | null>>(q, vars);
    frontier = [];
    wanted.forEach((id, i) => {
      const found = d[`t${i}`] ?? { id, state: "UNKNOWN", dependsOn: [] };
      known.set(id, found);
      frontier.push(...found.dependsOn);
    });
  }
  return known;
}

/** Columns by distance from the task: what must succeed first stands to the left. */
export function layoutDependencies(root: string, tasks: Map<string, Dep>): { id: string; x: number; y: number }[] {
  const depth = new Map<string, number>([[root, 0]]);
  const queue = [root];
  while (queue.length) {
    const id = queue.shift()!;
    for (const d of tasks.get(id)?.dependsOn ?? []) {
      if (!tasks.has(d)) continue;
      const next = depth.get(id)! + 1;
      if ((depth.get(d) ?? -1) < next && next < 20) {
        depth.set(d, next);
        queue.push(d);
      }
    }
  }
  const max = Math.max(...depth.values());
  const rows = new Map<number, number>();
  return [...depth.entries()].map(([id, d]) => {
    const y = rows.get(d) ?? 0;
    rows.set(d, y + 1);
    return { id, x: max - d, y };
  });
}

function DependencyGraph({ root }: { root: Task }) {
  const [tasks, setTasks] = useState<Map<string, Dep> | null>(null);
  const key = root.dependsOn.join(",");
  useEffect(() => {
    void dependencies(root).then(setTasks, () => setTasks(new Map([[root.id, root]])));
  }, [key]);
  if (!tasks) return <Loading what="dependencies" />;
  const all = new Map(tasks).set(root.id, root);
  const nodes = layoutDependencies(root.id, all);
  const tails = shortIds(nodes.map((n) => n.id));
  const at = new Map(nodes.map((n) => [n.id, n]));
  const W = 170;
  const H = 46;
  const width = (Math.max(...nodes.map((n) => n.x)) + 1) * W;
  const height = (Math.max(...nodes.map((n) => n.y)) + 1) * H;
  const edges: [string, string][] = [];
  for (const t of all.values()) for (const d of t.dependsOn) if (at.has(d) && at.has(t.id)) edges.push([d, t.id]);
  return (
    <Section title="Depends on">
      <figure class="graph">
        <svg width={width} height={height} role="group" aria-label="Dependency graph; the same as a list below">
          {edges.map(([from, to]) => {
            const a = at.get(from)!;
            const b = at.get(to)!;
            return <path key={`${from}>${to}`} class="edge" d={`M${a.x * W + 140},${a.y * H + 18} C${a.x * W + 155},${a.y * H + 18} ${b.x * W - 15},${b.y * H + 18} ${b.x * W},${b.y * H + 18}`} />;
          })}
          {nodes.map((n) => {
            const t = all.get(n.id)!;
            return (
              <a key={n.id} href={`/tasks/${encodeURIComponent(n.id)}`}>
                <rect class={`node tone-${t.state === "SUCCEEDED" ? "ok" : "idle"}`} x={n.x * W} y={n.y * H} width={140} height={36} rx={6} />
                <title>{n.id}</title>
                <text x={n.x * W + 8} y={n.y * H + 15}>
                  {taskName(t, {}, tails).slice(0, 22)}
                </text>
                <text x={n.x * W + 8} y={n.y * H + 30}>
                  {t.state}
                </text>
              </a>
            );
          })}
        </svg>
        <figcaption id="deps-text">
          <ul>
            {edges.map(([from, to]) => (
              <li key={`${from}>${to}`}>
                <a href={`/tasks/${encodeURIComponent(from)}`} title={from}>
                  {taskName(all.get(from) ?? { id: from }, {}, tails)}
                </a>{" "}
                ({all.get(from)?.state}) must succeed before {taskName(all.get(to) ?? { id: to }, {}, tails)} ({all.get(to)?.state})
              </li>
            ))}
          </ul>
        </figcaption>
      </figure>
    </Section>
  );
}
