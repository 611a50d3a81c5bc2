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

/**
 * Runs `run` once, `ms` after the first of a burst of `poke()`s (a list read again after
 * what a stream said). While live updates are paused the run waits, and happens on
 * `resume()`: a read the stream asked for just before the pause does not change the page
 * during it (it took a card out of the approvals inbox under the operator's cursor).
 */
export class Debounced {
  private timer: unknown = null;
  private owed = false;

  constructor(
    private readonly run: () => void,
    private readonly ms: number,
    private readonly isPaused: () => boolean = () => paused.value,
    private readonly wait: (run: () => void, ms: number) => unknown = (run, ms) => setTimeout(run, ms),
    private readonly clear: (timer: unknown) => void = (timer) => clearTimeout(timer as ReturnType<typeof setTimeout>),
  ) {}

  poke(): void {
    if (this.timer !== null) return;
    this.timer = this.wait(() => {
      this.timer = null;
      if (this.isPaused()) this.owed = true;
      else this.run();
    }, this.ms);
  }

  /** Runs what the pause held back, if any (called whenever the switch changes). */
  resume(): void {
    if (!this.owed || this.isPaused()) return;
    this.owed = false;
    this.run();
  }

  cancel(): void {
    if (this.timer !== null) this.clear(this.timer);
    this.timer = null;
    this.owed = false;
  }
}
