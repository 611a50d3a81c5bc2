// The shell: sign-in, navigation, the connection banner, the pause-live switch, and the
// route table (every route is also served by the gateway for a deep link or a reload).
import type { ComponentType } from "preact";
import { useEffect, useState } from "preact/hooks";
import { gql, link, disposeWs, ApiError } from "./lib/gql";
import { token, setToken, role, nodeName, setIdentity, signOut, type Role } from "./lib/session";
import { location_, match } from "./lib/router";
import { paused } from "./lib/live";
import { Toasts } from "./components/actions";
import { Overview } from "./views/overview";
import { TreeView } from "./views/tree";
import { AgentsView, AgentView } from "./views/agents";
import { TasksView, TaskView } from "./views/tasks";
import { SwarmsView, SwarmView } from "./views/swarms";
import { HostsView } from "./views/hosts";
import { VmsView, VmView } from "./views/vms";
import { EventsView } from "./views/events";
import { ApprovalsView } from "./views/approvals";
import { AlertsView } from "./views/alerts";
import { ExperimentsView } from "./views/experiments";
import { ExperimentView } from "./views/experiment";
import { useApprovals } from "./lib/approvals";

type Params = Record<string, string>;

export const ROUTES: [string, ComponentType<{ params: Params }>][] = [
  ["/", Overview],
  ["/tree", TreeView],
  ["/agents", AgentsView],
  ["/agents/:id", AgentView],
  ["/tasks", TasksView],
  ["/tasks/:id", TaskView],
  ["/approvals", ApprovalsView],
  ["/alerts", AlertsView],
  ["/experiments", ExperimentsView],
  ["/experiments/:id", ExperimentView],
  ["/swarms", SwarmsView],
  ["/swarms/:id", SwarmView],
  ["/hosts", HostsView],
  ["/vms", VmsView],
  ["/vms/:id", VmView],
  ["/events", EventsView],
];

const NAV: [string, string][] = [
  ["/", "Overview"],
  ["/tree", "Tree"],
  ["/agents", "Agents"],
  ["/tasks", "Tasks"],
  ["/approvals", "Approvals"],
  ["/alerts", "Alerts"],
  ["/experiments", "Experiments"],
  ["/swarms", "Swarms"],
  ["/hosts", "Hosts"],
  ["/vms", "VMs"],
  ["/events", "Events"],
];

/** Asks the gateway who the token is; its answer replaces whatever was remembered. */
async function whoAmI(): Promise<void> {
  const d = await gql<{ me: { role: Role; node: string } }>("{ me { role node } }");
  setIdentity(d.me.role, d.me.node);
  titled(d.me.node);
}

function titled(node: string): void {
  document.title = `Troupe: ${node}`;
}

export function App() {
  // With a role remembered from this tab the shell draws at once, so the view's own query
  // need not wait for `me`, which checks the role behind it. Without one, nothing is drawn
  // until the gateway says who the token is.
  const [checking, setChecking] = useState(Boolean(token.value) && !role.value);
  const [error, setError] = useState<ApiError | null>(null);

  useEffect(() => {
    if (!token.value) return;
    if (nodeName.value) titled(nodeName.value);
    whoAmI()
      .catch((e: ApiError) => {
        if (e.code === "UNAUTHENTICATED") {
          // The token was revoked or the node's tokens changed: the remembered role is void.
          setError(e);
          disposeWs();
          signOut();
        } else if (!role.value) setError(e);
        // Otherwise (the gateway out of reach) the shell stays: its views show what fails.
      })
      .finally(() => setChecking(false));
  }, []);

  if (!token.value || !role.value) {
    if (checking) return <p class="muted center">Checking the token…</p>;
    return (
      <SignIn
        error={error}
        onToken={async (t) => {
          setToken(t);
          try {
            await whoAmI();
            setError(null);
          } catch (e) {
            signOut();
            setError(e as ApiError);
          }
        }}
      />
    );
  }
  return <Shell />;
}

function SignIn({ onToken, error }: { onToken: (t: string) => Promise<void>; error: ApiError | null }) {
  const [value, setValue] = useState("");
  const [busy, setBusy] = useState(false);
  return (
    <main class="signin">
      <form
        aria-labelledby="signin-title"
        onSubmit={async (e) => {
          e.preventDefault();
          if (!value.trim()) return;
          setBusy(true);
          await onToken(value.trim());
          setBusy(false);
        }}
      >
        <h1 id="signin-title">Sign in to Troupe</h1>
        <p class="muted">
          Paste a token. An admin token is in the node's data dir (<code>admin.token</code>); <code>createToken</code> makes viewer and operator ones. It is kept for this tab only.
        </p>
        <label>
          Token
          <input type="password" name="token" autoComplete="current-password" autoFocus value={value} onInput={(e) => setValue((e.target as HTMLInputElement).value)} />
        </label>
        {error ? (
          <p class="error" role="alert">
            <strong>{error.code}</strong> {error.message}
          </p>
        ) : null}
        <button class="btn btn-primary" type="submit" disabled={busy}>
          {busy ? "Signing in…" : "Sign in"}
        </button>
      </form>
    </main>
  );
}

function Banner() {
  const state = link.value;
  if (state === "connected" || state === "connecting") return null;
  return (
    <div class={`banner banner-${state}`} role="status" aria-live="polite">
      <span aria-hidden="true">▲</span>{" "}
      {state === "reconnecting" ? "Connection to the gateway lost: reconnecting, live views resume where they stopped." : "Disconnected from the gateway."}
    </div>
  );
}

/** How many tool calls wait for a decision, beside the inbox's link. */
function PendingCount() {
  const n = useApprovals(true).rows.length;
  return n ? (
    <span class="count" title={`${n} waiting for a decision`}>
      {" "}
      {n}
      <span class="sr-only"> waiting</span>
    </span>
  ) : null;
}

function Shell() {
  const { path } = location_.value;
  let view = <NotFound />;
  for (const [pattern, View] of ROUTES) {
    const params = match(pattern, path);
    if (params) {
      view = <View params={params} key={path} />;
      break;
    }
  }
  const current = (href: string) => (href === "/" ? path === "/" : path === href || path.startsWith(`${href}/`));
  return (
    <>
      <a class="skip" href="#main">
        Skip to content
      </a>
      <header class="top">
        <a class="brand" href="/">
          Troupe
        </a>
        <nav aria-label="Views">
          {NAV.map(([href, label]) => (
            <a key={href} href={href} aria-current={current(href) ? "page" : undefined}>
              {label}
              {href === "/approvals" ? <PendingCount /> : null}
            </a>
          ))}
        </nav>
        <div class="top-right">
          <label class="switch">
            <input type="checkbox" checked={paused.value} onChange={(e) => (paused.value = (e.target as HTMLInputElement).checked)} />
            Pause live
          </label>
          <span class="muted" title="this node and your role">
            {nodeName.value} · {role.value?.toLowerCase()}
          </span>
          <a href="/graphiql">GraphiQL</a>
          <button
            class="btn"
            onClick={() => {
              disposeWs();
              signOut();
            }}
          >
            Sign out
          </button>
        </div>
      </header>
      <Banner />
      {paused.value ? (
        <div class="banner banner-paused" role="status">
          Live updates paused: what arrives waits until you resume.
        </div>
      ) : null}
      <main id="main" tabIndex={-1}>
        {view}
      </main>
      <Toasts />
    </>
  );
}

function NotFound() {
  return (
    <section class="page">
      <h1>Not found</h1>
      <p>
        No view at <code>{location_.value.path}</code>. <a href="/">Back to the overview</a>.
      </p>
    </section>
  );
}

export { setToken };
