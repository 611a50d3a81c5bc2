// A fault experiment's page, live through experimentUpdates until its report: its state, each
// injection as it is armed, reverted and recovered, then the report (verdict, invariants,
// restarts nobody predicted). Stop ends it early; the kill switch halts every armed fault.
// Also the pieces the list's dry run shows: a target by its name, the expected effects.
import { useLive } from "../lib/hooks";
import { isAdmin } from "../lib/session";
import { duration } from "../lib/format";
import { useAgentNames } from "../lib/names";
import { normalise } from "../lib/cursor";
import { ENDED, UPDATES, haltAllFaults, outcomeTone, recoveredLine, seedText, splitOutcome, stopExperiment, type Effect, type Experiment, type Injection, type Report } from "../lib/experiments";
import { Status } from "../components/status";
import { Time } from "../components/time";
import { Action, toast } from "../components/actions";
import { EventLine } from "../components/event";
import { ErrorBox, KeyValues, Loading, Page, Section } from "../components/page";

/** What a viewer or an operator sees instead: the API answers experiments to admins only. */
export function AdminOnly() {
  return (
    <p class="empty">
      Fault experiments are for admins: sign in with an admin token to see and run them (see <code>docs/faults.md</code>).
    </p>
  );
}

/** The kill switch: every armed fault of this node and of the peers it reaches, reverted now. */
export function HaltAll() {
  if (!isAdmin.value) return null;
  return (
    <Action
      label="Halt all faults"
      variant="danger"
      confirm="everywhere"
      consequence="Every armed fault of this node and of every peer it reaches is reverted at once, and their experiments end ABORTED."
      run={async () => {
        const n = await haltAllFaults();
        toast(n === 1 ? "1 fault reverted" : `${n} faults reverted`);
      }}
    />
  );
}

/** A target by its name (an agent's a link to its page), its id on hover. */
export function TargetName({ injection: i }: { injection: Pick<Injection, "target" | "targetName" | "kind"> }) {
  const cls = i.targetName === i.target ? "mono" : undefined;
  if (i.kind === "AGENT")
    return (
      <a href={`/agents/${encodeURIComponent(i.target)}`} title={i.target} class={cls}>
        {i.targetName}
      </a>
    );
  return (
    <span title={i.target} class={cls}>
      {i.targetName}
    </span>
  );
}

/** id → name for every child the experiment names: its targets, then the agents it expects to touch. */
export function useChildNames(injections: Injection[]): Record<string, string> {
  const own = Object.fromEntries(injections.map((i) => [i.target, i.targetName]));
  const others = injections.flatMap((i) => i.expected.map((e) => e.id)).filter((id) => !(id in own));
  return { ...useAgentNames(others), ...own };
}

/** "RESTART of e2e-echo", one a line; the child's id on hover. */
export function Effects({ expected, names }: { expected: Effect[]; names: Record<string, string> }) {
  if (!expected.length) return <span class="muted">none predicted</span>;
  return (
    <ul class="row">
      {expected.map((e) => (
        <li key={`${e.id}:${e.effect}`}>
          <strong>{e.effect}</strong> of <span title={e.id}>{names[e.id] ?? e.id}</span>
        </li>
      ))}
    </ul>
  );
}

export function ExperimentView({ params }: { params: Record<string, string> }) {
  if (!isAdmin.value)
    return (
      <Page title="Experiment">
        <AdminOnly />
      </Page>
    );
  return <Live id={params.id} />;
}

function Live({ id }: { id: string }) {
  const live = useLive<Experiment>(UPDATES, id, "experimentUpdates");
  const x = live.data;
  const names = useChildNames(x?.injections ?? []);
  if (!x)
    return (
      <Page title={`Experiment ${id}`}>
        {live.error ? <ErrorBox error={live.error} /> : live.ended ? <p class="empty">This node does not know this experiment (it keeps its last 200).</p> : <Loading what="the experiment" />}
      </Page>
    );
  return (
    <Page
      title={
        <>
          {x.name} <Status state={x.state} />
        </>
      }
      actions={
        <>
          {x.state === "ACTIVE" && isAdmin.value ? <Action label="Stop" done="Stopped: its faults are reverted, then it is judged" run={async () => live.set(await stopExperiment(x.id))} /> : null}
          <HaltAll />
        </>
      }
    >
      <ErrorBox error={live.error} />
      <div class="cards">
        <Section title="Experiment">
          <KeyValues
            items={[
              ["Id", <span class="mono">{x.id}</span>],
              ["State", <Status state={x.state} />],
              ["Seed", <span class="mono">{seedText(x.seed)}</span>],
              ["Started", <Time at={x.startedAt} />],
              ["Finished", ENDED.includes(x.state) ? <Time at={x.finishedAt} /> : "under way"],
              ["Injections", `${x.injections.length} (${recoveredLine(x.injections)})`],
            ]}
          />
          {!ENDED.includes(x.state) ? (
            <p class="muted" role="status">
              Live: this page follows the experiment until its report.
            </p>
          ) : null}
        </Section>
        {x.report ? <ReportCard report={x.report} /> : null}
      </div>
      <Section title="Injections">{x.injections.length ? <Injections rows={x.injections} names={names} /> : <p class="empty">Nothing injected yet.</p>}</Section>
      {x.report ? <Unexpected events={x.report.unexpected} /> : null}
    </Page>
  );
}

