import { describe, expect, it } from "vitest";
import { eventParts, eventText, kindState, shortId, splitSentence, subjectHref, subjectMatches } from "../src/lib/sentence";
import { EVENT_FIELDS, normalise, type TroupeEvent } from "../src/lib/cursor";
import { usageSeries } from "../src/lib/usage";
import { byteUnit } from "../src/lib/format";
import { matches } from "../src/views/events";

const ID = "0192b7c4-51aa-7d3e-9f00-3f9c1a2b4c5d@solo";

const ev = (over: Partial<TroupeEvent>): TroupeEvent => ({ seq: 1, kind: "AGENT_FAILED", at: "2026-11-24T12:00:00Z", subject: ID, data: null, ...over });

describe("an event's sentence cut around its subject's name", () => {
  it("cuts after the kind word, so the name can be a link and the rest text", () => {
    expect(splitSentence("agent reviewer failed: exit 1", "reviewer")).toEqual({ before: "agent ", name: "reviewer", after: " failed: exit 1" });
    expect(splitSentence("task triage · 3f9c1a succeeded", "triage · 3f9c1a")).toEqual({ before: "task ", name: "triage · 3f9c1a", after: " succeeded" });
    expect(splitSentence("swarm team was created", "team")).toEqual({ before: "swarm ", name: "team", after: " was created" });
    expect(splitSentence("VM web-1 was restarted", "web-1")).toEqual({ before: "VM ", name: "web-1", after: " was restarted" });
  });
  it("cuts where the name names, not where it is also a word of the sentence", () => {
    // An agent named "agent", another named "failed".
    expect(splitSentence("agent agent failed: agent gone", "agent")).toEqual({ before: "agent ", name: "agent", after: " failed: agent gone" });
    expect(splitSentence("agent failed failed: exit 1", "failed")).toEqual({ before: "agent ", name: "failed", after: " failed: exit 1" });
  });
  it("finds the name elsewhere, and leaves the text whole when it is not there or there is none", () => {
    expect(splitSentence("reviewer restarted", "reviewer")).toEqual({ before: "", name: "reviewer", after: " restarted" });
    expect(splitSentence("the leader is now solo", "solo")).toEqual({ before: "the leader is now ", name: "solo", after: "" });
    expect(splitSentence("agent reviewer failed", "writer")).toEqual({ before: "agent reviewer failed", name: null, after: "" });
    expect(splitSentence("Fault injected", null)).toEqual({ before: "Fault injected", name: null, after: "" });
    expect(splitSentence("Fault injected", "")).toEqual({ before: "Fault injected", name: null, after: "" });
  });
  it("puts the parts back into the same text", () => {
    for (const [text, name] of [
      ["agent reviewer failed: exit 1", "reviewer"],
      ["task triage · 3f9c1a is dead: out of attempts", "triage · 3f9c1a"],
      ["member solo is up", "solo"],
    ]) {
      const s = splitSentence(text, name);
      expect(s.before + s.name + s.after).toBe(text);
    }
  });
});

describe("an event's parts as a row shows them", () => {
  it("links the name to the subject's page, the full id on hover", () => {
    const p = eventParts(ev({ text: "agent reviewer failed: exit 1", subjectName: "reviewer", subjectKind: "AGENT" }));
    expect(p).toEqual({ before: "agent ", name: "reviewer", after: " failed: exit 1", href: `/agents/${encodeURIComponent(ID)}`, title: ID, appended: false });
  });
  it("goes to each kind of subject's page (a host's is the hosts view, outlined)", () => {
    expect(subjectHref("TASK_SUCCEEDED", "t1", "TASK")).toBe("/tasks/t1");
    expect(subjectHref("SWARM_CREATED", "s1", "SWARM")).toBe("/swarms/s1");
    expect(subjectHref("VM_STARTED", "v1", "VM")).toBe("/vms/v1");
    expect(subjectHref("HOST_DOWN", "h1", "HOST")).toBe("/hosts?focus=h1");
    expect(subjectHref("AGENT_SPAWNED", "a@n", "AGENT")).toBe("/agents/a%40n");
    // A member has no page; with no kind known the event's first word says; no subject, no link.
    expect(subjectHref("MEMBER_UP", "solo", "MEMBER")).toBeNull();
    expect(subjectHref("AGENT_REMOVED", "a1@n", null)).toBe("/agents/a1%40n");
    // A supervisor's or service's name is no entity's: no page.
    expect(subjectHref("SWARM_COORDINATOR_STARTED", "coordinator", null)).toBeNull();
    expect(subjectHref("FAULT_INJECTED", "f1", null)).toBeNull();
    expect(subjectHref("AGENT_FAILED", null, "AGENT")).toBeNull();
  });
  it("without a name, shows the id in the sentence shortened, or after it, with the full id on hover", () => {
    const gone = eventParts(ev({ kind: "AGENT_REMOVED", text: `${ID} was removed`, subjectName: null, subjectKind: null }));
    expect(gone).toEqual({ before: "", name: "3f9c1a2b4c5d".slice(-6), after: " was removed", href: `/agents/${encodeURIComponent(ID)}`, title: ID, appended: false });
    const named = eventParts(ev({ kind: "EXPERIMENT_STARTED", text: "experiment chaos-1 started", subjectName: null, subjectKind: null }));
    expect(named).toMatchObject({ before: "experiment chaos-1 started (", name: shortId(ID), after: ")", href: null, title: ID, appended: true });
  });
  it("with no subject, is the sentence alone; with no text (an older node), the kind in words", () => {
    expect(eventParts(ev({ kind: "NODE_STARTED", subject: null, text: "Node started" }))).toEqual({ before: "Node started", name: null, after: "", href: null, title: null, appended: false });
    expect(eventText({ kind: "TASK_SUCCEEDED", subject: null })).toBe("Task succeeded");
  });
  it("names a subject the node names by its id (a service) by that id, whole", () => {
    expect(eventParts(ev({ kind: "SERVICE_STARTED", subject: "scheduler", text: "scheduler service started", subjectName: null, subjectKind: null }))).toEqual({
      before: "",
      name: "scheduler",
      after: " service started",
      href: null,
      title: "scheduler",
      appended: false,
    });
  });
  it("shortens an id to its end, without the node and dashes", () => {
    expect(shortId(ID)).toBe("2b4c5d");
    expect(shortId("0192b7c4-51aa-7d3e", 4)).toBe("7d3e");
    // Not a generated id: whole.
    expect(shortId("solo")).toBe("solo");
    expect(shortId("scheduler")).toBe("scheduler");
    expect(shortId("01a2@n")).toBe("01a2@n");
  });
  it("reads a kind's tone from its last word", () => {
    expect(kindState("AGENT_FAILED")).toBe("FAILED");
    expect(kindState("TASK_SUCCEEDED")).toBe("SUCCEEDED");
    expect(kindState("AGENT_BREAKER_OPENED")).toBe("OPEN");
    expect(kindState("AGENT_BREAKER_HALF_OPEN")).toBe("HALF_OPEN");
    expect(kindState("AGENT_SPAWNED")).toBeNull();
  });
});

