import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";

import type { EventSourceLike, TokenRequest } from "../src";
import { FakeGateway } from "./fakeGateway";
import { flush, soloClient, useFakeClock } from "./helpers";

type Listener = (event: { data: string; lastEventId: string }) => void;

class FakeEventSource implements EventSourceLike {
  static opened: FakeEventSource[] = [];
  readyState = 0;
  onopen: ((event: unknown) => void) | null = null;
  onerror: ((event: unknown) => void) | null = null;
  readonly listeners = new Map<string, Listener[]>();
  closed = false;
  private lastEventId = "";

  constructor(readonly url: string) {
    FakeEventSource.opened.push(this);
  }

  addEventListener(name: string, listener: Listener): void {
    this.listeners.set(name, [...(this.listeners.get(name) ?? []), listener]);
  }

  close(): void {
    this.closed = true;
    this.readyState = 2;
  }

  /** What the browser does for a block with `id`, `event` and `data`. */
  emit(name: string, data: unknown, id?: string): void {
    if (id !== undefined) this.lastEventId = id;
    for (const listener of this.listeners.get(name) ?? []) {
      listener({ data: JSON.stringify(data), lastEventId: this.lastEventId });
    }
  }

  fail(readyState: 0 | 2): void {
    this.readyState = readyState;
    this.onerror?.({});
  }
}

beforeEach(() => {
  useFakeClock();
  FakeEventSource.opened = [];
});

afterEach(() => {
  vi.useRealTimers();
});

describe("native EventSource mode", () => {
  it("opens the stream URL with a fresh stream token, subscriptions and the cursor, and listens by name", async () => {
    const requests: TokenRequest[] = [];
    const client = soloClient(new FakeGateway(), {
      transport: "eventsource",
      subscribe: ["novel:1"],
      events: ["task.created"],
      getStreamUrl: (request) => {
        requests.push(request);
        return `/api/v1/events/stream?token=st${requests.length}`;
      },
      globals: { EventSource: FakeEventSource },
    });
    const seen: (string | null)[] = [];
    client.on("task.created", (e) => seen.push(e.id));
    client.on("novel.created", (e) => seen.push(e.id));
    await flush();
    const first = FakeEventSource.opened[0];
    expect(first?.url).toBe("/api/v1/events/stream?token=st1&subscribe=novel%3A1");
    first?.emit("connection.established", { connection_id: "c1", recovered: false, replay_miss: "none" }, "1-0");
    first?.emit("task.created", { task_id: "t" }, "2-0");
    first?.emit("novel.created", { id: "n" }, "3-0");
    // A notice carries no id; EventSource would still report the last one.
    first?.emit("error.auth-expired", { code: "AUTH_EXPIRED", message: "x" });
    await flush();
    expect(seen).toEqual(["2-0", "3-0"]);
    expect(client.getState()).toMatchObject({ status: "open", lastEventId: "3-0" });

    // The browser gave up (a refused reopen): a fresh stream token, after the last id.
    first?.fail(2);
    await flush();
    await vi.advanceTimersByTimeAsync(2000);
    await flush();
    const second = FakeEventSource.opened[1];
    expect(first?.closed).toBe(true);
    expect(second?.url).toBe("/api/v1/events/stream?token=st2&subscribe=novel%3A1&last_event_id=3-0");
    expect(requests.map((r) => r.refresh)).toEqual([false, true]);
    client.close();
    expect(second?.closed).toBe(true);
  });

  it("counts the browser's own failing reconnects and falls back to polling", async () => {
    const poll = vi.fn();
    const client = soloClient(new FakeGateway(), {
      transport: "eventsource",
      getStreamUrl: () => "/s?token=x",
      maxFailuresBeforePolling: 3,
      fallback: { poll },
      globals: { EventSource: FakeEventSource },
    });
    await flush();
    const source = FakeEventSource.opened[0];
    source?.fail(0);
    source?.fail(0);
    expect(client.getState()).toMatchObject({ status: "reconnecting", attempt: 2 });
    source?.fail(0);
    await flush();
    expect(client.getState().status).toBe("polling");
    expect(source?.closed).toBe(true);
    expect(poll).toHaveBeenCalledOnce();
    client.close();
  });
});
