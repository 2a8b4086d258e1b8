import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["packages/*/test/**/*.test.{ts,tsx}"],
    // Unit tests use fake timers and injected globals: a test that needs
    // more than this is waiting on something that will never happen.
    testTimeout: 5000,
    restoreMocks: true,
  },
});
