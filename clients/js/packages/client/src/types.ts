import type { BackoffPolicy } from "./backoff";
import type { HeraldGlobals } from "./globals";
import type { HeraldError } from "./HeraldError";

/**
 * - `connecting`: the first attempt is under way.
 * - `open`: the stream is up (`connection.established` arrived).
 * - `reconnecting`: the stream dropped; retrying with backoff.
 * - `polling`: streaming failed too often (or the server asked for it); the
 *   application's poll function keeps data fresh while streaming is probed.
 * - `closed`: `close()` was called, or the gateway refused for good.
 */
export type ConnectionStatus = "connecting" | "open" | "reconnecting" | "polling" | "closed";

/** `leader` holds the stream for the browser; `follower` hears it through the leader; `solo` holds its own. */
export type TabRole = "leader" | "follower" | "solo";

export interface ConnectionState {
  readonly status: ConnectionStatus;
  /** Consecutive failed attempts since the stream was last open. */
  readonly attempt: number;
  readonly lastError: HeraldError | null;
  readonly role: TabRole;
  /** From the last `connection.established`. */
  readonly connectionId: string | null;
  readonly recovered: boolean | null;
  /** The cursor this client resumes from. */
  readonly lastEventId: string | null;
}

/**
 * An event as handlers receive it. `id` is null for the gateway's notices (`error.*`,
 * `connection.closing`) and for retained states.
 */
export interface HeraldEvent<D = Record<string, unknown>> {
  readonly name: string;
  readonly id: string | null;
  readonly data: D;
  /**
   * True for a retained state (D33): the newest event of its coalesce key kept by the
   * gateway, sent before the replay and live events to a stream that starts without a
   * cursor (or whose cursor was not recovered). It has no id and leaves `lastEventId`.
   */
  readonly retained?: boolean;
}

export interface ResyncInfo {
  /** Why the stream could not continue exactly: `stale`, `malformed`, or `none` (no cursor was sent). */
  readonly replayMiss: string | null;
  readonly connectionId: string | null;
}

export interface TokenRequest {
  /** True when the gateway just refused or expired the previous token: do not hand back a cached one. */
  readonly refresh: boolean;
  readonly attempt: number;
}

export interface PollingFallback {
  /** Re-fetch what the stream would have pushed. Called at once, then every `intervalMs`. */
  poll(signal: AbortSignal): Promise<void> | void;
  /** Default 5000. */
  readonly intervalMs?: number;
}

export interface HeraldClientOptions {
  /** The stream endpoint, e.g. `https://gateway.example/api/v1/events/stream` or `/api/v1/events/stream`. */
  readonly url: string;
  /**
   * The application's JWT, asked for on every attempt (never a header kept
   * from the first request: fetch-event-source #33). Null sends no Authorization.
   */
  readonly getToken?: (request: TokenRequest) => string | null | Promise<string | null>;
  /**
   * `fetch` (default): streaming fetch with Authorization and Last-Event-ID headers.
   * `eventsource`: the browser's EventSource with a stream token, for hosts
   * without fetch streaming; needs `getStreamUrl`.
   */
  readonly transport?: "fetch" | "eventsource";
  /** Native mode: a URL carrying a fresh stream token (see `streamTokenUrl`). */
  readonly getStreamUrl?: (request: TokenRequest) => string | Promise<string>;
  /** Resource subscriptions, `["novel:1"]`. */
  readonly subscribe?: readonly string[];
  /** Resume from this cursor (e.g. one kept in storage). */
  readonly lastEventId?: string;
  /**
   * Without a cursor (no `lastEventId`, nothing received yet): ask the gateway for what
   * happened since this time (`?since=`), e.g. when the page was last seen. Inside the
   * gateway's replay window the stream says `recovered: true`; outside, `false` (resync).
   */
  readonly since?: Date | string;
  /** Called when the stream could not continue exactly after our cursor: re-fetch state. */
  readonly onResync?: (info: ResyncInfo) => void;
  /**
   * Called when the client stops for good because of `error` (status `closed`, not
   * by `close()`): a revoked token (`code` `AUTH_REVOKED`: sign the user in again),
   * an eviction by a newer stream, or a refusal that will not change (403, 422).
   */
  readonly onError?: (error: HeraldError) => void;
  readonly backoff?: Partial<BackoffPolicy>;
  /** Consecutive failures before the polling fallback engages (default 5). */
  readonly maxFailuresBeforePolling?: number;
  readonly fallback?: PollingFallback;
  /** While polling, how often streaming is tried again (default: the backoff cap). */
  readonly probeIntervalMs?: number;
  /** Reconnect after this long without a byte (default 30000; heartbeats arrive every 15 s). */
  readonly watchdogMs?: number;
  /**
   * One stream per browser: tabs elect a leader with Web Locks and share
   * its events over BroadcastChannel (default true when both exist).
   */
  readonly shareAcrossTabs?: boolean;
  /** Name of the lock and channel; tabs with the same name share a stream (default "herald"). */
  readonly channelName?: string;
  /** Event names the native EventSource listens for, besides the gateway's own and those with handlers. */
  readonly events?: readonly string[];
  /** `fetch` credentials mode (default "same-origin"). */
  readonly credentials?: RequestCredentials;
  readonly globals?: Partial<HeraldGlobals>;
}
