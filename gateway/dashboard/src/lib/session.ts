// The signed-in session: the token lives in sessionStorage (it leaves with the tab), the role
// comes from the gateway (`me`), never from the client's own guess.
import { computed, signal } from "@preact/signals";

export type Role = "VIEWER" | "OPERATOR" | "ADMIN";

const KEY = "troupe.token";

function stored(): string {
  try {
    return globalThis.sessionStorage?.getItem(KEY) ?? "";
  } catch {
    return "";
  }
}

export const token = signal<string>(stored());
export const role = signal<Role | null>(null);
export const nodeName = signal<string>("");

/** Operators and admins see controls; viewers see none. */
export const canAct = computed(() => role.value === "OPERATOR" || role.value === "ADMIN");

/** What needs an admin (a test alert through a channel) is shown to admins only. */
export const isAdmin = computed(() => role.value === "ADMIN");

export function setToken(value: string): void {
  token.value = value;
  try {
    if (value) globalThis.sessionStorage?.setItem(KEY, value);
    else globalThis.sessionStorage?.removeItem(KEY);
  } catch {
    // Private modes may refuse storage: the session then lasts as long as the page.
  }
}

export function signOut(): void {
  setToken("");
  role.value = null;
}