describe("the events view's subject filter", () => {
  const e = ev({ subjectName: "Reviewer", subjectKind: "AGENT" });
  it("matches the subject's id or its name, the name in any case", () => {
    expect(subjectMatches(e, "")).toBe(true);
    expect(subjectMatches(e, "3f9c1a")).toBe(true);
    expect(subjectMatches(e, "review")).toBe(true);
    expect(subjectMatches(e, "REVIEWER")).toBe(true);
    expect(subjectMatches(e, "writer")).toBe(false);
    expect(matches(e, ["AGENT_"], "reviewer")).toBe(true);
    expect(matches(e, ["TASK_"], "reviewer")).toBe(false);
    expect(matches(ev({ subject: null, subjectName: null }), [], "reviewer")).toBe(false);
  });
});

describe("events as they arrive", () => {
  it("ask the node for the sentence, the name and its kind", () => {
    expect(EVENT_FIELDS.split(" ")).toEqual(expect.arrayContaining(["text", "subjectName", "subjectKind"]));
  });
  it("are normalised: a seq as a number, and the sentence fields always there", () => {
    const n = normalise({ seq: "42" as unknown as number, kind: "TASK_QUEUED", at: "2026-11-24T12:00:00Z", subject: null, data: null });
    expect(n).toMatchObject({ seq: 42, text: "Task queued", subjectName: null, subjectKind: null });
    const full = ev({ text: "agent reviewer failed", subjectName: "reviewer", subjectKind: "AGENT" });
    expect(normalise(full)).toBe(full);
  });
});

describe("an agent's usage as chart series", () => {
  it("maps the points oldest first, CPU unknown as a gap, memory in MiB", () => {
    const s = usageSeries([
      { at: "2026-11-24T12:00:10Z", cpuCores: 0.5, rssBytes: "20971520" },
      { at: "2026-11-24T12:00:00Z", cpuCores: null, rssBytes: 10485760 },
      { at: "2026-11-24T12:00:20Z", cpuCores: 1.25, rssBytes: 31457280 },
    ]);
    const t0 = Date.parse("2026-11-24T12:00:00Z") / 1000;
    expect(s.xs).toEqual([t0, t0 + 10, t0 + 20]);
    expect(s.cpu).toEqual([null, 0.5, 1.25]);
    expect(s.rss).toEqual([10, 20, 30]);
    expect(s.unit).toBe("MiB");
    expect(s.latestRss).toBe(31457280);
  });
  it("turns to GiB once a point is a GiB or more, and keeps each time once", () => {
    const s = usageSeries([
      { at: "2026-11-24T12:00:00Z", cpuCores: 2, rssBytes: 2 ** 30 * 1.5 },
      { at: "2026-11-24T12:00:00Z", cpuCores: 2, rssBytes: 2 ** 30 * 1.5 },
      { at: "2026-11-24T12:00:10Z", cpuCores: null, rssBytes: 2 ** 29 },
    ]);
    expect(s.unit).toBe("GiB");
    expect(s.rss).toEqual([1.5, 0.5]);
    expect(s.cpu).toEqual([2, null]);
  });
  it("is empty for an agent that runs no process", () => {
    expect(usageSeries([])).toEqual({ xs: [], cpu: [], rss: [], unit: "MiB", latestRss: null });
  });
  it("picks the unit by the largest size", () => {
    expect(byteUnit(300 * 2 ** 20)).toEqual({ unit: "MiB", scale: 2 ** 20 });
    expect(byteUnit(2 ** 30)).toEqual({ unit: "GiB", scale: 2 ** 30 });
  });
});
