import { describe, expect, it } from "vitest";
import { EXPERIMENT_KINDS, experimentInput, experimentsDisabled, newDraft, newFault, outcomeTone, parseParams, parseSeed, randomSeed, recoveredLine, seedText, splitOutcome, wholeNumber, type Draft } from "../src/lib/experiments";
import { tone } from "../src/lib/format";

const draft = (over: Partial<Draft> = {}): Draft => ({ ...newDraft(), name: "crash a worker", ...over });
const code = (run: () => unknown): string => {
  try {
    run();
  } catch (e) {
    return `${(e as { code: string }).code}: ${(e as Error).message}`;
  }
  return "no error";
};

describe("the start form as StartExperimentInput", () => {
  it("sends only what was filled in, so the API's defaults apply", () => {
    expect(experimentInput(draft(), true)).toEqual({ name: "crash a worker", faults: [{ action: "CRASH", target: { mode: "ONE", kinds: ["AGENT"] } }], allowEscalation: false, dryRun: true });
  });
  it("reads every selector field: lists, labels key=value, under, mode and value", () => {
    const f = { ...newFault(), kinds: "agent, supervisor", labels: "role=worker, tier = gpu", ids: "a1, a2", exclude: "a3", nodes: "alpha", under: " agents ", mode: "FIXED", value: "2" };
    expect(experimentInput(draft({ faults: [f] }), false).faults[0].target).toEqual({
      mode: "FIXED",
      value: 2,
      ids: ["a1", "a2"],
      kinds: ["AGENT", "SUPERVISOR"],
      nodes: ["alpha"],
      exclude: ["a3"],
      labels: [
        { key: "role", value: "worker" },
        { key: "tier", value: "gpu" },
      ],
      under: "agents",
    });
  });
  it("names the fault whose label is not key=value", () => {
    expect(code(() => experimentInput(draft({ faults: [newFault(), { ...newFault(), labels: "role" }] }), true))).toBe('INVALID_INPUT: fault 2: "role" is not a label: write key=value');
  });
  it("takes the numbers, the seed as digits, the invariants upper-cased, and escalation", () => {
    const input = experimentInput(draft({ durationMs: "2000", count: "3", everyMs: "1000", seed: "9007199254740993", recoverWithinMs: "10000", leaseMs: "5000", invariants: "tree_restored, NO_ESCALATION", allowEscalation: true }), false);
    expect(input).toMatchObject({ durationMs: 2000, count: 3, everyMs: 1000, seed: "9007199254740993", recoverWithinMs: 10000, leaseMs: 5000, invariants: ["TREE_RESTORED", "NO_ESCALATION"], allowEscalation: true, dryRun: false });
  });
  it("refuses what the API would, naming the field", () => {
    expect(code(() => experimentInput(draft({ name: " " }), true))).toMatch(/^INVALID_INPUT: the experiment needs a name/);
    expect(code(() => experimentInput(draft({ count: "3" }), true))).toMatch(/everyMs is needed/);
    expect(code(() => experimentInput(draft({ count: "1001", everyMs: "10" }), true))).toMatch(/count must be a whole number from 1 to 1000/);
    expect(code(() => experimentInput(draft({ durationMs: "1.5" }), true))).toMatch(/durationMs must be a whole number/);
    expect(code(() => experimentInput(draft({ invariants: "ALL_GOOD" }), true))).toMatch(/unknown invariant ALL_GOOD/);
    expect(code(() => experimentInput(draft({ faults: [{ ...newFault(), mode: "PERCENT" }] }), true))).toMatch(/fault 1: mode PERCENT needs a value/);
    expect(code(() => experimentInput(draft({ faults: [{ ...newFault(), mode: "PERCENT", value: "150" }] }), true))).toMatch(/value must be a whole number from 1 to 100/);
  });
  it("sends a partition's far side as all of its nodes, and its params", () => {
    const f = { ...newFault(), action: "PARTITION", kinds: "", nodes: "gamma", to: "alpha, beta", params: '{"oneWay": true}' };
    expect(experimentInput(draft({ faults: [f] }), true).faults[0]).toEqual({ action: "PARTITION", target: { mode: "ONE", nodes: ["gamma"] }, to: { nodes: ["alpha", "beta"], mode: "ALL" }, params: { oneWay: true } });
  });
});

