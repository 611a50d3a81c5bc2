// VMs: the list paged on the server with host and state filters in the query string and a
// create form; and a VM's page, live through vmUpdates, with its controls and a migration
// shown phase by phase as it happens.
import { useEffect, useRef, useState } from "preact/hooks";
import { gql } from "../lib/gql";
import { useLive, useQuery } from "../lib/hooks";
import { usePaged, useLiveList } from "../lib/paging";
import { navigate, query, setQuery } from "../lib/router";
import { absolute, count, duration } from "../lib/format";
import { Grid } from "../components/grid";
import { Status } from "../components/status";
import { Time } from "../components/time";
import { Action } from "../components/actions";
import { Pending, EntityPage } from "../components/entity";
import { ErrorBox, KeyValues, Loading, NewPill, Page, Section, Select } from "../components/page";
import { Choice, CreateForm, Field, Labels, parseLabels } from "../components/forms";
import { canAct } from "../lib/session";
import { Timeline } from "./agents";
import { hostTitles, migrationTargets } from "./hosts";

export const VM_STATES = ["PENDING", "RUNNING", "PAUSED", "SHUTTING_DOWN", "STOPPED", "CRASHED", "SUSPENDED", "MISSING", "UNKNOWN"];
export const PHASES = ["PENDING", "SCHEDULING", "PREPARING_TARGET", "RUNNING", "SUCCEEDED"];
const PAGE = 200;

interface VmRow {
  id: string;
  name: string;
  state: string;
  hostId: string | null;
  restarts: number;
  spec: { vcpus: number; memoryMiB: number };
  migration: { phase: string } | null;
  createdAt: string;
}

const ROW = "id name state hostId restarts spec { vcpus memoryMiB } migration { phase } createdAt";
const LIST = `query($first: Int, $after: String, $host: ID, $state: VmState) {
  vms(first: $first, after: $after, host: $host, state: $state) { nodes { ${ROW} } pageInfo { hasNextPage endCursor } missingNodes }
}`;

interface HostRef {
  id: string;
  name: string;
  qualifiedName: string;
  state: string;
  node: string;
}

/**
 * The cluster's hosts, each with what it is called where a VM names it: its name, or
 * `sim-1@c` where nodes share the name (as on the hosts' cards). createVm and migrateVm take
 * either.
 */
function useHosts() {
  const q = useQuery<{ hosts: HostRef[] }>("{ hosts { id name qualifiedName state node } }");
  const hosts = q.data?.hosts ?? [];
  const titles = hostTitles(hosts);
  const title = (id: string | null | undefined) => (id ? (titles.get(id) ?? id) : null);
  return { hosts, title };
}

export function VmsView() {
  const q = query.value;
  const host = q.get("host") || null;
  const state = q.get("state") || null;
  const hosts = useHosts();
  const list = usePaged<VmRow>(LIST, { host, state }, (d) => d.vms, PAGE);
  const reading = useRef(false);
  const live = useLiveList(list, ["VM_"], reading, PAGE);
  const names = hosts.hosts.map((h) => hosts.title(h.id) ?? h.name);
  return (
    <Page title="VMs" actions={<CreateVm hosts={names} />}>
      <div class="filters" role="search" aria-label="Filter VMs">
        <Select label="Host" value={host ?? ""} options={hosts.hosts.map((h) => h.id)} names={Object.fromEntries(hosts.hosts.map((h) => [h.id, hosts.title(h.id) ?? h.name]))} onChange={(v) => setQuery({ host: v })} />
        <Select label="State" value={state ?? ""} options={VM_STATES} onChange={(v) => setQuery({ state: v })} />
        <NewPill count={live.changes} onShow={live.show} />
      </div>
      <ErrorBox error={list.error} />
      {list.missing.length ? <p class="error">Not included (unreachable): {list.missing.join(", ")}</p> : null}
      <div onPointerEnter={() => (reading.current = true)} onPointerLeave={() => (reading.current = false)}>
        {list.loading && !list.rows.length ? (
          <Loading what="VMs" />
        ) : (
          <Grid
            label="VMs"
            rows={list.rows}
            rowKey={(v) => v.id}
            onOpen={(v) => navigate(`/vms/${encodeURIComponent(v.id)}`)}
            onEnd={list.next}
            height={560}
            empty="No VM matches. Create one: it is placed on a host with room."
            columns={[
              { title: "Name", width: "minmax(140px, 1fr)", cell: (v) => <a href={`/vms/${encodeURIComponent(v.id)}`}>{v.name}</a> },
              { title: "State", width: "140px", cell: (v) => <Status state={v.state} /> },
              { title: "Host", width: "120px", cell: (v) => hosts.title(v.hostId) ?? "—" },
              { title: "vCPUs", width: "60px", cell: (v) => v.spec.vcpus },
              { title: "Memory", width: "90px", cell: (v) => `${v.spec.memoryMiB} MiB` },
              { title: "Migration", width: "150px", cell: (v) => (v.migration ? <Status state={v.migration.phase} /> : "—") },
              { title: "Restarts", width: "70px", cell: (v) => v.restarts },
              { title: "Created", width: "120px", cell: (v) => <Time at={v.createdAt} /> },
            ]}
          />
        )}
      </div>
    </Page>
  );
}

