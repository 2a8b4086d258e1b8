import type { HeraldEvent } from "./types";

type Handler = (event: HeraldEvent<never>) => void;

/** Handlers by event name; `"*"` hears every event. */
export class EventDispatcher {
  private readonly handlers = new Map<string, Set<Handler>>();

  add(name: string, handler: Handler): () => void {
    let set = this.handlers.get(name);
    if (set === undefined) {
      set = new Set();
      this.handlers.set(name, set);
    }
    set.add(handler);
    return () => {
      set.delete(handler);
      if (set.size === 0) this.handlers.delete(name);
    };
  }

  names(): string[] {
    return [...this.handlers.keys()].filter((name) => name !== "*");
  }

  dispatch(event: HeraldEvent<unknown>): void {
    for (const name of [event.name, "*"]) {
      for (const handler of [...(this.handlers.get(name) ?? [])]) {
        try {
          handler(event as HeraldEvent<never>);
        } catch (error) {
          // One application handler's bug must not stop the stream or the
          // other handlers; rethrown in its own task, it still reaches the
          // host's error reporting.
          queueMicrotask(() => {
            throw error;
          });
        }
      }
    }
  }

  clear(): void {
    this.handlers.clear();
  }
}
