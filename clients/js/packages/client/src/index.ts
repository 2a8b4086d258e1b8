export { HeraldClient, type EventData } from "./HeraldClient";
export { HeraldError, type HeraldErrorKind } from "./HeraldError";
export { streamTokenUrl, type StreamTokenOptions } from "./streamTokenUrl";
export { backoffCeiling, fullJitterDelay, DEFAULT_BACKOFF, type BackoffPolicy } from "./backoff";
export { GATEWAY_EVENTS } from "./gatewayEvents";
export { CLIENT_VERSION } from "./version";
export type {
  ChannelLike,
  EventSourceLike,
  HeraldGlobals,
  LockManagerLike,
  VisibilitySource,
} from "./globals";
export type {
  ConnectionState,
  ConnectionStatus,
  HeraldClientOptions,
  HeraldEvent,
  PollingFallback,
  ResyncInfo,
  TabRole,
  TokenRequest,
} from "./types";
export * from "./generated/events";
