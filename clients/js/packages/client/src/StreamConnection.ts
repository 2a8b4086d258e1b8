import type { EventSourceMessage } from "eventsource-parser";

import type { Outcome, StreamHandlers } from "./attempt";
import { fullJitterDelay } from "./backoff";
import type { ConnectionOptions } from "./connectionOptions";
import { cursorFromComment } from "./cursor";
import { EventSourceStream } from "./EventSourceStream";
import { fetchStream } from "./fetchStream";
import {
  AUTH_EXPIRED,
  AUTH_EXPIRING,
  AUTH_REVOKED,
  confirmedSubscriptions,
  ESTABLISHED,
  EVICTED,
  evictionError,
  GATEWAY_EVENTS,
  isRetained,
  parseData,
  revocationError,
  SUBSCRIPTIONS_CHANGED,
} from "./gatewayEvents";
import { Delay } from "./Delay";
import type { HeraldGlobals } from "./globals";
import { HeraldError } from "./HeraldError";
import { Poller } from "./Poller";
import { streamUrl } from "./streamUrl";
import type { ConnectionStatus, HeraldEvent, ResyncInfo, TokenRequest } from "./types";
import { CLIENT_VERSION } from "./version";
import { Watchdog } from "./Watchdog";

/** What the connection reports to whoever owns it (the client, for its tab and the others). */
export interface StreamSink {
  /** The cursor to resume from, read afresh for every attempt. */
  getCursor(): string | null;
  onEvent(event: HeraldEvent<unknown>): void;
  /** A heartbeat named the stream's position. */
  onCursor(cursor: string): void;
  onStatus(status: ConnectionStatus, attempt: number, lastError: HeraldError | null): void;
  onResync(info: ResyncInfo): void;
  /** The polling fallback is due; the owner runs the application's poll. */
  poll(signal: AbortSignal): Promise<void>;
}

/**
 * One browser's stream to the gateway, kept alive: attempt, read, and when it
 * ends decide how long to wait (the server's `retry:`, backoff with full
 * jitter, `Retry-After`), when to fall back to polling and when to give up.
 *
 * The policy lives in `nextStep`; the attempts are thin I/O around it.
 */
export class StreamConnection {
  private closed = false;
  private started = false;
  private running = false;
  private controller: AbortController | null = null;
  private readonly delay: Delay;
  private readonly watchdog: Watchdog;
  private readonly poller: Poller | null;
  private unsubscribeVisibility: (() => void) | null = null;

  private failures = 0;
  private everOpened = false;
  /** The server's `retry:`; it becomes the backoff's base once known. */
  private retryMs: number | null = null;
  /** Ask the application for a new token at the next attempt (401, `error.auth-expired`). */
  private refreshToken = false;
  private lastAttemptRefreshed = false;
  /** The `expires_at` of the last `auth.expiring` that moved the stream to a new token. */
  private refreshedFor: string | null = null;
  private status: ConnectionStatus = "connecting";
  private lastError: HeraldError | null = null;
  // Per attempt:
  private established = false;
  private authExpired = false;
  private evicted: HeraldError | null = null;
  private revoked: HeraldError | null = null;
  private sentCursor = false;
  /** What the next attempt subscribes to: the options', then what the gateway last confirmed. */
  private subscriptions: readonly string[];
  private eventSource: EventSourceStream | null = null;
  /** How the current attempt's transport reports what it reads. */
  private readonly handlers: StreamHandlers = {
    message: (message) => this.receive(message),
    retry: (ms) => {
      this.retryMs = ms;
    },
    comment: (text) => {
      const position = cursorFromComment(text);
      if (position !== null) this.sink.onCursor(position);
    },
    bytes: () => this.watchdog.kick(),
  };

  constructor(
    private readonly options: ConnectionOptions,
    private readonly sink: StreamSink,
    private readonly globals: HeraldGlobals,
  ) {
    this.subscriptions = options.subscribe ?? [];
    this.delay = new Delay(globals);
    this.watchdog = new Watchdog(options.watchdogMs ?? 30_000, () => this.abort("watchdog"), globals);
    const fallback = options.fallback;
    this.poller =
      fallback === null
        ? null
        : new Poller((signal) => this.runPoll(signal), fallback.intervalMs ?? 5000, globals);
  }

