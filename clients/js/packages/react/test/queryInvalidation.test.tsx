import { HeraldClient } from "@herald/client";
import { QueryClient } from "@tanstack/react-query";
import { renderToString } from "react-dom/server";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";

import { established, event, FakeGateway } from "../../client/test/fakeGateway";
import { advance, flush, useFakeClock } from "../../client/test/helpers";
import { ConnectionIndicator, connectQueryInvalidation, HeraldProvider, queryKeysFor } from "../src";

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

const e = (name: string, data: Record<string, unknown>) => ({ name, id: "1-0", data });

describe("query keys for an event", () => {
  it.each([
    [e("task.updated", { entity_type: "task", action: "updated" }), [["task"]]],
    [e("task.updated", { entity_type: "task", entity_id: "t1" }), [["task"]]],
    [e("task.updated", { entity_type: "task" }), []],
    [e("task.progress-updated", { task_id: "t1", progress: 3 }), []],
  ])("%j → %j by entity_type/action", (input, keys) => {
    expect(queryKeysFor(input, {})).toEqual(keys);
  });

  it("the application's mapping comes first, by name or as one function", () => {
    const byName = { mapping: { "task.progress-updated": (ev: { data: unknown }) => [["task", (ev.data as { task_id: string }).task_id]] } };
    expect(queryKeysFor(e("task.progress-updated", { task_id: "t1" }), byName)).toEqual([["task", "t1"]]);
    expect(queryKeysFor(e("x.y", { entity_type: "novel", action: "created" }), byName)).toEqual([["novel"]]);
    expect(queryKeysFor(e("x.y", {}), { mapping: () => [["everything"]] })).toEqual([["everything"]]);
  });
});

describe("TanStack Query invalidation", () => {
  it("events invalidate the queries they touch; a resync invalidates every Herald-driven query", async () => {
    const herald = client();
    const queries = new QueryClient();
    const seed = (key: unknown[], meta?: Record<string, unknown>): void => {
      queries.getQueryCache().build(queries, { queryKey: key, ...(meta ? { meta } : {}) });
      queries.setQueryData(key, "fresh");
    };
    seed(["task", "t1"]);
    seed(["novel", "1"]);
    seed(["profile"], { herald: true });
    seed(["unrelated"]);
    const stale = (): string[] =>
      queries
        .getQueryCache()
        .getAll()
        .filter((q) => q.state.isInvalidated)
        .map((q) => JSON.stringify(q.queryKey))
        .sort();
    const stop = connectQueryInvalidation(herald, queries, { roots: ["novel"] });

    const first = (await gateway.next()).stream();
    first.send(established("1-0", false, "none"));
    first.send(event("2-0", "task.updated", { entity_type: "task", action: "updated", entity_id: "t1" }));
    await flush();
    expect(stale()).toEqual(['["task","t1"]']);

    first.end();
    await advance(1000);
    (await gateway.next()).stream().send(established("9-0", false, "stale"));
    await flush();
    expect(stale()).toEqual(['["novel","1"]', '["profile"]', '["task","t1"]']);

    stop();
    herald.close();
  });
});

describe("ConnectionIndicator", () => {
  it("shows the status, and a reconnect button unless the stream is open", async () => {
    const herald = client();
    const html = renderToString(
      <HeraldProvider client={herald}>
        <ConnectionIndicator />
      </HeraldProvider>,
    );
    expect(html).toContain('data-status="connecting"');
    expect(html).toContain("Connecting");
    expect(html).toContain("Reconnect");
    (await gateway.next()).stream().send(established("1-0", false, "none"));
    await flush();
    const open = renderToString(
      <HeraldProvider client={herald}>
        <ConnectionIndicator labels={{ open: "En direct" }} />
      </HeraldProvider>,
    );
    expect(open).toContain('data-status="open"');
    expect(open).toContain("En direct");
    expect(open).not.toContain("Reconnect");
    herald.close();
  });
});
