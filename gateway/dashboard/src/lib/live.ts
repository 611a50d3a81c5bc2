// Live-update etiquette: what streams in is applied once per animation frame, and not at
// all while the operator paused live updates (it waits, counted, and is applied on resume).
import { signal } from "@preact/signals";

/** The "pause live" switch, shared by every view. */
export const paused = signal(false);

export type Schedule = (run: () => void) => void;

const frame: Schedule =
  typeof requestAnimationFrame === "function"
    ? (run) => void requestAnimationFrame(run)
    : (run) => void setTimeout(run, 16);

/**
 * Runs on a frame at most once per `ms` (the clock injectable for tests): a list that
 * streams faster than anyone reads is redrawn ten times a second, not sixty, and the page's
 * style, layout and paint follow suit.
 */
export function atMost(ms: number, next: Schedule = frame, clock: () => number = Date.now, wait: (run: () => void, ms: number) => void = (run, t) => void setTimeout(run, t)): Schedule {
  let last = -Infinity;
  return (run) =>
    wait(
      () =>
        next(() => {
          last = clock();
          run();
        }),
      Math.max(0, last + ms - clock()),
    );
}

/**
 * Collects items and hands them to `flush` in one batch per frame. While `isPaused()` holds,
 * items wait (`pending()` counts them) until `resume()`.
 */
export class FrameQueue<T> {
  private items: T[] = [];
  private scheduled = false;

  constructor(
    private readonly flush: (items: T[]) => void,
    private readonly isPaused: () => boolean = () => paused.value,
    private readonly schedule: Schedule = frame,
  ) {}

  push(item: T): void {
    this.items.push(item);
    this.kick();
  }

  pending(): number {
    return this.items.length;
  }

  /** Applies what waited (after a pause). */
  resume(): void {
    this.kick();
  }

  private kick(): void {
    if (this.scheduled || this.isPaused()) return;
    this.scheduled = true;
    this.schedule(() => {
      this.scheduled = false;
      if (this.isPaused() || this.items.length === 0) return;
      const batch = this.items;
      this.items = [];
      this.flush(batch);
    });
  }
}
