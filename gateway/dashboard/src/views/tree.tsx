// The live supervision tree: every supervisor, service, agent, swarm coordinator and member,
// host driver and VM of a node (this one, or `?node=` any member), as its supervisors
// themselves describe it. A child that
// restarts flashes; agents carry their controls.
import { useEffect, useRef, useState } from "preact/hooks";
import { gql } from "../lib/gql";
import { useEvents, useQuery } from "../lib/hooks";
import { Status } from "../components/status";
import { Action } from "../components/actions";
import { ErrorBox, Loading, Page, Section } from "../components/page";
import { nodeName } from "../lib/session";
import { query, setQuery } from "../lib/router";

export interface Child {
  id: string;
  kind: string;
  state: string;
  restarts: number;
  owner: string;
  supervisor?: Supervisor | null;
}

export interface Supervisor {
  name: string;
  strategy: string;
  intensity?: { maxRestarts: number; windowMs: number } | null;
  children: Child[];
}

// The gateway allows 12 levels of nesting: five levels of supervisors below the root.
const LEAF = "id kind state restarts owner";
const TREE = `query($node: String) {
  cluster { members { name state } }
  supervisionTree(node: $node) { name strategy intensity { maxRestarts windowMs }
    children { ${LEAF} supervisor { name strategy
      children { ${LEAF} supervisor { name strategy
        children { ${LEAF} supervisor { name strategy
          children { ${LEAF} supervisor { name strategy
            children { ${LEAF} supervisor { name strategy } } } } } } } } } } }
  hosts { id name node vms(first: 500) { id name state } }
}`;

interface HostVms {
  id: string;
  name: string;
  node: string;
  vms: { id: string; name: string; state: string }[];
}

/** Every child's restart count by id, to see which restarted since the last look. */
export function restartCounts(s: Supervisor, into = new Map<string, number>()): Map<string, number> {
  for (const c of s.children) {
    into.set(c.id, c.restarts);
    if (c.supervisor) restartCounts(c.supervisor, into);
  }
  return into;
}

const LIFECYCLE = ["AGENT_", "SERVICE_", "SUPERVISOR_", "SWARM_", "HOST_", "VM_"];

export function TreeView() {
  const node = query.value.get("node") || null;
  const tree = useQuery<{ supervisionTree: Supervisor; hosts: HostVms[]; cluster: { members: { name: string; state: string }[] } }>(TREE, { node });
  const [flashing, setFlashing] = useState<Set<string>>(new Set());
  const previous = useRef<Map<string, number>>(new Map());
  const timer = useRef<ReturnType<typeof setTimeout> | null>(null);

  const flash = (ids: string[]) => {
    if (!ids.length) return;
    setFlashing((f) => new Set([...f, ...ids]));
    setTimeout(() => setFlashing((f) => new Set([...f].filter((x) => !ids.includes(x)))), 2000);
  };

  useEffect(() => {
    const root = tree.data?.supervisionTree;
    if (!root) return;
    const counts = restartCounts(root);
    if (previous.current.size) flash([...counts].filter(([id, n]) => n > (previous.current.get(id) ?? n)).map(([id]) => id));
    previous.current = counts;
  }, [tree.data]);

  useEvents((batch) => {
    const changed = batch.filter((e) => LIFECYCLE.some((p) => e.kind.startsWith(p)));
    if (!changed.length) return;
    flash(changed.filter((e) => /RESTARTED|FAILED/.test(e.kind) && e.subject).map((e) => e.subject as string));
    if (!timer.current)
      timer.current = setTimeout(() => {
        timer.current = null;
        void tree.refetch();
      }, 300);
  });

  const root = tree.data?.supervisionTree;
  return (
    <Page
      title={`Supervision tree of ${node ?? nodeName.value}`}
      actions={
        <label class="filter">
          <span>Node</span>
          <select value={node ?? nodeName.value} onChange={(e) => setQuery({ node: (e.target as HTMLSelectElement).value === nodeName.value ? null : (e.target as HTMLSelectElement).value })}>
            {(tree.data?.cluster.members ?? [{ name: nodeName.value, state: "UP" }]).map((m) => (
              <option key={m.name} value={m.name}>
                {m.name} ({m.state.toLowerCase()})
              </option>
            ))}
          </select>
        </label>
      }
    >
      <ErrorBox error={tree.error} />
      {!root ? (
        <Loading what="the supervision tree" />
      ) : (
        <Section title={`${root.name} (${root.strategy})`}>
          <p class="muted">
            A child that restarts flashes. Restart intensity of the root: {root.intensity ? `${root.intensity.maxRestarts} in ${root.intensity.windowMs} ms` : "none"}.
          </p>
          <ul class="tree" role="tree" aria-label="Supervision tree" onKeyDown={treeKeys}>
            {withVms(root, tree.data?.hosts ?? []).children.map((c, i) => (
              <Node key={c.id} child={c} flashing={flashing} first={i === 0} />
            ))}
          </ul>
        </Section>
      )}
    </Page>
  );
}

