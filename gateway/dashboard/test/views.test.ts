import { describe, expect, it } from "vitest";
import { summary, matches } from "../src/views/events";
import { mergeNewestFirst } from "../src/lib/cursor";
import { agentIds, restartCounts, withVms, type Supervisor } from "../src/views/tree";
import { edgeChildren, edgeSource, isEdge, type Child } from "../src/lib/subtree";
import type { TroupeEvent } from "../src/lib/cursor";
import { hostTitles, migrationTargets } from "../src/views/hosts";

const ev = (seq: number, kind = "TASK_QUEUED", subject: string | null = null): TroupeEvent => ({ seq, kind, subject, at: "2026-11-24T12:00:00Z", data: {} });

describe("events view", () => {
  it("summarises what it holds so a gap shows", () => {
    expect(summary([])).toBe("0 events");
    expect(summary([ev(7), ev(5), ev(6)])).toBe("3 events, seq 5–7");
  });
  it("filters by kind prefixes and subject", () => {
    expect(matches(ev(1, "TASK_DEAD", "t1"), ["TASK_"], "")).toBe(true);
    expect(matches(ev(1, "AGENT_FAILED", "a1"), ["TASK_"], "")).toBe(false);
    expect(matches(ev(1, "AGENT_FAILED", "a1"), [], "a1")).toBe(true);
    expect(matches(ev(1, "AGENT_FAILED", null), [], "a1")).toBe(false);
  });
});

describe("events view's first page and live rows", () => {
  it("merges newest first, each seq once, keeping the newest", () => {
    const rows = mergeNewestFirst([ev(12), ev(11)], [ev(11), ev(10), ev(9)], 3);
    expect(rows.map((e) => e.seq)).toEqual([12, 11, 10]);
  });
});

describe("tree view below the query's edge", () => {
  const swarm = (id: string): Child => ({ id, kind: "SWARM", state: "RUNNING", restarts: 0, owner: "swarms", supervisor: { name: `swarm ${id}`, strategy: "ONE_FOR_ONE" } });
  const members: Child = { id: "members", kind: "SUPERVISOR", state: "RUNNING", restarts: 0, owner: "s2", supervisor: { name: "members", strategy: "ONE_FOR_ONE" } };
  const record = { id: "s2", name: "sub", strategy: "ONE_FOR_ONE", members: [{ id: "a9", name: "helper", state: "RUNNING", restarts: 1 }], teams: [{ id: "s3", name: "subsub", status: "ACTIVE" }] };
  it("knows an edge (children not fetched) from an empty supervisor", () => {
    expect(isEdge(members)).toBe(true);
    expect(isEdge({ ...members, supervisor: { name: "m", strategy: "ONE_FOR_ONE", children: [] } })).toBe(false);
    expect(isEdge({ id: "a", kind: "AGENT", state: "RUNNING", restarts: 0, owner: "m" })).toBe(false);
  });
  it("reads a sub-team's members supervisor from its swarm", () => {
    const source = edgeSource([swarm("s1"), swarm("s2"), members]);
    expect(source).toEqual({ swarm: "s2", part: "members" });
    expect(edgeChildren(source!, record).map((c) => [c.id, c.kind, c.name])).toEqual([["a9", "AGENT", "helper"]]);
  });
  it("reads a swarm at the edge as its members and its sub-teams, each again an edge", () => {
    const source = edgeSource([swarm("s1"), swarm("s2")]);
    expect(source).toEqual({ swarm: "s2", part: "team" });
    const kids = edgeChildren(source!, record);
    expect(kids.map((c) => c.id)).toEqual(["members", "s3"]);
    expect(kids[0].supervisor?.children?.map((c) => c.id)).toEqual(["a9"]);
    expect(isEdge(kids[1])).toBe(true);
  });
  it("says nothing can be read below another kind of edge", () => {
    expect(edgeSource([{ ...members, id: "other", kind: "SUPERVISOR" }])).toBeNull();
  });
  it("walks a tree whose edges have no children without failing", () => {
    const t: Supervisor = { name: "node", strategy: "ONE_FOR_ONE", children: [swarm("s1"), { id: "a1", kind: "AGENT", state: "RUNNING", restarts: 0, owner: "agents" }] };
    expect([...restartCounts(t).keys()]).toEqual(["s1", "a1"]);
    expect(agentIds(t)).toEqual(["a1"]);
    expect(withVms(t, []).children?.length).toBe(2);
  });
});

