import type { HeraldClient, HeraldEvent } from "@herald/client";
import type { Query, QueryClient, QueryKey } from "@tanstack/react-query";

/** Query keys an event makes stale; null or [] for none. */
export type EventToQueryKeys = (event: HeraldEvent<unknown>) => readonly QueryKey[] | null;

export interface QueryInvalidationOptions {
  /**
   * The application's own mapping, consulted first: by event name, or one
   * function for all. When it gives nothing, `entityQueryKeys` is tried.
   */
  readonly mapping?: Readonly<Record<string, EventToQueryKeys>> | EventToQueryKeys;
  /**
   * First elements of the keys of Herald-driven queries (`["task", ...]`):
   * a resync invalidates them all. Queries with `meta: { herald: true }` are
   * Herald-driven too.
   */
  readonly roots?: readonly string[];
}

/**
 * Events that say what changed (`entity_type`, and `action` or `entity_id`)
 * make that entity's queries stale: `["task"]` matches `["task"]`,
 * `["task", "t1"]`, `["task", {status: "open"}]` (TanStack matches by prefix).
 */
export function entityQueryKeys(event: HeraldEvent<unknown>): readonly QueryKey[] | null {
  const data = event.data as { entity_type?: unknown; action?: unknown; entity_id?: unknown } | null;
  if (data === null || typeof data !== "object" || typeof data.entity_type !== "string") return null;
  if (data.action === undefined && data.entity_id === undefined) return null;
  return [[data.entity_type]];
}

/** The keys `event` invalidates under `options`. */
export function queryKeysFor(event: HeraldEvent<unknown>, options: QueryInvalidationOptions): readonly QueryKey[] {
  const { mapping } = options;
  const mapped = typeof mapping === "function" ? mapping(event) : (mapping?.[event.name]?.(event) ?? null);
  return mapped !== null && mapped.length > 0 ? mapped : (entityQueryKeys(event) ?? []);
}

/** Whether a resync should re-fetch `query`. */
export function isHeraldDriven(query: Query, roots: ReadonlySet<string>): boolean {
  const meta = query.meta as { herald?: unknown } | undefined;
  if (meta?.herald === true) return true;
  const root = query.queryKey[0];
  return typeof root === "string" && roots.has(root);
}

/**
 * Keep `queryClient` fresh from the stream: events invalidate the queries
 * they touch; a resync (`recovered: false`: events may have been missed)
 * invalidates every Herald-driven query. Returns the function that stops it.
 */
export function connectQueryInvalidation(
  client: HeraldClient,
  queryClient: QueryClient,
  options: QueryInvalidationOptions = {},
): () => void {
  const roots = new Set(options.roots ?? []);
  const offEvents = client.on("*", (event) => {
    if (event.name.startsWith("connection.")) return;
    for (const queryKey of queryKeysFor(event, options)) {
      const root = queryKey[0];
      if (typeof root === "string") roots.add(root);
      void queryClient.invalidateQueries({ queryKey });
    }
  });
  const offResync = client.onResync(() => {
    void queryClient.invalidateQueries({ predicate: (query) => isHeraldDriven(query, roots) });
  });
  return () => {
    offEvents();
    offResync();
  };
}
