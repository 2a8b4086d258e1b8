import { HeraldClient } from "@herald/client";
import { QueryClient } from "@tanstack/react-query";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";

import { established, event, FakeGateway } from "../../client/test/fakeGateway";
import { flush, useFakeClock } from "../../client/test/helpers";
import { connectQuerySeed } from "../src";

let gateway: FakeGateway;

beforeEach(() => {
  useFakeClock();
  gateway = new FakeGateway();
});

afterEach(() => {
  vi.useRealTimers();
});

function client(): HeraldClient {
  return new HeraldClient({
    url: "/s",
    shareAcrossTabs: false,
    globals: { fetch: gateway.fetch, random: () => 0.5, locks: null, BroadcastChannel: null, visibility: null },
  });
}

const kept = (task: string, progress: number) => ({ task_id: task, progress, stage: "s", _scope: "user", _version: "1.0", _retained: true });

describe("seeding TanStack Query from retained states (D33)", () => {
  it("retained states fill the cache before any query runs, and live events keep it current", async () => {
    const herald = client();
    const queries = new QueryClient({ defaultOptions: { queries: { staleTime: Infinity } } });
    const stop = connectQuerySeed(herald, queries, {
      event: "task.progress-updated",
      queryKey: (e) => ["task", e.data.task_id],
    });
    const stream = (await gateway.next()).stream();
    stream.send(established("1-0", false, "none"));
    stream.send(event(null, "task.progress-updated", kept("t1", 40)));
    stream.send(event(null, "task.progress-updated", kept("t2", 90)));
    await flush();
    expect(queries.getQueryData(["task", "t1"])).toEqual({ task_id: "t1", progress: 40, stage: "s" });
    expect(queries.getQueryData(["task", "t2"])).toEqual({ task_id: "t2", progress: 90, stage: "s" });
    let fetched = 0;
    const fresh = await queries.fetchQuery({ queryKey: ["task", "t1"], queryFn: () => ((fetched += 1), {}) });
    expect([fresh, fetched]).toEqual([{ task_id: "t1", progress: 40, stage: "s" }, 0]);

    stream.send(event("2-0", "task.progress-updated", { task_id: "t1", progress: 50, stage: "s", _scope: "user", _version: "1.0" }));
    await flush();
    expect(queries.getQueryData(["task", "t1"])).toEqual({ task_id: "t1", progress: 50, stage: "s" });
    expect(herald.lastEventId).toBe("2-0");
    stop();
    herald.close();
  });

  it("a data function merges into what the cache holds; retainedOnly leaves live events out", async () => {
    const herald = client();
    const queries = new QueryClient();
    queries.setQueryData(["board"], { t0: 100 });
    const stop = connectQuerySeed(herald, queries, {
      event: "task.progress-updated",
      queryKey: () => ["board"],
      data: (e, old) => ({ ...(old as Record<string, number>), [e.data.task_id]: e.data.progress }),
      retainedOnly: true,
    });
    const stream = (await gateway.next()).stream();
    stream.send(established("1-0", false, "none"));
    stream.send(event(null, "task.progress-updated", kept("t1", 40)));
    stream.send(event("2-0", "task.progress-updated", { task_id: "t2", progress: 5 }));
    await flush();
    expect(queries.getQueryData(["board"])).toEqual({ t0: 100, t1: 40 });
    stop();
    herald.close();
  });
});
