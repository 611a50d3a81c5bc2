// The supervision tree below what one query may reach. The gateway allows 12 levels of
// selection, which is four supervisors' children below the root and a fifth supervisor's name
// (see TREE in views/tree.tsx); a swarm's sub-team's members sit deeper. `supervisionTree`
// takes no root to start from, so a supervisor at that edge is read from its swarm's record
// instead: the members it supervises and its sub-teams (each again an edge, opened in turn).

export interface Child {
  id: string;
  kind: string;
  state: string;
  restarts: number;
  owner: string;
  /** An agent's or VM's name (the server's answer), or a team's (read from a swarm's record). */
  name?: string | null;
  supervisor?: Supervisor | null;
}

export interface Supervisor {
  name: string;
  strategy: string;
  /** When the tree was seen as shown: a peer's is its last heartbeat answer's sample. */
  observedAt?: string | null;
  intensity?: { maxRestarts: number; windowMs: number } | null;
  /** Absent for a supervisor at the edge of the query: not fetched, not empty. */
  children?: Child[];
}

/** A supervisor whose children were not fetched (the query's edge). */
export function isEdge(c: Child): boolean {
  return !!c.supervisor && !Array.isArray(c.supervisor.children);
}

/**
 * What an edge is, from its path (the children from the root down to it, itself last): a
 * swarm (its members and sub-teams), a swarm's `members` supervisor (its members), or
 * something no query can read below this depth.
 */
export type EdgeSource = { swarm: string; part: "team" | "members" } | null;

export function edgeSource(path: Child[]): EdgeSource {
  const self = path[path.length - 1];
  if (!self) return null;
  if (self.kind === "SWARM") return { swarm: self.id, part: "team" };
  const parent = path[path.length - 2];
  if (self.id === "members" && parent?.kind === "SWARM") return { swarm: parent.id, part: "members" };
  return null;
}

export const EDGE_QUERY = `query($id: ID!) { swarm(id: $id) { id name strategy members { id name state restarts } teams { id name status } } }`;

export interface SwarmRecord {
  id: string;
  name: string;
  strategy: string;
  members: { id: string; name: string; state: string; restarts: number }[];
  teams: { id: string; name: string; status: string }[];
}

/** The children an edge stands for, read from its swarm's record (sub-teams stay edges). */
export function edgeChildren(source: NonNullable<EdgeSource>, swarm: SwarmRecord): Child[] {
  const members: Child[] = swarm.members.map((m) => ({ id: m.id, kind: "AGENT", state: m.state, restarts: m.restarts, owner: "members", name: m.name }));
  if (source.part === "members") return members;
  return [
    { id: "members", kind: "SUPERVISOR", state: "RUNNING", restarts: 0, owner: swarm.id, supervisor: { name: "members", strategy: swarm.strategy, children: members } },
    ...swarm.teams.map((t) => ({
      id: t.id,
      kind: "SWARM",
      state: t.status,
      restarts: 0,
      owner: swarm.id,
      name: t.name,
      supervisor: { name: `swarm ${t.name} (${t.id})`, strategy: "ONE_FOR_ONE" },
    })),
  ];
}
