// Names for the ids an answer carries (an approval names its agent and its decider's token
// by id, a log line its task), read in one query and kept for the page's life: a name does not change.
import { useEffect, useState } from "preact/hooks";
import { gql } from "./gql";
import { role } from "./session";

/** One aliased query for up to 50 ids: `a0: agent(id: $i0) { name } …` (`field` and `selection` for another kind). */
export function namesQuery(ids: string[], field = "agent", selection = "name"): { query: string; variables: Record<string, string> } {
  return {
    query: `query(${ids.map((_, i) => `$i${i}: ID!`).join(", ")}) { ${ids.map((_, i) => `a${i}: ${field}(id: $i${i}) { ${selection} }`).join(" ")} }`,
    variables: Object.fromEntries(ids.map((id, i) => [`i${i}`, id])),
  };
}

/**
 * id → what `field(id) { selection }` answered for the `ids` known so far, 50 a query; an id
 * gone (or a read that failed) maps to null, so it is not asked again.
 */
function useLookup<T>(ids: string[], field: string, selection: string): Record<string, T | null> {
  const [found, setFound] = useState<Record<string, T | null>>({});
  const wanted = [...new Set(ids)].filter((id) => !(id in found)).sort().slice(0, 50);
  const key = wanted.join(",");
  useEffect(() => {
    if (!wanted.length) return;
    const { query, variables } = namesQuery(wanted, field, selection);
    void gql<Record<string, T | null>>(query, variables).then(
      (d) => setFound((n) => ({ ...n, ...Object.fromEntries(wanted.map((id, i) => [id, d[`a${i}`] ?? null])) })),
      () => setFound((n) => ({ ...n, ...Object.fromEntries(wanted.map((id) => [id, null])) })),
    );
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [key]);
  return found;
}

/** id → name for the agents of `ids` known so far (a removed agent stays absent: show its id). */
export function useAgentNames(ids: string[]): Record<string, string> {
  const found = useLookup<{ name: string }>(ids, "agent", "name");
  return Object.fromEntries(Object.entries(found).map(([id, a]) => [id, a?.name ?? id]));
}

/** What a task is named by: its id, what it asked for and its agent (see `taskName`). */
export interface Nameable {
  id: string;
  capability?: string | null;
  agentId?: string | null;
  agentName?: string | null;
}

/** id → the task, as much of it as `taskName` needs, for tasks known only by id (a log line's, an approval's, a swarm's subtasks). */
export function useTasks(ids: string[]): Record<string, Nameable | null> {
  return useLookup<Nameable>(ids, "task", "id capability agentId agentName");
}

/** Token id → name; only an admin may list tokens, so others get none (show the id). */
export function useTokenNames(): Record<string, string> {
  const [names, setNames] = useState<Record<string, string>>({});
  const admin = role.value === "ADMIN";
  useEffect(() => {
    if (!admin) return;
    void gql<{ tokens: { id: string; name: string }[] }>("{ tokens { id name } }").then(
      (d) => setNames(Object.fromEntries(d.tokens.map((t) => [t.id, t.name]))),
      () => {},
    );
  }, [admin]);
  return names;
}

/** Who decided an approval, as a person reads it: a token's name, "its timeout", or a short token id. */
export function decider(by: string | null, tokens: Record<string, string>): string {
  if (!by) return "?";
  if (by === "timeout") return "its timeout";
  return tokens[by] ? `token ${tokens[by]}` : `token ${by.slice(0, 8)}…`;
}

/**
 * How many hex digits of its id's end name a task: the server names it so ("think · 3ee21f",
 * `Task.name` and events' `subjectName`, actors/src/names.rs `task_name`), and so does every view.
 */
export const TAIL = 6;

/**
 * Each id's end, as short as keeps it apart from the others shown (at least `min`
 * characters): a UUIDv7 begins with its timestamp, so the beginnings of a minute's ids are
 * all alike and their ends are not. `@node` and dashes are left out.
 */
export function shortIds(ids: string[], min = TAIL): Map<string, string> {
  const bare = [...new Set(ids)].map((id) => [id, id.split("@")[0].replace(/-/g, "")] as const);
  const out = new Map<string, string>();
  for (const [id, b] of bare) {
    let n = Math.min(min, b.length);
    while (n < b.length && bare.some(([other, o]) => other !== id && o.endsWith(b.slice(-n)))) n++;
    out.set(id, b.slice(-n));
  }
  return out;
}

/**
 * A task as a person reads it, in every view and as the server names it: what it asked for
 * (its capability, else its agent's name) and the last six hex digits of its id
 * ("upper · 5e1c2a"), more only where `tails` (shortIds of the tasks shown together) needs
 * more to keep it apart; "task 5e1c2a" when neither is known.
 */
export function taskName(t: Nameable, agents: Record<string, string> = {}, tails?: Map<string, string>): string {
  const tail = tails?.get(t.id) ?? shortIds([t.id]).get(t.id)!;
  const what = t.capability ?? t.agentName ?? (t.agentId ? agents[t.agentId] : undefined);
  return what ? `${what} · ${tail}` : `task ${tail}`;
}
