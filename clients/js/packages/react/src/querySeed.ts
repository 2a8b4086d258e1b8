import type { EventData, HeraldClient, HeraldEvent } from "@herald/client";
import type { QueryClient, QueryKey } from "@tanstack/react-query";

/** The envelope keys the gateway adds to every event's data. */
const ENVELOPE = new Set(["_scope", "_version", "_retained"]);

export interface QuerySeedOptions<K extends string = string> {
  /** The event whose payload is (or updates) the query's data, e.g. `"task.progress-updated"`. */
  readonly event: K;
  /** The query the event feeds; null to leave it out. */
  readonly queryKey: (event: HeraldEvent<EventData<K>>) => QueryKey | null;
  /**
   * The query's new data from the event and the data the cache holds (undefined when
   * none). Default: the event's payload without the gateway's envelope keys.
   */
  readonly data?: (event: HeraldEvent<EventData<K>>, old: unknown) => unknown;
  /** Only retained states seed the cache; live events are left to invalidation (default false). */
  readonly retainedOnly?: boolean;
}

/** The event's payload without `_scope`, `_version` and `_retained`. */
export function payloadOf(event: HeraldEvent<unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [key, value] of Object.entries((event.data ?? {}) as Record<string, unknown>)) {
    if (!ENVELOPE.has(key)) out[key] = value;
  }
  return out;
}

/**
 * Write events into `queryClient` as query data: the retained states a stream gets first
 * (the newest event per coalesce key, D33) fill the cache before any component asks, so
 * a page needs no fetch-then-subscribe; live events keep it current. Data set this way
 * is fresh for the query's `staleTime`. Returns the function that stops it.
 */
export function connectQuerySeed<K extends string>(
  client: HeraldClient,
  queryClient: QueryClient,
  options: QuerySeedOptions<K>,
): () => void {
  return client.on(options.event, (event) => {
    if (options.retainedOnly === true && event.retained !== true) return;
    const queryKey = options.queryKey(event);
    if (queryKey === null) return;
    const make = options.data;
    queryClient.setQueryData(queryKey, (old: unknown) =>
      make === undefined ? payloadOf(event as HeraldEvent<unknown>) : make(event, old),
    );
  });
}
