// Fault experiments (docs/faults.md), as the experiments view takes them: the start form's
// text fields turned into the API's StartExperimentInput (checked here first, so a typo is
// named before the node is asked), the queries, and how an injection's outcome reads.
// Every call is admin-only on the API, and FORBIDDEN on a node without --fault-injection.
import { ApiError, gql } from "./gql";
import { parseLabels, parseList } from "../components/forms";
import { EVENT_FIELDS, type TroupeEvent } from "./cursor";

export const FAULT_ACTIONS = [
  "CRASH",
  "HANG",
  "PROCESS_KILL",
  "PROCESS_PAUSE",
  "HOST_DISCONNECT",
  "HOST_HANG",
  "PARTITION",
  "STORE_REJECT",
  "STORE_SLOW_COMMIT",
  "DISK_FULL",
  "MESSAGE_DELAY",
  "MESSAGE_DROP",
  "DOMAIN_DESTROY",
  "DOMAIN_UNDEFINE",
];
export const SELECT_MODES = ["ONE", "ALL", "FIXED", "PERCENT"];
export const INVARIANTS = ["TREE_RESTORED", "RESTARTS_MATCH_STRATEGY", "NO_ESCALATION", "PEERS_UP", "TASKS_KEPT", "VMS_SINGLE"];
/** The states an experiment ends in: its stream ends after them, with the report. */
export const ENDED = ["PASSED", "FAILED", "ABORTED"];
/** What an experiment records (docs/faults.md, Events): the list is read again after each. */
export const EXPERIMENT_KINDS = ["EXPERIMENT_", "FAULT_", "RECOVERY_OBSERVED", "INVARIANT_VIOLATED"];

export interface Effect {
  id: string;
  effect: string;
}

export interface Injection {
  id: string;
  action: string;
  target: string;
  targetName: string;
  kind: string;
  supervisor: string;
  injectedAt: string;
  effectiveAt: string | null;
  revertedAt: string | null;
  recoveredAt: string | null;
  timeToDetectMs: number | null;
  timeToRecoverMs: number | null;
  outcome: string;
  expected: Effect[];
  observed?: TroupeEvent[];
}

export interface Report {
  verdict: string;
  reason: string;
  injected: number;
  recovered: number;
  maxTimeToRecoverMs: number | null;
  invariants: { name: string; ok: boolean; detail: string | null }[];
  unexpected: TroupeEvent[];
}

export interface Experiment {
  id: string;
  name: string;
  state: string;
  seed: number | string;
  startedAt: string;
  finishedAt: string | null;
  injections: Injection[];
  report: Report | null;
}

const INJECTION = "id action target targetName kind supervisor injectedAt effectiveAt revertedAt recoveredAt timeToDetectMs timeToRecoverMs outcome expected { id effect }";
const FIELDS = `id name state seed startedAt finishedAt
  injections { ${INJECTION} observed { ${EVENT_FIELDS} } }
  report { verdict reason injected recovered maxTimeToRecoverMs invariants { name ok detail } unexpected { ${EVENT_FIELDS} } }`;

export const LIST = `{ experiments { id name state seed startedAt finishedAt injections { id } } }`;

/** Whether `error` is this node's refusal of every experiment: it was started without
 * `--fault-injection` (a setting, not a failure: the view says so instead of showing it as
 * an error). */
export function experimentsDisabled(error: { code: string; message: string } | null | undefined): boolean {
  return error?.code === "FORBIDDEN" && error.message.includes("--fault-injection");
}
export const UPDATES = `subscription($id: ID!) { experimentUpdates(id: $id) { ${FIELDS} } }`;

export type Row = Pick<Experiment, "id" | "name" | "state" | "seed" | "startedAt" | "finishedAt"> & { injections: { id: string }[] };

export function startExperiment(input: StartInput): Promise<Experiment> {
  return gql<{ startExperiment: Experiment }>(`mutation($input: StartExperimentInput!) { startExperiment(input: $input) { ${FIELDS} } }`, { input }).then((d) => d.startExperiment);
}

export function stopExperiment(id: string): Promise<Experiment> {
  return gql<{ stopExperiment: Experiment }>(`mutation($id: ID!) { stopExperiment(id: $id) { ${FIELDS} } }`, { id }).then((d) => d.stopExperiment);
}