describe("a fault's params", () => {
  it("are nothing when empty, else a JSON object", () => {
    expect(parseParams("  ")).toBeUndefined();
    expect(parseParams('{"delayMs": 200, "from": ["a1"]}')).toEqual({ delayMs: 200, from: ["a1"] });
  });
  it("say why bad JSON or another value is refused", () => {
    expect(code(() => parseParams("{delayMs: 200}", "fault 1's params"))).toMatch(/^INVALID_INPUT: fault 1's params: not JSON: /);
    for (const bad of ["[1]", "200", "null", '"x"']) expect(code(() => parseParams(bad))).toMatch(/not a JSON object/);
    expect(code(() => experimentInput(draft({ faults: [{ ...newFault(), params: "{" }] }), true))).toMatch(/fault 1's params: not JSON/);
  });
});

describe("numbers and seeds", () => {
  it("reads a whole number in range or nothing", () => {
    expect(wholeNumber("", "x")).toBeUndefined();
    expect(wholeNumber(" 42 ", "x")).toBe(42);
    expect(code(() => wholeNumber("0", "x"))).toMatch(/from 1 up/);
    expect(code(() => wholeNumber("-3", "x"))).toMatch(/INVALID_INPUT/);
  });
  it("keeps a seed's every digit, up to 2^63 − 1", () => {
    expect(parseSeed("")).toBeUndefined();
    expect(parseSeed("9223372036854775807")).toBe("9223372036854775807");
    expect(code(() => parseSeed("9223372036854775808"))).toMatch(/2\^63/);
    expect(code(() => parseSeed("-1"))).toMatch(/INVALID_INPUT/);
  });
  it("picks a preview's seed a JS number holds exactly", () => {
    expect(randomSeed(() => 0.999999)).toMatch(/^\d+$/);
    expect(Number.isSafeInteger(Number(randomSeed(() => 0.999999)))).toBe(true);
  });
  it("says when an answered seed was rounded on its way", () => {
    expect(seedText(42)).toBe("42");
    expect(seedText(2 ** 62)).toMatch(/^≈ \d+ \(rounded/);
  });
});

describe("injections and their outcome", () => {
  it("splits NOT_INJECTED from its reason", () => {
    expect(splitOutcome("RECOVERED")).toEqual({ code: "RECOVERED", reason: null });
    expect(splitOutcome("NOT_INJECTED: round 2: nothing matches")).toEqual({ code: "NOT_INJECTED", reason: "round 2: nothing matches" });
  });
  it("shows a recovery as done and a miss as an error", () => {
    expect(tone(outcomeTone("RECOVERED"))).toBe("ok");
    expect(tone(outcomeTone("NOT_RECOVERED"))).toBe("bad");
    expect(tone(outcomeTone("NOT_INJECTED: x"))).toBe("bad");
    expect(tone(outcomeTone("ARMED"))).toBe("running");
    expect(tone(outcomeTone("DRY_RUN"))).toBe("idle");
  });
  it("counts what recovered", () => {
    expect(recoveredLine([{ outcome: "RECOVERED" }, { outcome: "ARMED" }])).toBe("1 of 2 recovered");
  });
  it("refreshes the list on every kind an experiment records", () => {
    for (const k of ["EXPERIMENT_STARTED", "EXPERIMENT_FINISHED", "FAULT_INJECTED", "FAULT_REVERTED", "RECOVERY_OBSERVED", "INVARIANT_VIOLATED"]) expect(EXPERIMENT_KINDS.some((p) => k.startsWith(p))).toBe(true);
  });
  it("reads the experiment's states in the right tones", () => {
    expect(tone("PASSED")).toBe("ok");
    expect(tone("ABORTED")).toBe("bad");
    expect(tone("ACTIVE")).toBe("running");
    expect(tone("PENDING")).toBe("warn");
  });
});

describe("a node that runs no experiments", () => {
  it("is told by its refusal, which the view says as a setting instead of an error", () => {
    expect(experimentsDisabled({ code: "FORBIDDEN", message: "fault injection is disabled on this node; start it with --fault-injection" })).toBe(true);
    expect(experimentsDisabled({ code: "FORBIDDEN", message: "this needs the admin role" })).toBe(false);
    expect(experimentsDisabled({ code: "UNAVAILABLE", message: "start it with --fault-injection" })).toBe(false);
    expect(experimentsDisabled(null)).toBe(false);
  });
});
