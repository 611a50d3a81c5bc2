import { describe, expect, it } from "vitest";
import { showArguments, totals, turns, usd, type TaskStep } from "../src/lib/transcript";
import { inboxOrder, type Approval } from "../src/lib/approvals";
import { decider, namesQuery } from "../src/lib/names";

const reply = (step: number, calls: [string, string][] = [], text = ""): TaskStep => ({
  step,
  kind: "REPLY",
  text,
  toolCalls: calls.map(([id, name]) => ({ id, name, arguments: "{}" })),
  callId: null,
  content: null,
  isError: false,
  inputTokens: "10",
  outputTokens: 2,
  costUsd: 0.001,
  model: "tiny",
  finishReason: calls.length ? "tool_calls" : "stop",
  latencyMs: 120,
  at: "2026-11-24T12:00:00Z",
});

const result = (step: number, callId: string, content: string, isError = false): TaskStep => ({
  ...reply(step),
  kind: "TOOL_RESULT",
  text: null,
  callId,
  content,
  isError,
  inputTokens: 0,
  outputTokens: 0,
  costUsd: 0,
  latencyMs: null,
});

const approval = (id: string, state: Approval["state"], requestedAt: string, decidedAt: string | null = null): Approval => ({
  id,
  taskId: "t1",
  agentId: "a1",
  step: 1,
  callId: "call_1",
  tool: "troupe_memory_get",
  arguments: "{}",
  reason: "policy",
  state,
  requestedAt,
  expiresAt: null,
  note: null,
  decidedBy: null,
  decidedAt,
});

describe("transcript", () => {
  it("pairs each tool call with its result and its approval, a turn per model call", () => {
    const steps = [reply(1, [["call_1", "troupe_memory_get"], ["call_2", "troupe_send_message"]]), result(1, "call_2", "sent"), result(1, "call_1", "not a swarm member", true), reply(2, [], "done")];
    const t = turns(steps, [approval("t1/1/call_1", "APPROVED", "2026-11-24T12:00:01Z")]);
    expect(t.map((x) => x.step)).toEqual([1, 2]);
    expect(t[0].calls.map((c) => [c.call.name, c.result?.content, c.result?.isError, c.approval?.state ?? null])).toEqual([
      ["troupe_memory_get", "not a swarm member", true, "APPROVED"],
      ["troupe_send_message", "sent", false, null],
    ]);
    expect(t[1].reply?.text).toBe("done");
    expect(t[1].calls).toEqual([]);
  });

  it("keeps a result whose call it has not seen, and a call still without a result", () => {
    const t = turns([result(3, "call_9", "late"), reply(4, [["call_1", "x"]])]);
    expect(t[0].reply).toBeNull();
    expect(t[0].orphans.map((o) => o.content)).toEqual(["late"]);
    expect(t[1].calls[0].result).toBeNull();
  });

  it("sums what the steps spent, reading Int64s that come as strings", () => {
    expect(totals([reply(1, [["c", "x"]]), result(1, "c", "r"), reply(2)])).toEqual({ calls: 2, inputTokens: 20, outputTokens: 4, costUsd: 0.002, latencyMs: 240 });
  });

  it("shows dollars as small as a model call's", () => {
    expect(usd(0)).toBe("$0");
    expect(usd(0.00001)).toBe("< $0.0001");
    expect(usd(0.0123)).toBe("$0.0123");
    expect(usd(1.5)).toBe("$1.50");
  });

  it("shows arguments compact when short, indented when long, as written when not JSON", () => {
    expect(showArguments('{ "key" : "plan" }')).toBe('{"key":"plan"}');
    expect(showArguments(JSON.stringify({ text: "x".repeat(100) }))).toBe(`{\n  "text": "${"x".repeat(100)}"\n}`);
    expect(showArguments("{not json")).toBe("{not json");
  });
});

describe("approvals", () => {
  it("lists the pending ones oldest first, then the decided ones newest first", () => {
    const order = inboxOrder([
      approval("d-old", "REJECTED", "2026-11-24T12:00:00Z", "2026-11-24T12:01:00Z"),
      approval("p-new", "PENDING", "2026-11-24T12:05:00Z"),
      approval("d-new", "APPROVED", "2026-11-24T12:00:00Z", "2026-11-24T12:03:00Z"),
      approval("p-old", "PENDING", "2026-11-24T12:02:00Z"),
    ]);
    expect(order.map((a) => a.id)).toEqual(["p-old", "p-new", "d-new", "d-old"]);
  });

  it("asks for agents' names in one aliased query", () => {
    expect(namesQuery(["a@n1", "b@n1"])).toEqual({
      query: "query($i0: ID!, $i1: ID!) { a0: agent(id: $i0) { name } a1: agent(id: $i1) { name } }",
      variables: { i0: "a@n1", i1: "b@n1" },
    });
  });
});

describe("who decided", () => {
  it("names the token when its name is known, else a short id; a timeout as such", () => {
    expect(decider("01a21925-ec30-72dd", { "01a21925-ec30-72dd": "alice" })).toBe("token alice");
    expect(decider("01a21925-ec30-72dd", {})).toBe("token 01a21925…");
    expect(decider("timeout", {})).toBe("its timeout");
    expect(decider(null, {})).toBe("?");
  });
});
