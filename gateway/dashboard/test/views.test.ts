import { describe, expect, it } from "vitest";
import { summary, matches } from "../src/views/events";
import { restartCounts, withVms, type Supervisor } from "../src/views/tree";
import type { TroupeEvent } from "../src/lib/cursor";

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
    expect(t.children[1].supervisor?.children.map((c) => [c.id, c.kind])).toEqual([["v1", "VM"]]);
    expect(t.children[0].supervisor?.children[0].id).toBe("a1");
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
