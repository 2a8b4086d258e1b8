import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";

import type { HeraldError, HeraldEvent, TokenRequest } from "../src";
import { CLIENT_VERSION } from "../src";
import packageJson from "../package.json";
import { established, event, FakeGateway } from "./fakeGateway";
import { advance, flush, soloClient, useFakeClock } from "./helpers";

const packageVersion: string = packageJson.version;
let gateway: FakeGateway;

beforeEach(() => {
  useFakeClock();
  gateway = new FakeGateway();
});

afterEach(() => {
  vi.useRealTimers();
});

describe("requests", () => {
  it("sends the client's version with every stream request, the package's own", async () => {
    const client = soloClient(gateway);
    const first = await gateway.next();
    expect(first.request.headers["herald-client-version"]).toBe(CLIENT_VERSION);
    expect(CLIENT_VERSION).toBe(packageVersion);
    client.close();
  });

  it("builds the headers afresh for every attempt: this attempt's token and cursor (fetch-event-source #33)", async () => {
    const tokens: TokenRequest[] = [];
    const client = soloClient(gateway, {
      getToken: (request) => {
        tokens.push(request);
        return `token-${tokens.length}`;
      },
      subscribe: ["novel:1", "novel:2"],
    });
    const first = await gateway.next();
    expect(first.request.url).toBe("https://gw.test/api/v1/events/stream?subscribe=novel%3A1%2Cnovel%3A2");
    expect(first.request.headers["authorization"]).toBe("Bearer token-1");
    expect(first.request.headers["last-event-id"]).toBeUndefined();
    expect(first.request.headers["accept"]).toBe("text/event-stream");
    const stream = first.stream();
    stream.send(established("100-0", false, "none"));
    stream.send(event("101-0", "task.created", { task_id: "t1" }));
    await flush();
    stream.end();
    await advance(1000);

    const second = await gateway.next();
    expect(second.request.headers["authorization"]).toBe("Bearer token-2");
    expect(second.request.headers["last-event-id"]).toBe("101-0");
    second.failNetwork();
    await advance(60_000);

    const third = await gateway.next();
    expect(third.request.headers["authorization"]).toBe("Bearer token-3");
    expect(third.request.headers["last-event-id"]).toBe("101-0");
    client.close();
  });

  it("moves the cursor on heartbeat comments, so a quiet client resumes inside the window", async () => {
    const client = soloClient(gateway);
    const stream = (await gateway.next()).stream();
    stream.send(established("100-0", false, "none"));
    stream.send(event("101-0", "task.created", { task_id: "t1" }));
    stream.send(": 250-3\nid: 250-3\n\n");
    await flush();
    expect(client.lastEventId).toBe("250-3");
    expect(client.getState().lastEventId).toBe("250-3");
    stream.end();
    await advance(1000);
    expect((await gateway.next()).request.headers["last-event-id"]).toBe("250-3");
    client.close();
  });

  it("gateway notices carry no id and leave the cursor alone", async () => {
    const client = soloClient(gateway);
    const stream = (await gateway.next()).stream();
    stream.send(established("100-0", false, "none"));
    stream.send(event(null, "error.slow-consumer", { code: "SLOW_CONSUMER", message: "behind" }));
    await flush();
    expect(client.lastEventId).toBe("100-0");
    client.close();
  });
});

