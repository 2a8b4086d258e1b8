import { HeraldError, type HeraldErrorKind } from "./HeraldError";
import type { ConnectionStatus, HeraldEvent, ResyncInfo } from "./types";

/** An error as it crosses a BroadcastChannel (structured clone keeps no class). */
export interface ErrorMessage {
  readonly kind: HeraldErrorKind;
  readonly message: string;
  readonly status: number | null;
  readonly code: string | null;
}

/** What tabs tell each other. The leader speaks; followers greet and ask for reconnects. */
export type TabMessage =
  | { readonly type: "event"; readonly event: HeraldEvent<unknown> }
  | { readonly type: "cursor"; readonly cursor: string }
  | {
      readonly type: "status";
      readonly status: ConnectionStatus;
      readonly attempt: number;
      readonly lastError: ErrorMessage | null;
      readonly cursor: string | null;
      readonly connectionId: string | null;
      readonly recovered: boolean | null;
    }
  | { readonly type: "resync"; readonly info: ResyncInfo }
  | { readonly type: "poll" }
  | { readonly type: "hello" }
  | { readonly type: "reconnect" };

export function errorToMessage(error: HeraldError | null): ErrorMessage | null {
  if (error === null) return null;
  return { kind: error.kind, message: error.message, status: error.status, code: error.code };
}

export function errorFromMessage(message: ErrorMessage | null): HeraldError | null {
  if (message === null) return null;
  return new HeraldError(message.kind, message.message, {
    ...(message.status === null ? {} : { status: message.status }),
    ...(message.code === null ? {} : { code: message.code }),
  });
}

const TYPES = new Set(["event", "cursor", "status", "resync", "poll", "hello", "reconnect"]);

export function isTabMessage(data: unknown): data is TabMessage {
  return typeof data === "object" && data !== null && TYPES.has((data as { type?: unknown }).type as string);
}
