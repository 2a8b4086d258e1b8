// A page of another origin (its own small HTTP server on --page-port) calling a
// Herald gateway: CORS as Chromium enforces it.
//
//   node cross_origin.mjs --gateway http://127.0.0.1:PORT --page-port 41234 \
//        --publisher JWT --user JWT --user-id alice [--timeout 25]
//
// The page, at http://127.0.0.1:<page-port>/, tries in turn:
//   publish      fetch POST /api/v1/events with a publisher JWT (preflighted)
//   token        fetch POST /api/v1/auth/sse-token with the user's JWT (preflighted)
//   eventsource  a native EventSource on the token's stream_url, waiting for
//                connection.established and then an event the page publishes
//   fetchstream  fetch GET of the stream with an Authorization header, reading
//                its first bytes (how fetch-based clients stream)
//   refusal      fetch GET of the stream with a bad token: can the page read the 401?
// Each step reports one `step` line: {name, ok, ...details}. Then `result`.

import { createServer } from "node:http";

import { deadline, emit, fail, launch, parseArgs } from "./lib.mjs";

const args = parseArgs(process.argv.slice(2));
const gateway = String(args.gateway ?? "").replace(/\/$/, "");
const pagePort = Number(args["page-port"]);
if (!gateway || !pagePort || !args.publisher || !args.user || !args["user-id"]) {
  fail("usage: cross_origin.mjs --gateway URL --page-port N --publisher JWT --user JWT --user-id ID");
}
const seconds = Number(args.timeout ?? 25);

const page_html = "<!doctype html><meta charset=utf-8><title>another origin</title><h1>app</h1>";
const server = createServer((req, res) => {
  res.writeHead(200, { "content-type": "text/html; charset=utf-8" });
  res.end(page_html);
});
await new Promise((resolve) => server.listen(pagePort, "127.0.0.1", resolve));

const browser = await launch();
deadline(seconds, async () => {
  await browser.close();
  server.close();
});

const steps = [];
const { page } = browser;
await page.exposeFunction("__step", (step) => {
  steps.push(step);
  emit({ kind: "step", ...step });
});
await page.goto(`http://127.0.0.1:${pagePort}/`);

await page.evaluate(
  async ({ gateway, publisher, user, userId }) => {
    const step = (name, ok, details = {}) => window.__step({ name, ok, origin: location.origin, ...details });
    const publish = (body) =>
      fetch(`${gateway}/api/v1/events`, {
        method: "POST",
        headers: { authorization: `Bearer ${publisher}`, "content-type": "application/json" },
        body: JSON.stringify(body),
      });

    try {
      const response = await publish({ event: "page.greeted", scope: "user", key: userId, data: { from: "page" } });
      step("publish", true, { status: response.status, body: await response.json() });
    } catch (err) {
      step("publish", false, { error: String(err) });
    }

    let streamUrl = null;
    try {
      const response = await fetch(`${gateway}/api/v1/auth/sse-token`, {
        method: "POST",
        headers: { authorization: `Bearer ${user}` },
      });
      streamUrl = (await response.json()).stream_url;
      step("token", true, { status: response.status });
    } catch (err) {
      step("token", false, { error: String(err) });
    }

    // Without a token to open it with, the stream is tried anyway: any token would do to
    // show whether the browser lets the page read the answer.
    const url = `${gateway}${streamUrl ?? "/api/v1/events/stream?token=none"}`;
    await new Promise((resolve) => {
      const es = new EventSource(url);
      const seen = [];
      const done = (ok, details) => {
        es.close();
        step("eventsource", ok, { events: seen, ...details });
        resolve();
      };
      const timer = setTimeout(() => done(false, { error: "timeout", ready_state: es.readyState }), 8000);
      es.addEventListener("connection.established", async () => {
        seen.push("connection.established");
        try {
          const response = await publish({ event: "page.pinged", scope: "user", key: userId, data: {} });
          seen.push(`published:${response.status}`);
        } catch (err) {
          seen.push(`publish failed: ${err}`);
        }
      });
      es.addEventListener("page.pinged", (e) => {
        seen.push("page.pinged");
        clearTimeout(timer);
        done(true, { last_event_id: e.lastEventId });
      });
      es.onerror = () => {
        if (es.readyState === EventSource.CLOSED) {
          clearTimeout(timer);
          done(false, { error: "closed", ready_state: es.readyState });
        }
      };
    });

    try {
      const controller = new AbortController();
      const response = await fetch(`${gateway}/api/v1/events/stream`, {
        headers: { authorization: `Bearer ${user}` },
        signal: controller.signal,
      });
      const reader = response.body.getReader();
      let text = "";
      while (!text.includes("connection.established")) {
        const { value, done } = await reader.read();
        if (done) break;
        text += new TextDecoder().decode(value);
      }
      controller.abort();
      step("fetchstream", text.includes("connection.established"), { status: response.status });
    } catch (err) {
      step("fetchstream", false, { error: String(err) });
    }

    try {
      const response = await fetch(`${gateway}/api/v1/events/stream`, {
        headers: { authorization: "Bearer not-a-token" },
      });
      step("refusal", true, { status: response.status, body: await response.json() });
    } catch (err) {
      step("refusal", false, { error: String(err) });
    }
  },
  { gateway, publisher: args.publisher, user: args.user, userId: args["user-id"] },
);

await browser.close();
server.close();
emit({ kind: "result", ok: true, steps });
process.exit(0);
