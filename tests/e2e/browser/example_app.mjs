// The AI Writer example (examples/ai-writer) in Chromium.
//
//   node example_app.mjs --url http://127.0.0.1:PORT/ [--timeout 60]
//
// Opens the page and answers commands:
//   snapshot             what the page shows, read from the DOM
//   start                click "Write a chapter"
//   reload               reload the page (waits for the load event)
//   hold-list            hold the answers to GET /api/tasks (the task list) from now on
//   release-list         let them through
//   screenshot {path}    a full-page PNG
//   close                end; prints the `result` line
// Reports `page-error` (uncaught exceptions), `console` errors, the stream
// requests (with their Last-Event-ID), the page's API requests (`api`) and
// answers (`api-answer`), and every answer of 400 or more (`http-error`).

import { mkdirSync } from "node:fs";
import path from "node:path";

import { deadline, emit, fail, finisher, launch, parseArgs, reportPageErrors, serveCommands } from "./lib.mjs";

const args = parseArgs(process.argv.slice(2));
const seconds = Number(args.timeout ?? 60);
if (!args.url) fail("usage: example_app.mjs --url URL");

const entries = [];
const report = (entry) => {
  const line = { ...entry, t: Date.now() };
  entries.push(line);
  emit(line);
};

const browser = await launch();
const finish = finisher(() => browser.close());

deadline(seconds, () => browser.close());

const { page } = browser;
await page.setViewportSize({ width: 1100, height: 900 });
reportPageErrors(page, report);
let streams = 0;
page.on("request", async (request) => {
  const url = new URL(request.url());
  if (url.pathname === "/herald/api/v1/events/stream") {
    const number = (streams += 1);
    const headers = await request.allHeaders();
    report({ kind: "stream", number, url: `${url.pathname}${url.search}`, last_event_id: headers["last-event-id"] ?? null });
  } else if (url.pathname.startsWith("/api/")) {
    report({ kind: "api", method: request.method(), path: url.pathname });
  }
});
page.on("response", (response) => {
  if (response.status() >= 400) report({ kind: "http-error", status: response.status(), url: response.url() });
  const url = new URL(response.url());
  if (url.pathname.startsWith("/api/")) {
    report({ kind: "api-answer", method: response.request().method(), path: url.pathname, status: response.status() });
  }
});
let holding = false;
const held = [];
await page.route("**/api/tasks", async (route) => {
  if (holding && route.request().method() === "GET") {
    held.push(route);
    return;
  }
  await route.continue();
});
await page.goto(args.url);
report({ kind: "ready" });

function snapshot() {
  const tasks = [...document.querySelectorAll("#tasks .task")].map((node) => {
    const article = node.querySelector(".document");
    return {
      id: node.dataset.taskId,
      title: node.querySelector(".task-title")?.textContent ?? null,
      status: node.dataset.status,
      progress: Number(node.querySelector("[role=progressbar]")?.getAttribute("aria-valuenow")),
      message: node.querySelector(".message")?.textContent ?? null,
      document:
        article && article.dataset.documentId
          ? {
              id: article.dataset.documentId,
              title: article.querySelector("h3")?.textContent ?? null,
              paragraphs: article.querySelectorAll("p").length,
            }
          : null,
    };
  });
  const indicator = document.querySelector(".connection");
  return {
    user: document.getElementById("user")?.textContent ?? null,
    connection: indicator ? indicator.dataset.status : null,
    tasks,
  };
}

serveCommands({
  snapshot: async () => ({ snapshot: await page.evaluate(snapshot) }),
  start: async () => {
    await page.click("#start");
    return {};
  },
  reload: async () => {
    await page.reload({ waitUntil: "load" });
    return {};
  },
  "hold-list": () => {
    holding = true;
    return {};
  },
  "release-list": async () => {
    holding = false;
    const routes = held.splice(0);
    for (const route of routes) await route.continue();
    return { released: routes.length };
  },
  screenshot: async (cmd) => {
    mkdirSync(path.dirname(cmd.path), { recursive: true });
    await page.screenshot({ path: cmd.path, fullPage: true });
    return { path: cmd.path };
  },
  close: (cmd) => finish({ eof: Boolean(cmd.eof) }),
});
