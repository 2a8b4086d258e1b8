import { createParser } from "eventsource-parser";

import type { Outcome, StreamHandlers } from "./attempt";
import { HeraldError } from "./HeraldError";
import { httpError } from "./httpError";

/**
 * One stream over `fetch`: request, check the answer, then feed the body to
 * eventsource-parser until it ends. A refusal becomes an error carrying the
 * status, the gateway's code, `Retry-After` and `fallback`.
 */
export async function fetchStream(
  fetcher: typeof fetch,
  url: string,
  init: RequestInit & { signal: AbortSignal },
  handlers: StreamHandlers,
  now: () => number,
): Promise<Outcome> {
  const { signal } = init;
  let response: Response;
  try {
    response = await fetcher(url, init);
  } catch (error) {
    if (signal.aborted) return { kind: "aborted" };
    return { kind: "failed", error: new HeraldError("network", "the stream request failed", { cause: error }) };
  }
  if (!response.ok) return { kind: "failed", error: await httpError(response, now()) };
  if (response.body === null) {
    return { kind: "failed", error: new HeraldError("network", "the stream response has no body") };
  }
  const parser = createParser({
    onEvent: (message) => handlers.message(message),
    onRetry: (ms) => handlers.retry(ms),
    onComment: (text) => handlers.comment(text),
  });
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      handlers.bytes();
      parser.feed(decoder.decode(value, { stream: true }));
      if (signal.aborted) return { kind: "aborted" };
    }
  } catch (error) {
    if (signal.aborted) return { kind: "aborted" };
    return { kind: "failed", error: new HeraldError("network", "the stream broke off", { cause: error }) };
  } finally {
    reader.cancel().catch(() => undefined);
  }
  return { kind: "ended" };
}
