// Alerts out, as the node holds them: the channels and rules from its config (and rules made
// through the API), the deliveries kept in the store, and the admin's test notice.
import { gql } from "./gql";
import { ALERT_KINDS } from "./metrics";

export type Outcome = "PENDING" | "DELIVERED" | "FAILED";
export const OUTCOMES: Outcome[] = ["FAILED", "PENDING", "DELIVERED"];

export interface AlertChannel {
  name: string;
  kind: string;
  target: string;
  signed: boolean;
}

export interface AlertRule {
  name: string;
  kinds: string[];
  labels: string[];
  severity: string;
  channels: string[];
  groupIntervalMs: number | string;
  source: string;
}

export interface AlertDelivery {
  id: string;
  rule: string;
  channel: string;
  status: string;
  outcome: Outcome;
  summary: string;
  count: number | string;
  attempts: number;
  lastError: string | null;
  nextAttemptAt: string | null;
  deliveredAt: string | null;
  createdAt: string;
}

const DELIVERY_FIELDS = "id rule channel status outcome summary count attempts lastError nextAttemptAt deliveredAt createdAt";

export const SETUP = `{ alertChannels { name kind target signed } alertRules { name kinds labels severity channels groupIntervalMs source } }`;
export const DELIVERIES = `query($outcome: AlertDeliveryOutcome) { alertDeliveries(outcome: $outcome, first: 100) { ${DELIVERY_FIELDS} } }`;
/** The gateway answers at most 500 at once: that many or more reads "500 or more". */
export const FAILED_MAX = 500;
export const FAILED_COUNT = `{ alertDeliveries(outcome: FAILED, first: ${FAILED_MAX}) { id } }`;

/** Events after which the deliveries or the rules may read differently. */
export const ALERTS_REFRESH_KINDS = ["ALERT_DELIVERY_FAILED", "ALERT_RULE_SET", "ALERT_RULE_DELETED", ...ALERT_KINDS];

export function sendTestAlert(channel: string): Promise<{ sendTestAlert: AlertDelivery }> {
  return gql(`mutation($channel: String!) { sendTestAlert(channel: $channel) { ${DELIVERY_FIELDS} } }`, { channel });
}

/** The `?outcome=` filter, upper-cased; anything else is no filter. */
export function parseOutcome(value: string | null | undefined): Outcome | null {
  const v = (value ?? "").toUpperCase();
  return (OUTCOMES as string[]).includes(v) ? (v as Outcome) : null;
}

/** What goes beside a delivery's outcome: when it will be tried again, or when it arrived. */
export function outcomeWhen(d: Pick<AlertDelivery, "outcome" | "nextAttemptAt" | "deliveredAt">): { words: string; at: string } | null {
  if (d.outcome === "PENDING" && d.nextAttemptAt) return { words: "next attempt", at: d.nextAttemptAt };
  if (d.outcome === "DELIVERED" && d.deliveredAt) return { words: "delivered", at: d.deliveredAt };
  return null;
}

/** "1 alert delivery failed", "3 alert deliveries failed"; nothing for none. */
export function failedLine(n: number): string {
  if (n <= 0) return "";
  if (n >= FAILED_MAX) return `${FAILED_MAX} or more alert deliveries failed`;
  return n === 1 ? "1 alert delivery failed" : `${n} alert deliveries failed`;
}

/** A rule's kinds as a reader takes them: none means every kind at or above its severity. */
export function ruleKinds(rule: Pick<AlertRule, "kinds" | "severity">): string {
  return rule.kinds.length ? rule.kinds.join(", ") : `every kind at ${rule.severity} or above`;
}
