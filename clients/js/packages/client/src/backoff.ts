/**
 * Reconnect delays: exponential backoff with "full jitter" (a uniformly random
 * delay between 0 and the exponential ceiling), capped. Pure, so the policy is
 * tested with tables and the connection only adds timers around it.
 *
 * Full jitter rather than "base plus a little": after a gateway restart every
 * client fails at the same moment, and only a delay spread over the whole
 * window keeps their retries from arriving together.
 */

export interface BackoffPolicy {
  /** Ceiling of the first retry's delay; the server's `retry:` replaces it once known. */
  readonly baseMs: number;
  /** No delay ever exceeds this. */
  readonly capMs: number;
}

export const DEFAULT_BACKOFF: BackoffPolicy = { baseMs: 1000, capMs: 30_000 };

/** The ceiling for the `failures`-th consecutive failure (1-based): base·2^(failures−1), capped. */
export function backoffCeiling(failures: number, policy: BackoffPolicy): number {
  if (failures <= 0) return 0;
  // 2 ** 31 already exceeds any sensible cap; clamping the exponent keeps the number finite.
  const exponent = Math.min(failures - 1, 31);
  return Math.min(policy.capMs, policy.baseMs * 2 ** exponent);
}

/** A delay drawn uniformly from [0, ceiling]; `random` returns [0, 1) like Math.random. */
export function fullJitterDelay(failures: number, policy: BackoffPolicy, random: () => number): number {
  return Math.floor(random() * backoffCeiling(failures, policy));
}
