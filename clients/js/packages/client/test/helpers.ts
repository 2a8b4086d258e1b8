import { vi } from "vitest";

import type { HeraldClientOptions } from "../src";
import { HeraldClient } from "../src/HeraldClient";
import { FakeGateway } from "./fakeGateway";

/** Fake the clock and timers, but leave setImmediate real: `flush()` needs a true macrotask. */
export function useFakeClock(): void {
  vi.useFakeTimers({ toFake: ["setTimeout", "clearTimeout", "setInterval", "clearInterval", "Date"] });
}

/** Let every promise chain that can progress without a timer do so. */
export async function flush(): Promise<void> {
  for (let i = 0; i < 5; i += 1) await new Promise<void>((resolve) => setImmediate(resolve));
}

/** Advance fake time, running what falls due, then settle. */
export async function advance(ms: number): Promise<void> {
  await vi.advanceTimersByTimeAsync(ms);
  await flush();
}

/** A client alone in its tab against a fake gateway; `random` fixed so backoff is predictable. */
export function soloClient(
  gateway: FakeGateway,
  options: Partial<HeraldClientOptions> = {},
): HeraldClient {
  return new HeraldClient({
    url: "https://gw.test/api/v1/events/stream",
    shareAcrossTabs: false,
    ...options,
    globals: {
      fetch: gateway.fetch,
      random: () => 0.5,
      locks: null,
      BroadcastChannel: null,
      EventSource: null,
      visibility: null,
      ...options.globals,
    },
  });
}
