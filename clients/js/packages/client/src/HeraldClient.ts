import { Deduper } from "./Deduper";
import { EventDispatcher } from "./EventDispatcher";
import type { HeraldEventMap } from "./generated/events";
import { type HeraldGlobals, resolveGlobals } from "./globals";
import type { HeraldError } from "./HeraldError";
import { StateStore } from "./StateStore";
import { connectionOptions } from "./connectionOptions";
import { StreamConnection, type StreamSink } from "./StreamConnection";
import { TabCoordinator } from "./TabCoordinator";
import { errorFromMessage, errorToMessage, type TabMessage } from "./tabMessages";
import type {
  ConnectionState,
  ConnectionStatus,
  HeraldClientOptions,
  HeraldEvent,
  ResyncInfo,
} from "./types";

/** Handlers of a known event name get its generated payload type; any other name gets a plain object. */
export type EventData<K extends string> = K extends keyof HeraldEventMap ? HeraldEventMap[K] : Record<string, unknown>;

/**
 * Herald's browser client: one object per application (per tab), whatever
 * the transport and whichever tab holds the stream.
 *
 * ```ts
 * const herald = new HeraldClient({ url: "/api/v1/events/stream", getToken: () => auth.token() });
 * const off = herald.on("task.progress-updated", (e) => show(e.data.progress));
 * herald.subscribe((state) => render(state.status));
 * herald.close(); // on logout
 * ```
 */
export class HeraldClient {
  private readonly store: StateStore<ConnectionState>;
  private readonly dispatcher = new EventDispatcher();
  private readonly resyncHandlers = new Set<(info: ResyncInfo) => void>();
  private readonly deduper = new Deduper();
  private readonly globals: HeraldGlobals;
  private readonly options: HeraldClientOptions;
  private readonly connection: StreamConnection;
  private readonly tabs: TabCoordinator | null = null;
  private cursor: string | null;
  private closed = false;
  /** The last error handed to `onError`, so each is reported once. */
  private reportedError: HeraldError | null = null;

  constructor(options: HeraldClientOptions) {
    this.options = options;
    this.globals = resolveGlobals(options.globals);
    this.cursor = options.lastEventId ?? null;
    const { locks, BroadcastChannel } = this.globals;
    const share = (options.shareAcrossTabs ?? true) && locks !== null && BroadcastChannel !== null;
    this.store = new StateStore<ConnectionState>({
      status: "connecting",
      attempt: 0,
      lastError: null,
      role: share ? "follower" : "solo",
      connectionId: null,
      recovered: null,
      lastEventId: this.cursor,
    });
    const names = (): readonly string[] => [...(options.events ?? []), ...this.dispatcher.names()];
    this.connection = new StreamConnection(connectionOptions(options, names), this.sink(), this.globals);
    if (share) {
      this.tabs = new TabCoordinator(
        options.channelName ?? "herald",
        locks,
        BroadcastChannel,
        () => this.lead(),
        (message) => this.fromTab(message),
      );
      // A tab that arrives after the leader started learns where things stand.
      this.tabs.post({ type: "hello" });
    } else {
      this.connection.start();
    }
  }

  getState = (): ConnectionState => this.store.getState();

  /** Hear every change of the connection state; returns the unsubscribe function. */
  subscribe = (listener: (state: ConnectionState) => void): (() => void) => this.store.subscribe(listener);

  /** Handle events named `name` (`"*"`: all); returns the function that removes the handler. */
  on<K extends string>(name: K, handler: (event: HeraldEvent<EventData<K>>) => void): () => void {
    const off = this.dispatcher.add(name, handler as (event: HeraldEvent<never>) => void);
    if (name !== "*") this.connection.listen(name);
    return off;
  }

  /** Called when the stream could not continue exactly (`recovered: false`): re-fetch state. */
  onResync(handler: (info: ResyncInfo) => void): () => void {
    this.resyncHandlers.add(handler);
    return () => {
      this.resyncHandlers.delete(handler);
    };
  }

  get lastEventId(): string | null {
    return this.cursor;
  }

  /** Try now: drop the current attempt or backoff wait (the leader's, from any tab). */
  reconnect(): void {
    if (this.closed) return;
    if (this.tabs !== null && !this.tabs.isLeader) this.tabs.post({ type: "reconnect" });
    else this.connection.reconnect();
  }

