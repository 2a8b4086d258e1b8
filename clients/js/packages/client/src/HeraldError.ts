/** Why an attempt failed. `retriable` decides between backing off and giving up. */
export type HeraldErrorKind =
  | "http" // the gateway (or a proxy) refused the stream
  | "network" // fetch failed, or the body broke off
  | "watchdog" // nothing arrived for too long
  | "auth" // a token was refused or expired
  | "evicted" // the gateway closed this stream for a newer one of the same user (per-user limit)
  | "poll"; // the application's polling fallback threw

export interface HeraldErrorDetails {
  readonly status?: number;
  /** The gateway's error code (`SERVER_OVERLOAD`, `AUTH_EXPIRED`, ...), when it sent one. */
  readonly code?: string;
  /** How long the server asked us to wait (Retry-After or the body's `retry_after`). */
  readonly retryAfterMs?: number;
  /** `"polling"` when the server asked clients to fall back to polling. */
  readonly fallback?: string;
  readonly cause?: unknown;
}

export class HeraldError extends Error {
  readonly kind: HeraldErrorKind;
  readonly status: number | null;
  readonly code: string | null;
  readonly retryAfterMs: number | null;
  readonly fallback: string | null;

  constructor(kind: HeraldErrorKind, message: string, details: HeraldErrorDetails = {}) {
    super(message, details.cause === undefined ? undefined : { cause: details.cause });
    this.name = "HeraldError";
    this.kind = kind;
    this.status = details.status ?? null;
    this.code = details.code ?? null;
    this.retryAfterMs = details.retryAfterMs ?? null;
    this.fallback = details.fallback ?? null;
  }

  /**
   * Whether trying again can succeed. Refusals that name the request itself
   * (403 a resource not granted, 422 a bad subscription, 400, 404) and revoked
   * credentials (`AUTH_REVOKED`) will be refused again, so the client stops and
   * reports rather than loop.
   */
  get retriable(): boolean {
    if (this.kind === "evicted") return false;
    // An admin revoked the token (401 or error.auth-revoked) or a grant (403): a new
    // token from the same sign-in is refused too, so the application must act.
    if (this.code === "AUTH_REVOKED") return false;
    if (this.kind !== "http" || this.status === null) return true;
    return this.status === 408 || this.status === 429 || this.status >= 500;
  }
}
