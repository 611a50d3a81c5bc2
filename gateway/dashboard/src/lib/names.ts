// Names for the ids an answer carries (an approval names its agent and its decider's token
// by id), read in one query and kept for the page's life: a name does not change.
import { useEffect, useState } from "preact/hooks";
import { gql } from "./gql";
import { role } from "./session";

/** One aliased query for up to 50 ids: `a0: agent(id: $i0) { name } …`. */
export function namesQuery(ids: string[]): { query: string; variables: Record<string, string> } {
  return {
    query: `query(${ids.map((_, i) => `$i${i}: ID!`).join(", ")}) { ${ids.map((_, i) => `a${i}: agent(id: $i${i}) { name }`).join(" ")} }`,
    variables: Object.fromEntries(ids.map((id, i) => [`i${i}`, id])),
  };
}

/** id → name for the agents of `ids` known so far (a removed agent stays absent: show its id). */
export function useAgentNames(ids: string[]): Record<string, string> {
  const [names, setNames] = useState<Record<string, string>>({});
  const wanted = [...new Set(ids)].filter((id) => !(id in names)).sort().slice(0, 50);
  const key = wanted.join(",");
  useEffect(() => {
    if (!wanted.length) return;
    const { query, variables } = namesQuery(wanted);
    void gql<Record<string, { name: string } | null>>(query, variables).then(
      (d) => setNames((n) => ({ ...n, ...Object.fromEntries(wanted.map((id, i) => [id, d[`a${i}`]?.name ?? id])) })),
      () => setNames((n) => ({ ...n, ...Object.fromEntries(wanted.map((id) => [id, id])) })),
    );
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [key]);
  return names;
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
 * Each id's end, as short as keeps it apart from the others shown (at least `min`
 * characters): a UUIDv7 begins with its timestamp, so the beginnings of a minute's ids are
 * all alike and their ends are not. `@node` and dashes are left out.
 */
export function shortIds(ids: string[], min = 4): Map<string, string> {
  const bare = [...new Set(ids)].map((id) => [id, id.split("@")[0].replace(/-/g, "")] as const);
  const out = new Map<string, string>();
  for (const [id, b] of bare) {
    let n = Math.min(min, b.length);
    while (n < b.length && bare.some(([other, o]) => other !== id && o.endsWith(b.slice(-n)))) n++;
    out.set(id, b.slice(-n));
  }
  return out;
}

/** A task as a person reads it: what it asked for, then its short id ("upper · 5e1c"). */
export function taskLabel(t: { capability?: string | null; agentId?: string | null }, short: string, agents: Record<string, string> = {}): string {
  const what = t.capability ?? (t.agentId ? agents[t.agentId] : undefined);
  return what ? `${what} · ${short}` : `task ${short}`;
}
