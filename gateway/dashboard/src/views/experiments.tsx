// Fault experiments (docs/faults.md): this node's, newest first, read again when an
// experiment records something and every 10 s (a peer's part is read, not heard); and, for an
// admin, the start form: a dry run first shows the targets the selector picks and what each
// supervisor expects to do, with nothing injected; Start then runs it and opens its page.
import { useEffect, useState } from "preact/hooks";
import { ApiError } from "../lib/gql";
import { useQuery, useRefreshOn } from "../lib/hooks";
import { navigate } from "../lib/router";
import { isAdmin } from "../lib/session";
import { EXPERIMENT_KINDS, FAULT_ACTIONS, LIST, SELECT_MODES, experimentInput, experimentsDisabled, newDraft, newFault, randomSeed, seedText, startExperiment, type Draft, type Experiment, type FaultDraft, type Row } from "../lib/experiments";
import { Status } from "../components/status";
import { Time } from "../components/time";
import { Choice, Field, TextArea } from "../components/forms";
import { ErrorBox, Loading, Page, Section } from "../components/page";
import { AdminOnly, Effects, HaltAll, TargetName, useChildNames } from "./experiment";

export function ExperimentsView() {
  if (!isAdmin.value)
    return (
      <Page title="Experiments">
        <AdminOnly />
      </Page>
    );
  return <Experiments />;
}

function Experiments() {
  const list = useQuery<{ experiments: Row[] }>(LIST);
  useRefreshOn(() => void list.refetch(), EXPERIMENT_KINDS, undefined, 300);
  useEffect(() => {
    const t = setInterval(() => void list.refetch(), 10_000);
    return () => clearInterval(t);
  }, [list.refetch]);
  // A node without --fault-injection refuses every experiment: no form to fill in vain, and
  // the refusal said as the setting it is (a red FORBIDDEN box read as a failure).
  const disabled = experimentsDisabled(list.error);
  return (
    <Page title="Experiments" actions={<HaltAll />}>
      <p class="muted">Faults injected into chosen children of the supervision tree, reverted, and judged: what was hit, what Troupe noticed, how long each target took to recover, and whether the tree came back whole.</p>
      {disabled ? (
        <p class="muted" data-disabled="experiments">
          This node was started without <code>--fault-injection</code>: it runs and lists no experiments (see <code>docs/faults.md</code>). "Halt all faults" still reverts every fault armed on the nodes it reaches.
        </p>
      ) : (
        <StartForm />
      )}
      {disabled ? null : (
        <Section title="Every node's experiments">
          <ErrorBox error={list.error} />
          {!list.data ? (
            list.error ? null : <Loading what="experiments" />
          ) : list.data.experiments.length === 0 ? (
            <p class="empty">No experiment yet.</p>
          ) : (
            <List rows={list.data.experiments} />
          )}
        </Section>
      )}
    </Page>
  );
}

