import type { ConnectionState, EventData, HeraldEvent } from "@herald/client";
import { useEffect, useRef, useSyncExternalStore } from "react";

import { useHeraldClient } from "./HeraldProvider";

/** The connection's state; re-renders when it changes. */
export function useConnectionState(): ConnectionState {
  const client = useHeraldClient();
  return useSyncExternalStore(client.subscribe, client.getState, client.getState);
}

/**
 * Call `handler` for every event named `name` (`"*"`: all). The handler may
 * be a fresh closure on every render: the subscription stays, and always
 * calls the latest one.
 */
export function useHeraldEvent<K extends string>(name: K, handler: (event: HeraldEvent<EventData<K>>) => void): void {
  const client = useHeraldClient();
  const latest = useRef(handler);
  useEffect(() => {
    latest.current = handler;
  });
  useEffect(() => client.on(name, (event) => latest.current(event)), [client, name]);
}