function CreateVm({ hosts }: { hosts: string[] }) {
  const [name, setName] = useState("");
  const [vcpus, setVcpus] = useState("1");
  const [memory, setMemory] = useState("512");
  const [host, setHost] = useState("");
  const [labels, setLabels] = useState("");
  return (
    <CreateForm
      open="Create VM"
      submitLabel="Create"
      submit={async () => {
        const input = { name: name.trim(), vcpus: Number(vcpus), memoryMiB: Number(memory), host: host || null, labels: parseLabels(labels) };
        const d = await gql<{ createVm: { id: string } }>(`mutation($input: CreateVmInput!) { createVm(input: $input) { id } }`, { input });
        navigate(`/vms/${encodeURIComponent(d.createVm.id)}`);
      }}
    >
      <Field label="VM name" value={name} onInput={setName} required />
      <Field label="vCPUs" type="number" min={1} value={vcpus} onInput={setVcpus} required />
      <Field label="Memory (MiB)" type="number" min={1} value={memory} onInput={setMemory} required />
      <Choice label="Host" value={host} options={hosts} blank="the placer's choice" onChange={setHost} />
      <Field label="Labels (key=value, …)" value={labels} onInput={setLabels} />
    </CreateForm>
  );
}

interface Migration {
  id: string;
  phase: string;
  kind: string | null;
  sourceHost: string;
  targetHost: string | null;
  reason: string;
  error: string | null;
  startedAt: string;
  finishedAt: string | null;
}

interface Vm extends VmRow {
  reason: string | null;
  observedAt: string | null;
  lastError: string | null;
  spec: VmRow["spec"] & { labels: { key: string; value: string }[]; runPolicy: string; running: boolean; placement: string; antiAffinityGroup: string | null };
  stats: { cpuCores: number; memoryKiB: number; sampledAt: string | null };
  migration: Migration | null;
}

const FIELDS = `${ROW} reason observedAt lastError
  spec { vcpus memoryMiB labels { key value } runPolicy running placement antiAffinityGroup }
  stats { cpuCores memoryKiB sampledAt }
  migration { id phase kind sourceHost targetHost reason error startedAt finishedAt }`;
const UPDATES = `subscription($id: ID!) { vmUpdates(id: $id) { ${FIELDS} } }`;

export type Step = { phase: string; status: "done" | "now" | "todo" | "failed" };

/**
 * Every phase of a migration, marked done, now or to come. A phase is done when a later one
 * was reached; for a failed migration only the phases this page saw are known to be done.
 */
export function phaseSteps(phase: string, seen: string[] = []): Step[] {
  if (phase === "FAILED") return [...PHASES.slice(0, -1).map((p): Step => ({ phase: p, status: seen.includes(p) ? "done" : "todo" })), { phase: "FAILED", status: "failed" }];
  const at = PHASES.indexOf(phase);
  return PHASES.map((p, i) => ({ phase: p, status: i < at || phase === "SUCCEEDED" ? "done" : i === at ? "now" : "todo" }));
}

/**
 * A VM's CPU against its vCPUs. A VM cannot use more cores than it has: a figure past them
 * (over 5 % for sampling slack) is a counter that is not usage (libvirt's test driver's),
 * so say so rather than show an impossible number.
 */
export function cpuLabel(cpuCores: number, vcpus: number): string {
  const of = count(vcpus, "vCPU");
  if (vcpus > 0 && cpuCores > vcpus * 1.05) return `not measured: the driver's CPU counter ran ahead of its ${of}`;
  return `${cpuCores.toFixed(2)} of ${of}`;
}

