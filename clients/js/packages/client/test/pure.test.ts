import { describe, expect, it, vi } from "vitest";

import { backoffCeiling, fullJitterDelay } from "../src/backoff";
import { cursorFromComment } from "../src/cursor";
import { Deduper } from "../src/Deduper";
import { HeraldError } from "../src/HeraldError";
import { parseRetryAfter } from "../src/retryAfter";
import { StateStore } from "../src/StateStore";
import { streamUrl } from "../src/streamUrl";
import { Watchdog } from "../src/Watchdog";
import { useFakeClock } from "./helpers";

const policy = { baseMs: 1000, capMs: 30_000 };

describe("backoff", () => {
  it.each([
    [0, 0],
    [1, 1000],
    [2, 2000],
    [3, 4000],
    [5, 16_000],
    [6, 30_000],
    [60, 30_000],
  ])("the ceiling after %i failures is %i ms", (failures, ceiling) => {
    expect(backoffCeiling(failures, policy)).toBe(ceiling);
  });

  it.each([
    [0, 3, 0],
    [0.5, 3, 2000],
    [0.999, 3, 3996],
    [0.999, 10, 29_970],
  ])("full jitter draws from the whole window (random %f, %i failures → %i ms)", (random, failures, delay) => {
    expect(fullJitterDelay(failures, policy, () => random)).toBe(delay);
  });
});

describe("heartbeat comments", () => {
  it.each([
    [" 1795876951162-0", "1795876951162-0"],
    ["1795876951162-12", "1795876951162-12"],
    ["", null],
    [" keep-alive", null],
    [" 1795876951162", null],
    [" 1-2-3", null],
  ])("comment %j names the cursor %j", (comment, cursor) => {
    expect(cursorFromComment(comment)).toBe(cursor);
  });
});

describe("Retry-After", () => {
  const now = Date.parse("2026-01-01T00:00:00Z");
  it.each([
    ["5", 5000],
    [" 0 ", 0],
    ["Thu, 01 Jan 2026 00:00:07 GMT", 7000],
    ["Wed, 31 Dec 2025 23:00:00 GMT", 0],
    ["soon", null],
    ["", null],
    [null, null],
  ])("%j waits %j ms", (header, ms) => {
    expect(parseRetryAfter(header, now)).toBe(ms);
  });
});

describe("HeraldError.retriable", () => {
  it.each([
    [401, true],
    [403, false],
    [404, false],
    [408, true],
    [422, false],
    [429, true],
    [500, true],
    [503, true],
  ])("HTTP %i retriable: %s", (status, retriable) => {
    expect(new HeraldError(status === 401 ? "auth" : "http", "x", { status }).retriable).toBe(retriable);
  });

  it("network and watchdog failures are retriable", () => {
    expect(new HeraldError("network", "x").retriable).toBe(true);
    expect(new HeraldError("watchdog", "x").retriable).toBe(true);
  });
});

describe("Deduper", () => {
  it("lets each id through once", () => {
    const dedupe = new Deduper();
    expect(["1-0", "2-0", "1-0", "3-0", "2-0"].map((id) => dedupe.first(id))).toEqual([
      true,
      true,
      false,
      true,
      false,
    ]);
  });

  it("forgets the oldest ids beyond its capacity", () => {
    const dedupe = new Deduper(2);
    dedupe.first("1-0");
    dedupe.first("2-0");
    dedupe.first("3-0");
    expect(dedupe.first("2-0")).toBe(false);
    expect(dedupe.first("1-0")).toBe(true);
  });
});

describe("StateStore", () => {
  it("keeps the same snapshot until a field changes, and unsubscribes", () => {
    const store = new StateStore({ status: "connecting", attempt: 0 });
    const seen: string[] = [];
    const off = store.subscribe((state) => seen.push(`${state.status}/${state.attempt}`));
    const first = store.getState();
    store.update({ status: "connecting" });
    expect(store.getState()).toBe(first);
    store.update({ status: "open" });
    store.update({ attempt: 2 });
    off();
    store.update({ status: "closed" });
    expect(seen).toEqual(["open/0", "open/2"]);
  });
});

describe("Watchdog", () => {
  it("fires only after a full quiet period, every kick starting it again", async () => {
    useFakeClock();
    const expired = vi.fn();
    const watchdog = new Watchdog(30_000, expired, {
      setTimeout: (f, ms) => setTimeout(f, ms),
      clearTimeout: (h) => clearTimeout(h as ReturnType<typeof setTimeout>),
    });
    watchdog.kick();
    await vi.advanceTimersByTimeAsync(29_999);
    watchdog.kick();
    await vi.advanceTimersByTimeAsync(29_999);
    expect(expired).not.toHaveBeenCalled();
    await vi.advanceTimersByTimeAsync(1);
    expect(expired).toHaveBeenCalledTimes(1);
    watchdog.kick();
    watchdog.stop();
    await vi.advanceTimersByTimeAsync(60_000);
    expect(expired).toHaveBeenCalledTimes(1);
    vi.useRealTimers();
  });
});

describe("streamUrl", () => {
  it.each([
    ["/s", [], null, "/s"],
    ["/s", ["novel:1", "novel:2"], null, "/s?subscribe=novel%3A1%2Cnovel%3A2"],
    ["/s?token=t", ["novel:1"], "5-0", "/s?token=t&subscribe=novel%3A1&last_event_id=5-0"],
    ["/s?token=t&subscribe=novel%3A9", ["novel:1"], null, "/s?token=t&subscribe=novel%3A9"],
    ["https://gw/s", [], "1-2", "https://gw/s?last_event_id=1-2"],
  ])("%s with %j and cursor %j → %s", (base, subscriptions, cursor, url) => {
    expect(streamUrl(base, subscriptions, cursor)).toBe(url);
  });
});