export function haltAllFaults(): Promise<number> {
  return gql<{ haltAllFaults: number }>(`mutation { haltAllFaults }`).then((d) => d.haltAllFaults);
}

/** One fault of the form, each field as typed. */
export interface FaultDraft {
  action: string;
  kinds: string;
  labels: string;
  ids: string;
  exclude: string;
  nodes: string;
  under: string;
  mode: string;
  value: string;
  /** The far side of a PARTITION: its nodes. */
  to: string;
  params: string;
}

export interface Draft {
  name: string;
  faults: FaultDraft[];
  durationMs: string;
  count: string;
  everyMs: string;
  seed: string;
  recoverWithinMs: string;
  leaseMs: string;
  invariants: string;
  allowEscalation: boolean;
}

export function newFault(): FaultDraft {
  return { action: "CRASH", kinds: "AGENT", labels: "", ids: "", exclude: "", nodes: "", under: "", mode: "ONE", value: "", to: "", params: "" };
}

export function newDraft(): Draft {
  return { name: "", faults: [newFault()], durationMs: "", count: "", everyMs: "", seed: "", recoverWithinMs: "", leaseMs: "", invariants: "", allowEscalation: false };
}

export interface Selector {
  ids?: string[];
  kinds?: string[];
  labels?: { key: string; value: string }[];
  nodes?: string[];
  under?: string;
  mode: string;
  value?: number;
  exclude?: string[];
}

export interface FaultInput {
  action: string;
  target: Selector;
  to?: Selector;
  params?: Record<string, unknown>;
}

export interface StartInput {
  name: string;
  faults: FaultInput[];
  durationMs?: number;
  count?: number;
  everyMs?: number;
  /** Int64 as a string of digits: a JS number holds only 53 bits. */
  seed?: string;
  recoverWithinMs?: number;
  leaseMs?: number;
  invariants?: string[];
  allowEscalation: boolean;
  dryRun: boolean;
}

const invalid = (message: string) => new ApiError(message, "INVALID_INPUT");

/** "" → undefined (the API's default); else a whole number from `min` up (to `max`), or INVALID_INPUT naming the field. */
export function wholeNumber(text: string, field: string, min = 1, max = 2 ** 31 - 1): number | undefined {
  const t = text.trim();
  if (!t) return undefined;
  const n = Number(t);
  if (!/^\d+$/.test(t) || n < min || n > max) throw invalid(`${field} must be a whole number from ${min}${max < 2 ** 31 - 1 ? ` to ${max}` : " up"}, not "${t}"`);
  return n;
}

/** The seed as digits (any size the API takes), or undefined for a random one. */
export function parseSeed(text: string): string | undefined {
  const t = text.trim();
  if (!t) return undefined;
  if (!/^\d{1,19}$/.test(t) || BigInt(t) > 2n ** 63n - 1n) throw invalid(`the seed must be a whole number from 0 to 2^63 − 1, not "${t}"`);
  return t;
}

/** A fault's params: nothing, or a JSON object ({"delayMs": 200}); anything else is INVALID_INPUT saying why. */
export function parseParams(text: string, where = "params"): Record<string, unknown> | undefined {
  const t = text.trim();
  if (!t) return undefined;
  let value: unknown;
  try {
    value = JSON.parse(t);
  } catch (e) {
    throw invalid(`${where}: not JSON: ${(e as Error).message}`);
  }
  if (value === null || typeof value !== "object" || Array.isArray(value)) throw invalid(`${where}: not a JSON object, such as {"delayMs": 200}`);
  return value as Record<string, unknown>;
}

