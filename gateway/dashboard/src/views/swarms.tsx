// Swarms: the list with a create form; and a swarm's page, live through swarmUpdates, with
// its topology drawn (a hierarchy under the coordinator, or a mesh), members, queue, shared
// memory browser, tasks with their results and votes, and the scale, topology, task and
// destroy controls.
import { useState } from "preact/hooks";
import { gql } from "../lib/gql";
import { useLive, useQuery, useRefreshOn } from "../lib/hooks";
import { navigate } from "../lib/router";
import { bytes, count } from "../lib/format";
import { Status } from "../components/status";
import { Time } from "../components/time";
import { Action } from "../components/actions";
import { Pending, EntityPage } from "../components/entity";
import { ErrorBox, KeyValues, Loading, Page, Section } from "../components/page";
import { Choice, CreateForm, Field, Json, TextArea, parseJson, parseList } from "../components/forms";
import { BackendFields } from "../components/backend";
import { shortIds, taskName, useTasks } from "../lib/names";
import { backendInput, newDraft, type BackendDraft } from "../lib/backend";
import { canAct } from "../lib/session";
import { Timeline } from "./agents";

const TOPOLOGIES = ["HIERARCHICAL", "MESH", "ADAPTIVE"];
const STRATEGIES = ["ONE_FOR_ONE", "ONE_FOR_ALL", "REST_FOR_ONE"];

interface SwarmRow {
  id: string;
  name: string;
  node: string;
  topology: string;
  activeTopology: string;
  status: string;
  statusReason: string;
  size: number;
  minAgents: number;
  maxAgents: number;
  createdAt: string;
  queue: { running: number; slots: number };
}

const ROW = "id name node topology activeTopology status statusReason size minAgents maxAgents createdAt queue { running slots }";

