import { HeraldError } from "./HeraldError";
import { httpError } from "./httpError";
import type { TokenRequest } from "./types";

export interface StreamTokenOptions {
  /** The gateway's base URL, "" for the page's own origin. */
  readonly baseUrl?: string;
  /** The application's JWT, asked for on every call. */
  readonly getToken: (request: TokenRequest) => string | null | Promise<string | null>;
  readonly fetch?: typeof fetch;
}

/**
 * A `getStreamUrl` for the native EventSource mode: exchanges the JWT for a
 * short-lived stream token (`POST /api/v1/auth/sse-token`) on every attempt,
 * since a stream token opens streams only for a minute.
 */
export function streamTokenUrl(options: StreamTokenOptions): (request: TokenRequest) => Promise<string> {
  const base = (options.baseUrl ?? "").replace(/\/$/, "");
  return async (request) => {
    const token = await options.getToken(request);
    const doFetch = options.fetch ?? ((input, init) => globalThis.fetch(input, init));
    const response = await doFetch(`${base}/api/v1/auth/sse-token`, {
      method: "POST",
      headers: token ? { authorization: `Bearer ${token}` } : {},
      cache: "no-store",
    });
    if (!response.ok) throw await httpError(response, Date.now());
    const body = (await response.json()) as { stream_url?: unknown };
    if (typeof body.stream_url !== "string") {
      throw new HeraldError("http", "the stream-token answer has no stream_url", { status: response.status });
    }
    return `${base}${body.stream_url}`;
  };
}