describe("events", () => {
  it("delivers each id once when a replay overlaps what arrived before the cut", async () => {
    const client = soloClient(gateway);
    const seen: (string | null)[] = [];
    client.on("task.created", (e) => seen.push(e.id));
    const first = (await gateway.next()).stream();
    first.send(established("100-0", false, "none"));
    first.send(event("101-0", "task.created", {}) + event("102-0", "task.created", {}));
    await flush();
    first.end();
    await advance(1000);
    const second = (await gateway.next()).stream();
    // A server resuming from an older cursor (or a forwarded copy) repeats 102-0.
    second.send(established("101-0", true));
    second.send(event("102-0", "task.created", {}) + event("103-0", "task.created", {}));
    await flush();
    expect(seen).toEqual(["101-0", "102-0", "103-0"]);
    client.close();
  });

  it("types handlers by the generated event map and parses data", async () => {
    const client = soloClient(gateway);
    const progress: number[] = [];
    const all: string[] = [];
    client.on("task.progress-updated", (e) => progress.push(e.data.progress));
    client.on("*", (e: HeraldEvent<unknown>) => all.push(e.name));
    const stream = (await gateway.next()).stream();
    stream.send(established("1-0", false, "none"));
    stream.send(event("2-0", "task.progress-updated", { task_id: "t", progress: 40, _scope: "user", _version: "1.0" }));
    await flush();
    expect(progress).toEqual([40]);
    expect(all).toEqual(["connection.established", "task.progress-updated"]);
    client.close();
  });

  it("a handler that throws does not stop the others or the stream", async () => {
    const client = soloClient(gateway);
    const reported: unknown[] = [];
    const original = globalThis.queueMicrotask;
    globalThis.queueMicrotask = (task) => original(() => {
      try {
        task();
      } catch (error) {
        reported.push(error);
      }
    });
    const seen: string[] = [];
    client.on("task.created", () => {
      throw new Error("app bug");
    });
    client.on("task.created", (e) => seen.push(e.id ?? ""));
    const stream = (await gateway.next()).stream();
    stream.send(established("1-0", false, "none") + event("2-0", "task.created", {}) + event("3-0", "task.created", {}));
    await flush();
    globalThis.queueMicrotask = original;
    expect(seen).toEqual(["2-0", "3-0"]);
    expect(reported).toHaveLength(2);
    client.close();
  });
});

describe("resync", () => {
  it("calls the resync hook when a cursor could not be resumed, not on a first connect", async () => {
    const onResync = vi.fn();
    const client = soloClient(gateway, { onResync });
    const first = (await gateway.next()).stream();
    first.send(established("100-0", false, "none"));
    await flush();
    expect(onResync).not.toHaveBeenCalled();
    first.end();
    await advance(1000);
    const second = (await gateway.next()).stream();
    second.send(established("900-0", false, "stale"));
    await flush();
    expect(onResync).toHaveBeenCalledExactlyOnceWith({ replayMiss: "stale", connectionId: "c-900-0" });
    expect(client.getState()).toMatchObject({ status: "open", recovered: false, lastEventId: "900-0" });
    client.close();
  });

  it("a client started with a stored cursor that is stale resyncs on its first connect", async () => {
    const listener = vi.fn();
    const client = soloClient(gateway, { lastEventId: "5-0" });
    client.onResync(listener);
    const request = await gateway.next();
    expect(request.request.headers["last-event-id"]).toBe("5-0");
    request.stream().send(established("7-0", false, "stale"));
    await flush();
    expect(listener).toHaveBeenCalledOnce();
    client.close();
  });
});

describe("the state machine", () => {
  it("connecting → open → reconnecting (server retry:) → open, attempt counts failures", async () => {
    const client = soloClient(gateway);
    const states: string[] = [];
    client.subscribe((s) => {
      const entry = `${s.status}:${s.attempt}`;
      if (states.at(-1) !== entry) states.push(entry);
    });
    expect(client.getState().status).toBe("connecting");
    const stream = (await gateway.next()).stream();
    stream.send(established("1-0", false, "none"));
    await flush();
    stream.end();
    await flush();
    // retry: 1000 from the stream; not a moment before.
    await advance(999);
    expect(gateway.untaken).toBe(0);
    await advance(1);
    (await gateway.next()).failNetwork();
    await flush();
    expect(client.getState()).toMatchObject({ status: "reconnecting", attempt: 1 });
    expect(client.getState().lastError?.kind).toBe("network");
    // Full jitter with random 0.5 over base = retry (1000): 500 ms.
    await advance(500);
    (await gateway.next()).stream().send(established("1-0", true));
    await flush();
    expect(client.getState()).toMatchObject({ status: "open", attempt: 0, lastError: null });
    expect(states).toEqual(["open:0", "reconnecting:0", "reconnecting:1", "open:0"]);
    client.close();
  });

  it("a stream that was open and broke off is no failure: back after the server's retry:", async () => {
    const client = soloClient(gateway);
    const stream = (await gateway.next()).stream();
    stream.send(established("1-0", false, "none"));
    await flush();
    stream.break();
    await flush();
    expect(client.getState()).toMatchObject({ status: "reconnecting", attempt: 0 });
    expect(client.getState().lastError?.kind).toBe("network");
    await advance(999);
    expect(gateway.untaken).toBe(0);
    await advance(1);
    expect((await gateway.next()).request.headers["last-event-id"]).toBe("1-0");
    client.close();
  });

  it("backs off exponentially with full jitter up to the cap", async () => {
    const client = soloClient(gateway, { backoff: { baseMs: 1000, capMs: 4000 }, maxFailuresBeforePolling: 99 });
    const times: number[] = [];
    const start = Date.now();
    for (let i = 0; i < 5; i += 1) {
      const request = await gateway.next();
      times.push(Date.now() - start);
      request.failNetwork();
      await advance(10_000);
    }
    // random 0.5: delays 500, 1000, 2000, 2000 (cap 4000 / 2), 2000.
    expect(times.map((t, i) => (i === 0 ? t : t - (times[i - 1] ?? 0)))).toEqual([0, 10_000, 10_000, 10_000, 10_000]);
    client.close();
  });

  it("waits exactly the drawn delay between failures", async () => {
    const client = soloClient(gateway, { backoff: { baseMs: 1000, capMs: 4000 }, maxFailuresBeforePolling: 99 });
    const expected = [500, 1000, 2000, 2000];
    (await gateway.next()).failNetwork();
    for (const delay of expected) {
      await advance(delay - 1);
      expect(gateway.untaken).toBe(0);
      await advance(1);
      (await gateway.next()).failNetwork();
    }
    await flush();
    expect(client.getState().attempt).toBe(5);
    client.close();
  });

  it("gives up on a refusal that will not change (403) and says why", async () => {
    const client = soloClient(gateway);
    (await gateway.next()).refuse(403, { code: "PERMISSION_DENIED", message: "not yours" });
    await flush();
    expect(client.getState().status).toBe("closed");
    expect(client.getState().lastError).toMatchObject({ status: 403, code: "PERMISSION_DENIED", message: "not yours" });
    await advance(120_000);
    expect(gateway.untaken).toBe(0);
    client.close();
  });
});