/** Only what was filled in: a field left out takes the API's default. */
function selector(f: FaultDraft, where: string): Selector {
  const s: Selector = { mode: f.mode || "ONE" };
  const lists = { ids: f.ids, kinds: f.kinds, nodes: f.nodes, exclude: f.exclude } as const;
  for (const [key, text] of Object.entries(lists)) {
    const list = parseList(text);
    if (list.length) s[key as keyof typeof lists] = key === "kinds" ? list.map((k) => k.toUpperCase()) : list;
  }
  try {
    const labels = parseLabels(f.labels);
    if (labels.length) s.labels = labels;
  } catch (e) {
    throw invalid(`${where}: ${(e as Error).message}`);
  }
  if (f.under.trim()) s.under = f.under.trim();
  const needsValue = s.mode === "FIXED" || s.mode === "PERCENT";
  const value = wholeNumber(f.value, `${where}'s value`, 1, s.mode === "PERCENT" ? 100 : undefined);
  if (needsValue && value === undefined) throw invalid(`${where}: mode ${s.mode} needs a value (${s.mode === "FIXED" ? "how many" : "what percent"})`);
  if (value !== undefined) s.value = value;
  return s;
}

export function faultInput(f: FaultDraft, where: string): FaultInput {
  const out: FaultInput = { action: f.action, target: selector(f, where) };
  const to = parseList(f.to);
  if (to.length) out.to = { nodes: to, mode: "ALL" };
  const params = parseParams(f.params, `${where}'s params`);
  if (params) out.params = params;
  return out;
}

/** The form → StartExperimentInput; the first mistake is INVALID_INPUT naming its field. */
export function experimentInput(d: Draft, dryRun: boolean): StartInput {
  const name = d.name.trim();
  if (!name) throw invalid("the experiment needs a name");
  if (!d.faults.length) throw invalid("add at least one fault");
  const input: StartInput = { name, faults: d.faults.map((f, i) => faultInput(f, `fault ${i + 1}`)), allowEscalation: d.allowEscalation, dryRun };
  const numbers = {
    durationMs: wholeNumber(d.durationMs, "durationMs"),
    count: wholeNumber(d.count, "count", 1, 1000),
    everyMs: wholeNumber(d.everyMs, "everyMs"),
    recoverWithinMs: wholeNumber(d.recoverWithinMs, "recoverWithinMs"),
    leaseMs: wholeNumber(d.leaseMs, "leaseMs"),
  };
  for (const [k, v] of Object.entries(numbers)) if (v !== undefined) input[k as keyof typeof numbers] = v;
  if ((input.count ?? 1) > 1 && input.everyMs === undefined) throw invalid("everyMs is needed with a count above 1: the time between rounds");
  const seed = parseSeed(d.seed);
  if (seed !== undefined) input.seed = seed;
  const invariants = parseList(d.invariants).map((i) => i.toUpperCase());
  const unknown = invariants.find((i) => !INVARIANTS.includes(i));
  if (unknown) throw invalid(`unknown invariant ${unknown}; known: ${INVARIANTS.join(", ")}`);
  if (invariants.length) input.invariants = invariants;
  return input;
}

/**
 * A seed chosen here when none was typed: the node's own would be up to 63 bits, more than a
 * JS number holds exactly, and the page must show the seed that replays the picks (and Start
 * must pick what the preview showed).
 */
export function randomSeed(random: () => number = Math.random): string {
  return String(Math.floor(random() * 2 ** 48));
}

/** The seed as the answer gave it; one past 2^53 was rounded on its way here and would not replay. */
export function seedText(seed: number | string): string {
  return typeof seed === "number" && !Number.isSafeInteger(seed) ? `≈ ${seed} (rounded: too large for the browser)` : String(seed);
}

/** "NOT_INJECTED: round 2: nothing matches" → its code and its reason. */
export function splitOutcome(outcome: string): { code: string; reason: string | null } {
  const at = outcome.indexOf(":");
  return at < 0 ? { code: outcome, reason: null } : { code: outcome.slice(0, at), reason: outcome.slice(at + 1).trim() };
}

/** The state whose tone an injection's outcome takes (the Status component's map). */
export function outcomeTone(outcome: string): string {
  const tones: Record<string, string> = { RECOVERED: "SUCCEEDED", NOT_RECOVERED: "FAILED", NOT_INJECTED: "FAILED", ARMED: "ACTIVE", PENDING: "PENDING", DRY_RUN: "DEFINED" };
  return tones[splitOutcome(outcome).code] ?? "UNKNOWN";
}

/** "3 of 4 recovered". */
export function recoveredLine(injections: Pick<Injection, "outcome">[]): string {
  const done = injections.filter((i) => splitOutcome(i.outcome).code === "RECOVERED").length;
  return `${done} of ${injections.length} recovered`;
}
