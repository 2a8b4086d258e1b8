import type { HeraldClient } from "@herald/client";
import { createContext, type ReactNode, useContext } from "react";

const HeraldContext = createContext<HeraldClient | null>(null);

export interface HeraldProviderProps {
  /**
   * Made outside React (at start-up, or when the user logs in) and closed
   * there: the connection must not live in a component's closure, where a
   * re-render or StrictMode's double mount would reconnect it, and where
   * callbacks keep the first render's token and cursor (LESSONS: stale
   * closures in the seed's provider).
   */
  readonly client: HeraldClient;
  readonly children?: ReactNode;
}

export function HeraldProvider({ client, children }: HeraldProviderProps): ReactNode {
  return <HeraldContext.Provider value={client}>{children}</HeraldContext.Provider>;
}

export function useHeraldClient(): HeraldClient {
  const client = useContext(HeraldContext);
  if (client === null) throw new Error("useHeraldClient: no <HeraldProvider> above this component");
  return client;
}