export function SwarmsView() {
  const list = useQuery<{ swarms: SwarmRow[] }>(`{ swarms { ${ROW} } }`);
  useRefreshOn(() => void list.refetch(), ["SWARM_"], undefined, 1000);
  const rows = list.data?.swarms ?? [];
  return (
    <Page title="Swarms" actions={<CreateSwarm />}>
      <ErrorBox error={list.error} />
      {!list.data ? (
        <Loading what="swarms" />
      ) : rows.length === 0 ? (
        <p class="empty">No swarm yet. Create one: a coordinator and its members, supervised together.</p>
      ) : (
        <div class="table-scroll">
          <table>
            <caption class="sr-only">Swarms</caption>
            <thead>
              <tr>
                <th scope="col">Name</th>
                <th scope="col">Status</th>
                <th scope="col">Topology</th>
                <th scope="col">Members</th>
                <th scope="col">Busy slots</th>
                <th scope="col">Node</th>
                <th scope="col">Created</th>
              </tr>
            </thead>
            <tbody>
              {rows.map((s) => (
                <tr key={s.id}>
                  <td>
                    <a href={`/swarms/${encodeURIComponent(s.id)}`}>{s.name}</a>
                  </td>
                  <td>
                    <Status state={s.status} /> <span class="muted">{s.statusReason}</span>
                  </td>
                  <td>{s.topology === s.activeTopology ? s.topology : `${s.topology} (now ${s.activeTopology})`}</td>
                  <td>
                    {s.size} <span class="muted">({s.minAgents}–{s.maxAgents})</span>
                  </td>
                  <td>
                    {s.queue.running} / {s.queue.slots}
                  </td>
                  <td>{s.node}</td>
                  <td>
                    <Time at={s.createdAt} />
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
    </Page>
  );
}

function CreateSwarm() {
  const [name, setName] = useState("");
  const [topology, setTopology] = useState("HIERARCHICAL");
  const [strategy, setStrategy] = useState("ONE_FOR_ONE");
  const [count, setCount] = useState("3");
  const [backend, setBackend] = useState<BackendDraft>(newDraft("builtin"));
  const [caps, setCaps] = useState("");
  return (
    <CreateForm
      open="Create swarm"
      submitLabel="Create"
      submit={async () => {
        const n = name.trim();
        const input = {
          name: n,
          topology,
          strategy,
          templates: Number(count) > 0 ? [{ agent: { name: `${n}-member`, backend: backendInput(backend), capabilities: parseList(caps) }, count: Number(count) }] : [],
        };
        const d = await gql<{ createSwarm: { id: string } }>(`mutation($input: CreateSwarmInput!) { createSwarm(input: $input) { id } }`, { input });
        navigate(`/swarms/${encodeURIComponent(d.createSwarm.id)}`);
      }}
    >
      <Field label="Swarm name" value={name} onInput={setName} required />
      <Choice label="Topology" value={topology} options={TOPOLOGIES} onChange={setTopology} />
      <Choice label="Restart strategy" value={strategy} options={STRATEGIES} onChange={setStrategy} />
      <Field label="Members" type="number" min={0} value={count} onInput={setCount} />
      <BackendFields draft={backend} onChange={setBackend} prefix="Members' " />
      <Field label="Members' capabilities" value={caps} onInput={setCaps} />
    </CreateForm>
  );
}

interface Member {
  id: string;
  name: string;
  state: string;
  runningTasks: number;
  restarts: number;
  capabilities: string[];
}

interface SwarmTask {
  id: string;
  mode: string;
  state: string;
  topology: string | null;
  subtasks: string[];
  result: unknown;
  error: string | null;
  createdAt: string;
  finishedAt: string | null;
}

interface Swarm extends SwarmRow {
  strategy: string;
  statusSince: string;
  memoryLimitBytes: number;
  parent: { id: string; name: string } | null;
  leader: { id: string; name: string } | null;
  teams: { id: string; name: string; status: string }[];
  members: Member[];
  tasks: SwarmTask[];
  metrics: { coordinatorStarts: number; tasksRunning: number; tasksSucceeded: number; tasksFailed: number };
}

const FIELDS = `${ROW} strategy statusSince memoryLimitBytes parent { id name } leader { id name } teams { id name status }
  members { id name state runningTasks restarts capabilities }
  tasks(first: 20) { id mode state topology subtasks result error createdAt finishedAt }
  metrics { coordinatorStarts tasksRunning tasksSucceeded tasksFailed }`;

const UPDATES = `subscription($id: ID!) { swarmUpdates(id: $id) { ${FIELDS} } }`;

export function SwarmView({ params }: { params: Record<string, string> }) {
  const id = params.id;
  const live = useLive<Swarm>(UPDATES, id, "swarmUpdates");
  const s = live.data;
  if (!s) return <Pending live={live} title={`Swarm ${id}`} noun="swarm" gone="DESTROYED" />;
  return (
    <EntityPage live={live} noun="swarm" gone="DESTROYED" name={s.name} state={s.status} actions={<SwarmControls swarm={s} onChange={live.set} />}>
      <div class="cards">
        <Section title="Swarm">
          <KeyValues
            items={[
              ["Id", <span class="mono">{s.id}</span>],
              ["Status", `${s.status}: ${s.statusReason}`],
              ["Since", <Time at={s.statusSince} />],
              ["Topology", s.topology === s.activeTopology ? s.topology : `${s.topology}, handing out work as ${s.activeTopology}`],
              ["Restart strategy", s.strategy],
              ["Members", `${s.size} (between ${s.minAgents} and ${s.maxAgents})`],
              ["Queue", `${s.queue.running} running on ${count(s.queue.slots, "slot")}`],
              ["Coordinator starts", String(s.metrics.coordinatorStarts)],
              ["Tasks", `${s.metrics.tasksRunning} running, ${s.metrics.tasksSucceeded} succeeded, ${s.metrics.tasksFailed} failed`],
              ["Memory limit", bytes(s.memoryLimitBytes)],
              ["Node", s.node],
              ["Parent", s.parent ? <a href={`/swarms/${encodeURIComponent(s.parent.id)}`}>{s.parent.name}</a> : null],
              ["Led by", s.leader ? <a href={`/agents/${encodeURIComponent(s.leader.id)}`}>{s.leader.name}</a> : null],
            ]}
          />
        </Section>
        <Section title="Topology">
          <TopologyDrawing swarm={s} />
        </Section>
      </div>
      <Section title={`Members (${s.members.length})`}>
        {s.members.length === 0 ? (
          <p class="empty">No member: scale it up.</p>
        ) : (
          <div class="table-scroll">
            <table>
              <caption class="sr-only">Members</caption>
              <thead>
                <tr>
                  <th scope="col">Member</th>
                  <th scope="col">State</th>
                  <th scope="col">Running tasks</th>
                  <th scope="col">Restarts</th>
                  <th scope="col">Capabilities</th>
                </tr>
              </thead>
              <tbody>
                {s.members.map((m) => (
                  <tr key={m.id}>
                    <td>
                      <a href={`/agents/${encodeURIComponent(m.id)}`}>{m.name}</a>
                    </td>
                    <td>
                      <Status state={m.state} />
                    </td>
                    <td>{m.runningTasks}</td>
                    <td>{m.restarts}</td>
                    <td>{m.capabilities.join(", ") || "—"}</td>
                  </tr>
                ))}
              </tbody>
            </table>
          </div>
        )}
        {s.teams.length ? (
          <p>
            Sub-teams:{" "}
            {s.teams.map((t) => (
              <a key={t.id} href={`/swarms/${encodeURIComponent(t.id)}`}>
                {t.name} ({t.status}){" "}
              </a>
            ))}
          </p>
        ) : null}
      </Section>
      <SwarmTasks swarm={s} />
      <MemoryBrowser id={s.id} />
      <Timeline subject={s.id} />
    </EntityPage>
  );
}

function SwarmControls({ swarm, onChange }: { swarm: Swarm; onChange: (s: Swarm) => void }) {
  const [size, setSize] = useState(String(swarm.size));
  const [topology, setTopology] = useState(swarm.topology);
  if (!canAct.value) return null;
  return (
    <>
      <label class="filter">
        <span>Size</span>
        <input type="number" min={0} value={size} onInput={(e) => setSize((e.target as HTMLInputElement).value)} style={{ width: "5em" }} />
      </label>
      <Action
        label="Scale"
        done={`${swarm.name} scaling to ${size}`}
        run={async () => onChange((await gql<{ scaleSwarm: Swarm }>(`mutation($id: ID!, $n: Int!) { scaleSwarm(id: $id, size: $n) { ${FIELDS} } }`, { id: swarm.id, n: Number(size) })).scaleSwarm)}
      />
      <Choice label="Topology" value={topology} options={TOPOLOGIES} onChange={setTopology} />
      <Action
        label="Set topology"
        disabled={topology === swarm.topology}
        done={`${swarm.name} now ${topology}`}
        run={async () => onChange((await gql<{ setTopology: Swarm }>(`mutation($id: ID!, $t: Topology!) { setTopology(id: $id, topology: $t) { ${FIELDS} } }`, { id: swarm.id, t: topology })).setTopology)}
      />
      <Action
        label="Destroy"
        variant="danger"
        confirm={swarm.name}
        consequence="Its coordinator and every member are stopped and removed; its memory goes with it."
        done={`${swarm.name} destroyed`}
        run={() => gql(`mutation($id: ID!) { destroySwarm(id: $id) { id } }`, { id: swarm.id })}
      />
    </>
  );
}

/** A hierarchy (the coordinator above its members) or a mesh (every member with every other). */
function TopologyDrawing({ swarm }: { swarm: Swarm }) {
  const members = swarm.members;
  const mesh = swarm.activeTopology === "MESH";
  const W = 360;
  const R = 14;
  if (!members.length) return <p class="empty">No member to draw.</p>;
  let points: { x: number; y: number }[];
  let height: number;
  const edges: [number, number][] = [];
  const coordinator = { x: W / 2, y: 24 };
  if (mesh) {
    height = 220;
    const c = { x: W / 2, y: height / 2 };
    const r = Math.min(90, 20 + members.length * 10);
    points = members.map((_, i) => ({ x: c.x + r * Math.cos((2 * Math.PI * i) / members.length - Math.PI / 2), y: c.y + r * Math.sin((2 * Math.PI * i) / members.length - Math.PI / 2) }));
    if (members.length <= 24) for (let i = 0; i < members.length; i++) for (let j = i + 1; j < members.length; j++) edges.push([i, j]);
  } else {
    const perRow = 8;
    const rows = Math.ceil(members.length / perRow);
    height = 80 + rows * 50;
    points = members.map((_, i) => {
      const row = Math.floor(i / perRow);
      const inRow = Math.min(perRow, members.length - row * perRow);
      return { x: ((i % perRow) + 0.5) * (W / inRow), y: 90 + row * 50 };
    });
  }
  const description = mesh
    ? `Mesh: ${members.length === 1 ? "1 member takes" : `${members.length} members take`} work from the shared queue, each linked to the others.`
    : `Hierarchy: the coordinator hands work to ${count(members.length, "member")}.`;
  return (
    <figure class="graph">
      <svg viewBox={`0 0 ${W} ${height}`} width="100%" height={height} role="group" aria-label={description}>
        {!mesh && points.map((p, i) => <line key={`c${i}`} class="edge" x1={coordinator.x} y1={coordinator.y} x2={p.x} y2={p.y} />)}
        {edges.map(([a, b]) => (
          <line key={`${a}-${b}`} class="edge" x1={points[a].x} y1={points[a].y} x2={points[b].x} y2={points[b].y} />
        ))}
        {!mesh ? (
          <g>
            <rect class="node tone-running" x={coordinator.x - 50} y={coordinator.y - 14} width={100} height={28} rx={6} />
            <text x={coordinator.x} y={coordinator.y + 4} text-anchor="middle">
              coordinator
            </text>
          </g>
        ) : null}
        {members.map((m, i) => (
          <a key={m.id} href={`/agents/${encodeURIComponent(m.id)}`}>
            <circle class={`node state-${m.state === "RUNNING" ? "ok" : "other"}`} cx={points[i].x} cy={points[i].y} r={R}>
              <title>
                {m.name}: {m.state}
              </title>
            </circle>
            <text x={points[i].x} y={points[i].y + 4} text-anchor="middle">
              {m.state === "RUNNING" ? "●" : "○"}
            </text>
          </a>
        ))}
      </svg>
      <figcaption class="muted">{description} ● running, ○ not running.</figcaption>
    </figure>
  );
}

function SwarmTasks({ swarm }: { swarm: Swarm }) {
  const [payload, setPayload] = useState("{}");
  const [mode, setMode] = useState("SINGLE");
  const [k, setK] = useState("3");
  const [aggregate, setAggregate] = useState("MAJORITY");
  const tails = shortIds(swarm.tasks.flatMap((t) => [t.id, ...t.subtasks]));
  // Its subtasks are tasks, named as everywhere ("plan · 5e1c2a"); a swarm task itself has no capability.
  const subtasks = useTasks(swarm.tasks.flatMap((t) => t.subtasks));
  return (
    <Section
      title="Tasks"
      actions={
        <CreateForm
          open="Submit swarm task"
          submitLabel="Submit"
          submit={() =>
            gql(`mutation($id: ID!, $input: SubmitSwarmTaskInput!) { submitSwarmTask(id: $id, input: $input) { id } }`, {
              id: swarm.id,
              input: mode === "SCATTER_GATHER" ? { mode, payload: parseJson(payload), k: Number(k), aggregate } : { mode, payload: parseJson(payload) },
            })
          }
        >
          <Choice label="Mode" value={mode} options={["SINGLE", "SCATTER_GATHER"]} onChange={setMode} />
          {mode === "SCATTER_GATHER" ? (
            <>
              <Field label="Members asked (k)" type="number" min={1} value={k} onInput={setK} />
              <Choice label="Aggregate" value={aggregate} options={["MAJORITY", "FIRST", "ALL"]} onChange={setAggregate} />
            </>
          ) : null}
          <TextArea label="Payload (JSON)" value={payload} onInput={setPayload} />
        </CreateForm>
      }
    >
      {swarm.tasks.length === 0 ? (
        <p class="empty">No swarm task yet.</p>
      ) : (
        <div class="table-scroll">
          <table>
            <caption class="sr-only">Swarm tasks, newest first</caption>
            <thead>
              <tr>
                <th scope="col">Task</th>
                <th scope="col">Mode</th>
                <th scope="col">State</th>
                <th scope="col">Subtasks</th>
                <th scope="col">Result and votes</th>
                <th scope="col">Submitted</th>
              </tr>
            </thead>
            <tbody>
              {swarm.tasks.map((t) => (
                <tr key={t.id}>
                  <td title={t.id}>{taskName({ id: t.id }, {}, tails)}</td>
                  <td>
                    {t.mode}
                    {t.topology ? ` (${t.topology})` : ""}
                  </td>
                  <td>
                    <Status state={t.state} />
                  </td>
                  <td>
                    <ul class="row">
                      {t.subtasks.map((st) => (
                        <li key={st}>
                          <a href={`/tasks/${encodeURIComponent(st)}`} title={st}>
                            {taskName(subtasks[st] ?? { id: st }, {}, tails)}
                          </a>
                        </li>
                      ))}
                    </ul>
                  </td>
                  <td>{t.error ? <span class="error">{t.error}</span> : <Json value={t.result} label={`Result of ${t.id}`} />}</td>
                  <td>
                    <Time at={t.createdAt} />
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

interface Entry {
  key: string;
  value: unknown;
  version: number;
  expiresAt: string | null;
  updatedAt: string;
}

function MemoryBrowser({ id }: { id: string }) {
  const [prefix, setPrefix] = useState("");
  const memory = useQuery<{ swarm: { memory: Entry[] } | null }>(`query($id: ID!, $p: String!) { swarm(id: $id) { memory(prefix: $p, first: 100) { key value version expiresAt updatedAt } } }`, { id, p: prefix });
  useRefreshOn(() => void memory.refetch(), ["SWARM_MEMORY"], id, 500);
  const [key, setKey] = useState("");
  const [value, setValue] = useState("");
  const entries = memory.data?.swarm?.memory ?? [];
  return (
    <Section
      title="Shared memory"
      actions={
        <CreateForm
          open="Set key"
          submitLabel="Set"
          submit={async () => {
            await gql(`mutation($id: ID!, $k: String!, $v: JSON!) { setSwarmMemory(id: $id, key: $k, value: $v) { version } }`, { id, k: key.trim(), v: parseJson(value) });
            void memory.refetch();
          }}
        >
          <Field label="Key" value={key} onInput={setKey} required />
          <TextArea label="Value (JSON)" value={value} onInput={setValue} />
        </CreateForm>
      }
    >
      <label class="filter">
        <span>Key prefix</span>
        <input type="search" value={prefix} onInput={(e) => setPrefix((e.target as HTMLInputElement).value)} />
      </label>
      <ErrorBox error={memory.error} />
      {entries.length === 0 ? (
        <p class="empty">{prefix ? "No key starts so." : "Its memory is empty."}</p>
      ) : (
        <div class="table-scroll">
          <table>
            <caption class="sr-only">Memory entries</caption>
            <thead>
              <tr>
                <th scope="col">Key</th>
                <th scope="col">Value</th>
                <th scope="col">Version</th>
                <th scope="col">Updated</th>
                <th scope="col">Expires</th>
                <th scope="col">
                  <span class="sr-only">Actions</span>
                </th>
              </tr>
            </thead>
            <tbody>
              {entries.map((e) => (
                <tr key={e.key}>
                  <td class="mono">{e.key}</td>
                  <td>
                    <code>{JSON.stringify(e.value)}</code>
                  </td>
                  <td>{e.version}</td>
                  <td>
                    <Time at={e.updatedAt} />
                  </td>
                  <td>
                    <Time at={e.expiresAt} />
                  </td>
                  <td>
                    <Action
                      label="Delete"
                      variant="danger"
                      confirm={e.key}
                      done={`${e.key} deleted`}
                      run={async () => {
                        await gql(`mutation($id: ID!, $k: String!, $v: Int64) { deleteSwarmMemory(id: $id, key: $k, expectVersion: $v) }`, { id, k: e.key, v: e.version });
                        void memory.refetch();
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
