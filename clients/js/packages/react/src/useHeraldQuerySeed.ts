import type { EventData, HeraldEvent } from "@herald/client";
import { useQueryClient } from "@tanstack/react-query";
import { useEffect, useRef } from "react";

import { useHeraldClient } from "./HeraldProvider";
import { connectQuerySeed, payloadOf, type QuerySeedOptions } from "./querySeed";

/**
 * Seed the nearest `QueryClientProvider`'s cache from the provider's client (see
 * `connectQuerySeed`): `useHeraldQuerySeed({event: "task.progress-updated", queryKey: (e)
 * => ["task", e.data.task_id]})`. The functions are read when events arrive, so inline
 * ones do not resubscribe on every render; a new `event` name does.
 */
export function useHeraldQuerySeed<K extends string>(options: QuerySeedOptions<K>): void {
  const client = useHeraldClient();
  const queryClient = useQueryClient();
  const latest = useRef(options);
  useEffect(() => {
    latest.current = options;
  });
  const { event } = options;
  useEffect(
    () =>
      connectQuerySeed(client, queryClient, {
        event,
        queryKey: (e: HeraldEvent<EventData<K>>) =>
          latest.current.retainedOnly === true && e.retained !== true ? null : latest.current.queryKey(e),
        data: (e: HeraldEvent<EventData<K>>, old: unknown) => {
          const make = latest.current.data;
          return make === undefined ? payloadOf(e as HeraldEvent<unknown>) : make(e, old);
        },
      }),
    [client, queryClient, event],
  );
}