  /** Stop everything: the stream, timers, polling, the lock (another tab takes over), the channel. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.connection.close();
    this.tabs?.close();
    this.store.update({ status: "closed" });
    this.dispatcher.clear();
    this.resyncHandlers.clear();
    this.store.clear();
  }

  // --- the stream's reports (this tab holds the stream)

  private sink(): StreamSink {
    return {
      getCursor: () => this.cursor,
      onEvent: (event) => {
        this.receive(event);
        this.broadcast({ type: "event", event });
      },
      onCursor: (cursor) => {
        this.setCursor(cursor);
        this.broadcast({ type: "cursor", cursor });
      },
      onStatus: (status, attempt, lastError) => {
        // A closing leader says nothing: the next tab takes over, and a
        // "closed" from here would only reach the others as a stale state.
        if (this.closed) return;
        this.setStatus(status, attempt, lastError);
        this.broadcastStatus();
      },
      onResync: (info) => {
        this.resync(info);
        this.broadcast({ type: "resync", info });
      },
      poll: async (signal) => {
        this.broadcast({ type: "poll" });
        await this.poll(signal);
      },
    };
  }

  private lead(): void {
    if (this.closed) return;
    this.store.update({ role: "leader" });
    // Resumes from this tab's own cursor, kept from what the old leader forwarded.
    this.connection.start();
  }

  private broadcast(message: TabMessage): void {
    if (this.tabs?.isLeader) this.tabs.post(message);
  }

  private broadcastStatus(): void {
    const state = this.store.getState();
    this.broadcast({
      type: "status",
      status: state.status,
      attempt: state.attempt,
      lastError: errorToMessage(state.lastError),
      cursor: this.cursor,
      connectionId: state.connectionId,
      recovered: state.recovered,
    });
  }

  // --- what other tabs say

  private fromTab(message: TabMessage): void {
    const leader = this.tabs?.isLeader ?? false;
    switch (message.type) {
      case "hello":
        if (leader) this.broadcastStatus();
        return;
      case "reconnect":
        if (leader) this.connection.reconnect();
        return;
      default:
        if (leader) return; // Another tab's view of a stream that is now ours: stale.
    }
    switch (message.type) {
      case "event":
        return this.receive(message.event);
      case "cursor":
        return this.setCursor(message.cursor);
      case "status":
        if (message.cursor !== null && this.cursor === null) this.setCursor(message.cursor);
        this.store.update({ connectionId: message.connectionId, recovered: message.recovered });
        return this.setStatus(message.status, message.attempt, errorFromMessage(message.lastError));
      case "resync":
        return this.resync(message.info);
      case "poll":
        void this.poll(new AbortController().signal).catch(() => undefined);
        return;
    }
  }

  // --- shared by the leader and the followers

  private receive(event: HeraldEvent<unknown>): void {
    if (this.closed) return;
    // The gateway's own events are never duplicates: connection.established
    // repeats the cursor it resumes from, by design.
    if (event.id !== null && !event.name.startsWith("connection.") && !this.deduper.first(event.id)) return;
    if (event.id !== null) this.setCursor(event.id);
    if (event.name === "connection.established") {
      const data = event.data as { connection_id?: unknown; recovered?: unknown };
      this.store.update({
        connectionId: typeof data.connection_id === "string" ? data.connection_id : null,
        recovered: typeof data.recovered === "boolean" ? data.recovered : null,
      });
    }
    this.dispatcher.dispatch(event);
  }

  private setCursor(cursor: string): void {
    this.cursor = cursor;
    this.store.update({ lastEventId: cursor });
  }

  private setStatus(status: ConnectionStatus, attempt: number, lastError: HeraldError | null): void {
    const gaveUp = status === "closed" && lastError !== null && lastError !== this.reportedError;
    this.store.update({ status, attempt, lastError });
    if (gaveUp) {
      // Once per error: the client stopped for good (a revoked token, an eviction, a
      // refusal that will not change) and only the application can act on it.
      this.reportedError = lastError;
      this.options.onError?.(lastError);
    }
  }

  private resync(info: ResyncInfo): void {
    if (this.closed) return;
    this.options.onResync?.(info);
    for (const handler of [...this.resyncHandlers]) handler(info);
  }

  private async poll(signal: AbortSignal): Promise<void> {
    await this.options.fallback?.poll(signal);
  }
}
