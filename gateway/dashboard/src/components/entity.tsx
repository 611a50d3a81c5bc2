// An entity's page kept live by its …Updates subscription: loading, an error, or gone before
// it was seen; then its name and state as the title (the state it ended in once its stream
// ended), its controls while it lasts, and a note when it is gone.
import type { ComponentChildren } from "preact";
import type { Live } from "../lib/hooks";
import { Status } from "./status";
import { ErrorBox, Loading, Page } from "./page";

interface Entity {
  /** "agent", "swarm", "VM". */
  noun: string;
  /** The state shown once its stream ended: REMOVED, DESTROYED, DELETED. */
  gone: string;
}

function GoneNote({ noun, gone }: Entity) {
  return (
    <p class="empty">
      This {noun} was {gone.toLowerCase()}.
    </p>
  );
}

export function Pending<T>({ live, title, ...entity }: Entity & { live: Live<T>; title: string }) {
  return <Page title={title}>{live.error ? <ErrorBox error={live.error} /> : live.ended ? <GoneNote {...entity} /> : <Loading what={`the ${entity.noun}`} />}</Page>;
}

export function EntityPage<T>(props: Entity & { live: Live<T>; name: string; state: string; actions: ComponentChildren; children: ComponentChildren }) {
  const { live, name, state, actions, children, ...entity } = props;
  return (
    <Page
      title={
        <>
          {name} <Status state={live.ended ? entity.gone : state} />
        </>
      }
      actions={live.ended ? null : actions}
    >
      <ErrorBox error={live.error} />
      {live.ended ? <GoneNote {...entity} /> : null}
      {children}
    </Page>
  );
}
