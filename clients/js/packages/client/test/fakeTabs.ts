/** In-memory Web Locks and BroadcastChannel, shared by the "tabs" of one test. */

import type { ChannelLike, LockManagerLike } from "../src";

interface Waiter {
  callback: (lock: unknown) => Promise<void>;
  resolve: (value: unknown) => void;
  reject: (error: unknown) => void;
}

export class FakeLocks implements LockManagerLike {
  private readonly held = new Set<string>();
  private readonly queues = new Map<string, Waiter[]>();

  request(name: string, options: { signal?: AbortSignal }, callback: (lock: unknown) => Promise<void>): Promise<unknown> {
    return new Promise((resolve, reject) => {
      const waiter: Waiter = { callback, resolve, reject };
      const queue = this.queues.get(name) ?? [];
      this.queues.set(name, queue);
      queue.push(waiter);
      options.signal?.addEventListener("abort", () => {
        const index = queue.indexOf(waiter);
        if (index >= 0) {
          queue.splice(index, 1);
          reject(new DOMException("aborted", "AbortError"));
        }
      });
      this.grant(name);
    });
  }

  holders(name: string): boolean {
    return this.held.has(name);
  }

  private grant(name: string): void {
    if (this.held.has(name)) return;
    const next = this.queues.get(name)?.shift();
    if (next === undefined) return;
    this.held.add(name);
    void Promise.resolve()
      .then(() => next.callback({ name }))
      .then(next.resolve, next.reject)
      .finally(() => {
        this.held.delete(name);
        this.grant(name);
      });
  }
}

export class FakeChannelHub {
  private readonly open = new Set<FakeChannel>();

  readonly Channel = ((hub: FakeChannelHub) =>
    class implements ChannelLike {
      onmessage: ((event: { data: unknown }) => void) | null = null;
      constructor(readonly name: string) {
        hub.open.add(this as unknown as FakeChannel);
      }
      postMessage(message: unknown): void {
        // Structured clone, as the real channel: anything that cannot cross fails here.
        const data = structuredClone(message);
        for (const other of hub.open) {
          if (other !== (this as unknown as FakeChannel) && other.name === this.name) {
            setImmediate(() => other.onmessage?.({ data }));
          }
        }
      }
      close(): void {
        hub.open.delete(this as unknown as FakeChannel);
      }
    })(this);

  get openChannels(): number {
    return this.open.size;
  }
}

interface FakeChannel extends ChannelLike {
  readonly name: string;
}
