import { describe, expect, it } from "vitest";
import { appendLines, type LogLine } from "../src/lib/logs";
import { hasLog } from "../src/views/logs";

const line = (seq: number | string, text = `line ${seq}`, stream = "stderr"): LogLine => ({ seq: seq as number, at: "2026-11-24T12:00:00Z", stream, line: text, taskId: null });

describe("agent log", () => {
  it("appends only lines past the last seq held, so a replay adds nothing twice", () => {
    const held = appendLines([], [line(1), line(2)]);
    const next = appendLines(held, [line(2), line(1), line(3)]);
    expect(next.map((l) => l.seq)).toEqual([1, 2, 3]);
    expect(appendLines(next, [line(3)])).toBe(next);
  });

  it("reads Int64 seqs that come as strings as numbers", () => {
    const held = appendLines([], [line("9"), line("10")]);
    expect(held.map((l) => l.seq)).toEqual([9, 10]);
    expect(appendLines(held, [line("10"), line("11")]).map((l) => l.seq)).toEqual([9, 10, 11]);
  });

  it("keeps at most the last `keep` lines", () => {
    let held: LogLine[] = [];
    for (let s = 1; s <= 25; s += 5) held = appendLines(held, [1, 2, 3, 4, 5].map((k) => line(s + k - 1)), 7);
    expect(held.map((l) => l.seq)).toEqual([19, 20, 21, 22, 23, 24, 25]);
  });

  it("is shown only for exec and process agents", () => {
    expect(["exec:/bin/sh", "process:python3", "builtin:echo", "llm:tiny", "http:http://x"].map(hasLog)).toEqual([true, true, false, false, false]);
    // An MCP server's command writes its stderr there; a URL's server keeps its own.
    expect(["mcp:python3", "mcp:http://127.0.0.1:9/mcp", "mcp:https://x/mcp"].map(hasLog)).toEqual([true, false, false]);
  });
});
