import type { EventSourceMessage } from "eventsource-parser";

import type { HeraldError } from "./HeraldError";

/** How one attempt to hold the stream ended. */
export type Outcome =
  | { readonly kind: "ended" } // the body closed (after a 200)
  | { readonly kind: "failed"; readonly error: HeraldError }
  | { readonly kind: "aborted" }; // the attempt's signal fired (reconnect, close, watchdog)

/** What a transport reports while it reads a stream. */
export interface StreamHandlers {
  /** A complete event block. */
  message(message: EventSourceMessage): void;
  /** The server's `retry:`. */
  retry(ms: number): void;
  /** A comment line's text (heartbeats name the stream's position there). */
  comment(text: string): void;
  /** Some bytes arrived: the stream is alive. */
  bytes(): void;
}
