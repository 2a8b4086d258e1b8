import type { HeraldGlobals, TimerHandle } from "./globals";

/** The wait between attempts, which `wake()` cuts short (a manual reconnect, the page coming back). */
export class Delay {
  private timer: TimerHandle | null = null;
  private done: (() => void) | null = null;

  constructor(private readonly timers: Pick<HeraldGlobals, "setTimeout" | "clearTimeout">) {}

  wait(ms: number): Promise<void> {
    if (ms <= 0) return Promise.resolve();
    return new Promise((resolve) => {
      this.done = () => {
        if (this.timer !== null) this.timers.clearTimeout(this.timer);
        this.timer = null;
        this.done = null;
        resolve();
      };
      this.timer = this.timers.setTimeout(this.done, ms);
    });
  }

  /** End the current wait now, if there is one. */
  wake(): void {
    this.done?.();
  }
}
