import type { HeraldGlobals, TimerHandle } from "./globals";

/**
 * Fires when nothing arrived for `timeoutMs`. Every chunk of bytes kicks it,
 * heartbeat comments included: a quiet but healthy stream is not dead
 * (LESSONS: "heartbeats the client cannot see").
 */
export class Watchdog {
  private handle: TimerHandle | null = null;

  constructor(
    private readonly timeoutMs: number,
    private readonly onExpire: () => void,
    private readonly timers: Pick<HeraldGlobals, "setTimeout" | "clearTimeout">,
  ) {}

  /** Start, or restart, the countdown. */
  kick(): void {
    this.stop();
    if (this.timeoutMs <= 0 || !Number.isFinite(this.timeoutMs)) return;
    this.handle = this.timers.setTimeout(() => {
      this.handle = null;
      this.onExpire();
    }, this.timeoutMs);
  }

  stop(): void {
    if (this.handle !== null) {
      this.timers.clearTimeout(this.handle);
      this.handle = null;
    }
  }
}