function ReportCard({ report: r }: { report: Report }) {
  return (
    <Section title="Report">
      <KeyValues
        items={[
          ["Verdict", <Status state={r.verdict === "PASS" ? "PASSED" : "FAILED"} label={r.verdict} />],
          ["Reason", <span class="wrap">{r.reason}</span>],
          ["Injected", String(r.injected)],
          ["Recovered", String(r.recovered)],
          ["Slowest recovery", r.maxTimeToRecoverMs === null ? "—" : duration(r.maxTimeToRecoverMs)],
        ]}
      />
      <h3>Invariants</h3>
      {r.invariants.length ? (
        <div class="table-scroll">
          <table>
            <caption class="sr-only">Invariants</caption>
            <thead>
              <tr>
                <th scope="col">Invariant</th>
                <th scope="col">Held</th>
                <th scope="col">Why</th>
              </tr>
            </thead>
            <tbody>
              {r.invariants.map((v) => (
                <tr key={v.name} data-ok={v.ok}>
                  <th scope="row" class="mono">
                    {v.name}
                  </th>
                  <td>
                    <Status state={v.ok ? "PASSED" : "FAILED"} label={v.ok ? "held" : "failed"} />
                  </td>
                  <td class="wrap">{v.detail ?? "—"}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      ) : (
        <p class="empty">None checked.</p>
      )}
    </Section>
  );
}

function Unexpected({ events }: { events: Report["unexpected"] }) {
  return (
    <Section title="Unexpected restarts">
      {events.length ? (
        <ol class="timeline">
          {events.map(normalise).map((e) => (
            <li key={e.seq}>
              <EventLine event={e} />
            </li>
          ))}
        </ol>
      ) : (
        <p class="empty">None: every restart was one the supervisors predicted.</p>
      )}
    </Section>
  );
}

function Injections({ rows, names }: { rows: Injection[]; names: Record<string, string> }) {
  return (
    <div class="table-scroll">
      <table>
        <caption class="sr-only">Injections, in order</caption>
        <thead>
          <tr>
            <th scope="col">Target</th>
            <th scope="col">Action</th>
            <th scope="col">Supervisor</th>
            <th scope="col">Injected</th>
            <th scope="col">Effective</th>
            <th scope="col">Reverted</th>
            <th scope="col">Recovered</th>
            <th scope="col">Detected in</th>
            <th scope="col">Recovered in</th>
            <th scope="col">Outcome</th>
            <th scope="col">Expected</th>
            <th scope="col">Observed</th>
          </tr>
        </thead>
        <tbody>
          {rows.map((i) => (
            <InjectionRow key={i.id} injection={i} names={names} />
          ))}
        </tbody>
      </table>
    </div>
  );
}

function InjectionRow({ injection: i, names }: { injection: Injection; names: Record<string, string> }) {
  const { code, reason } = splitOutcome(i.outcome);
  const observed = (i.observed ?? []).map(normalise);
  return (
    <tr data-outcome={code}>
      <td>
        <TargetName injection={i} /> <span class="muted">{i.kind}</span>
      </td>
      <td>{i.action}</td>
      <td>{i.supervisor}</td>
      <td>
        <Time at={i.injectedAt} />
      </td>
      <td>
        <Time at={i.effectiveAt} />
      </td>
      <td>{i.revertedAt ? <Time at={i.revertedAt} /> : <span class="muted">{code === "ARMED" ? "armed" : "—"}</span>}</td>
      <td>
        <Time at={i.recoveredAt} />
      </td>
      <td>{i.timeToDetectMs === null ? <span title="nothing in Troupe noticed it">—</span> : duration(i.timeToDetectMs)}</td>
      <td>{duration(i.timeToRecoverMs)}</td>
      <td>
        <Status state={outcomeTone(i.outcome)} label={code} />
        {reason ? <span class="wrap muted outcome-when">{reason}</span> : null}
      </td>
      <td>
        <Effects expected={i.expected} names={names} />
      </td>
      <td>
        {observed.length ? (
          <details>
            <summary>
              {observed.length} event{observed.length === 1 ? "" : "s"}
            </summary>
            <ol class="timeline">
              {observed.map((e) => (
                <li key={e.seq}>
                  <EventLine event={e} />
                </li>
              ))}
            </ol>
          </details>
        ) : (
          <span class="muted">none yet</span>
        )}
      </td>
    </tr>
  );
}
