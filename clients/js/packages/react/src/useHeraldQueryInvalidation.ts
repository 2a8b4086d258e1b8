import { useQueryClient } from "@tanstack/react-query";
import { useEffect, useRef } from "react";

import { useHeraldClient } from "./HeraldProvider";
import { connectQueryInvalidation, type QueryInvalidationOptions } from "./queryInvalidation";

/**
 * Wire the provider's client to the nearest `QueryClientProvider` (see
 * `connectQueryInvalidation`). The options are read when events arrive, so
 * an inline mapping does not resubscribe on every render.
 */
export function useHeraldQueryInvalidation(options: QueryInvalidationOptions = {}): void {
  const client = useHeraldClient();
  const queryClient = useQueryClient();
  const latest = useRef(options);
  useEffect(() => {
    latest.current = options;
  });
  useEffect(() => {
    const current = latest.current;
    return connectQueryInvalidation(client, queryClient, {
      mapping: (event) => {
        const { mapping } = latest.current;
        if (typeof mapping === "function") return mapping(event);
        return mapping?.[event.name]?.(event) ?? null;
      },
      ...(current.roots === undefined ? {} : { roots: current.roots }),
    });
  }, [client, queryClient]);
}
