// An LLM task's committed steps (`task { transcript }`) read as a person follows them: one
// turn per model call, its reply, each tool call it asked for with that call's result and,
// when a policy held it, the operator's decision.
import type { Approval } from "./approvals";

export interface ToolCall {
  id: string;
  name: string;
  /** JSON text as the model wrote it, perhaps not valid. */
  arguments: string;
}

export interface TaskStep {
  step: number;
  kind: "REPLY" | "TOOL_RESULT";
  text: string | null;
  toolCalls: ToolCall[];
  callId: string | null;
  content: string | null;
  isError: boolean;
  inputTokens: number | string;
  outputTokens: number | string;
  costUsd: number;
  model: string | null;
  finishReason: string | null;
  latencyMs: number | string | null;
  at: string;
}

export const STEP_FIELDS = "step kind text toolCalls { id name arguments } callId content isError inputTokens outputTokens costUsd model finishReason latencyMs at";

export interface Call {
  call: ToolCall;
  /** Its result once committed. */
  result: TaskStep | null;
  approval: Approval | null;
}

export interface Turn {
  step: number;
  /** Null when only results of this model call are committed (a reply lost is not shown as one). */
  reply: TaskStep | null;
  calls: Call[];
  /** Results whose call is not in a reply seen (kept rather than dropped). */
  orphans: TaskStep[];
}

/** Turns in step order; each call with its result (by call id) and its approval (by step and call id). */
export function turns(steps: TaskStep[], approvals: Approval[] = []): Turn[] {
  const byStep = new Map<number, Turn>();
  const turn = (step: number) => {
    let t = byStep.get(step);
    if (!t) {
      t = { step, reply: null, calls: [], orphans: [] };
      byStep.set(step, t);
    }
    return t;
  };
  const held = new Map(approvals.map((a) => [`${a.step}/${a.callId}`, a]));
  for (const s of steps) {
    if (s.kind !== "REPLY") continue;
    const t = turn(s.step);
    t.reply = s;
    t.calls = s.toolCalls.map((call) => ({ call, result: null, approval: held.get(`${s.step}/${call.id}`) ?? null }));
  }
  for (const s of steps) {
    if (s.kind !== "TOOL_RESULT") continue;
    const t = turn(s.step);
    const c = t.calls.find((c) => c.call.id === s.callId && !c.result);
    if (c) c.result = s;
    else t.orphans.push(s);
  }
  return [...byStep.values()].sort((a, b) => a.step - b.step);
}

/** What the task's steps spent: model calls, tokens in and out, dollars, time waiting on the model. */
export function totals(steps: TaskStep[]): { calls: number; inputTokens: number; outputTokens: number; costUsd: number; latencyMs: number } {
  const sum = { calls: 0, inputTokens: 0, outputTokens: 0, costUsd: 0, latencyMs: 0 };
  for (const s of steps) {
    if (s.kind === "REPLY") sum.calls++;
    sum.inputTokens += Number(s.inputTokens);
    sum.outputTokens += Number(s.outputTokens);
    sum.costUsd += s.costUsd;
    sum.latencyMs += Number(s.latencyMs ?? 0);
  }
  return sum;
}

/** US dollars as small as a model call's: "$0", "< $0.0001", "$0.0123", "$1.50". */
export function usd(n: number): string {
  if (!n) return "$0";
  if (n < 0.0001) return "< $0.0001";
  if (n < 0.1) return `$${n.toFixed(4)}`;
  return `$${n.toFixed(2)}`;
}

/** Tool arguments as written by the model: short JSON on one line, longer JSON indented, anything else as it came. */
export function showArguments(text: string): string {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return text;
  }
  const compact = JSON.stringify(value);
  return compact.length <= 80 ? compact : JSON.stringify(value, null, 2);
}
