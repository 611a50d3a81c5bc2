// Routes with their filters in the query string, so a link or a reload shows the same view.
import { computed, signal } from "@preact/signals";

export const location_ = signal<{ path: string; search: string }>({
  path: globalThis.location?.pathname ?? "/",
  search: globalThis.location?.search ?? "",
});

export const query = computed(() => new URLSearchParams(location_.value.search));

export function navigate(href: string, replace = false): void {
  const url = new URL(href, location.href);
  if (replace) history.replaceState(null, "", url);
  else history.pushState(null, "", url);
  location_.value = { path: url.pathname, search: url.search };
  if (!replace) window.scrollTo?.(0, 0);
}

/** Sets (or, with "" / null, removes) query-string filters, keeping the path. */
export function setQuery(changes: Record<string, string | null | undefined>): void {
  const q = new URLSearchParams(location_.value.search);
  for (const [k, v] of Object.entries(changes)) {
    if (v === null || v === undefined || v === "") q.delete(k);
    else q.set(k, v);
  }
  const s = q.toString();
  navigate(`${location_.value.path}${s ? `?${s}` : ""}`, true);
}

/** Matches `/agents/:id`-style patterns; answers the parameters or null. */
export function match(pattern: string, path: string): Record<string, string> | null {
  const p = pattern.split("/").filter(Boolean);
  const s = path.split("/").filter(Boolean);
  if (p.length !== s.length) return null;
  const params: Record<string, string> = {};
  for (let i = 0; i < p.length; i++) {
    if (p[i].startsWith(":")) params[p[i].slice(1)] = decodeURIComponent(s[i]);
    else if (p[i] !== s[i]) return null;
  }
  return params;
}

export function startRouter(): void {
  addEventListener("popstate", () => {
    location_.value = { path: location.pathname, search: location.search };
  });
  // In-app links navigate without a reload; modified clicks open tabs as usual.
  document.addEventListener("click", (e) => {
    if (e.defaultPrevented || e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey) return;
    const a = (e.target as Element).closest?.("a");
    if (!a || a.target || a.hasAttribute("download")) return;
    const url = new URL(a.href, location.href);
    if (url.origin !== location.origin || url.pathname.startsWith("/graphiql") || url.pathname.startsWith("/graphql")) return;
    e.preventDefault();
    navigate(url.pathname + url.search);
  });
}
