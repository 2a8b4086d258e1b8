// The admin console (GET /admin) in Chromium.
//
//   node admin_console.mjs --gateway http://127.0.0.1:PORT [--path /admin?poll=250] [--timeout 40]
//
// Loads the page and answers commands:
//   snapshot             what the page shows (read from the DOM)
//   token {token}        paste the admin JWT into the page's form
//   lookup {user}        look a user up
//   click {selector}     click a button (disconnect, revoke, a node's drain)
//   screenshot {path}    a full-page PNG
//   close                end; prints the `result` line
// Reports `page-error` (uncaught exceptions), `console` errors (a CSP violation is one),
// `dialog` (an alert() would mean injected script ran) and the admin API's answers.

import { mkdirSync } from "node:fs";
import path from "node:path";

import { deadline, emit, fail, finisher, launch, parseArgs, reportPageErrors, serveCommands } from "./lib.mjs";

const args = parseArgs(process.argv.slice(2));
const gateway = args.gateway ?? process.env.HERALD_URL;
const seconds = Number(args.timeout ?? 40);
if (!gateway) fail("usage: admin_console.mjs --gateway URL");

const report = (entry) => emit({ ...entry, t: Date.now() });
const browser = await launch();
const finish = finisher(() => browser.close());

deadline(seconds, () => browser.close());

const { page } = browser;
await page.setViewportSize({ width: 1440, height: 1000 });
reportPageErrors(page, report);
page.on("dialog", async (dialog) => {
  report({ kind: "dialog", message: dialog.message() });
  await dialog.dismiss();
});
page.on("response", (response) => {
  const url = new URL(response.url());
  if (url.pathname.startsWith("/api/v1/admin") && response.request().method() !== "GET") {
    report({ kind: "admin-call", method: response.request().method(), path: url.pathname, status: response.status() });
  }
});
await page.goto(`${gateway.replace(/\/$/, "")}${args.path ?? "/admin"}`);
report({ kind: "ready" });

function snapshot() {
  const cells = (row) => [...row.children].map((cell) => cell.textContent);
  const nodes = [...document.querySelectorAll("#nodes tr[data-node]")].map((row) => ({
    node: row.dataset.node,
    streams: Number(row.dataset.streams),
    state: row.dataset.state,
    cells: cells(row),
  }));
  const streams = [...document.querySelectorAll("#user-streams tr[data-connection-id]")].map((row) => ({
    node: row.dataset.node,
    connection_id: row.dataset.connectionId,
    cells: cells(row),
  }));
  const channels = [...document.querySelectorAll("#channels tr[data-channel]")].map((row) => ({
    channel: row.dataset.channel,
    cells: cells(row),
  }));
  const events = [...document.querySelectorAll("#user-events tr")].map(cells);
  return {
    status: document.getElementById("status").dataset.state,
    status_text: document.getElementById("status").textContent,
    token_form_shown: document.getElementById("token-card").classList.contains("shown"),
    kpis: {
      nodes: document.getElementById("kpi-nodes").textContent,
      streams: document.getElementById("kpi-streams").textContent,
      users: document.getElementById("kpi-users").textContent,
    },
    rate_in: Number(document.getElementById("rate-in").textContent.replace(/,/g, "")) || 0,
    rate_points: document.querySelectorAll("#chart-rates polyline")[0]?.getAttribute("points")?.split(" ").length ?? 0,
    nodes,
    streams,
    channels,
    events,
    log: [...document.querySelectorAll("#log li")].map((li) => li.textContent),
    injected: document.querySelectorAll("main img").length,
    pwned: window.pwned ?? null,
    stored_token: sessionStorage.getItem("herald.admin.token") !== null,
  };
}

serveCommands({
  snapshot: async () => ({ snapshot: await page.evaluate(snapshot) }),
  token: async (cmd) => {
    await page.fill("#jwt", cmd.token);
    await page.click("#token-form button[type=submit]");
    return {};
  },
  lookup: async (cmd) => {
    await page.fill("#user-id", cmd.user);
    await page.click("#user-form button[type=submit]");
    return {};
  },
  click: async (cmd) => {
    await page.click(cmd.selector);
    return {};
  },
  screenshot: async (cmd) => {
    mkdirSync(path.dirname(cmd.path), { recursive: true });
    await page.screenshot({ path: cmd.path, fullPage: true });
    return { path: cmd.path };
  },
  close: (cmd) => finish({ eof: Boolean(cmd.eof) }),
});
