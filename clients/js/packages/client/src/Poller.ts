import type { HeraldGlobals, TimerHandle } from "./globals";

/**
 * Runs the application's polling fallback: once at start, then every
 * `intervalMs` after the previous poll finished (never two at once).
 */
export class Poller {
  private timer: TimerHandle | null = null;
  private controller: AbortController | null = null;
  private running = false;

  constructor(
    private readonly poll: (signal: AbortSignal) => Promise<void>,
    private readonly intervalMs: number,
    private readonly timers: Pick<HeraldGlobals, "setTimeout" | "clearTimeout">,
  ) {}

  get active(): boolean {
    return this.running;
  }

  start(): void {
    if (this.running) return;
    this.running = true;
    void this.tick();
  }

  /** Poll now rather than at the next tick (the user came back to the page). */
  now(): void {
    if (!this.running || this.controller !== null) return;
    if (this.timer !== null) this.timers.clearTimeout(this.timer);
    this.timer = null;
    void this.tick();
  }

  stop(): void {
    this.running = false;
    if (this.timer !== null) this.timers.clearTimeout(this.timer);
    this.timer = null;
    this.controller?.abort();
    this.controller = null;
  }

  private async tick(): Promise<void> {
    this.timer = null;
    const controller = new AbortController();
    this.controller = controller;
    try {
      await this.poll(controller.signal);
    } finally {
      if (this.controller === controller) this.controller = null;
    }
    if (!this.running || controller.signal.aborted) return;
    this.timer = this.timers.setTimeout(() => void this.tick(), this.intervalMs);
  }
}