describe("auth", () => {
  it("a 401 is retried at once with a fresh token, a second one backs off", async () => {
    const requests: TokenRequest[] = [];
    const client = soloClient(gateway, {
      getToken: (r) => {
        requests.push(r);
        return "t";
      },
    });
    (await gateway.next()).refuse(401, { code: "AUTH_EXPIRED" });
    await flush();
    (await gateway.next()).refuse(401, { code: "AUTH_EXPIRED" });
    await flush();
    expect(gateway.untaken).toBe(0);
    expect(requests.map((r) => r.refresh)).toEqual([false, true]);
    expect(client.getState().lastError?.kind).toBe("auth");
    await advance(1000);
    (await gateway.next()).stream().send(established("1-0", false, "none"));
    await flush();
    expect(requests.map((r) => r.refresh)).toEqual([false, true, false]);
    client.close();
  });

  it("error.auth-expired ends the stream and the next attempt asks for a new token, without waiting", async () => {
    const requests: TokenRequest[] = [];
    const client = soloClient(gateway, {
      getToken: (r) => {
        requests.push(r);
        return `t${requests.length}`;
      },
    });
    const stream = (await gateway.next()).stream();
    stream.send(established("1-0", false, "none") + event("2-0", "task.created", {}));
    stream.send(event(null, "error.auth-expired", { code: "AUTH_EXPIRED", message: "expired" }));
    stream.end();
    await flush();
    const again = await gateway.next();
    expect(requests.map((r) => r.refresh)).toEqual([false, true]);
    expect(again.request.headers["authorization"]).toBe("Bearer t2");
    expect(again.request.headers["last-event-id"]).toBe("2-0");
    client.close();
  });
});

