import { describe, expect, it } from "vitest";
import { ALERTS_REFRESH_KINDS, failedLine, outcomeWhen, parseOutcome, ruleKinds } from "../src/lib/alerts";
import { tone } from "../src/lib/format";

describe("alerts view", () => {
  it("takes the outcome filter from the query string, any case, and nothing else", () => {
    expect(parseOutcome("FAILED")).toBe("FAILED");
    expect(parseOutcome("pending")).toBe("PENDING");
    expect(parseOutcome("")).toBeNull();
    expect(parseOutcome(null)).toBeNull();
    expect(parseOutcome("LOST")).toBeNull();
  });
  it("says when a pending delivery is tried again and when a delivered one arrived", () => {
    const none = { nextAttemptAt: null, deliveredAt: null };
    expect(outcomeWhen({ ...none, outcome: "PENDING", nextAttemptAt: "2026-11-26T22:00:01Z" })).toEqual({ words: "next attempt", at: "2026-11-26T22:00:01Z" });
    expect(outcomeWhen({ ...none, outcome: "DELIVERED", deliveredAt: "2026-11-26T22:00:02Z" })).toEqual({ words: "delivered", at: "2026-11-26T22:00:02Z" });
    expect(outcomeWhen({ ...none, outcome: "FAILED" })).toBeNull();
    expect(outcomeWhen({ ...none, outcome: "PENDING" })).toBeNull();
  });
  it("counts failed deliveries in words, and says nothing for none", () => {
    expect(failedLine(0)).toBe("");
    expect(failedLine(1)).toBe("1 alert delivery failed");
    expect(failedLine(3)).toBe("3 alert deliveries failed");
    expect(failedLine(500)).toBe("500 or more alert deliveries failed");
  });
  it("reads a rule with no kinds as every kind at its severity or above", () => {
    expect(ruleKinds({ kinds: ["AGENT_*", "TASK_DEAD"], severity: "warning" })).toBe("AGENT_*, TASK_DEAD");
    expect(ruleKinds({ kinds: [], severity: "critical" })).toBe("every kind at critical or above");
  });
  it("is read again on a failed delivery, a rule changed and the events rules take", () => {
    for (const k of ["ALERT_DELIVERY_FAILED", "ALERT_RULE_SET", "ALERT_RULE_DELETED", "AGENT_ALERT", "HOST_DOWN"]) expect(ALERTS_REFRESH_KINDS).toContain(k);
  });
  it("shows a delivered notice as done and a failed one as an error", () => {
    expect(tone("DELIVERED")).toBe("ok");
    expect(tone("FAILED")).toBe("bad");
    expect(tone("PENDING")).toBe("warn");
  });
});
