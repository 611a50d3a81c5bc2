import { afterEach, describe, expect, it, vi } from "vitest";

/** A tab's sessionStorage, as the session module reads it when it loads. */
function tab(entries: Record<string, string>): Map<string, string> {
  const store = new Map(Object.entries(entries));
  vi.stubGlobal("sessionStorage", {
    getItem: (k: string) => store.get(k) ?? null,
    setItem: (k: string, v: string) => void store.set(k, String(v)),
    removeItem: (k: string) => void store.delete(k),
  });
  return store;
}

/** The session module as a reload in that tab loads it, fresh. */
async function reload() {
  vi.resetModules();
  return import("../src/lib/session");
}

afterEach(() => {
  vi.unstubAllGlobals();
});

describe("session across a reload", () => {
  it("restores the remembered role and node beside the token, so the shell draws at once", async () => {
    tab({ "troupe.token": "t1", "troupe.role": "OPERATOR", "troupe.node": "alpha" });
    const s = await reload();
    expect(s.token.value).toBe("t1");
    expect(s.role.value).toBe("OPERATOR");
    expect(s.nodeName.value).toBe("alpha");
    expect(s.canAct.value).toBe(true);
  });

  it("remembers nothing without a token, or from an older tab that stored only the token", async () => {
    tab({ "troupe.role": "ADMIN", "troupe.node": "alpha" });
    expect((await reload()).role.value).toBeNull();
    tab({ "troupe.token": "t1" });
    const s = await reload();
    expect(s.role.value).toBeNull();
    expect(s.nodeName.value).toBe("");
  });

  it("ignores a role it does not know", async () => {
    tab({ "troupe.token": "t1", "troupe.role": "ROOT", "troupe.node": "alpha" });
    expect((await reload()).role.value).toBeNull();
  });

  it("remembers what `me` answered, and a different answer replaces it", async () => {
    const store = tab({ "troupe.token": "t1", "troupe.role": "ADMIN", "troupe.node": "alpha" });
    const s = await reload();
    s.setIdentity("VIEWER", "beta");
    expect(s.role.value).toBe("VIEWER");
    expect(store.get("troupe.role")).toBe("VIEWER");
    expect(store.get("troupe.node")).toBe("beta");
  });

  it("signOut forgets the token, the role and the node", async () => {
    const store = tab({ "troupe.token": "t1", "troupe.role": "ADMIN", "troupe.node": "alpha" });
    const s = await reload();
    s.signOut();
    expect([s.token.value, s.role.value, s.nodeName.value]).toEqual(["", null, ""]);
    expect([...store.keys()]).toEqual([]);
    expect((await reload()).role.value).toBeNull();
  });

  it("a new token drops the role remembered for the old one", async () => {
    const store = tab({ "troupe.token": "t1", "troupe.role": "ADMIN", "troupe.node": "alpha" });
    const s = await reload();
    s.setToken("t2");
    expect(s.role.value).toBeNull();
    expect(store.has("troupe.role")).toBe(false);
    expect(store.get("troupe.token")).toBe("t2");
  });
});
