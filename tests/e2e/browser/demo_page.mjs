// The demo page (GET /) in Chromium.
//
//   node demo_page.mjs --gateway http://127.0.0.1:PORT [--path /?transport=eventsource] [--proxy] [--timeout 25]
//
// (or HERALD_URL in the environment). Loads the page and answers commands:
//   snapshot             what the page shows (read from the DOM) and window.heraldDemo
//   screenshot {path}    a full-page PNG
//   paste {token, subscribe}  fill the token form and connect
//   cut / restore        (with --proxy) break and mend the network to the gateway
//   close                end; prints the `result` line
// Reports `page-error` (uncaught exceptions), `console` errors and the stream
// requests and responses as they happen.

import { mkdirSync } from "node:fs";
import path from "node:path";

import { deadline, emit, fail, finisher, launch, parseArgs, reportPageErrors, serveCommands, startProxy, watchStreamRequests } from "./lib.mjs";

const args = parseArgs(process.argv.slice(2));
const gateway = args.gateway ?? process.env.HERALD_URL;
const seconds = Number(args.timeout ?? 25);
if (!gateway) fail("usage: demo_page.mjs --gateway URL [--proxy]");

const entries = [];
const report = (entry) => {
  const line = { ...entry, t: Date.now() };
  entries.push(line);
  emit(line);
};

const browser = await launch();
let proxy = null;
const finish = finisher(async () => {
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
await page.setViewportSize({ width: 1360, height: 900 });
reportPageErrors(page, report);
watchStreamRequests(page, report);
await page.goto(`${origin}${args.path ?? "/"}`);
report({ kind: "ready", origin, proxied: Boolean(proxy) });

function snapshot() {
  const text = (id) => document.getElementById(id)?.textContent ?? null;
  const rows = [...document.querySelectorAll("#feed tr")].map((row) => ({
    event: row.dataset.event,
    id: row.dataset.eventId ?? null,
    scope: row.children[2]?.textContent ?? null,
    data: row.children[4]?.textContent ?? null,
  }));
  const tasks = [...document.querySelectorAll("#tasks .task")].map((node) => ({
    id: node.dataset.taskId,
    status: node.dataset.status,
    progress: Number(node.querySelector("[role=progressbar]")?.getAttribute("aria-valuenow")),
    width: node.querySelector(".fill")?.style.width ?? null,
    title: node.querySelector(".task-title")?.textContent ?? null,
    error: node.querySelector(".task-error")?.textContent ?? "",
    stale: node.classList.contains("stale"),
  }));
  const toasts = [...document.querySelectorAll("#toasts .toast")].map((node) => ({
    level: node.dataset.level,
    title: node.querySelector("strong")?.textContent ?? null,
  }));
  const pill = document.getElementById("state");
  return {
    state: pill?.dataset.state ?? null,
    state_text: pill?.textContent ?? null,
    note: text("note"),
    user: text("user"),
    connection_id: text("connection-id"),
    recovered: text("recovered"),
    last_event_id: text("last-event-id"),
    subscriptions: text("subscriptions"),
    token_expiry: text("token-expiry"),
    form_shown: document.getElementById("token-form")?.classList.contains("shown") ?? false,
    tasks,
    feed: rows,
    novel: [...document.querySelectorAll("#novel li:not(.empty)")].map((li) => li.textContent),
    toasts,
    demo: window.heraldDemo ? { ...window.heraldDemo } : null,
  };
}

serveCommands({
  snapshot: async () => ({ snapshot: await page.evaluate(snapshot) }),
  screenshot: async (cmd) => {
    mkdirSync(path.dirname(cmd.path), { recursive: true });
    await page.screenshot({ path: cmd.path, fullPage: true });
    return { path: cmd.path };
  },
  paste: async (cmd) => {
    await page.fill("#jwt", cmd.token);
    if (cmd.subscribe !== undefined) await page.fill("#subscribe", cmd.subscribe);
    await page.click("#token-form button[type=submit]");
    return {};
  },
  cut: () => {
    if (!proxy) throw new Error("cut needs --proxy");
    return { dropped: proxy.cut() };
  },
  restore: () => {
    if (!proxy) throw new Error("restore needs --proxy");
    proxy.restore();
    return {};
  },
  close: (cmd) => finish({ eof: Boolean(cmd.eof) }),
});
