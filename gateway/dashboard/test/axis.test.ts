import { describe, expect, it } from "vitest";
import { fitRange, TIME_STEPS, timeLabel } from "../src/lib/axis";

describe("a chart's fitted y range", () => {
  it("runs from 0 to a little above the largest value, however small", () => {
    const [lo, hi] = fitRange(0.001, 0.002, 0.01);
    expect(lo).toBe(0);
    expect(hi).toBeGreaterThan(0.002);
    expect(hi).toBeLessThan(0.003);
  });

  it("starts at 0 even when every value is far above it", () => {
    const [lo, hi] = fitRange(1.5, 2, 0.01);
    expect(lo).toBe(0);
    expect(hi).toBeCloseTo(2.2);
  });

  it("reads 0 to the floor, not 0 to 100, when every value is 0", () => {
    expect(fitRange(0, 0, 0.01)).toEqual([0, 0.01]);
  });

  it("reads 0 to the floor when there is no value yet (only gaps)", () => {
    expect(fitRange(null, null, 0.01)).toEqual([0, 0.01]);
  });

  it("leaves room below 0 for a value under it", () => {
    const [lo, hi] = fitRange(-1, 2, 0.01);
    expect(lo).toBeLessThan(-1);
    expect(hi).toBeGreaterThan(2);
  });
});

describe("a chart's time axis", () => {
  it("labels ticks with the time of day, seconds while they are less than a minute apart", () => {
    const t = Date.UTC(2026, 10, 29, 19, 46, 5) / 1000;
    expect(timeLabel(t, 5, "UTC")).toBe("19:46:05");
    expect(timeLabel(t, 300, "UTC")).toBe("19:46");
  });

  it("never steps by less than a second", () => {
    expect(Math.min(...TIME_STEPS)).toBe(1);
    expect(TIME_STEPS.every((s) => Number.isInteger(s))).toBe(true);
  });
});
