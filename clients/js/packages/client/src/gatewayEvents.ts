import { HeraldError } from "./HeraldError";

/** The gateway's own event names, and what the client reads from their payloads. */
export const ESTABLISHED = "connection.established";
export const SUBSCRIPTIONS_CHANGED = "connection.subscriptions-changed";
export const AUTH_EXPIRED = "error.auth-expired";
export const AUTH_REVOKED = "error.auth-revoked";
export const AUTH_EXPIRING = "auth.expiring";
export const EVICTED = "error.connection-evicted";

/** The native EventSource always listens for these. */
export const GATEWAY_EVENTS = [
  ESTABLISHED,
  "connection.closing",
  SUBSCRIPTIONS_CHANGED,
  AUTH_EXPIRED,
  AUTH_REVOKED,
  AUTH_EXPIRING,
  "error.slow-consumer",
  EVICTED,
] as const;

/** Notices that carry no id (D6); EventSource would report the previous event's id for them. */
export function isUntracked(name: string): boolean {
  return name.startsWith("error.") || name === "connection.closing" || name === AUTH_EXPIRING;
}

/** A retained state (D33): the gateway marks its data `_retained: true` and sends it without id. */
export function isRetained(data: unknown): boolean {
  return typeof data === "object" && data !== null && (data as { _retained?: unknown })._retained === true;
}

export function parseData(text: string): unknown {
  try {
    return JSON.parse(text) as unknown;
  } catch {
    return { raw: text };
  }
}

/** The resource keys a `connection.established` or `connection.subscriptions-changed` confirms. */
export function confirmedSubscriptions(data: unknown): readonly string[] | null {
  const list = (data as { subscriptions?: unknown } | null)?.subscriptions;
  return Array.isArray(list) && list.every((key) => typeof key === "string") ? (list as string[]) : null;
}

/** `error.auth-revoked`: final; the application must sign the user in again. */
export function revocationError(data: unknown): HeraldError {
  const body = (data ?? {}) as { message?: unknown };
  const message = typeof body.message === "string" ? body.message : "the token behind the stream was revoked";
  return new HeraldError("auth", message, { code: "AUTH_REVOKED" });
}

export function evictionError(data: unknown): HeraldError {
  const body = (data ?? {}) as { code?: unknown; message?: unknown };
  const message = typeof body.message === "string" ? body.message : "the stream was evicted";
  return new HeraldError("evicted", message, typeof body.code === "string" ? { code: body.code } : {});
}