  start(): void {
    if (this.started || this.closed) return;
    this.started = true;
    this.unsubscribeVisibility = this.globals.visibility?.subscribe(() => this.onVisibility()) ?? null;
    void this.run();
  }

  /** Drop the current attempt or wait and try at once (the indicator's button); restarts after a refusal. */
  reconnect(): void {
    if (this.closed || !this.started) return;
    this.failures = 0;
    if (!this.running) {
      void this.run();
      return;
    }
    this.abort("reconnect");
    this.delay.wake();
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.abort("close");
    this.eventSource?.close(); // now, not when the attempt's promise settles
    this.delay.wake();
    this.watchdog.stop();
    this.poller?.stop();
    this.unsubscribeVisibility?.();
    this.unsubscribeVisibility = null;
    this.setStatus("closed");
  }

  /** Native mode: start listening for a name a handler was added for. */
  listen(name: string): void {
    this.eventSource?.listen(name);
  }

  // --- the loop

  private async run(): Promise<void> {
    this.running = true;
    try {
      while (!this.closed) {
        const outcome = await this.attempt();
        if (this.closed) return;
        const delay = this.nextStep(outcome);
        if (delay === null) return;
        await this.delay.wait(delay);
      }
    } finally {
      this.running = false;
    }
  }

  /**
   * After an attempt: the delay before the next one, or null to stop.
   * Updates the failure count, the status and the polling fallback.
   */
  private nextStep(outcome: Outcome): number | null {
    if (outcome.kind === "aborted") return 0;
    const final = this.revoked ?? this.evicted;
    if (final !== null) {
      // The user opened more streams than the gateway allows and this one,
      // the oldest, was closed for the newer one: coming back would evict
      // that one in turn. Or an admin revoked the token: the gateway refuses
      // it, and the application must sign the user in again. Stop, and say
      // why; reconnect() starts again.
      this.lastError = final;
      this.poller?.stop();
      this.setStatus("closed");
      return null;
    }
    if (this.authExpired) {
      // The gateway ended a healthy stream because its token expired: a new
      // token now, no backoff.
      this.refreshToken = true;
      this.setStatus(this.polling ? "polling" : "reconnecting");
      return 0;
    }
    if (this.established) {
      // A stream that was open ended (shutdown, slow consumer, a proxy's
      // timeout) or broke off (network, watchdog): the gateway was fine a
      // moment ago, so no failure is counted; come back after the server's
      // retry:, which it jitters when it closes many streams at once.
      this.lastError = outcome.kind === "failed" ? outcome.error : null;
      this.setStatus("reconnecting");
      return this.retryMs ?? this.options.backoff.baseMs;
    }
    const error =
      outcome.kind === "failed"
        ? outcome.error
        : new HeraldError("network", "the stream ended before connection.established");
    this.lastError = error;
    this.failures += 1;
    if (!error.retriable) {
      this.poller?.stop();
      this.setStatus("closed");
      return null;
    }
    if (error.kind === "auth" && !this.lastAttemptRefreshed) {
      // A refused token is retried once at once with a fresh one; a second
      // refusal in a row backs off like any failure.
      this.refreshToken = true;
      this.setStatus(this.polling ? "polling" : "reconnecting");
      return 0;
    }
    const maxFailures = this.options.maxFailuresBeforePolling ?? 5;
    if (this.poller !== null && (error.fallback === "polling" || this.failures >= maxFailures)) {
      this.poller.start();
    }
    const base = { ...this.options.backoff, baseMs: this.retryMs ?? this.options.backoff.baseMs };
    const backoff = this.polling
      ? (this.options.probeIntervalMs ?? this.options.backoff.capMs)
      : fullJitterDelay(this.failures, base, this.globals.random);
    this.setStatus(this.polling ? "polling" : "reconnecting");
    return Math.max(backoff, error.retryAfterMs ?? 0);
  }

  private get polling(): boolean {
    return this.poller?.active ?? false;
  }