export function VmView({ params }: { params: Record<string, string> }) {
  const id = params.id;
  const live = useLive<Vm>(UPDATES, id, "vmUpdates");
  const hosts = useHosts();
  const seen = useRef<Map<string, { phase: string; at: number }[]>>(new Map());
  const v = live.data;
  if (v?.migration) {
    const list = seen.current.get(v.migration.id) ?? [];
    if (list[list.length - 1]?.phase !== v.migration.phase) list.push({ phase: v.migration.phase, at: Date.now() });
    seen.current.set(v.migration.id, list);
  }
  if (!v) return <Pending live={live} title={`VM ${id}`} noun="VM" gone="DELETED" />;
  const m = v.migration;
  return (
    <EntityPage live={live} noun="VM" gone="DELETED" name={v.name} state={v.state} actions={<VmControls vm={v} onChange={live.set} />}>
      <div class="cards">
        <Section title="VM">
          <KeyValues
            items={[
              ["Id", <span class="mono">{v.id}</span>],
              ["State", `${v.state}${v.reason ? ` (${v.reason})` : ""}`],
              ["Observed", <Time at={v.observedAt} />],
              ["Host", v.hostId ? <a href={`/hosts?focus=${encodeURIComponent(v.hostId)}`}>{hosts.title(v.hostId)}</a> : "not placed"],
              ["Size", `${count(v.spec.vcpus, "vCPU")}, ${v.spec.memoryMiB} MiB`],
              ["Run policy", `${v.spec.runPolicy}, meant to be ${v.spec.running ? "running" : "stopped"}`],
              ["Placement", v.spec.placement],
              ["Anti-affinity group", v.spec.antiAffinityGroup],
              ["Labels", <Labels labels={v.spec.labels} />],
              ["Restarts by policy", String(v.restarts)],
              ["CPU", cpuLabel(v.stats.cpuCores, v.spec.vcpus)],
              ["Last error", v.lastError],
            ]}
          />
        </Section>
        <Section title="Migration">
          {!m ? (
            <p class="empty">Never migrated.</p>
          ) : (
            <>
              <ol class="steps" aria-label="Migration phases">
                {phaseSteps(m.phase, (seen.current.get(m.id) ?? []).map((x) => x.phase)).map((s) => (
                  <li key={s.phase} class={`step step-${s.status}`} aria-current={s.status === "now" ? "step" : undefined}>
                    <Status state={s.status === "done" ? "SUCCEEDED" : s.status === "failed" ? "FAILED" : s.status === "now" ? "RUNNING" : "DEFINED"} label={s.phase} />
                  </li>
                ))}
              </ol>
              <KeyValues
                items={[
                  ["Kind", m.kind ?? "not known yet"],
                  ["From", hosts.title(m.sourceHost)],
                  ["To", hosts.title(m.targetHost) ?? "being chosen"],
                  ["Why", m.reason],
                  ["Started", <Time at={m.startedAt} />],
                  ["Took", m.finishedAt ? duration(new Date(m.finishedAt).getTime() - new Date(m.startedAt).getTime()) : "under way"],
                  ["Error", m.error],
                ]}
              />
              <p class="muted">
                Seen here: {(seen.current.get(m.id) ?? []).map((s) => `${s.phase} at ${absolute(s.at)}`).join(" → ")}
              </p>
            </>
          )}
        </Section>
      </div>
      <Timeline subject={v.id} />
    </EntityPage>
  );
}

function VmControls({ vm, onChange }: { vm: Vm; onChange: (v: Vm) => void }) {
  const hosts = useHosts();
  const [target, setTarget] = useState("");
  useEffect(() => setTarget(""), [vm.hostId]);
  if (!canAct.value) return null;
  const call = (name: string) => async () => {
    const d = await gql<Record<string, Vm>>(`mutation($id: ID!) { ${name}(id: $id) { ${FIELDS} } }`, { id: vm.id });
    onChange(d[name]);
  };
  const s = vm.state;
  const others = migrationTargets(hosts.hosts, vm.hostId);
  const migrating = vm.migration && !["SUCCEEDED", "FAILED"].includes(vm.migration.phase);
  return (
    <>
      {["STOPPED", "CRASHED", "PENDING"].includes(s) ? <Action label="Start" variant="primary" run={call("startVm")} /> : null}
      {s === "RUNNING" ? <Action label="Pause" run={call("pauseVm")} /> : null}
      {s === "PAUSED" ? <Action label="Resume" run={call("resumeVm")} /> : null}
      {s === "RUNNING" ? <Action label="Reboot" run={call("rebootVm")} confirm={vm.name} consequence="Its guest restarts." /> : null}
      {["RUNNING", "PAUSED"].includes(s) ? <Action label="Stop" run={call("stopVm")} confirm={vm.name} consequence="Its guest is shut down; it stays stopped until started." /> : null}
      <Choice label="Migrate to" value={target} options={others} blank="the placer's choice" onChange={setTarget} />
      <Action
        label="Migrate"
        disabled={Boolean(migrating)}
        done={`${vm.name} migrated`}
        run={async () => {
          const d = await gql<{ migrateVm: { migration: Migration; vm: Vm | null } }>(`mutation($id: ID!, $t: ID) { migrateVm(id: $id, targetHost: $t) { migration { phase error } vm { ${FIELDS} } } }`, { id: vm.id, t: target || null });
          if (d.migrateVm.vm) onChange(d.migrateVm.vm);
        }}
      />
      <Action label="Delete" variant="danger" confirm={vm.name} consequence="Its domain is destroyed and undefined; Troupe forgets it." done={`${vm.name} deleted`} run={() => gql(`mutation($id: ID!) { deleteVm(id: $id) { id } }`, { id: vm.id })} />
    </>
  );
}
