// The approvals inbox: tool calls an LLM agent's policy holds until an operator decides,
// oldest first, each with its task, agent, tool, arguments, why it is held and until when;
// Approve (with an optional note) lets the call run, Reject (with an optional reason) gives
// the model the refusal as the call's result. Kept current by `approvalUpdates`.
import { useState } from "preact/hooks";
import { approve, reject, useApprovals, type Approval } from "../lib/approvals";
import { shortIds, taskName, useAgentNames, useTasks } from "../lib/names";
import { showArguments } from "../lib/transcript";
import { canAct } from "../lib/session";
import { Time } from "../components/time";
import { Action } from "../components/actions";
import { ErrorBox, Loading, Page } from "../components/page";

/** Approve or reject one held call; a viewer is told an operator decides. */
export function Decision({ approval, onDecided }: { approval: Approval; onDecided: (a: Approval) => void }) {
  const [note, setNote] = useState("");
  if (!canAct.value) return <span class="muted">An operator decides.</span>;
  return (
    <div class="row decision">
      <label class="filter">
        <span>Note or reason (optional)</span>
        <input value={note} onInput={(e) => setNote((e.target as HTMLInputElement).value)} />
      </label>
      <Action label="Approve" variant="primary" done={`${approval.tool} approved: the call runs`} run={async () => onDecided((await approve(approval.id, note)).approveCall)} />
      <Action label="Reject" variant="danger" done={`${approval.tool} rejected: the model is told`} run={async () => onDecided((await reject(approval.id, note)).rejectCall)} />
    </div>
  );
}

export function ApprovalsView() {
  const list = useApprovals(true);
  const names = useAgentNames(list.rows.map((a) => a.agentId));
  const pending = list.rows.filter((a) => a.state === "PENDING");
  const tasks = useTasks(pending.map((a) => a.taskId));
  const tails = shortIds(pending.map((a) => a.taskId));
  return (
    <Page title="Approvals">
      <p class="muted">Tool calls of LLM agents held by their approval policy. The task waits (its progress says so) until you decide, or until the call's expiry rejects it.</p>
      <ErrorBox error={list.error} />
      {!list.loaded ? (
        <Loading what="approvals" />
      ) : pending.length === 0 ? (
        <p class="empty">No tool call is waiting for a decision.</p>
      ) : (
        <ul class="approvals" aria-label="Pending approvals, oldest first">
          {pending.map((a) => (
            <li key={a.id} class="card approval" aria-label={`${a.tool} for ${names[a.agentId] ?? a.agentId}`}>
              <header class="card-head">
                <h2>
                  <code>{a.tool}</code>
                </h2>
                <span class="muted">
                  asked <Time at={a.requestedAt} />
                  {a.expiresAt ? (
                    <>
                      , rejected unless decided <Time at={a.expiresAt} />
                    </>
                  ) : (
                    ", waits until decided"
                  )}
                </span>
              </header>
              <dl class="kv">
                <div>
                  <dt>Agent</dt>
                  <dd>
                    <a href={`/agents/${encodeURIComponent(a.agentId)}`}>{names[a.agentId] ?? a.agentId}</a>
                  </dd>
                </div>
                <div>
                  <dt>Task</dt>
                  <dd>
                    <a href={`/tasks/${encodeURIComponent(a.taskId)}`} title={a.taskId}>
                      {taskName(tasks[a.taskId] ?? { id: a.taskId }, {}, tails)}
                    </a>{" "}
                    <span class="muted">model call {a.step}</span>
                  </dd>
                </div>
                <div class="kv-wide">
                  <dt>Held because</dt>
                  <dd>{a.reason}</dd>
                </div>
              </dl>
              <pre class="json args" aria-label={`Arguments of ${a.tool}`}>
                {showArguments(a.arguments)}
              </pre>
              <Decision
                approval={a}
                onDecided={(d) => {
                  list.hide(d.id);
                  void list.refetch();
                }}
              />
            </li>
          ))}
        </ul>
      )}
    </Page>
  );
}
