import type { EventSourceMessage } from "eventsource-parser";

import type { EventSourceLike, HeraldGlobals } from "./globals";
import { isUntracked } from "./gatewayEvents";

const CLOSED = 2;

export interface EventSourceHandlers {
  message(message: EventSourceMessage): void;
  /** The browser gave up on the stream (a non-200 answer; EventSource hides which). */
  refused(): void;
  /** The connection dropped and the browser is reconnecting by itself. */
  dropped(): void;
}

/**
 * The browser's own EventSource on one stream URL. EventSource dispatches
 * only the names it was told to listen for, so names can be added while it
 * runs (a handler registered later).
 */
export class EventSourceStream {
  private readonly source: EventSourceLike;
  private readonly listening = new Set<string>();
  private closed = false;

  constructor(
    EventSourceClass: NonNullable<HeraldGlobals["EventSource"]>,
    url: string,
    withCredentials: boolean,
    names: Iterable<string>,
    private readonly handlers: EventSourceHandlers,
  ) {
    this.source = new EventSourceClass(url, { withCredentials });
    this.source.onerror = () => {
      if (this.closed) return;
      if (this.source.readyState === CLOSED) this.handlers.refused();
      else this.handlers.dropped();
    };
    for (const name of names) this.listen(name);
  }

  listen(name: string): void {
    if (this.listening.has(name)) return;
    this.listening.add(name);
    this.source.addEventListener(name, (event) => {
      if (this.closed) return;
      const id = isUntracked(name) || event.lastEventId === "" ? undefined : event.lastEventId;
      this.handlers.message({ event: name, id, data: event.data });
    });
  }

  close(): void {
    this.closed = true;
    this.source.close();
  }
}