/** A host driver's VMs are its children in the tree (the driver runs them). */
export function withVms(s: Supervisor, hosts: HostVms[]): Supervisor {
  const byId = new Map(hosts.map((h) => [h.id, h]));
  return {
    ...s,
    children: s.children.map((c) => {
      if (c.supervisor) return { ...c, supervisor: withVms(c.supervisor, hosts) };
      const host = c.kind === "HOST" ? byId.get(c.id) : undefined;
      if (!host) return c;
      const vms: Child[] = host.vms.map((v) => ({ id: v.id, kind: "VM", state: v.state, restarts: 0, owner: c.id }));
      return { ...c, supervisor: { name: host.name, strategy: "ONE_FOR_ONE", children: vms } };
    }),
  };
}

/** Arrow keys move between the tree's items (WAI-ARIA tree pattern, all expanded). */
function treeKeys(e: KeyboardEvent) {
  const items = [...(e.currentTarget as HTMLElement).querySelectorAll<HTMLElement>('[role="treeitem"]')];
  const at = items.indexOf(document.activeElement as HTMLElement);
  const to = { ArrowDown: at + 1, ArrowUp: at - 1, Home: 0, End: items.length - 1 }[e.key];
  if (to === undefined || at < 0) return;
  e.preventDefault();
  const next = items[Math.max(0, Math.min(items.length - 1, to))];
  for (const i of items) i.tabIndex = -1;
  next.tabIndex = 0;
  next.focus();
}

function link(c: Child): string | null {
  switch (c.kind) {
    case "AGENT":
      return `/agents/${encodeURIComponent(c.id)}`;
    case "SWARM":
    case "COORDINATOR":
      return c.id.startsWith("swarm") || c.kind === "SWARM" ? `/swarms/${encodeURIComponent(c.id.replace(/^(coordinator|members)[:-]/, ""))}` : null;
    case "VM":
      return `/vms/${encodeURIComponent(c.id)}`;
    case "HOST":
      return `/hosts?focus=${encodeURIComponent(c.id)}`;
    default:
      return null;
  }
}

function Node({ child, flashing, first }: { child: Child; flashing: Set<string>; first?: boolean }) {
  const href = link(child);
  const sup = child.supervisor;
  return (
    <li role="treeitem" tabIndex={first ? 0 : -1} aria-expanded={sup ? true : undefined} aria-label={`${child.kind} ${child.id} ${child.state}, ${child.restarts} restarts`}>
      <span class={`tree-label${flashing.has(child.id) ? " flash" : ""}`}>
        <span class="muted">{child.kind.toLowerCase()}</span>
        {href ? <a href={href}>{child.id}</a> : <strong>{child.id}</strong>}
        <Status state={child.state} />
        <span class="muted">
          {child.restarts} restart{child.restarts === 1 ? "" : "s"}
          {sup ? ` · ${sup.strategy.toLowerCase()}` : ""}
        </span>
        {child.kind === "AGENT" ? <AgentControls id={child.id} state={child.state} /> : null}
      </span>
      {sup && sup.children?.length ? (
        <ul role="group">
          {sup.children.map((c) => (
            <Node key={c.id} child={c} flashing={flashing} />
          ))}
        </ul>
      ) : null}
    </li>
  );
}

function AgentControls({ id, state }: { id: string; state: string }) {
  const call = (m: string) => () => gql(`mutation($id: ID!) { ${m}(id: $id) { id state } }`, { id });
  return (
    <span class="row">
      <Action label="Restart" run={call("restartAgent")} confirm={id} consequence="Its tasks go back to the queue, not charged." done={`Restarting ${id}`} />
      {state === "PAUSED" ? <Action label="Resume" run={call("resumeAgent")} done={`Resumed ${id}`} /> : <Action label="Pause" run={call("pauseAgent")} done={`Paused ${id}`} />}
    </span>
  );
}
