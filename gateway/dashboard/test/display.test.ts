import { describe, expect, it } from "vitest";
import { attemptsLabel } from "../src/views/tasks";
import { barTone } from "../src/components/forms";
import { cpuLabel } from "../src/views/vms";
import { gridMinWidth } from "../src/components/grid";
import { tasksDone, wanted } from "../src/views/agents";
import { count } from "../src/lib/format";

describe("a task's attempts", () => {
  it("counts failures against the limit, not every start, after a requeue", () => {
    const a = attemptsLabel({ attempts: 4, failedAttempts: 0, maxAttempts: 2 });
    expect(a.failed).toBe("0 of 2 failed");
    expect(a.failed).not.toContain("4 / 2");
    expect(a.starts).toBe("4 starts");
  });
  it("says one start in the singular", () => {
    expect(attemptsLabel({ attempts: 1, failedAttempts: 1, maxAttempts: 3 })).toEqual({ failed: "1 of 3 failed", starts: "1 start" });
  });
});

describe("a bar's tone", () => {
  it("warns near a capacity limit and is bad at it", () => {
    expect(barTone(0.5)).toBe("");
    expect(barTone(0.85)).toBe("warn");
    expect(barTone(1)).toBe("bad");
  });
  it("never warns on progress, and a finished one is good", () => {
    expect(barTone(0.85, "progress")).toBe("");
    expect(barTone(1, "progress")).toBe("ok");
  });
});

describe("a VM's CPU", () => {
  it("reads against its vCPUs", () => {
    expect(cpuLabel(0.5, 2)).toBe("0.50 of 2 vCPUs");
    expect(cpuLabel(1.04, 1)).toBe("1.04 of 1 vCPU");
  });
  it("does not show a figure past its vCPUs as usage", () => {
    const s = cpuLabel(14.38, 1);
    expect(s).not.toContain("14.38");
    expect(s).toMatch(/^not measured/);
  });
});

describe("the grid's narrowest width", () => {
  it("adds the columns' minimums, gaps, padding and the scrollbar's room", () => {
    expect(gridMinWidth(["100px", "minmax(140px, 1fr)", "1fr", undefined])).toBe(100 + 140 + 80 + 80 + 3 * 8 + 36);
  });
});

describe("an agent's finished tasks", () => {
  it("reads Int64 counts whether numbers or strings", () => {
    expect(tasksDone({ tasksSucceeded: 12, tasksFailed: "3" })).toBe("12 ok · 3 failed");
  });
});

describe("whether an agent is wanted running", () => {
  it("says so truthfully of a failed agent, which its supervisor gave up on", () => {
    expect(wanted({ wantedRunning: true, state: "RUNNING" })).toBe("yes");
    expect(wanted({ wantedRunning: true, state: "FAILED" })).toMatch(/^yes, but it failed/);
    expect(wanted({ wantedRunning: false, state: "STOPPED" })).toBe("no");
  });
});

describe("counts in words", () => {
  it("puts one in the singular and any other number in the plural", () => {
    expect(count(1, "agent")).toBe("1 agent");
    expect(count(0, "agent")).toBe("0 agents");
    expect(count(2, "model call")).toBe("2 model calls");
    expect(count(1, "process", "processes")).toBe("1 process");
    expect(count(3, "process", "processes")).toBe("3 processes");
  });
});
