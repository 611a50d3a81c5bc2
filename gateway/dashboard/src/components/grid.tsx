// A windowed grid: fixed row height, only the visible rows in the DOM (aria-rowcount and
// aria-rowindex say where they are), arrows/Home/End/PageUp/PageDown move the focus, Enter
// opens the row. Stays fast with 10,000+ rows.
import type { ComponentChildren } from "preact";
import { useEffect, useRef, useState } from "preact/hooks";

export interface Column<T> {
  title: string;
  width?: string;
  cell: (row: T) => ComponentChildren;
}

export interface GridProps<T> {
  label: string;
  rows: T[];
  columns: Column<T>[];
  rowKey: (row: T) => string;
  onOpen?: (row: T) => void;
  /** Total rows known on the server (for aria-rowcount), when more than loaded. */
  total?: number;
  /** Called when the last rows come into view: load the next page. */
  onEnd?: () => void;
  height?: number;
  rowHeight?: number;
  empty?: ComponentChildren;
}

/**
 * The narrowest the grid's columns go, in px: each column's fixed or minmax() minimum (a bare
 * `fr` counts 80px), plus the gaps, the rows' padding (20) and room for the body's vertical
 * scrollbar (16) so the rows' tracks still fit. Head and body both take it as their
 * min-width, so on a narrow screen they scroll sideways together inside the grid's box.
 */
export function gridMinWidth(widths: (string | undefined)[], gap = 8, padding = 36): number {
  const least = (w: string | undefined) => {
    const px = /^(?:minmax\(\s*)?(\d+(?:\.\d+)?)px/.exec(w?.trim() ?? "");
    return px ? Number(px[1]) : 80;
  };
  return widths.reduce((sum, w) => sum + least(w), 0) + gap * Math.max(0, widths.length - 1) + padding;
}

export function Grid<T>({ label, rows, columns, rowKey, onOpen, total, onEnd, height = 480, rowHeight = 34, empty }: GridProps<T>) {
  const scroller = useRef<HTMLDivElement>(null);
  const [top, setTop] = useState(0);
  const [active, setActive] = useState(0);
  const visible = Math.ceil(height / rowHeight) + 1;
  const overscan = 6;
  const first = Math.max(0, Math.floor(top / rowHeight) - overscan);
  const last = Math.min(rows.length, first + visible + overscan * 2);
  const template = columns.map((c) => c.width ?? "1fr").join(" ");
  const minWidth = `${gridMinWidth(columns.map((c) => c.width))}px`;

  useEffect(() => {
    if (onEnd && last >= rows.length - overscan && rows.length > 0) onEnd();
  }, [last, rows.length]);

  const focusRow = (i: number) => {
    const clamped = Math.max(0, Math.min(rows.length - 1, i));
    setActive(clamped);
    const el = scroller.current;
    if (!el) return;
    const y = clamped * rowHeight;
    if (y < el.scrollTop) el.scrollTop = y;
    else if (y + rowHeight > el.scrollTop + height) el.scrollTop = y + rowHeight - height;
    requestAnimationFrame(() => el.querySelector<HTMLElement>(`[data-row="${clamped}"]`)?.focus());
  };

  const onKey = (e: KeyboardEvent) => {
    const page = Math.floor(height / rowHeight);
    const moves: Record<string, number> = { ArrowDown: 1, ArrowUp: -1, PageDown: page, PageUp: -page };
    if (e.key in moves) focusRow(active + moves[e.key]);
    else if (e.key === "Home") focusRow(0);
    else if (e.key === "End") focusRow(rows.length - 1);
    else if (e.key === "Enter" && onOpen && rows[active]) onOpen(rows[active]);
    else return;
    e.preventDefault();
  };

  if (rows.length === 0) return <p class="empty">{empty ?? "Nothing here yet."}</p>;
  return (
    <div class="grid" role="grid" aria-label={label} aria-rowcount={(total ?? rows.length) + 1} aria-colcount={columns.length} onKeyDown={onKey}>
      <div class="grid-head" role="row" aria-rowindex={1} style={{ gridTemplateColumns: template, minWidth }}>
        {columns.map((c, i) => (
          <div role="columnheader" aria-colindex={i + 1} key={c.title}>
            {c.title}
          </div>
        ))}
      </div>
      <div class="grid-body" ref={scroller} style={{ height: `${Math.min(height, rows.length * rowHeight)}px`, minWidth }} onScroll={(e) => setTop((e.currentTarget as HTMLElement).scrollTop)}>
        <div style={{ height: `${rows.length * rowHeight}px`, position: "relative" }}>
          {rows.slice(first, last).map((row, k) => {
            const i = first + k;
            return (
              <div
                role="row"
                key={rowKey(row)}
                data-row={i}
                aria-rowindex={i + 2}
                tabIndex={i === active ? 0 : -1}
                class={`grid-row${onOpen ? " clickable" : ""}`}
                style={{ top: `${i * rowHeight}px`, height: `${rowHeight}px`, gridTemplateColumns: template }}
                onClick={(e) => {
                  setActive(i);
                  if (onOpen && !(e.target as Element).closest("a,button")) onOpen(row);
                }}
              >
                {columns.map((c, j) => (
                  <div role="gridcell" aria-colindex={j + 1} key={c.title}>
                    {c.cell(row)}
                  </div>
                ))}
              </div>
            );
          })}
        </div>
      </div>
    </div>
  );
}
