import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";

import type { HeraldClientOptions } from "../src";
import { HeraldClient } from "../src/HeraldClient";
import { established, event, FakeGateway } from "./fakeGateway";
import { FakeChannelHub, FakeLocks } from "./fakeTabs";
import { advance, flush, useFakeClock } from "./helpers";

let gateway: FakeGateway;
let locks: FakeLocks;
let hub: FakeChannelHub;

beforeEach(() => {
  useFakeClock();
  gateway = new FakeGateway();
  locks = new FakeLocks();
  hub = new FakeChannelHub();
});

afterEach(() => {
  vi.useRealTimers();
});

function tab(options: Partial<HeraldClientOptions> = {}): HeraldClient {
  return new HeraldClient({
    url: "/api/v1/events/stream",
    ...options,
    globals: {
      fetch: gateway.fetch,
      random: () => 0.5,
      locks,
      BroadcastChannel: hub.Channel,
      EventSource: null,
      visibility: null,
    },
  });
}

describe("one stream per browser", () => {
  it("elects one leader; the follower hears its events, cursor and state over the channel", async () => {
    const first = tab();
    const second = tab();
    await flush();
    expect(first.getState().role).toBe("leader");
    expect(second.getState().role).toBe("follower");
    const heard: string[] = [];
    second.on("task.created", (e) => heard.push(e.id ?? ""));
    const stream = (await gateway.next()).stream();
    stream.send(established("1-0", false, "none") + event("2-0", "task.created", {}) + ": 9-0\nid: 9-0\n\n");
    await flush();
    expect(gateway.requests).toHaveLength(1);
    expect(heard).toEqual(["2-0"]);
    expect(second.getState()).toMatchObject({ status: "open", role: "follower", lastEventId: "9-0", connectionId: "c-1-0" });
    first.close();
    second.close();
  });

  it("a tab that opens later learns the state from the leader", async () => {
    const first = tab();
    const stream = (await gateway.next()).stream();
    stream.send(established("1-0", false, "none"));
    await flush();
    const late = tab();
    await flush();
    expect(late.getState()).toMatchObject({ status: "open", role: "follower", lastEventId: "1-0" });
    first.close();
    late.close();
  });

  it("when the leader closes, the next tab takes over at once and resumes from the last id", async () => {
    const first = tab();
    const second = tab();
    await flush();
    const stream = (await gateway.next()).stream();
    stream.send(established("1-0", false, "none") + event("2-0", "task.created", {}));
    await flush();
    const seenBySecond: string[] = [];
    second.subscribe((state) => seenBySecond.push(state.status));
    first.close();
    // No time passes: the lock goes to the waiting tab as soon as it is released.
    await flush();
    expect(stream.aborted).toBe(true);
    expect(second.getState().role).toBe("leader");
    const takeover = await gateway.next();
    expect(takeover.request.headers["last-event-id"]).toBe("2-0");
    const heard: string[] = [];
    second.on("task.created", (e) => heard.push(e.id ?? ""));
    takeover.stream().send(established("2-0", true) + event("2-0", "task.created", {}) + event("3-0", "task.created", {}));
    await flush();
    expect(heard).toEqual(["3-0"]);
    expect(second.getState().status).toBe("open");
    expect(seenBySecond).not.toContain("closed");
    second.close();
    expect(hub.openChannels).toBe(0);
  });

  it("a closed tab leaves the queue: it never becomes leader", async () => {
    const first = tab();
    const second = tab();
    const third = tab();
    await flush();
    second.close();
    first.close();
    await flush();
    expect(third.getState().role).toBe("leader");
    expect(second.getState().role).toBe("follower");
    third.close();
  });

  it("forwards resyncs and polls to every tab, and a follower's reconnect reaches the leader", async () => {
    const resyncs: string[] = [];
    const polls: string[] = [];
    const options = (name: string): Partial<HeraldClientOptions> => ({
      onResync: () => resyncs.push(name),
      fallback: { poll: () => void polls.push(name), intervalMs: 60_000 },
      maxFailuresBeforePolling: 1,
    });
    const first = tab(options("first"));
    const second = tab(options("second"));
    await flush();
    (await gateway.next()).failNetwork();
    await flush();
    expect(polls.sort()).toEqual(["first", "second"]);
    expect(second.getState().status).toBe("polling");
    second.reconnect();
    await flush();
    const probe = (await gateway.next()).stream();
    probe.send(established("1-0", false, "none"));
    await flush();
    probe.end();
    await advance(1000);
    (await gateway.next()).stream().send(established("50-0", false, "stale"));
    await flush();
    expect(resyncs.sort()).toEqual(["first", "second"]);
    first.close();
    second.close();
  });
});
