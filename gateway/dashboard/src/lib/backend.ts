// What an agent runs, as the spawn and swarm forms take it: one draft of text fields per
// backend, turned into the API's BackendInput (each `*BackendInput` of schema.graphql).
import { ApiError } from "./gql";
import { shellSplit } from "./shell";

export const BUILTINS = ["echo", "sleep", "counter", "fail", "panic"];

export interface FieldSpec {
  key: string;
  label: string;
  required?: boolean;
  /** text (default), a whole number, a choice, or lines (env, headers). */
  kind?: "text" | "number" | "choice" | "lines";
  options?: string[];
  placeholder?: string;
}

const COMMAND: FieldSpec = { key: "command", label: "Command", required: true, placeholder: 'sh -c "tr a-z A-Z"' };
const ENV: FieldSpec = { key: "env", label: "Environment (NAME=value, one a line)", kind: "lines" };
const TIMEOUT: FieldSpec = { key: "timeoutMs", label: "Timeout (ms)", kind: "number" };

/** Every backend the API takes, with its fields (required ones first). */
export const BACKENDS: Record<string, FieldSpec[]> = {
  builtin: [{ key: "kind", label: "Built-in kind", kind: "choice", options: BUILTINS, required: true }],
  exec: [COMMAND, TIMEOUT, ENV],
  process: [{ ...COMMAND, placeholder: "python3 examples/agents/process_agent.py" }, TIMEOUT, { key: "heartbeatMs", label: "Heartbeat (ms)", kind: "number" }, ENV],
  http: [{ key: "url", label: "URL", required: true, placeholder: "http://127.0.0.1:9000/task" }, TIMEOUT, { key: "headers", label: "Headers (Name: value, one a line)", kind: "lines" }],
  llm: [
    { key: "baseUrl", label: "Base URL", required: true, placeholder: "https://api.openai.com" },
    { key: "model", label: "Model", required: true },
    { key: "systemPrompt", label: "System prompt" },
    { key: "apiKeyEnv", label: "API key variable (on the node)" },
    { key: "apiKeyFile", label: "API key file (on the node)" },
    { key: "tools", label: "Tools (glob patterns, comma-separated)", placeholder: "troupe_*" },
    { key: "maxSteps", label: "Most model calls per task", kind: "number" },
  ],
  mcp: [
    { key: "command", label: "Command (or a URL)", placeholder: "npx some-mcp-server" },
    { key: "url", label: "URL (or a command)" },
    { key: "apiKeyEnv", label: "Bearer token variable (for a URL)" },
    TIMEOUT,
    { ...ENV, label: "Environment (for a command; NAME=value, one a line)" },
  ],
};

export const BACKEND_KINDS = Object.keys(BACKENDS);

export interface BackendDraft {
  type: string;
  /** Each field's text, by its key. */
  fields: Record<string, string>;
}

export function newDraft(type: string): BackendDraft {
  return { type, fields: type === "builtin" ? { kind: "echo" } : {} };
}

const invalid = (message: string) => new ApiError(message, "INVALID_INPUT");

/** "NAME=value" lines → [{name, value}] (a value may hold "=" and commas). */
export function parseEnv(text: string): { name: string; value: string }[] {
  return lines(text).map((l) => {
    const eq = l.indexOf("=");
    if (eq <= 0) throw invalid(`"${l}" is not a variable: write NAME=value`);
    return { name: l.slice(0, eq).trim(), value: l.slice(eq + 1) };
  });
}

/** "Name: value" lines → [{name, value}]. */
export function parseHeaders(text: string): { name: string; value: string }[] {
  return lines(text).map((l) => {
    const colon = l.indexOf(":");
    if (colon <= 0) throw invalid(`"${l}" is not a header: write Name: value`);
    return { name: l.slice(0, colon).trim(), value: l.slice(colon + 1).trim() };
  });
}

function lines(text: string): string[] {
  return text
    .split("\n")
    .map((l) => l.trim())
    .filter(Boolean);
}

/** The draft as the API's BackendInput: blank fields are left out; a missing required one is INVALID_INPUT. */
export function backendInput(d: BackendDraft): Record<string, unknown> {
  const specs = BACKENDS[d.type];
  if (!specs) throw invalid(`no backend ${d.type}`);
  const out: Record<string, unknown> = {};
  for (const spec of specs) {
    const text = (d.fields[spec.key] ?? "").trim();
    if (!text) {
      if (spec.required) throw invalid(`give the ${spec.label.toLowerCase()}`);
      continue;
    }
    out[spec.key] = value(spec, text);
  }
  if (d.type === "mcp" && !out.command === !out.url) throw invalid("give an MCP server's command or its URL (one of them)");
  return { [d.type]: out };
}

function value(spec: FieldSpec, text: string): unknown {
  switch (spec.key) {
    case "command":
      return shellSplit(text);
    case "env":
      return parseEnv(text);
    case "headers":
      return parseHeaders(text);
    case "tools":
      return text
        .split(",")
        .map((s) => s.trim())
        .filter(Boolean);
  }
  if (spec.kind === "number") {
    const n = Number(text);
    if (!Number.isInteger(n) || n < 0) throw invalid(`${spec.label} is a whole number`);
    return n;
  }
  return text;
}

/** The limits the form was given, as LimitsInput (null when none): cores may be fractional. */
export function limitsInput(fields: Record<string, string>): Record<string, number> | null {
  const out: Record<string, number> = {};
  for (const key of ["memoryMiB", "cpuSeconds", "openFiles", "cpuCores"]) {
    const text = (fields[key] ?? "").trim();
    if (!text) continue;
    const n = Number(text);
    if (!(n > 0) || (key !== "cpuCores" && !Number.isInteger(n))) throw invalid(`the ${key} limit is a positive ${key === "cpuCores" ? "number" : "whole number"}`);
    out[key] = n;
  }
  return Object.keys(out).length ? out : null;
}