  private async attempt(): Promise<Outcome> {
    const controller = new AbortController();
    this.controller = controller;
    this.established = false;
    this.authExpired = false;
    this.evicted = null;
    this.revoked = null;
    if (!this.polling) this.setStatus(this.everOpened || this.failures > 0 ? "reconnecting" : "connecting");
    const request: TokenRequest = { refresh: this.refreshToken, attempt: this.failures + 1 };
    this.lastAttemptRefreshed = request.refresh;
    this.refreshToken = false;
    try {
      const outcome =
        this.options.transport === "eventsource"
          ? await this.eventSourceAttempt(controller.signal, request)
          : await this.fetchAttempt(controller.signal, request);
      return outcome.kind === "aborted" ? this.aborted(controller.signal) : outcome;
    } catch (error) {
      if (controller.signal.aborted) return this.aborted(controller.signal);
      return { kind: "failed", error: asError(error) };
    } finally {
      this.watchdog.stop();
      if (this.controller === controller) this.controller = null;
    }
  }

  private abort(reason: "watchdog" | "reconnect" | "refresh" | "close"): void {
    this.controller?.abort(reason);
  }

  private aborted(signal: AbortSignal): Outcome {
    if (signal.reason === "watchdog") {
      return { kind: "failed", error: new HeraldError("watchdog", "nothing arrived for too long") };
    }
    return { kind: "aborted" };
  }

  // --- the transports

  private async fetchAttempt(signal: AbortSignal, request: TokenRequest): Promise<Outcome> {
    // The watchdog covers the whole attempt: a token provider or a fetch
    // that never answers is as dead as a silent stream.
    this.watchdog.kick();
    const token = this.options.getToken ? await this.options.getToken(request) : null;
    if (signal.aborted) return { kind: "aborted" };
    // Built afresh for every attempt: the token and the cursor of this moment.
    // The client's version travels with it, so a gray release can tell who meets whom;
    // native EventSource cannot send headers, so that transport goes without.
    const headers: Record<string, string> = { accept: "text/event-stream", "herald-client-version": CLIENT_VERSION };
    if (token) headers["authorization"] = `Bearer ${token}`;
    const cursor = this.sink.getCursor();
    const since = cursor === null ? this.since() : null;
    // A `since` asks to continue from a time as a cursor does: recovered:false means a resync.
    this.sentCursor = cursor !== null || since !== null;
    if (cursor !== null) headers["last-event-id"] = cursor;
    const credentials = this.options.credentials ?? "same-origin";
    const url = streamUrl(this.options.url, this.subscriptions, null, since);
    const init = { headers, signal, cache: "no-store" as const, credentials };
    return fetchStream(this.globals.fetch, url, init, this.handlers, this.globals.now);
  }

  private async eventSourceAttempt(signal: AbortSignal, request: TokenRequest): Promise<Outcome> {
    const EventSourceClass = this.globals.EventSource;
    const getStreamUrl = this.options.getStreamUrl;
    if (EventSourceClass === null || getStreamUrl === undefined) {
      throw new HeraldError("http", "the eventsource transport needs EventSource and getStreamUrl", {
        status: 400,
      });
    }
    const base = await getStreamUrl(request);
    if (signal.aborted) return { kind: "aborted" };
    const cursor = this.sink.getCursor();
    const since = cursor === null ? this.since() : null;
    this.sentCursor = cursor !== null || since !== null;
    const url = streamUrl(base, this.subscriptions, cursor, since);
    const names = new Set([...GATEWAY_EVENTS, ...this.options.eventNames()]);
    try {
      return await new Promise<Outcome>((resolve) => {
        signal.addEventListener("abort", () => resolve({ kind: "aborted" }), { once: true });
        this.eventSource = new EventSourceStream(EventSourceClass, url, this.options.credentials === "include", names, {
          message: (message) => this.receive(message),
          // The browser gave up: a non-200, whose status EventSource hides. An
          // expired stream token is the usual cause (its reconnect reuses the
          // URL), so this counts as an auth refusal: at once with a fresh
          // token, once; then backoff.
          refused: () =>
            resolve({
              kind: "failed",
              error: new HeraldError("auth", "the gateway refused the stream (an expired stream token?)"),
            }),
          dropped: () => {
            if (this.browserRetrying()) resolve({ kind: "failed", error: this.lastError ?? networkError() });
          },
        });
      });
    } finally {
      this.eventSource?.close();
      this.eventSource = null;
    }
  }

