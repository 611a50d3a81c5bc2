// Hosts: each hypervisor with its capacity bars (what is promised to VMs against what
// overcommit allows), its VMs, a drain's progress, and the add, drain, maintenance and
// remove controls; live through hostUpdates. The host a link asks for (?focus=) is outlined,
// with its events below the cards.
import { useEffect, useRef, useState } from "preact/hooks";
import { FrameQueue, paused } from "../lib/live";
import { gql } from "../lib/gql";
import { useQuery, useRefreshOn, useSubscription } from "../lib/hooks";
import { query } from "../lib/router";
import { count } from "../lib/format";
import { Status } from "../components/status";
import { Time } from "../components/time";
import { Action } from "../components/actions";
import { ErrorBox, KeyValues, Loading, Page } from "../components/page";
import { Bar, CreateForm, Field, Labels, parseLabels } from "../components/forms";
import { Timeline } from "./agents";

export interface Host {
  id: string;
  name: string;
  /** `name@node`, the node that made it: kept when the host moves. */
  qualifiedName: string;
  uri: string;
  node: string;
  state: string;
  since: string;
  simulated: boolean;
  labels: { key: string; value: string }[];
  capacity: { cpus: number; memoryMiB: number } | null;
  allocated: { vcpus: number; memoryMiB: number; vcpuLimit: number; memoryLimitMiB: number };
  lastError: string | null;
  drain: { total: number; moved: number; failed: number; done: boolean } | null;
  outboundMigrations: number;
  vms: { id: string; name: string; state: string }[];
}

const FIELDS = `id name qualifiedName uri node state since simulated labels { key value } capacity { cpus memoryMiB }
  allocated { vcpus memoryMiB vcpuLimit memoryLimitMiB } lastError drain { total moved failed done } outboundMigrations
  vms(first: 50) { id name state }`;

/**
 * What each host is called on its card: its name, or its qualified name (`sim-1@c`) when
 * another host has the same name (every node's simulated hosts are `sim-1`…, and one that
 * moved sits beside its new node's own).
 */
export function hostTitles(hosts: Pick<Host, "id" | "name" | "qualifiedName">[]): Map<string, string> {
  const count = new Map<string, number>();
  for (const h of hosts) count.set(h.name, (count.get(h.name) ?? 0) + 1);
  return new Map(hosts.map((h) => [h.id, (count.get(h.name) ?? 0) > 1 ? h.qualifiedName : h.name]));
}

/**
 * Where a VM on host `from` may be migrated, by title: the other UP hosts of the same node
 * (a VM moves between the hosts of one node; another node's host is NOT_FOUND).
 */
export function migrationTargets(hosts: Pick<Host, "id" | "name" | "qualifiedName" | "node" | "state">[], from: string | null): string[] {
  const titles = hostTitles(hosts);
  const node = hosts.find((h) => h.id === from)?.node;
  return hosts.filter((h) => h.id !== from && h.node === node && h.state === "UP").map((h) => titles.get(h.id) ?? h.name);
}

