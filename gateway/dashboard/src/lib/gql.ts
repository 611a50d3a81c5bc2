// The GraphQL client: a fetch wrapper for queries and mutations, graphql-ws for
// subscriptions. No cache: the gateway pushes what changed.
import { createClient, type Client } from "graphql-ws";
import { signal } from "@preact/signals";
import { token } from "./session";

/** An error the API answered, with its code (extensions.code) shown to the operator. */
export class ApiError extends Error {
  constructor(
    message: string,
    readonly code: string,
  ) {
    super(message);
  }
  override toString(): string {
    return `${this.code}: ${this.message}`;
  }
}

interface GqlError {
  message: string;
  extensions?: { code?: string };
}

export function toApiError(errors: readonly GqlError[] | unknown): ApiError {
  if (Array.isArray(errors) && errors.length > 0) {
    const e = errors[0] as GqlError;
    return new ApiError(e.message, e.extensions?.code ?? "ERROR");
  }
  if (errors instanceof ApiError) return errors;
  if (errors instanceof Error) return new ApiError(errors.message, "NETWORK");
  if (errors && typeof errors === "object" && "reason" in errors) {
    const r = errors as { code?: number; reason?: string };
    return new ApiError(r.reason || `connection closed (${r.code})`, "NETWORK");
  }
  return new ApiError(String(errors), "ERROR");
}

export async function gql<T>(query: string, variables: Record<string, unknown> = {}): Promise<T> {
  let response: Response;
  try {
    response = await fetch("/graphql", {
      method: "POST",
      headers: { "content-type": "application/json", authorization: `Bearer ${token.value}` },
      body: JSON.stringify({ query, variables }),
    });
  } catch (e) {
    throw new ApiError(`the gateway cannot be reached: ${(e as Error).message}`, "NETWORK");
  }
  let body: { data?: T; errors?: GqlError[] };
  try {
    body = await response.json();
  } catch {
    throw new ApiError(`the gateway answered ${response.status} without JSON`, "NETWORK");
  }
  if (body.errors?.length) throw toApiError(body.errors);
  if (!body.data) throw new ApiError(`the gateway answered ${response.status} without data`, "ERROR");
  return body.data;
}

/** The WebSocket's state, shown as the connection banner. */
export type Link = "connecting" | "connected" | "reconnecting" | "closed";
export const link = signal<Link>("connecting");

let client: Client | null = null;
let clientToken = "";

/** One WebSocket per token; it reconnects for ever, backing off up to 10 s. */
export function ws(): Client {
  if (client && clientToken === token.value) return client;
  client?.dispose();
  clientToken = token.value;
  const url = new URL("/graphql/ws", location.href);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  let opened = false;
  client = createClient({
    url: url.toString(),
    connectionParams: () => ({ Authorization: `Bearer ${token.value}` }),
    lazy: true,
    keepAlive: 10_000,
    retryAttempts: Infinity,
    // A refused token (4401/4403) will not get better by retrying: sign-in again.
    shouldRetry: (e) => !(e && typeof e === "object" && "code" in e && [4400, 4401, 4403].includes((e as CloseEvent).code)),
    retryWait: async (retries) => {
      await new Promise((r) => setTimeout(r, Math.min(10_000, 250 * 2 ** retries)));
    },
    on: {
      connecting: () => {
        link.value = opened ? "reconnecting" : "connecting";
      },
      connected: () => {
        opened = true;
        link.value = "connected";
      },
      closed: () => {
        link.value = opened ? "reconnecting" : "closed";
      },
    },
  });
  return client;
}

export function disposeWs(): void {
  client?.dispose();
  client = null;
}

export interface Sink<T> {
  next(value: T): void;
  error?(e: ApiError): void;
  complete?(): void;
}

/**
 * Subscribes; `variables` is the very object graphql-ws sends again on every resubscribe,
 * so a caller that updates it (a cursor) resumes from there after a reconnect.
 */
export function subscribe<T>(query: string, variables: Record<string, unknown>, sink: Sink<T>): () => void {
  return ws().subscribe<T>(
    { query, variables },
    {
      next: (r) => {
        if (r.errors?.length) sink.error?.(toApiError(r.errors));
        else if (r.data) sink.next(r.data as T);
      },
      error: (e) => sink.error?.(toApiError(e)),
      complete: () => sink.complete?.(),
    },
  );
}