  /**
   * Native mode: the browser reconnects by itself (with Last-Event-ID and
   * the server's retry:). Count its failures, so that a gateway that stays
   * away still leads to the polling fallback; true to give up on it.
   */
  private browserRetrying(): boolean {
    const wasOpen = this.established;
    this.established = false;
    if (wasOpen) {
      this.setStatus(this.polling ? "polling" : "reconnecting");
      return false;
    }
    this.failures += 1;
    this.lastError = networkError();
    const maxFailures = this.options.maxFailuresBeforePolling ?? 5;
    if (this.poller !== null && this.failures >= maxFailures) return true;
    this.setStatus(this.polling ? "polling" : "reconnecting");
    return false;
  }

  /** The `since` option as the gateway reads it (ISO 8601), for attempts without a cursor. */
  private since(): string | null {
    const since = this.options.since;
    if (since === undefined) return null;
    return typeof since === "string" ? since : since.toISOString();
  }

  // --- events

  private receive(message: EventSourceMessage): void {
    const name = message.event ?? "message";
    const payload = parseData(message.data);
    // A retained state has no id (the native EventSource reports the last one it saw):
    // it never moves the cursor, and is never a duplicate of the event that did.
    const retained = isRetained(payload);
    const id = retained || message.id === undefined || message.id === "" ? null : message.id;
    const event: HeraldEvent<unknown> = retained
      ? { name, id, data: payload, retained }
      : { name, id, data: payload };
    if (name === AUTH_EXPIRED) this.authExpired = true;
    if (name === AUTH_REVOKED) this.revoked = revocationError(event.data);
    if (name === EVICTED) this.evicted = evictionError(event.data);
    if (name === SUBSCRIPTIONS_CHANGED || name === ESTABLISHED) {
      // A reconnect asks for what the stream had, including changes made through the subscriptions API.
      this.subscriptions = confirmedSubscriptions(event.data) ?? this.subscriptions;
    }
    if (name !== ESTABLISHED) {
      this.sink.onEvent(event);
      if (name === AUTH_EXPIRING) this.refreshBeforeExpiry(event.data);
      return;
    }
    const reopened = this.everOpened;
    this.onEstablished();
    this.sink.onEvent(event);
    const data = event.data as { recovered?: unknown; replay_miss?: unknown; connection_id?: unknown };
    // A first connection without a cursor has nothing to be stale against;
    // every other recovered:false means events may be missing.
    if (data.recovered === false && (this.sentCursor || reopened)) {
      this.sink.onResync({
        replayMiss: typeof data.replay_miss === "string" ? data.replay_miss : null,
        connectionId: typeof data.connection_id === "string" ? data.connection_id : null,
      });
    }
  }

  /**
   * `auth.expiring`: the token behind this stream runs out soon. Reconnect now
   * with a fresh one and the cursor, so the stream moves over with nothing lost
   * instead of being cut by `error.auth-expired`.
   */
  private refreshBeforeExpiry(data: unknown): void {
    const expiresAt = (data as { expires_at?: unknown } | null)?.expires_at;
    // The same expiry again means the application handed back the same token: moving
    // over again would only loop. Let this stream run out (error.auth-expired) instead.
    if (typeof expiresAt !== "string" || expiresAt === this.refreshedFor) return;
    this.refreshedFor = expiresAt;
    this.refreshToken = true;
    this.abort("refresh");
  }

  private onEstablished(): void {
    this.established = true;
    this.everOpened = true;
    this.failures = 0;
    this.lastError = null;
    this.poller?.stop();
    this.setStatus("open");
  }

  // --- waiting, polling, visibility

  private onVisibility(): void {
    if (this.closed || !this.globals.visibility?.isVisible()) return;
    // Back in front of the user: do not make them sit out a long backoff.
    this.delay.wake();
    this.poller?.now();
  }

  private async runPoll(signal: AbortSignal): Promise<void> {
    try {
      await this.sink.poll(signal);
    } catch (error) {
      if (!signal.aborted) {
        this.lastError = new HeraldError("poll", "the polling fallback failed", { cause: error });
        this.sink.onStatus(this.status, this.failures, this.lastError);
      }
    }
  }

  private setStatus(status: ConnectionStatus): void {
    this.status = status;
    this.sink.onStatus(status, this.failures, this.lastError);
  }
}

function networkError(): HeraldError {
  return new HeraldError("network", "the stream could not be opened");
}

function asError(error: unknown): HeraldError {
  if (error instanceof HeraldError) return error;
  return new HeraldError("network", error instanceof Error ? error.message : String(error), { cause: error });
}