export function HostsView() {
  const list = useQuery<{ hosts: Host[] }>(`{ hosts { ${FIELDS} } }`);
  const [hosts, setHosts] = useState<Host[] | null>(null);
  useEffect(() => {
    if (list.data) setHosts(list.data.hosts);
  }, [list.data]);
  // A host's own changes come with it; VMs placed or moved change its allocation.
  // Applied once per animation frame (and held while live updates are paused).
  const queue = useRef<FrameQueue<Host>>();
  if (!queue.current)
    queue.current = new FrameQueue<Host>((batch) =>
      setHosts((now) => (now ?? []).map((h) => [...batch].reverse().find((b) => b.id === h.id) ?? h)),
    );
  useEffect(() => paused.subscribe(() => queue.current!.resume()), []);
  useSubscription<{ hostUpdates: Host }>(`subscription { hostUpdates { ${FIELDS} } }`, {}, {
    next: (d) => queue.current!.push(d.hostUpdates),
  });
  useRefreshOn(() => void list.refetch(), ["HOST_ADDED", "HOST_REMOVED", "VM_"], undefined, 1000);
  const focus = query.value.get("focus");
  // A host has no page of its own: the one asked for (a link from an event) is outlined, and its events follow the cards.
  const named = (h: Host) => h.id === focus || h.name === focus || h.qualifiedName === focus;
  const focused = focus ? hosts?.find(named) : undefined;
  const titles = hostTitles(hosts ?? []);
  useEffect(() => {
    if (focus && hosts) document.getElementById(`host-${focus}`)?.scrollIntoView({ block: "center" });
  }, [focus, Boolean(hosts)]);

  return (
    <Page title="Hosts" actions={<AddHost onAdded={() => void list.refetch()} />}>
      <ErrorBox error={list.error} />
      {!hosts ? (
        <Loading what="hosts" />
      ) : hosts.length === 0 ? (
        <p class="empty">No host yet. Add one (libvirt's test:///default needs no hypervisor), or start the node with --simulated-hosts.</p>
      ) : (
        <div class="cards">
          {hosts.map((h) => (
            <HostCard key={h.id} host={h} title={titles.get(h.id) ?? h.name} focused={named(h)} />
          ))}
        </div>
      )}
      {focused ? <Timeline subject={focused.id} title={`Events of host ${titles.get(focused.id) ?? focused.name}`} /> : null}
    </Page>
  );
}

function HostCard({ host: h, title, focused }: { host: Host; title: string; focused: boolean }) {
  const a = h.allocated;
  return (
    <section class={`card${focused ? " focused" : ""}`} id={`host-${h.id}`} aria-label={`Host ${title}`}>
      <header class="card-head">
        <h2>
          {title} <Status state={h.state} />
        </h2>
      </header>
      <KeyValues
        items={[
          ["URI", <span class="mono">{h.uri}</span>],
          ["Node", h.node],
          ["Since", <Time at={h.since} />],
          ["Hardware", h.capacity ? `${count(h.capacity.cpus, "CPU")}, ${h.capacity.memoryMiB} MiB${h.simulated ? " (simulated)" : ""}` : "not connected yet"],
          ["Labels", <Labels labels={h.labels} />],
          ["Last error", h.lastError],
        ]}
      />
      <h3>Promised to VMs</h3>
      <Bar label={`${title} vCPUs`} used={Number(a.vcpus)} limit={Number(a.vcpuLimit)} unit=" vCPUs" />
      <Bar label={`${title} memory`} used={Number(a.memoryMiB)} limit={Number(a.memoryLimitMiB)} unit=" MiB" />
      {h.drain ? (
        <>
          <h3>{h.drain.done ? "Last drain" : "Draining"}</h3>
          <Bar label={`${title} drain`} used={h.drain.moved} limit={h.drain.total} unit=" VMs moved" kind="progress" />
          {h.drain.failed ? <p class="error">{h.drain.failed === 1 ? "1 VM" : `${h.drain.failed} VMs`} could not be moved.</p> : null}
        </>
      ) : null}
      {h.outboundMigrations ? <p class="muted">{count(h.outboundMigrations, "migration")} leaving now.</p> : null}
      <h3>VMs ({h.vms.length})</h3>
      {h.vms.length === 0 ? (
        <p class="empty">None.</p>
      ) : (
        <ul class="row">
          {h.vms.map((v) => (
            <li key={v.id}>
              <a href={`/vms/${encodeURIComponent(v.id)}`}>{v.name}</a> <Status state={v.state} />
            </li>
          ))}
        </ul>
      )}
      <div class="row">
        {h.state === "UP" ? (
          <Action label="Drain" confirm={title} consequence="Its VMs are migrated to other hosts, and it takes no new ones." done={`${title} draining`} run={() => gql(`mutation($id: ID!) { drainHost(id: $id) { id } }`, { id: h.id })} />
        ) : null}
        {h.state === "MAINTENANCE" ? (
          <Action label="End maintenance" done={`${title} back in service`} run={() => gql(`mutation($id: ID!) { setHostMaintenance(id: $id, enabled: false) { id } }`, { id: h.id })} />
        ) : (
          <Action label="Maintenance" confirm={title} consequence="It takes no new VMs; those on it must be moved first." done={`${title} in maintenance`} run={() => gql(`mutation($id: ID!) { setHostMaintenance(id: $id, enabled: true) { id } }`, { id: h.id })} />
        )}
        <Action label="Remove" variant="danger" confirm={title} consequence="Troupe forgets the host; it must hold no VM." done={`${title} removed`} run={() => gql(`mutation($id: ID!) { removeHost(id: $id) { id } }`, { id: h.id })} />
      </div>
    </section>
  );
}

function AddHost({ onAdded }: { onAdded: () => void }) {
  const [name, setName] = useState("");
  const [uri, setUri] = useState("test:///default");
  const [labels, setLabels] = useState("");
  return (
    <CreateForm
      open="Add host"
      submitLabel="Add"
      submit={async () => {
        await gql(`mutation($input: AddHostInput!) { addHost(input: $input) { id } }`, { input: { name: name.trim(), uri: uri.trim(), labels: parseLabels(labels) } });
        onAdded();
      }}
    >
      <Field label="Host name" value={name} onInput={setName} required />
      <Field label="libvirt URI" value={uri} onInput={setUri} required />
      <Field label="Labels (key=value, …)" value={labels} onInput={setLabels} />
    </CreateForm>
  );
}
