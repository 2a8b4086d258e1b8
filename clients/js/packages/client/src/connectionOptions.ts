import { type BackoffPolicy, DEFAULT_BACKOFF } from "./backoff";
import type { HeraldClientOptions, PollingFallback } from "./types";

/** The client's options as the connection uses them: defaults filled in. */
export type ConnectionOptions = Pick<
  HeraldClientOptions,
  | "url"
  | "getToken"
  | "transport"
  | "getStreamUrl"
  | "subscribe"
  | "maxFailuresBeforePolling"
  | "probeIntervalMs"
  | "watchdogMs"
  | "credentials"
  | "since"
> & {
  readonly backoff: BackoffPolicy;
  readonly fallback: PollingFallback | null;
  /** Names the native EventSource must listen for, read at each attempt. */
  readonly eventNames: () => readonly string[];
};

export function connectionOptions(
  options: HeraldClientOptions,
  eventNames: () => readonly string[],
): ConnectionOptions {
  return {
    ...options,
    backoff: { ...DEFAULT_BACKOFF, ...options.backoff },
    fallback: options.fallback ?? null,
    eventNames,
  };
}
