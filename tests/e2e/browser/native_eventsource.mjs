// Chromium's own EventSource against a Herald stream.
//
//   node native_eventsource.mjs --gateway http://127.0.0.1:PORT \
//        --stream '/api/v1/events/stream?token=...&subscribe=novel:1' \
//        --events task.created,connection.established [--proxy] [--timeout 25]
//
// (or HERALD_URL / HERALD_STREAM_PATH / HERALD_EVENTS in the environment).
// The page is a same-origin document of the gateway (its health endpoint), so
// the EventSource is what any page of the gateway's origin would open. With
// --proxy, the browser talks to the gateway through a TCP proxy that the
// `cut` / `restore` commands break and mend.
//
// Reports: `open`, `error` (with readyState), `event` (name, id = the
// EventSource's lastEventId, data), `request` (whether the browser sent
// Last-Event-ID), `response` (status); then one `result` line on `close`.

import { deadline, emit, fail, finisher, launch, parseArgs, serveCommands, startProxy, watchStreamRequests } from "./lib.mjs";

const args = parseArgs(process.argv.slice(2));
const gateway = args.gateway ?? process.env.HERALD_URL;
const stream = args.stream ?? process.env.HERALD_STREAM_PATH;
const names = String(args.events ?? process.env.HERALD_EVENTS ?? "connection.established")
  .split(",")
  .filter(Boolean);
const seconds = Number(args.timeout ?? 25);
if (!gateway || !stream) fail("usage: native_eventsource.mjs --gateway URL --stream PATH [--events a,b] [--proxy]");

const entries = [];
const report = (entry) => {
  const line = { ...entry, t: Date.now() };
  entries.push(line);
  emit(line);
};

const browser = await launch();
let proxy = null;
const finish = finisher(async () => {
  await browser.page.evaluate(() => window.__es && window.__es.close()).catch(() => {});
  await browser.close();
  if (proxy) proxy.close();
}, { entries });

deadline(seconds, async () => {
  await browser.close();
  if (proxy) proxy.close();
});

let origin = gateway.replace(/\/$/, "");
if (args.proxy) {
  proxy = await startProxy(Number(new URL(gateway).port));
  origin = `http://127.0.0.1:${proxy.port}`;
}

const { page } = browser;
await page.exposeFunction("__heraldReport", report);
watchStreamRequests(page, report);
await page.goto(`${origin}/api/v1/events/health`);
await page.evaluate(
  ({ url, names }) => {
    const es = new EventSource(url);
    window.__es = es;
    es.onopen = () => window.__heraldReport({ kind: "open" });
    es.onerror = () => window.__heraldReport({ kind: "error", ready_state: es.readyState });
    for (const name of names) {
      es.addEventListener(name, (e) =>
        window.__heraldReport({ kind: "event", name, id: e.lastEventId, data: e.data, origin: e.origin }),
      );
    }
  },
  { url: stream, names },
);
report({ kind: "ready", origin, proxied: Boolean(proxy) });

serveCommands({
  cut: () => {
    if (!proxy) throw new Error("cut needs --proxy");
    return { dropped: proxy.cut() };
  },
  restore: () => {
    if (!proxy) throw new Error("restore needs --proxy");
    proxy.restore();
    return {};
  },
  state: async () => ({ ready_state: await page.evaluate(() => window.__es.readyState) }),
  close: (cmd) => finish({ eof: Boolean(cmd.eof) }),
});
