/**
 * Everything the client takes from its environment, injected so it runs in a
 * page, a worker or a test. Nothing here assumes a DOM: visibility comes from
 * whatever the host offers (a page's `document`, a worker's messages), and
 * defaults are looked up on `globalThis` when called, not when imported, so
 * that test fake timers installed later still apply.
 */

export type TimerHandle = unknown;

/** The part of `navigator.locks` the leader election uses. */
export interface LockManagerLike {
  request(
    name: string,
    options: { signal?: AbortSignal },
    callback: (lock: unknown) => Promise<void>,
  ): Promise<unknown>;
}

/** The part of `BroadcastChannel` the tab coordination uses. */
export interface ChannelLike {
  postMessage(message: unknown): void;
  close(): void;
  onmessage: ((event: { data: unknown }) => void) | null;
}

/** The part of `EventSource` the native mode uses. */
export interface EventSourceLike {
  readonly readyState: number;
  onopen: ((event: unknown) => void) | null;
  onerror: ((event: unknown) => void) | null;
  addEventListener(name: string, listener: (event: { data: string; lastEventId: string }) => void): void;
  close(): void;
}

/** Whether the application is in front of the user; the client retries at once when it comes back. */
export interface VisibilitySource {
  isVisible(): boolean;
  /** Calls `listener` on every change; returns the unsubscribe function. */
  subscribe(listener: () => void): () => void;
}

export interface HeraldGlobals {
  fetch: typeof fetch;
  setTimeout(callback: () => void, ms: number): TimerHandle;
  clearTimeout(handle: TimerHandle): void;
  now(): number;
  random(): number;
  locks: LockManagerLike | null;
  BroadcastChannel: (new (name: string) => ChannelLike) | null;
  EventSource: (new (url: string, init?: { withCredentials?: boolean }) => EventSourceLike) | null;
  visibility: VisibilitySource | null;
}

interface DocumentLike {
  visibilityState: string;
  addEventListener(name: string, listener: () => void): void;
  removeEventListener(name: string, listener: () => void): void;
}

/** A page's `document` visibility, or null in a worker. */
function documentVisibility(): VisibilitySource | null {
  const doc = (globalThis as { document?: DocumentLike }).document;
  if (doc === undefined || typeof doc.addEventListener !== "function") return null;
  return {
    isVisible: () => doc.visibilityState !== "hidden",
    subscribe(listener) {
      doc.addEventListener("visibilitychange", listener);
      return () => doc.removeEventListener("visibilitychange", listener);
    },
  };
}

/** The host's own globals, with `overrides` on top. */
export function resolveGlobals(overrides: Partial<HeraldGlobals> = {}): HeraldGlobals {
  const host = globalThis as unknown as {
    navigator?: { locks?: LockManagerLike };
    BroadcastChannel?: new (name: string) => ChannelLike;
    EventSource?: new (url: string, init?: { withCredentials?: boolean }) => EventSourceLike;
  };
  return {
    fetch: (input, init) => globalThis.fetch(input, init),
    setTimeout: (callback, ms) => globalThis.setTimeout(callback, ms),
    clearTimeout: (handle) => globalThis.clearTimeout(handle as ReturnType<typeof globalThis.setTimeout>),
    now: () => Date.now(),
    random: () => Math.random(),
    locks: host.navigator?.locks ?? null,
    BroadcastChannel: host.BroadcastChannel ?? null,
    EventSource: host.EventSource ?? null,
    visibility: documentVisibility(),
    ...overrides,
  };
}