describe("revocation and expiry", () => {
  it("auth.expiring moves the stream to a fresh token at once, resuming from the cursor", async () => {
    const requests: TokenRequest[] = [];
    const seen: string[] = [];
    const client = soloClient(gateway, {
      getToken: (r) => {
        requests.push(r);
        return `t${requests.length}`;
      },
    });
    client.on("auth.expiring", (e) => seen.push(e.data.expires_at));
    const first = await gateway.next();
    const stream = first.stream();
    stream.send(established("1-0", false, "none") + event("2-0", "task.created", {}));
    stream.send(event(null, "auth.expiring", { expires_at: "2026-12-05T00:01:00.000+00:00", expires_in: 60 }));
    await flush();
    expect(first.signal?.aborted).toBe(true);
    const again = await gateway.next();
    expect(requests.map((r) => r.refresh)).toEqual([false, true]);
    expect(again.request.headers["authorization"]).toBe("Bearer t2");
    expect(again.request.headers["last-event-id"]).toBe("2-0");
    expect(seen).toEqual(["2026-12-05T00:01:00.000+00:00"]);
    again.stream().send(established("2-0", true, null));
    await flush();
    expect(client.getState().status).toBe("open");
    client.close();
  });

  it("auth.expiring with the expiry it already moved away from does not loop", async () => {
    let tokens = 0;
    const client = soloClient(gateway, {
      getToken: () => {
        tokens += 1;
        return "the-same-token";
      },
    });
    const expiring = event(null, "auth.expiring", { expires_at: "2026-12-05T00:01:00.000+00:00", expires_in: 9 });
    const first = (await gateway.next()).stream();
    first.send(established("1-0", false, "none") + expiring);
    await flush();
    const second = (await gateway.next()).stream();
    second.send(established("1-0", true, null) + expiring);
    await flush();
    expect(gateway.untaken).toBe(0);
    expect(tokens).toBe(2);
    expect(second.aborted).toBe(false);
    client.close();
  });

  it("error.auth-revoked is final: no retry loop, the error hook hears it once", async () => {
    const errors: HeraldError[] = [];
    const client = soloClient(gateway, { onError: (error) => errors.push(error) });
    const stream = (await gateway.next()).stream();
    stream.send(established("1-0", false, "none"));
    stream.send(event(null, "error.auth-revoked", { code: "AUTH_REVOKED", message: "revoked" }));
    stream.end();
    await flush();
    expect(client.getState().status).toBe("closed");
    expect(client.getState().lastError).toMatchObject({ kind: "auth", code: "AUTH_REVOKED", retriable: false });
    await advance(120_000);
    expect(gateway.untaken).toBe(0);
    expect(errors.map((e) => e.code)).toEqual(["AUTH_REVOKED"]);
    client.close();
  });

  it("a 401 AUTH_REVOKED is not retried with a fresh token", async () => {
    const requests: TokenRequest[] = [];
    const errors: HeraldError[] = [];
    const client = soloClient(gateway, {
      getToken: (r) => {
        requests.push(r);
        return "t";
      },
      onError: (error) => errors.push(error),
    });
    (await gateway.next()).refuse(401, { code: "AUTH_REVOKED", message: "this token was revoked" });
    await flush();
    await advance(120_000);
    expect(gateway.untaken).toBe(0);
    expect(requests).toHaveLength(1);
    expect(client.getState().status).toBe("closed");
    expect(errors.map((e) => [e.status, e.code])).toEqual([[401, "AUTH_REVOKED"]]);
    client.close();
  });
});

describe("the watchdog", () => {
  it("reconnects after 30 s without a byte; heartbeats keep a quiet stream alive", async () => {
    const client = soloClient(gateway);
    const first = await gateway.next();
    const stream = first.stream();
    stream.send(established("1-0", false, "none"));
    await flush();
    for (let i = 0; i < 4; i += 1) {
      await advance(15_000);
      stream.send(`: ${i + 2}-0\nid: ${i + 2}-0\n\n`);
      await flush();
    }
    expect(gateway.untaken).toBe(0);
    await advance(30_000);
    expect(stream.aborted).toBe(true);
    expect(client.getState().lastError?.kind).toBe("watchdog");
    await advance(1000);
    expect((await gateway.next()).request.headers["last-event-id"]).toBe("5-0");
    client.close();
  });

  it("also covers a request that never answers", async () => {
    const client = soloClient(gateway, { watchdogMs: 10_000 });
    const hanging = await gateway.next();
    await advance(10_000);
    expect(hanging.signal?.aborted).toBe(true);
    await advance(1000);
    expect(gateway.untaken).toBe(1);
    client.close();
  });
});

