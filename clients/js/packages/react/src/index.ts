export { HeraldProvider, useHeraldClient, type HeraldProviderProps } from "./HeraldProvider";
export { useConnectionState, useHeraldEvent } from "./hooks";
export {
  connectQueryInvalidation,
  entityQueryKeys,
  isHeraldDriven,
  queryKeysFor,
  type EventToQueryKeys,
  type QueryInvalidationOptions,
} from "./queryInvalidation";
export { useHeraldQueryInvalidation } from "./useHeraldQueryInvalidation";
export { connectQuerySeed, payloadOf, type QuerySeedOptions } from "./querySeed";
export { useHeraldQuerySeed } from "./useHeraldQuerySeed";
export { ConnectionIndicator, type ConnectionIndicatorProps } from "./ConnectionIndicator";