function List({ rows }: { rows: Row[] }) {
  return (
    <div class="table-scroll">
      <table>
        <caption class="sr-only">Experiments, newest first</caption>
        <thead>
          <tr>
            <th scope="col">Name</th>
            <th scope="col">State</th>
            <th scope="col">Started</th>
            <th scope="col">Finished</th>
            <th scope="col">Injections</th>
          </tr>
        </thead>
        <tbody>
          {rows.map((x) => (
            <tr key={x.id} data-state={x.state}>
              <th scope="row">
                <a href={`/experiments/${encodeURIComponent(x.id)}`} title={x.id}>
                  {x.name}
                </a>
              </th>
              <td>
                <Status state={x.state} />
              </td>
              <td>
                <Time at={x.startedAt} />
              </td>
              <td>
                <Time at={x.finishedAt} />
              </td>
              <td>{x.injections.length}</td>
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}

const asError = (e: unknown) => (e instanceof ApiError ? e : new ApiError(String(e), "ERROR"));

function StartForm() {
  const [draft, setDraft] = useState<Draft>(newDraft);
  const [busy, setBusy] = useState<"" | "preview" | "start">("");
  const [error, setError] = useState<ApiError | null>(null);
  const [preview, setPreview] = useState<Experiment | null>(null);
  // A preview shows what this very form would do: any change makes it stale.
  const change = (d: Draft) => {
    setDraft(d);
    setPreview(null);
  };
  const set = (key: keyof Draft) => (v: string) => change({ ...draft, [key]: v });
  const setFault = (i: number, f: FaultDraft | null) => change({ ...draft, faults: f ? draft.faults.map((x, j) => (j === i ? f : x)) : draft.faults.filter((_, j) => j !== i) });

  const run = async (what: "preview" | "start", body: () => Promise<void>) => {
    setBusy(what);
    setError(null);
    try {
      await body();
    } catch (e) {
      setError(asError(e));
    } finally {
      setBusy("");
    }
  };
  // Start picks what the preview showed: both go with the same seed, chosen here if none was typed.
  const seeded = () => {
    const d = { ...draft, seed: draft.seed.trim() || randomSeed() };
    setDraft(d);
    return d;
  };
  const dryRun = () => run("preview", async () => setPreview(await startExperiment(experimentInput(seeded(), true))));
  const start = () =>
    run("start", async () => {
      const x = await startExperiment(experimentInput(seeded(), false));
      navigate(`/experiments/${encodeURIComponent(x.id)}`);
    });

  return (
    <Section title="Start an experiment">
      <form
        class="experiment-form"
        aria-label="Start an experiment"
        onSubmit={(e) => {
          e.preventDefault();
          void start();
        }}
      >
        <div class="filters">
          <Field label="Experiment name" value={draft.name} onInput={set("name")} required />
          <Field label="Duration (ms)" type="number" min={1} value={draft.durationMs} onInput={set("durationMs")} placeholder="until stopped" />
          <Field label="Rounds (count)" type="number" min={1} value={draft.count} onInput={set("count")} placeholder="1" />
          <Field label="Every (ms)" type="number" min={1} value={draft.everyMs} onInput={set("everyMs")} placeholder="with rounds" />
          <Field label="Seed" value={draft.seed} onInput={set("seed")} placeholder="random" />
          <Field label="Recover within (ms)" type="number" min={1} value={draft.recoverWithinMs} onInput={set("recoverWithinMs")} placeholder="30000" />
          <Field label="Lease (ms)" type="number" min={1} value={draft.leaseMs} onInput={set("leaseMs")} placeholder="none" />
          <Field label="Invariants" value={draft.invariants} onInput={set("invariants")} placeholder="all" />
          <label class="switch">
            <input type="checkbox" checked={draft.allowEscalation} onChange={(e) => change({ ...draft, allowEscalation: (e.target as HTMLInputElement).checked })} />
            Allow escalation
          </label>
        </div>
        {draft.faults.map((f, i) => (
          <FaultFields key={i} n={i + 1} fault={f} onChange={(x) => setFault(i, x)} removable={draft.faults.length > 1} />
        ))}
        <div class="row">
          <button type="button" class="btn" onClick={() => change({ ...draft, faults: [...draft.faults, newFault()] })}>
            Add a fault
          </button>
          <button type="button" class="btn" disabled={Boolean(busy)} aria-busy={busy === "preview"} onClick={() => void dryRun()}>
            {busy === "preview" ? "Previewing…" : "Preview (dry run)"}
          </button>
          <button type="submit" class="btn btn-primary" disabled={Boolean(busy)} aria-busy={busy === "start"}>
            {busy === "start" ? "Starting…" : "Start"}
          </button>
        </div>
        <ErrorBox error={error} />
      </form>
      {preview ? <Preview experiment={preview} /> : null}
    </Section>
  );
}

/** One fault's action and selector; the far side only for a partition. */
function FaultFields({ n, fault: f, onChange, removable }: { n: number; fault: FaultDraft; onChange: (f: FaultDraft | null) => void; removable: boolean }) {
  const set = (key: keyof FaultDraft) => (v: string) => onChange({ ...f, [key]: v });
  return (
    <fieldset class="fault">
      <legend>Fault {n}</legend>
      <div class="filters">
        <Choice label="Action" value={f.action} options={FAULT_ACTIONS} onChange={set("action")} />
        <Field label="Kinds" value={f.kinds} onInput={set("kinds")} placeholder="AGENT, SUPERVISOR" />
        <Field label="Labels (key=value, …)" value={f.labels} onInput={set("labels")} />
        <Field label="Ids" value={f.ids} onInput={set("ids")} />
        <Field label="Exclude ids" value={f.exclude} onInput={set("exclude")} />
        <Field label="Nodes" value={f.nodes} onInput={set("nodes")} placeholder="this node" />
        <Field label="Under (a supervisor)" value={f.under} onInput={set("under")} />
        <Choice label="Mode" value={f.mode} options={SELECT_MODES} onChange={set("mode")} />
        {f.mode === "FIXED" || f.mode === "PERCENT" ? <Field label={f.mode === "FIXED" ? "How many" : "Percent"} type="number" min={1} value={f.value} onInput={set("value")} required /> : null}
        {f.action === "PARTITION" ? <Field label="Far side nodes" value={f.to} onInput={set("to")} placeholder="every other member" /> : null}
        <TextArea label="Params (a JSON object, optional)" rows={1} value={f.params} onInput={set("params")} />
        {removable ? (
          <button type="button" class="btn" onClick={() => onChange(null)}>
            Remove fault {n}
          </button>
        ) : null}
      </div>
    </fieldset>
  );
}

/** What a dry run answered: the targets picked and each supervisor's prediction. */
function Preview({ experiment: x }: { experiment: Experiment }) {
  const names = useChildNames(x.injections);
  return (
    <section class="dry-run" aria-label="Dry run">
      <h3>Dry run: nothing was injected</h3>
      <p class="muted">
        Seed <span class="mono">{seedText(x.seed)}</span>: Start with this seed picks these same targets.
      </p>
      <div class="table-scroll">
        <table>
          <caption class="sr-only">The targets the dry run picked</caption>
          <thead>
            <tr>
              <th scope="col">Target</th>
              <th scope="col">Kind</th>
              <th scope="col">Supervisor</th>
              <th scope="col">Action</th>
              <th scope="col">Expected effect</th>
            </tr>
          </thead>
          <tbody>
            {x.injections.map((i) => (
              <tr key={i.id}>
                <td>
                  <TargetName injection={i} />
                </td>
                <td>{i.kind}</td>
                <td>{i.supervisor}</td>
                <td>{i.action}</td>
                <td>
                  <Effects expected={i.expected} names={names} />
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      </div>
    </section>
  );
}