describe("the polling fallback", () => {
  it("engages after N failures, polls on its interval, probes streaming and stops once it is back", async () => {
    const poll = vi.fn();
    const client = soloClient(gateway, {
      maxFailuresBeforePolling: 3,
      fallback: { poll, intervalMs: 2000 },
      probeIntervalMs: 7000,
      backoff: { baseMs: 100, capMs: 1000 },
    });
    for (let i = 0; i < 3; i += 1) {
      (await gateway.next()).failNetwork();
      await advance(1000);
    }
    expect(client.getState().status).toBe("polling");
    const pollsAtStart = poll.mock.calls.length;
    expect(pollsAtStart).toBeGreaterThanOrEqual(1);
    await advance(4000);
    expect(poll.mock.calls.length).toBe(pollsAtStart + 2);
    // Probes keep going at their interval while polling.
    await advance(2000);
    (await gateway.next()).failNetwork();
    await flush();
    expect(client.getState().status).toBe("polling");
    await advance(7000);
    (await gateway.next()).stream().send(established("1-0", false, "none"));
    await flush();
    expect(client.getState().status).toBe("open");
    const polls = poll.mock.calls.length;
    await advance(10_000);
    expect(poll.mock.calls.length).toBe(polls);
    client.close();
  });

  it("goes straight to polling on 503 fallback: polling and waits Retry-After before probing", async () => {
    const poll = vi.fn();
    const client = soloClient(gateway, { fallback: { poll, intervalMs: 60_000 }, probeIntervalMs: 1000 });
    (await gateway.next()).refuse(
      503,
      { code: "SERVER_OVERLOAD", message: "full", fallback: "polling" },
      { "retry-after": "20" },
    );
    await flush();
    expect(client.getState()).toMatchObject({ status: "polling", attempt: 1 });
    expect(client.getState().lastError).toMatchObject({ status: 503, fallback: "polling", retryAfterMs: 20_000 });
    expect(poll).toHaveBeenCalledTimes(1);
    await advance(19_999);
    expect(gateway.untaken).toBe(0);
    await advance(1);
    expect(gateway.untaken).toBe(1);
    client.close();
  });

  it("a 429 without fallback backs off for at least Retry-After", async () => {
    const client = soloClient(gateway);
    (await gateway.next()).refuse(429, { code: "RATE_LIMIT_EXCEEDED" }, { "retry-after": "9" });
    await advance(8999);
    expect(gateway.untaken).toBe(0);
    await advance(1);
    expect(gateway.untaken).toBe(1);
    expect(client.getState().status).toBe("reconnecting");
    client.close();
  });
});

describe("visibility and manual reconnect", () => {
  it("a page coming back to the front retries at once instead of sitting out the backoff", async () => {
    let visible = false;
    let notify = (): void => undefined;
    const client = soloClient(gateway, {
      backoff: { baseMs: 20_000, capMs: 60_000 },
      globals: {
        visibility: {
          isVisible: () => visible,
          subscribe: (listener) => {
            notify = listener;
            return () => undefined;
          },
        },
      },
    });
    (await gateway.next()).failNetwork();
    await advance(1000);
    expect(gateway.untaken).toBe(0);
    visible = true;
    notify();
    await flush();
    expect(gateway.untaken).toBe(1);
    client.close();
  });

  it("reconnect() drops the stream and tries again now", async () => {
    const client = soloClient(gateway);
    const first = await gateway.next();
    const stream = first.stream();
    stream.send(established("1-0", false, "none"));
    await flush();
    client.reconnect();
    await flush();
    expect(stream.aborted).toBe(true);
    expect((await gateway.next()).request.headers["last-event-id"]).toBe("1-0");
    client.close();
  });
});

describe("close()", () => {
  it("aborts the stream, stops every timer and never tries again", async () => {
    const poll = vi.fn();
    const client = soloClient(gateway, { fallback: { poll, intervalMs: 1000 }, maxFailuresBeforePolling: 1 });
    const states: string[] = [];
    client.subscribe((s) => states.push(s.status));
    (await gateway.next()).failNetwork();
    await flush();
    const probe = (await advance(30_000), await gateway.next());
    const stream = probe.stream();
    await flush();
    client.close();
    await flush();
    expect(stream.aborted).toBe(true);
    expect(vi.getTimerCount()).toBe(0);
    const polls = poll.mock.calls.length;
    await advance(120_000);
    expect(gateway.untaken).toBe(0);
    expect(poll.mock.calls.length).toBe(polls);
    expect(client.getState().status).toBe("closed");
    expect(states.at(-1)).toBe("closed");
  });
});

