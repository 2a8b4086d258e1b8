// The React test application (app/main.tsx, on @herald/client and
// @herald/react) in Chromium, against a real gateway.
//
//   node client_page.mjs --gateway http://127.0.0.1:PORT --jwt JWT[,JWT after a refresh,...]
//        [--transport fetch|eventsource] [--subscribe novel:1]
//        [--poll-ms 300] [--max-failures 3] [--probe-ms 1000] [--timeout 40]
//
// The application is served by an app server (lib.mjs startAppServer) that
// passes /api/* to the gateway, so the page and the gateway share an origin
// as they would behind one reverse proxy. Commands (JSON lines on stdin):
//   snapshot {tab}            what tab `tab` shows, and what its window.__app recorded
//   open-tab / close-tab {tab}  more tabs of the same browser (one profile)
//   cut / restore             drop the network between browser and gateway, and mend it
//   set-tasks {version}       what the application's own API (/app/api/tasks) answers
//   click-reconnect {tab}     the connection indicator's button
//   screenshot {tab, path}
//   close
// Reports `request` (each stream request: tab, Last-Event-ID, Authorization
// sent or not, the URL with tokens redacted), `response`, `page-error`.

import { mkdirSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

import { bundle, deadline, emit, fail, finisher, launch, parseArgs, redact, reportPageErrors, serveCommands, startAppServer } from "./lib.mjs";

const args = parseArgs(process.argv.slice(2));
const gateway = args.gateway ?? process.env.HERALD_URL;
const seconds = Number(args.timeout ?? 40);
if (!gateway || !args.jwt) fail("usage: client_page.mjs --gateway URL --jwt JWT [--transport eventsource]");

const settings = {
  jwts: String(args.jwt).split(","),
  transport: args.transport === "eventsource" ? "eventsource" : "fetch",
  subscribe: args.subscribe ? String(args.subscribe).split(",") : [],
  pollMs: Number(args["poll-ms"] ?? 300),
  maxFailures: Number(args["max-failures"] ?? 3),
  probeMs: Number(args["probe-ms"] ?? 1000),
  progressTasks: args["progress-tasks"] ? String(args["progress-tasks"]).split(",") : [],
};

const entries = [];
const report = (entry) => {
  const line = { ...entry, t: Date.now() };
  entries.push(line);
  emit(line);
};

const code = await bundle(fileURLToPath(new URL("./app/main.tsx", import.meta.url)));
let taskList = { version: 1 };
const html = '<!doctype html><meta charset="utf-8"><title>Herald test app</title><div id="root"></div><script type="module" src="/app/app.js"></script>';
const app = await startAppServer(Number(new URL(gateway).port), {
  "/app/": () => ({ type: "text/html; charset=utf-8", body: html }),
  "/app/app.js": () => ({ type: "text/javascript; charset=utf-8", body: code }),
  "/app/api/tasks": () => ({ type: "application/json", body: JSON.stringify(taskList) }),
});
const origin = `http://127.0.0.1:${app.port}`;

const browser = await launch();
const tabs = [];

const finish = finisher(async () => {
  await browser.close();
  app.close();
}, { entries });

deadline(seconds, async () => {
  await browser.close();
  app.close();
});

async function prepare(page) {
  const tab = tabs.length;
  tabs.push(page);
  await page.setViewportSize({ width: 1000, height: 700 });
  reportPageErrors(page, report, { tab });
  const isStream = (url) => new URL(url).pathname === "/api/v1/events/stream";
  let requests = 0;
  page.on("request", async (request) => {
    if (!isStream(request.url())) return;
    const number = (requests += 1);
    const headers = await request.allHeaders();
    report({
      kind: "request",
      tab,
      number,
      url: redact(request.url()),
      last_event_id: headers["last-event-id"] ?? null,
      authorization: "authorization" in headers,
    });
  });
  page.on("response", (response) => {
    if (isStream(response.url())) report({ kind: "response", tab, status: response.status() });
  });
  await page.addInitScript((value) => {
    window.__HERALD_TEST__ = value;
  }, settings);
  await page.goto(`${origin}/app/`);
  report({ kind: "tab-opened", tab });
  return tab;
}

await prepare(browser.page);
report({ kind: "ready", origin });

function tab(cmd) {
  const page = tabs[cmd.tab ?? 0];
  if (!page || page.isClosed()) throw new Error(`no open tab ${cmd.tab}`);
  return page;
}

function snapshot() {
  const text = (id) => document.getElementById(id)?.textContent ?? null;
  const indicator = document.querySelector(".indicator");
  return {
    status: text("status"),
    role: text("role"),
    connection_id: text("connection-id"),
    recovered: text("recovered"),
    last_event_id: text("last-event-id"),
    task_list: text("task-list"),
    tasks: [...document.querySelectorAll("#tasks li")].map((li) => li.dataset.taskId),
    progress: Object.fromEntries(
      [...document.querySelectorAll("#progress li")].map((li) => [li.dataset.progressTask, li.dataset.progress]),
    ),
    indicator: indicator ? { status: indicator.dataset.status, text: indicator.textContent } : null,
    app: window.__app
      ? {
          events: window.__app.events,
          states: window.__app.states,
          resyncs: window.__app.resyncs,
          polls: window.__app.polls,
          listFetches: window.__app.listFetches,
          progressFetches: window.__app.progressFetches,
          tokens: window.__app.tokens,
          errors: window.__app.errors,
        }
      : null,
  };
}

serveCommands({
  snapshot: async (cmd) => ({ snapshot: await tab(cmd).evaluate(snapshot) }),
  "open-tab": async () => ({ tab: await prepare(await browser.context.newPage()) }),
  "close-tab": async (cmd) => {
    const page = tab(cmd);
    const at = Date.now();
    await page.close({ runBeforeUnload: false });
    return { closed_at: at };
  },
  cut: () => ({ dropped: app.cut() }),
  restore: () => {
    app.restore();
    return {};
  },
  "set-tasks": (cmd) => {
    taskList = { version: cmd.version };
    return {};
  },
  "click-reconnect": async (cmd) => {
    await tab(cmd).click(".indicator button");
    return {};
  },
  screenshot: async (cmd) => {
    mkdirSync(path.dirname(cmd.path), { recursive: true });
    await tab(cmd).screenshot({ path: cmd.path, fullPage: true });
    return { path: cmd.path };
  },
  close: (cmd) => finish({ eof: Boolean(cmd.eof) }),
});
