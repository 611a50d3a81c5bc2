// The signed-in session. The token lives in sessionStorage (it leaves with the tab); beside it,
// the role and node name the gateway last answered to `me` in this tab, so a reload draws the
// shell at once instead of one round trip late. They are a hint, never the client's own guess:
// `me` is asked again on every load and wins, and the gateway checks every request anyway.
import { computed, signal } from "@preact/signals";

export type Role = "VIEWER" | "OPERATOR" | "ADMIN";

const KEY = "troupe.token";
const ROLE_KEY = "troupe.role";
const NODE_KEY = "troupe.node";
const ROLES: readonly string[] = ["VIEWER", "OPERATOR", "ADMIN"];

function read(key: string): string {
  try {
    return globalThis.sessionStorage?.getItem(key) ?? "";
  } catch {
    return "";
  }
}

/** Stores `value`, or forgets the key when it is empty. */
function write(key: string, value: string): void {
  try {
    if (value) globalThis.sessionStorage?.setItem(key, value);
    else globalThis.sessionStorage?.removeItem(key);
  } catch {
    // Private modes may refuse storage: the session then lasts as long as the page.
  }
}

/** The role remembered beside a stored token; null without a token or with an unknown role. */
export function rememberedRole(): Role | null {
  const r = read(ROLE_KEY);
  return read(KEY) && ROLES.includes(r) ? (r as Role) : null;
}

export const token = signal<string>(read(KEY));
export const role = signal<Role | null>(rememberedRole());
export const nodeName = signal<string>(role.value ? read(NODE_KEY) : "");

/** Operators and admins see controls; viewers see none. */
export const canAct = computed(() => role.value === "OPERATOR" || role.value === "ADMIN");

/** What needs an admin (a test alert through a channel) is shown to admins only. */
export const isAdmin = computed(() => role.value === "ADMIN");

export function setToken(value: string): void {
  // A role remembered for another token says nothing about this one.
  if (value !== token.value) setIdentity(null, "");
  token.value = value;
  write(KEY, value);
}

/** What `me` answered: shown now, and remembered for a reload in this tab. */
export function setIdentity(r: Role | null, node: string): void {
  role.value = r;
  nodeName.value = node;
  write(ROLE_KEY, r ?? "");
  write(NODE_KEY, node);
}

export function signOut(): void {
  setToken("");
  setIdentity(null, "");
}
