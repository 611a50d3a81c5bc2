// An exec or process agent's log pane on its page: its last lines, then each new one as it
// is written, stderr marked by a label as well as colour. It follows the end while the reader
// is there; scrolled up, the new lines wait below behind a pill.
import { shortIds, taskName, useTasks } from "../lib/names";
import { useLayoutEffect, useRef, useState } from "preact/hooks";
import { useAgentLog, KEEP_LINES, type LogLine } from "../lib/logs";
import { absolute, count } from "../lib/format";
import { ErrorBox, Loading, NewPill, Section } from "../components/page";

/** Only exec and process agents, and mcp agents that run a command, write lines the node keeps. */
export function hasLog(backend: string): boolean {
  const command = backend.startsWith("mcp:") && !/^mcp:https?:\/\//.test(backend);
  return backend.startsWith("exec:") || backend.startsWith("process:") || command;
}

export function LogPane({ id }: { id: string }) {
  const log = useAgentLog(id);
  const pane = useRef<HTMLDivElement>(null);
  const atEnd = useRef(true);
  const [unseen, setUnseen] = useState(0);
  const seen = useRef<number | null>(null);
  const lines = log.lines ?? [];
  const last = lines.length ? lines[lines.length - 1].seq : null;
  // Each line's task by its name, as everywhere else ("upper · 5e1c2a").
  const taskIds = lines.flatMap((l) => (l.taskId ? [l.taskId] : []));
  const tasks = useTasks(taskIds);
  const tails = shortIds(taskIds);
  const nameOf = (id: string) => taskName(tasks[id] ?? { id }, {}, tails);

  useLayoutEffect(() => {
    const el = pane.current;
    if (!el || last === null || last === seen.current) return;
    if (atEnd.current) el.scrollTop = el.scrollHeight;
    else setUnseen((n) => n + lines.filter((l) => seen.current === null || l.seq > seen.current).length);
    seen.current = last;
  }, [last]);

  const toEnd = () => {
    const el = pane.current;
    if (el) el.scrollTop = el.scrollHeight;
    atEnd.current = true;
    setUnseen(0);
  };

  return (
    <Section
      title="Log"
      actions={
        <>
          <NewPill count={unseen} onShow={toEnd} />
          <span class="muted">{log.lines === null ? "" : `${count(lines.length, "line")} (the last ${KEEP_LINES} are kept here)`}</span>
        </>
      }
    >
      <ErrorBox error={log.error} />
      {log.lines === null ? (
        <Loading what="its log" />
      ) : lines.length === 0 ? (
        <p class="empty">Nothing written yet: its stderr (and an exec task's stdout) show here as they come.</p>
      ) : (
        <div
          ref={pane}
          class="log"
          role="log"
          aria-label="Agent log, oldest first"
          aria-live="off"
          tabIndex={0}
          onScroll={(e) => {
            const el = e.currentTarget as HTMLDivElement;
            atEnd.current = el.scrollHeight - el.scrollTop - el.clientHeight < 8;
            if (atEnd.current) setUnseen(0);
          }}
        >
          {lines.map((l) => (
            <Line key={l.seq} line={l} task={l.taskId ? nameOf(l.taskId) : null} />
          ))}
        </div>
      )}
    </Section>
  );
}

function Line({ line: l, task }: { line: LogLine; task: string | null }) {
  return (
    <div class={`log-line log-${l.stream}`} data-seq={l.seq}>
      <time dateTime={l.at} title={absolute(l.at)}>
        {absolute(l.at).slice(11)}
      </time>
      <span class="log-stream">{l.stream}</span>
      <span class="log-text">{l.line}</span>
      {l.taskId ? (
        <a class="log-task" href={`/tasks/${encodeURIComponent(l.taskId)}`} title={`written by task ${l.taskId}`}>
          {task}
        </a>
      ) : null}
    </div>
  );
}
