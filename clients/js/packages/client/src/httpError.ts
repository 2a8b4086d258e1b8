import { HeraldError } from "./HeraldError";
import { parseRetryAfter } from "./retryAfter";

interface RefusalBody {
  code?: unknown;
  message?: unknown;
  retry_after?: unknown;
  fallback?: unknown;
}

/**
 * A refused stream as an error: the status, the gateway's JSON body (`code`,
 * `message`, `retry_after`, `fallback`) and `Retry-After`. A proxy's HTML
 * error page has no such body; the status alone still decides.
 */
export async function httpError(response: Response, now: number): Promise<HeraldError> {
  let body: RefusalBody = {};
  try {
    const parsed: unknown = await response.json();
    if (parsed !== null && typeof parsed === "object") body = parsed as RefusalBody;
  } catch {
    // Not JSON: keep the status.
  }
  const header = parseRetryAfter(response.headers.get("retry-after"), now);
  const fromBody = typeof body.retry_after === "number" ? body.retry_after * 1000 : null;
  const retryAfterMs = header ?? fromBody;
  const code = typeof body.code === "string" ? body.code : undefined;
  const message = typeof body.message === "string" ? body.message : `the gateway answered ${response.status}`;
  return new HeraldError(response.status === 401 ? "auth" : "http", message, {
    status: response.status,
    ...(code === undefined ? {} : { code }),
    ...(retryAfterMs === null ? {} : { retryAfterMs }),
    ...(typeof body.fallback === "string" ? { fallback: body.fallback } : {}),
  });
}