describe("tree view", () => {
  const tree: Supervisor = {
    name: "node",
    strategy: "ONE_FOR_ONE",
    children: [
      { id: "core", kind: "SUPERVISOR", state: "RUNNING", restarts: 0, owner: "node", supervisor: { name: "core", strategy: "REST_FOR_ONE", children: [{ id: "a1", kind: "AGENT", state: "RUNNING", restarts: 2, owner: "agents" }] } },
      { id: "h1", kind: "HOST", state: "RUNNING", restarts: 1, owner: "hosts" },
    ],
  };
  it("collects every child's restarts", () => {
    expect([...restartCounts(tree)]).toEqual([
      ["core", 0],
      ["a1", 2],
      ["h1", 1],
    ]);
  });
  it("hangs each host's VMs under its driver", () => {
    const t = withVms(tree, [{ id: "h1", name: "host-1", node: "n", vms: [{ id: "v1", name: "vm-1", state: "RUNNING" }] }]);
    expect(t.children![1].supervisor?.children?.map((c) => [c.id, c.kind, c.name])).toEqual([["v1", "VM", "vm-1"]]);
    expect(t.children![1].name).toBe("host-1");
    expect(t.children![0].supervisor?.children?.[0].id).toBe("a1");
  });
});

import { parseJson, parseLabels, parseList } from "../src/components/forms";
import { phaseSteps } from "../src/views/vms";
import { layoutDependencies } from "../src/views/tasks";

describe("forms", () => {
  it("reads lists and labels as an operator types them", () => {
    expect(parseList(" a, b ,,c ")).toEqual(["a", "b", "c"]);
    expect(parseLabels("team=red, tier = gpu")).toEqual([
      { key: "team", value: "red" },
      { key: "tier", value: "gpu" },
    ]);
    expect(parseLabels("")).toEqual([]);
  });
  it("refuses a label without = and bad JSON with INVALID_INPUT", () => {
    expect(() => parseLabels("team")).toThrow(/key=value/);
    try {
      parseJson("{nope");
      expect.unreachable();
    } catch (e) {
      expect((e as { code: string }).code).toBe("INVALID_INPUT");
    }
    expect(parseJson('{"a": 1}')).toEqual({ a: 1 });
  });
});

describe("VM migration phases", () => {
  it("marks the phases before the current one done", () => {
    expect(phaseSteps("PREPARING_TARGET").map((s) => s.status)).toEqual(["done", "done", "now", "todo", "todo"]);
    expect(phaseSteps("SUCCEEDED").every((s) => s.status === "done")).toBe(true);
  });
  it("claims for a failed migration only the phases that were seen", () => {
    const steps = phaseSteps("FAILED", ["PENDING", "SCHEDULING"]);
    expect(steps.map((s) => `${s.phase}:${s.status}`)).toEqual(["PENDING:done", "SCHEDULING:done", "PREPARING_TARGET:todo", "RUNNING:todo", "FAILED:failed"]);
  });
});

describe("task dependency graph", () => {
  it("puts what must succeed first to the left, each task once", () => {
    const tasks = new Map([
      ["c", { id: "c", state: "QUEUED", dependsOn: ["a", "b"] }],
      ["b", { id: "b", state: "RUNNING", dependsOn: ["a"] }],
      ["a", { id: "a", state: "SUCCEEDED", dependsOn: [] }],
    ]);
    const at = Object.fromEntries(layoutDependencies("c", tasks).map((n) => [n.id, n.x]));
    expect(at).toEqual({ a: 0, b: 1, c: 2 });
  });
});

describe("hosts view's card titles", () => {
  it("qualifies a name only where two hosts share it", () => {
    const titles = hostTitles([
      { id: "1@a", name: "sim-1", qualifiedName: "sim-1@a" },
      { id: "2@c", name: "sim-1", qualifiedName: "sim-1@c" },
      { id: "3@a", name: "sim-2", qualifiedName: "sim-2@a" },
      { id: "4@b", name: "rack-7", qualifiedName: "rack-7@b" },
    ]);
    expect([...titles.values()]).toEqual(["sim-1@a", "sim-1@c", "sim-2", "rack-7"]);
  });
});

describe("a VM's migration targets", () => {
  it("are the other UP hosts of its host's node, named as their cards are", () => {
    const hosts = [
      { id: "1@a", name: "sim-1", qualifiedName: "sim-1@a", node: "a", state: "UP" },
      { id: "2@a", name: "sim-2", qualifiedName: "sim-2@a", node: "a", state: "UP" },
      { id: "3@a", name: "sim-3", qualifiedName: "sim-3@a", node: "a", state: "MAINTENANCE" },
      { id: "1@b", name: "sim-1", qualifiedName: "sim-1@b", node: "a", state: "UP" },
      { id: "1@c", name: "sim-1", qualifiedName: "sim-1@c", node: "c", state: "UP" },
      { id: "2@c", name: "sim-2", qualifiedName: "sim-2@c", node: "c", state: "UP" },
    ];
    expect(migrationTargets(hosts, "1@a")).toEqual(["sim-2@a", "sim-1@b"]);
    expect(migrationTargets(hosts, "2@c")).toEqual(["sim-1@c"]);
  });
});
