// Alerts out: the channels and rules in force (config and API), then the deliveries, newest
// first, filtered by outcome (`?outcome=FAILED`): a failed one says why, a pending one when it
// is tried again. Read again when an alerting event arrives (a failure, a rule changed, an
// event a rule may take) and every 10 s, since a retry that succeeds sends no event. An admin
// can send a test notice through each channel and sees how it went.
import { useEffect, useState } from "preact/hooks";
import { useQuery, useRefreshOn } from "../lib/hooks";
import { query, setQuery } from "../lib/router";
import { isAdmin } from "../lib/session";
import { duration } from "../lib/format";
import { ALERTS_REFRESH_KINDS, DELIVERIES, OUTCOMES, SETUP, outcomeWhen, parseOutcome, ruleKinds, sendTestAlert, type AlertChannel, type AlertDelivery, type AlertRule } from "../lib/alerts";
import { Status } from "../components/status";
import { Time } from "../components/time";
import { Action } from "../components/actions";
import { ErrorBox, Loading, Page, Section, Select } from "../components/page";

export function AlertsView() {
  const outcome = parseOutcome(query.value.get("outcome"));
  const setup = useQuery<{ alertChannels: AlertChannel[]; alertRules: AlertRule[] }>(SETUP);
  const deliveries = useQuery<{ alertDeliveries: AlertDelivery[] }>(DELIVERIES, { outcome });
  useRefreshOn(() => void deliveries.refetch(), ALERTS_REFRESH_KINDS, undefined, 300);
  useRefreshOn(() => void setup.refetch(), ["ALERT_RULE_"], undefined, 300);
  useEffect(() => {
    const t = setInterval(() => void deliveries.refetch(), 10_000);
    return () => clearInterval(t);
  }, [deliveries.refetch]);

  return (
    <Page title="Alerts">
      <p class="muted">
        Where alerts go and which events alert, from the node's config file (rules also through the API); each notice is one delivery per channel, retried until it is delivered or given up on.
      </p>
      <ErrorBox error={setup.error} />
      {!setup.data ? (
        <Loading what="the channels and rules" />
      ) : (
        <div class="cards">
          <Channels channels={setup.data.alertChannels} onSent={() => void deliveries.refetch()} />
          <Rules rules={setup.data.alertRules} />
        </div>
      )}
      <Section
        title="Deliveries"
        actions={<Select label="Outcome" value={outcome ?? ""} options={OUTCOMES} names={{ FAILED: "failed", PENDING: "pending", DELIVERED: "delivered" }} onChange={(v) => setQuery({ outcome: v })} />}
      >
        <ErrorBox error={deliveries.error} />
        {!deliveries.data ? (
          <Loading what="deliveries" />
        ) : deliveries.data.alertDeliveries.length === 0 ? (
          <p class="empty">{outcome ? `No ${outcome.toLowerCase()} delivery.` : "No alert has been sent yet."}</p>
        ) : (
          <Deliveries rows={deliveries.data.alertDeliveries} />
        )}
      </Section>
    </Page>
  );
}

function Channels({ channels, onSent }: { channels: AlertChannel[]; onSent: () => void }) {
  if (!channels.length)
    return (
      <Section title="Channels">
        <p class="empty">
          No channel: add <code>[[alert_channels]]</code> to the node's config file.
        </p>
      </Section>
    );
  return (
    <Section title="Channels">
      <div class="table-scroll">
        <table class="alerts-setup">
          <caption class="sr-only">Alert channels</caption>
          <thead>
            <tr>
              <th scope="col">Name</th>
              <th scope="col">Kind</th>
              <th scope="col">Target</th>
              <th scope="col">Signed</th>
              {isAdmin.value ? <th scope="col">Test</th> : null}
            </tr>
          </thead>
          <tbody>
            {channels.map((c) => (
              <tr key={c.name}>
                <th scope="row">{c.name}</th>
                <td>{c.kind}</td>
                <td class="mono wrap">{c.target}</td>
                <td>{c.kind === "webhook" ? (c.signed ? "yes" : "no") : "—"}</td>
                {isAdmin.value ? (
                  <td>
                    <SendTest channel={c.name} onSent={onSent} />
                  </td>
                ) : null}
              </tr>
            ))}
          </tbody>
        </table>
      </div>
    </Section>
  );
}

/** "Send test" (admin): one attempt at once; how it went stays beside the button. */
function SendTest({ channel, onSent }: { channel: string; onSent: () => void }) {
  const [sent, setSent] = useState<AlertDelivery | null>(null);
  return (
    <div class="row">
      <Action
        label="Send test"
        run={async () => {
          setSent((await sendTestAlert(channel)).sendTestAlert);
          onSent();
        }}
      />
      {sent ? (
        <span role="status" class="test-outcome">
          <Status state={sent.outcome} /> {sent.lastError ? <span class="wrap muted test-error">{sent.lastError}</span> : null}
        </span>
      ) : null}
    </div>
  );
}

function Rules({ rules }: { rules: AlertRule[] }) {
  return (
    <Section title="Rules">
      {!rules.length ? (
        <p class="empty">
          No rule: add <code>[[alert_rules]]</code> to the config file, or <code>setAlertRule</code>.
        </p>
      ) : (
        <div class="table-scroll">
          <table class="alerts-setup">
            <caption class="sr-only">Alert rules</caption>
            <thead>
              <tr>
                <th scope="col">Name</th>
                <th scope="col">Kinds</th>
                <th scope="col">Severity</th>
                <th scope="col">Channels</th>
                <th scope="col">Group interval</th>
                <th scope="col">Source</th>
              </tr>
            </thead>
            <tbody>
              {rules.map((r) => (
                <tr key={r.name}>
                  <th scope="row">{r.name}</th>
                  <td class="mono wrap">
                    {ruleKinds(r)}
                    {r.labels.length ? <span class="muted"> · labels {r.labels.join(", ")}</span> : null}
                  </td>
                  <td>{r.severity}</td>
                  <td>{r.channels.join(", ")}</td>
                  <td>{duration(r.groupIntervalMs)}</td>
                  <td>{r.source}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
    </Section>
  );
}

function Deliveries({ rows }: { rows: AlertDelivery[] }) {
  return (
    <div class="table-scroll">
      <table class="deliveries">
        <caption class="sr-only">Alert deliveries, newest first</caption>
        <thead>
          <tr>
            <th scope="col">When</th>
            <th scope="col">Summary</th>
            <th scope="col">Rule</th>
            <th scope="col">Channel</th>
            <th scope="col">Outcome</th>
            <th scope="col">Count</th>
            <th scope="col">Attempts</th>
            <th scope="col">Last error</th>
          </tr>
        </thead>
        <tbody>
          {rows.map((d) => {
            const when = outcomeWhen(d);
            return (
              <tr key={d.id} data-outcome={d.outcome}>
                <td>
                  <Time at={d.createdAt} />
                </td>
                <td class="wrap">
                  {d.summary}
                  {d.status === "RESOLVED" ? <span class="muted"> (resolved)</span> : null}
                </td>
                <td>{d.rule}</td>
                <td>{d.channel}</td>
                <td>
                  <Status state={d.outcome} />
                  {when ? (
                    <span class="muted outcome-when">
                      {" "}
                      {when.words} <Time at={when.at} />
                    </span>
                  ) : null}
                </td>
                <td>{String(d.count)}</td>
                <td>{d.attempts}</td>
                <td class="wrap">{d.lastError ?? "—"}</td>
              </tr>
            );
          })}
        </tbody>
      </table>
    </div>
  );
}
