import type { ChannelLike, LockManagerLike } from "./globals";
import { isTabMessage, type TabMessage } from "./tabMessages";

/**
 * One stream per browser. Tabs of an origin queue for one Web Lock; the
 * holder is the leader and owns the stream, the others are followers and
 * hear it over a BroadcastChannel. When the leader's tab closes the browser
 * releases its lock and the next tab in the queue is granted it at once.
 *
 * Web Locks, not "who answers first on the channel": a lock has exactly one
 * holder, so no tab can demote the real leader (LESSONS: the seed's tabs
 * evicted each other).
 */
export class TabCoordinator {
  private readonly channel: ChannelLike;
  private readonly waiting = new AbortController();
  private release: (() => void) | null = null;
  private closed = false;

  constructor(
    name: string,
    locks: LockManagerLike,
    Channel: new (name: string) => ChannelLike,
    private readonly onLeader: () => void,
    onMessage: (message: TabMessage) => void,
  ) {
    this.channel = new Channel(`${name}:events`);
    this.channel.onmessage = (event) => {
      if (!this.closed && isTabMessage(event.data)) onMessage(event.data);
    };
    locks
      .request(`${name}:leader`, { signal: this.waiting.signal }, () => this.lead())
      .catch(() => undefined); // AbortError: closed while still waiting in the queue.
  }

  get isLeader(): boolean {
    return this.release !== null;
  }

  post(message: TabMessage): void {
    if (!this.closed) this.channel.postMessage(message);
  }

  /** Leave the queue, or give up the lead so the next tab takes over. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.waiting.abort();
    this.release?.();
    this.release = null;
    this.channel.close();
  }

  /** Held until `close()`: returning from the lock's callback would release it. */
  private lead(): Promise<void> {
    if (this.closed) return Promise.resolve();
    return new Promise<void>((resolve) => {
      this.release = resolve;
      this.onLeader();
    });
  }
}
