// An LLM task's transcript on its page: each model call with its reply, the tool calls it
// asked for (name and arguments), each call's result (errors marked), tokens, cost and
// latency; and the approvals its calls waited for, decided here while pending. Read again
// after each of the task's events (a TASK_STEP is written for each committed step, an
// APPROVAL_* for each request and decision), so it follows a running task.
import { useQuery, useRefreshOn } from "../lib/hooks";
import { count, duration } from "../lib/format";
import { STEP_FIELDS, showArguments, totals, turns, usd, type Call, type TaskStep, type Turn } from "../lib/transcript";
import { APPROVAL_FIELDS, type Approval } from "../lib/approvals";
import { decider, useTokenNames } from "../lib/names";
import { Status } from "../components/status";
import { Time } from "../components/time";
import { ErrorBox, Loading, Section } from "../components/page";
import { Decision } from "./approvals";

const READ = (withAgent: boolean) => `query($id: ID!${withAgent ? ", $agent: ID!" : ""}) {
  task(id: $id) { transcript { ${STEP_FIELDS} } }
  approvals(pending: false) { ${APPROVAL_FIELDS} }
  ${withAgent ? "agent(id: $agent) { name backend }" : ""}
}`;

interface Read {
  task: { transcript: TaskStep[] } | null;
  approvals: Approval[];
  agent?: { name: string; backend: string } | null;
}

/** Shown for a task of an LLM agent, or one that has steps (its agent may be gone). */
export function Transcript({ task }: { task: { id: string; agentId: string | null } }) {
  const read = useQuery<Read>(READ(Boolean(task.agentId)), task.agentId ? { id: task.id, agent: task.agentId } : { id: task.id });
  useRefreshOn(() => void read.refetch(), ["TASK_", "APPROVAL_"], task.id, 300);
  const steps = read.data?.task?.transcript ?? [];
  const approvals = (read.data?.approvals ?? []).filter((a) => a.taskId === task.id);
  const llm = read.data?.agent?.backend.startsWith("llm:") ?? false;
  if (!read.data) return read.error ? <ErrorBox error={read.error} /> : null;
  if (!llm && !steps.length && !approvals.length) return null;
  const sum = totals(steps);
  return (
    <Section title="Transcript" actions={<span class="muted">{steps.length ? `${count(sum.calls, "model call")} · ${sum.inputTokens} in / ${sum.outputTokens} out tokens · ${usd(sum.costUsd)} · ${duration(sum.latencyMs)} waiting on the model` : ""}</span>}>
      <ErrorBox error={read.error} />
      {read.loading && !steps.length ? <Loading what="the transcript" /> : null}
      {!steps.length && !read.loading ? <p class="empty">No step committed yet: each model reply and tool result shows here once committed.</p> : null}
      {steps.length ? (
        <ol class="transcript" aria-label="Model calls, oldest first">
          {turns(steps, approvals).map((t) => (
            <TurnItem key={t.step} turn={t} />
          ))}
        </ol>
      ) : null}
      {approvals.length ? <TaskApprovals approvals={approvals} onDecided={() => void read.refetch()} /> : null}
    </Section>
  );
}

function TurnItem({ turn: t }: { turn: Turn }) {
  const r = t.reply;
  return (
    <li class="turn">
      <h3>
        Model call {t.step}
        {r ? (
          <span class="muted turn-figures">
            {" "}
            · {r.model ?? "model"} · {Number(r.inputTokens)} in / {Number(r.outputTokens)} out tokens · {usd(r.costUsd)} · {r.latencyMs === null ? "latency not recorded" : duration(r.latencyMs)}
            {r.finishReason ? ` · finished: ${r.finishReason}` : ""} · <Time at={r.at} />
          </span>
        ) : null}
      </h3>
      {r?.text ? <p class="reply">{r.text}</p> : r ? <p class="muted">No text: it only called tools.</p> : null}
      {t.calls.length ? (
        <ul class="calls" aria-label={`Tool calls of model call ${t.step}`}>
          {t.calls.map((c) => (
            <CallItem key={c.call.id} c={c} />
          ))}
        </ul>
      ) : null}
      {t.orphans.map((o) => (
        <Result key={o.callId ?? o.at} result={o} title={`Result of call ${o.callId ?? "?"}`} />
      ))}
    </li>
  );
}

function CallItem({ c }: { c: Call }) {
  return (
    <li class="call">
      <div class="row">
        <span>
          Tool call <code class="tool">{c.call.name}</code>
        </span>
        <span class="muted mono">{c.call.id}</span>
        {c.approval ? <Status state={c.approval.state === "APPROVED" ? "SUCCEEDED" : c.approval.state === "REJECTED" ? "FAILED" : "PENDING"} label={`${c.approval.state.toLowerCase()}${c.approval.note ? `: ${c.approval.note}` : ""}`} /> : null}
      </div>
      <pre class="json args" aria-label={`Arguments of ${c.call.name}`}>
        {showArguments(c.call.arguments)}
      </pre>
      {c.result ? <Result result={c.result} title="Result" /> : <p class="muted">{c.approval?.state === "PENDING" ? "Waiting for an operator's decision." : "No result committed yet."}</p>}
    </li>
  );
}

function Result({ result, title }: { result: TaskStep; title: string }) {
  return (
    <div class={`result${result.isError ? " result-error" : ""}`}>
      <span class="result-head">
        {title}
        {result.latencyMs !== null ? ` · took ${duration(result.latencyMs)}` : ""} {result.isError ? <Status state="ERROR" label="error" /> : null}
      </span>
      <pre class="json" aria-label={`${title}${result.isError ? " (error)" : ""}`}>
        {result.content ?? ""}
      </pre>
    </div>
  );
}

function TaskApprovals({ approvals, onDecided }: { approvals: Approval[]; onDecided: () => void }) {
  const tokens = useTokenNames();
  return (
    <>
      <h3>Approvals</h3>
      <div class="table-scroll">
        <table>
          <caption class="sr-only">Approvals of its tool calls</caption>
          <thead>
            <tr>
              <th scope="col">Tool</th>
              <th scope="col">Call</th>
              <th scope="col">Asked</th>
              <th scope="col">Held because</th>
              <th scope="col">Decision</th>
              <th scope="col">Note</th>
            </tr>
          </thead>
          <tbody>
            {approvals.map((a) => (
              <tr key={a.id}>
                <td>
                  <code>{a.tool}</code>
                </td>
                <td class="mono">
                  {a.step}/{a.callId}
                </td>
                <td>
                  <Time at={a.requestedAt} />
                </td>
                <td>{a.reason}</td>
                <td>
                  {a.state === "PENDING" ? (
                    <Decision approval={a} onDecided={onDecided} />
                  ) : (
                    <>
                      <Status state={a.state === "APPROVED" ? "SUCCEEDED" : "FAILED"} label={a.state} /> <span class="muted" title={a.decidedBy ?? undefined}>by {decider(a.decidedBy, tokens)}</span> <Time at={a.decidedAt} />
                    </>
                  )}
                </td>
                <td>{a.note ?? "—"}</td>
              </tr>
            ))}
          </tbody>
        </table>
      </div>
    </>
  );
}
