import { describe, expect, it } from "vitest";
import { shellSplit } from "../src/lib/shell";
import { backendInput, limitsInput, newDraft, parseEnv, parseHeaders, BACKENDS } from "../src/lib/backend";
import { shortIds, taskName } from "../src/lib/names";
import { shouldTick } from "../src/components/time";

describe("a command line split as a POSIX shell splits it", () => {
  it("keeps a double-quoted argument whole", () => {
    expect(shellSplit('sh -c "tr a-z A-Z"')).toEqual(["sh", "-c", "tr a-z A-Z"]);
  });
  it("takes single quotes literally, backslashes and all", () => {
    expect(shellSplit("echo 'single quotes' 'a\\b \"c\"'")).toEqual(["echo", "single quotes", 'a\\b "c"']);
  });
  it("honours backslashes outside quotes and the few they escape inside double quotes", () => {
    expect(shellSplit("a\\ b c\\\\d")).toEqual(["a b", "c\\d"]);
    expect(shellSplit('"x \\"y\\" \\$z \\n"')).toEqual(['x "y" $z \\n']);
    expect(shellSplit("one \\\ntwo")).toEqual(["one", "two"]);
  });
  it("joins quoted and bare parts of one word, keeps empty quotes, ignores runs of spaces", () => {
    expect(shellSplit(`  --name="a b"'c'd  ''  "" `)).toEqual(["--name=a bcd", "", ""]);
    expect(shellSplit("python3   examples/agents/process_agent.py\tx")).toEqual(["python3", "examples/agents/process_agent.py", "x"]);
    expect(shellSplit("   ")).toEqual([]);
  });
  it("refuses an unclosed quote or a trailing backslash with INVALID_INPUT", () => {
    for (const bad of ['sh -c "tr', "it's", "end\\"]) {
      try {
        shellSplit(bad);
        expect.unreachable();
      } catch (e) {
        expect((e as { code: string }).code).toBe("INVALID_INPUT");
      }
    }
  });
});

describe("the backend a form describes", () => {
  it("offers every backend of BackendInput", () => {
    expect(Object.keys(BACKENDS).sort()).toEqual(["builtin", "exec", "http", "llm", "mcp", "process"]);
  });
  it("builds an exec backend from a quoted command, with env and timeout", () => {
    const d = { type: "exec", fields: { command: 'sh -c "tr a-z A-Z"', env: "A=1\nB=x=y, z", timeoutMs: "5000" } };
    expect(backendInput(d)).toEqual({ exec: { command: ["sh", "-c", "tr a-z A-Z"], timeoutMs: 5000, env: [{ name: "A", value: "1" }, { name: "B", value: "x=y, z" }] } });
  });
  it("defaults a built-in to echo and leaves blank fields out", () => {
    expect(backendInput(newDraft("builtin"))).toEqual({ builtin: { kind: "echo" } });
    expect(backendInput({ type: "http", fields: { url: " http://h/t ", headers: "X-Key: a:b" } })).toEqual({ http: { url: "http://h/t", headers: [{ name: "X-Key", value: "a:b" }] } });
    expect(backendInput({ type: "llm", fields: { baseUrl: "http://m", model: "tiny", tools: "troupe_*, x" } })).toEqual({ llm: { baseUrl: "http://m", model: "tiny", tools: ["troupe_*", "x"] } });
  });
  it("refuses what the API would: a missing required field, an MCP server with neither or both of command and url", () => {
    expect(() => backendInput({ type: "llm", fields: { baseUrl: "http://m" } })).toThrow(/model/);
    expect(() => backendInput({ type: "mcp", fields: {} })).toThrow(/command or its URL/);
    expect(() => backendInput({ type: "mcp", fields: { command: "x", url: "http://y" } })).toThrow(/command or its URL/);
    expect(backendInput({ type: "mcp", fields: { command: "srv --stdio" } })).toEqual({ mcp: { command: ["srv", "--stdio"] } });
    expect(() => backendInput({ type: "exec", fields: { command: "x", timeoutMs: "1.5" } })).toThrow(/whole number/);
  });
  it("reads env, headers and limits", () => {
    expect(() => parseEnv("NOPE")).toThrow(/NAME=value/);
    expect(() => parseHeaders("nope")).toThrow(/Name: value/);
    expect(limitsInput({})).toBeNull();
    expect(limitsInput({ memoryMiB: "256", cpuCores: "0.5" })).toEqual({ memoryMiB: 256, cpuCores: 0.5 });
    expect(() => limitsInput({ openFiles: "-1" })).toThrow(/positive/);
  });
});

describe("names first", () => {
  const minute = ["0193f7a2-6c1e-7b3a-9d4f-2a8e5c1b7d90@n", "0193f7a2-6c1f-7b3a-9d4f-2a8e5c1a7d90@n", "0193f7a2-6c20-7000-8000-00000000abcd@n"];
  it("shortens ids from their end, six hex digits as the server does, more where that keeps them apart", () => {
    const s = shortIds(minute);
    expect(s.get(minute[2])).toBe("00abcd");
    expect(s.get(minute[0])).toBe("1b7d90");
    expect(s.get(minute[1])).toBe("1a7d90");
    const alike = ["0193f7a2-6c1e-7b3a-9d4f-2a8e5c1b7d90@n", "0193f7a2-6c1f-7b3a-9d4f-2a8e5d1b7d90@n"];
    expect(shortIds(alike).get(alike[0])).toBe("c1b7d90");
    expect(shortIds(["x-1234@n"], 8).get("x-1234@n")).toBe("x1234");
  });
  it("names a task as the server does: its capability, else its agent's name, and the end of its id", () => {
    const id = minute[0];
    // The server's Task.name and an event's subjectName for the same task (actors/src/names.rs).
    expect(taskName({ id, capability: "think" })).toBe("think · 1b7d90");
    expect(taskName({ id, capability: null, agentName: "echoer" })).toBe("echoer · 1b7d90");
    expect(taskName({ id, capability: null, agentId: "a1" }, { a1: "echoer" })).toBe("echoer · 1b7d90");
    expect(taskName({ id })).toBe("task 1b7d90");
    // actors/src/names.rs tasks_of_the_same_minute_have_different_names
    expect(taskName({ id: "01936f2a-0000-7000-8000-00000000a1b2@node-a", capability: "triage" })).toBe("triage · 00a1b2");
    expect(taskName({ id, capability: "think" }, {}, shortIds(minute.concat("0193f7a2-6c21-7000-8000-00001c1b7d90@n")))).toBe("think · 5c1b7d90");
  });
});

describe("the relative-time clock", () => {
  it("ticks each second while something young was shown in the last minute, each 5 s otherwise", () => {
    expect(shouldTick(3, 100_000, 90_000)).toBe(true);
    expect(shouldTick(3, 200_000, 90_000)).toBe(false);
    expect(shouldTick(5, 200_000, 90_000)).toBe(true);
  });
});