describe("connection management notices", () => {
  it("an evicted stream stays closed (coming back would evict the newer one); reconnect() starts again", async () => {
    const client = soloClient(gateway);
    const stream = (await gateway.next()).stream();
    stream.send(established("1-0", false, "none"));
    stream.send("retry: 30000\n\n" + event(null, "error.connection-evicted", { code: "SSE_CONNECTION_LIMIT", message: "too many" }));
    stream.end();
    await flush();
    expect(client.getState().status).toBe("closed");
    expect(client.getState().lastError).toMatchObject({ kind: "evicted", code: "SSE_CONNECTION_LIMIT", retriable: false });
    await advance(120_000);
    expect(gateway.untaken).toBe(0);
    client.reconnect();
    await flush();
    expect((await gateway.next()).request.headers["last-event-id"]).toBe("1-0");
    client.close();
  });

  it("reconnects with the subscriptions the gateway last confirmed", async () => {
    const client = soloClient(gateway, { subscribe: ["novel:1"] });
    const stream = (await gateway.next()).stream();
    stream.send(established("1-0", false, "none"));
    const changed = { subscriptions: ["novel:1", "novel:7"], added: ["novel:7"], removed: [], live_from: "2-0" };
    stream.send(event("2-0", "connection.subscriptions-changed", changed));
    await flush();
    expect(client.lastEventId).toBe("2-0");
    stream.end();
    await advance(1000);
    const again = await gateway.next();
    expect(again.request.url).toBe("https://gw.test/api/v1/events/stream?subscribe=novel%3A1%2Cnovel%3A7");
    expect(again.request.headers["last-event-id"]).toBe("2-0");
    client.close();
  });
});

describe("retained states (D33) and since", () => {
  it("hands retained states to handlers flagged, without moving the cursor or deduping them", async () => {
    const client = soloClient(gateway);
    const seen: [unknown, string | null, boolean][] = [];
    client.on("task.progress-updated", (e) => seen.push([e.data.progress, e.id, e.retained === true]));
    const stream = (await gateway.next()).stream();
    stream.send(established("100-0", false, "none"));
    const kept = (task: string, progress: number) => ({ task_id: task, progress, stage: "s", _retained: true });
    stream.send(event(null, "task.progress-updated", kept("a", 40)));
    stream.send(event(null, "task.progress-updated", kept("b", 70)));
    stream.send(event("101-0", "task.progress-updated", { task_id: "a", progress: 50, stage: "s" }));
    await flush();
    expect(seen).toEqual([
      [40, null, true],
      [70, null, true],
      [50, "101-0", false],
    ]);
    expect(client.lastEventId).toBe("101-0");
    client.close();
  });

  it("keeps the cursor on a retained state even when the parser hands it an id", async () => {
    const client = soloClient(gateway);
    const stream = (await gateway.next()).stream();
    stream.send(established("100-0", false, "none"));
    stream.send(event("100-0", "task.progress-updated", { task_id: "a", progress: 1, _retained: true }));
    stream.send(event("100-0", "task.progress-updated", { task_id: "b", progress: 2, _retained: true }));
    const ids: (string | null)[] = [];
    client.on("task.progress-updated", (e) => ids.push(e.id));
    await flush();
    expect(ids).toEqual([null, null]);
    expect(client.lastEventId).toBe("100-0");
    client.close();
  });

  it("asks for since= only while it has no cursor", async () => {
    const client = soloClient(gateway, { since: new Date(Date.UTC(2026, 11, 5, 8, 0, 0)) });
    const first = await gateway.next();
    expect(first.request.url).toBe("https://gw.test/api/v1/events/stream?since=2026-12-05T08%3A00%3A00.000Z");
    const stream = first.stream();
    stream.send(established("100-0", true));
    await flush();
    stream.end();
    await advance(1000);
    const second = await gateway.next();
    expect(second.request.url).toBe("https://gw.test/api/v1/events/stream");
    expect(second.request.headers["last-event-id"]).toBe("100-0");
    client.close();
  });

  it("a since outside the gateway's window is a resync, as a stale cursor is", async () => {
    const resyncs: (string | null)[] = [];
    const client = soloClient(gateway, { since: "2026-12-05T08:00:00Z", onResync: (info) => resyncs.push(info.replayMiss) });
    (await gateway.next()).stream().send(established("100-0", false, "stale"));
    await flush();
    expect(resyncs).toEqual(["stale"]);
    client.close();
  });

  it("sends a since string as given, and nothing when resuming from a stored cursor", async () => {
    const fresh = soloClient(gateway, { since: "2026-12-05T08:00:00Z" });
    expect((await gateway.next()).request.url).toContain("since=2026-12-05T08%3A00%3A00Z");
    fresh.close();
    const resumed = soloClient(gateway, { since: "2026-12-05T08:00:00Z", lastEventId: "5-0" });
    const request = (await gateway.next()).request;
    expect(request.url).not.toContain("since=");
    expect(request.headers["last-event-id"]).toBe("5-0");
    resumed.close();
  });
});
