// The live supervision tree: every supervisor, service, agent, swarm coordinator and member,
// host driver and VM of a node (this one, or `?node=` any member), as its supervisors
// themselves describe it (a peer's as its last heartbeat answer reported it). A child that restarts flashes; agents carry their controls. What is
// deeper than one query may reach (a sub-team's members) is shown collapsed and read when
// opened (lib/subtree.ts).
import { useEffect, useRef, useState } from "preact/hooks";
import { gql, type ApiError } from "../lib/gql";
import { useEvents, useQuery } from "../lib/hooks";
import { useAgentNames } from "../lib/names";
import { count } from "../lib/format";
import { EDGE_QUERY, edgeChildren, edgeSource, isEdge, type Child, type Supervisor, type SwarmRecord } from "../lib/subtree";
import { Status } from "../components/status";
import { Time } from "../components/time";
import { Action } from "../components/actions";
import { ErrorBox, Loading, Page, Section } from "../components/page";
import { nodeName } from "../lib/session";
import { query, setQuery } from "../lib/router";

export type { Child, Supervisor } from "../lib/subtree";

// The gateway allows 12 levels of selection: supervisionTree (1) › children (2) › supervisor
// (3) › children (4) … the fourth supervisor's children are at 10 and their fields at 11, so
// a fifth supervisor (11) can only say its name and strategy (12): an edge, opened on demand.
const LEAF = "id kind name state restarts owner";
const TREE = `query($node: String) {
  cluster { members { name state } }
  supervisionTree(node: $node) { name strategy observedAt intensity { maxRestarts windowMs }
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
  for (const c of s.children ?? []) {
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
  const names = useAgentNames(tree.data ? agentIds(tree.data.supervisionTree) : []);

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
            {node && node !== nodeName.value ? (
              <>
                {" "}As {node} last reported it: <Time at={root.observedAt ?? null} />.
              </>
            ) : null}
          </p>
          <ul class="tree" role="tree" aria-label="Supervision tree" onKeyDown={treeKeys}>
            {(withVms(root, tree.data?.hosts ?? []).children ?? []).map((c, i) => (
              <Node key={c.id} child={c} path={[c]} ctx={{ flashing, names, version: tree.data }} first={i === 0} />
            ))}
          </ul>
        </Section>
      )}
    </Page>
  );
}

/** The ids of the agents in the tree the answer did not name (a subtree read from a swarm's record). */
export function agentIds(s: Supervisor, into: string[] = []): string[] {
  for (const c of s.children ?? []) {
    if (c.kind === "AGENT" && !c.name) into.push(c.id);
    if (c.supervisor) agentIds(c.supervisor, into);
  }
  return into;
}

/** A host driver's VMs are its children in the tree (the driver runs them); both by name. */
export function withVms(s: Supervisor, hosts: HostVms[]): Supervisor {
  const byId = new Map(hosts.map((h) => [h.id, h]));
  return {
    ...s,
    children: s.children?.map((c) => {
      if (c.supervisor) return { ...c, supervisor: withVms(c.supervisor, hosts) };
      const host = c.kind === "HOST" ? byId.get(c.id) : undefined;
      if (!host) return c;
      const vms: Child[] = host.vms.map((v) => ({ id: v.id, name: v.name, kind: "VM", state: v.state, restarts: 0, owner: c.id }));
      return { ...c, name: host.name, supervisor: { name: host.name, strategy: "ONE_FOR_ONE", children: vms } };
    }),
  };
}

/**
 * Arrow keys move between the tree's visible items (WAI-ARIA tree pattern); Right opens a
 * collapsed item, Left closes an open one that can close.
 */
function treeKeys(e: KeyboardEvent) {
  const items = [...(e.currentTarget as HTMLElement).querySelectorAll<HTMLElement>('[role="treeitem"]')];
  const at = items.indexOf(document.activeElement as HTMLElement);
  if (at < 0) return;
  const toggle = items[at].querySelector<HTMLButtonElement>(":scope > .tree-label > .tree-toggle");
  const expanded = items[at].getAttribute("aria-expanded");
  if ((e.key === "ArrowRight" && expanded === "false") || (e.key === "ArrowLeft" && expanded === "true" && toggle)) {
    e.preventDefault();
    toggle?.click();
    return;
  }
  const to = { ArrowDown: at + 1, ArrowUp: at - 1, Home: 0, End: items.length - 1 }[e.key];
  if (to === undefined) return;
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

interface TreeContext {
  flashing: Set<string>;
  names: Record<string, string>;
  /** The tree's latest answer: an open edge reads its subtree again when it changes. */
  version: unknown;
}

/** A named agent or swarm by its name (the id in its tooltip), anything else by its id. */
function label(c: Child, names: Record<string, string>): string {
  // A swarm's supervisor says its name: "swarm <name> (<id>)".
  const swarm = c.kind === "SWARM" ? /^swarm (.*) \(/.exec(c.supervisor?.name ?? "")?.[1] : undefined;
  const name = c.name ?? swarm ?? (c.kind === "AGENT" ? names[c.id] : undefined);
  return name && name !== c.id ? name : c.id;
}

function Node({ child, path, ctx, first }: { child: Child; path: Child[]; ctx: TreeContext; first?: boolean }) {
  const href = link(child);
  const sup = child.supervisor;
  const edge = isEdge(child);
  const [open, setOpen] = useState(false);
  const text = label(child, ctx.names);
  return (
    <li
      role="treeitem"
      tabIndex={first ? 0 : -1}
      aria-expanded={sup ? (edge ? open : true) : undefined}
      aria-label={`${child.kind} ${child.id} ${child.state}, ${count(child.restarts, "restart")}`}
    >
      <span class={`tree-label${ctx.flashing.has(child.id) ? " flash" : ""}`}>
        {edge ? (
          <button type="button" class="btn tree-toggle" tabIndex={-1} aria-label={`${open ? "Hide" : "Show"} what ${child.id} supervises`} onClick={() => setOpen(!open)}>
            {open ? "▾" : "▸"}
          </button>
        ) : null}
        <span class="muted">{child.kind.toLowerCase()}</span>
        {href ? (
          <a href={href} title={child.id}>
            {text}
          </a>
        ) : (
          <strong title={child.id}>{text}</strong>
        )}
        <Status state={child.state} />
        <span class="muted">
          {count(child.restarts, "restart")}
          {sup ? ` · ${sup.strategy.toLowerCase()}` : ""}
        </span>
        {child.kind === "AGENT" ? <AgentControls id={child.id} name={text} state={child.state} /> : null}
      </span>
      {edge ? (
        open ? <EdgeChildren path={path} ctx={ctx} /> : null
      ) : sup && sup.children?.length ? (
        <Children children={sup.children} path={path} ctx={ctx} />
      ) : null}
    </li>
  );
}

function Children({ children, path, ctx }: { children: Child[]; path: Child[]; ctx: TreeContext }) {
  return (
    <ul role="group">
      {children.map((c) => (
        <Node key={c.id} child={c} path={[...path, c]} ctx={ctx} />
      ))}
    </ul>
  );
}

/** An edge's subtree, read from its swarm's record when opened and again as the tree changes. */
function EdgeChildren({ path, ctx }: { path: Child[]; ctx: TreeContext }) {
  const source = edgeSource(path);
  const [children, setChildren] = useState<Child[] | null>(null);
  const [error, setError] = useState<ApiError | null>(null);
  useEffect(() => {
    if (!source) return;
    let live = true;
    gql<{ swarm: SwarmRecord | null }>(EDGE_QUERY, { id: source.swarm }).then(
      (d) => {
        if (!live) return;
        setChildren(d.swarm ? edgeChildren(source, d.swarm) : []);
        setError(null);
      },
      (e) => live && setError(e as ApiError),
    );
    return () => {
      live = false;
    };
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [source?.swarm, source?.part, ctx.version]);
  if (!source) return <p class="muted tree-note">Deeper than one query may reach (the gateway allows 12 levels); not shown.</p>;
  if (error) return <ErrorBox error={error} />;
  if (!children) return <p class="muted tree-note">Loading…</p>;
  if (!children.length) return <p class="muted tree-note">Nothing under it.</p>;
  return <Children children={children} path={path} ctx={ctx} />;
}

function AgentControls({ id, name, state }: { id: string; name: string; state: string }) {
  const call = (m: string) => () => gql(`mutation($id: ID!) { ${m}(id: $id) { id state } }`, { id });
  return (
    <span class="row">
      <Action label="Restart" run={call("restartAgent")} confirm={name} consequence="Its tasks go back to the queue, not charged." done={`Restarting ${name}`} />
      {state === "PAUSED" ? <Action label="Resume" run={call("resumeAgent")} done={`Resumed ${name}`} /> : <Action label="Pause" run={call("pauseAgent")} done={`Paused ${name}`} />}
    </span>
  );
}
