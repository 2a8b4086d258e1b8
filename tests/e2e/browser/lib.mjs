// Shared by the browser drivers: Debian Chromium through playwright-core, a
// cuttable TCP proxy, and the line protocol the pytest side speaks.
//
// Protocol: every line on stdout is one JSON object with a `kind`. Progress
// lines (`event`, `request`, ...) stream as things happen; the last line is
// `{"kind": "result", ...}`. Commands arrive on stdin as JSON lines
// (`{"cmd": "..."}`); `close` ends the run.

import { createHash } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { createRequire } from "node:module";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import readline from "node:readline";
import { fileURLToPath } from "node:url";

export const CHROMIUM = process.env.HERALD_CHROMIUM ?? "/usr/bin/chromium";
const JS_ROOT = process.env.HERALD_JS_ROOT ?? fileURLToPath(new URL("../../../clients/js/", import.meta.url));
const INSTALL_HINT = "run scripts/install-browser-deps.sh (Debian chromium + npm ci in clients/js)";

// Chromium on a machine with no internet: without the background-networking
// flags it waits on connections that never come.
const CHROMIUM_ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];

export function emit(line) {
  process.stdout.write(`${JSON.stringify(line)}\n`);
}

export function fail(message) {
  emit({ kind: "result", ok: false, error: message });
  process.exit(1);
}

export function parseArgs(argv) {
  const args = {};
  for (let i = 0; i < argv.length; i += 1) {
    const arg = argv[i];
    if (!arg.startsWith("--")) fail(`unexpected argument ${arg}`);
    const name = arg.slice(2);
    const next = argv[i + 1];
    if (next === undefined || next.startsWith("--")) {
      args[name] = true;
    } else {
      args[name] = next;
      i += 1;
    }
  }
  return args;
}

function loadPlaywright() {
  const require = createRequire(path.join(JS_ROOT, "package.json"));
  try {
    return require("playwright-core");
  } catch (err) {
    fail(`playwright-core is not installed under ${JS_ROOT}: ${INSTALL_HINT} (${err.message})`);
  }
  return null;
}

/** A fresh Chromium profile and one page; `close()` removes both. */
export async function launch() {
  const { chromium } = loadPlaywright();
  const userDataDir = mkdtempSync(path.join(os.tmpdir(), "herald-chromium-"));
  let context;
  try {
    // playwright passes the profile as --user-data-dir itself.
    context = await chromium.launchPersistentContext(userDataDir, {
      executablePath: CHROMIUM,
      headless: true,
      args: CHROMIUM_ARGS,
      timeout: 20000,
    });
  } catch (err) {
    rmSync(userDataDir, { recursive: true, force: true });
    fail(`cannot start Chromium at ${CHROMIUM}: ${INSTALL_HINT} (${err.message.split("\n")[0]})`);
  }
  const page = context.pages()[0] ?? (await context.newPage());
  return {
    context,
    page,
    async close() {
      await context.close().catch(() => {});
      rmSync(userDataDir, { recursive: true, force: true });
    },
  };
}

/** Report the stream requests the browser makes: whether it sent Last-Event-ID, and the answer. */
export function watchStreamRequests(page, report) {
  const isStream = (url) => new URL(url).pathname === "/api/v1/events/stream";
  let requests = 0;
  page.on("request", async (request) => {
    if (!isStream(request.url())) return;
    // Numbered now: the headers arrive later, and other reports may overtake this one.
    const number = (requests += 1);
    const headers = await request.allHeaders();
    report({
      kind: "request",
      number,
      url: redact(request.url()),
      last_event_id: headers["last-event-id"] ?? null,
    });
  });
  page.on("response", (response) => {
    if (!isStream(response.url())) return;
    report({ kind: "response", url: redact(response.url()), status: response.status() });
  });
}

/** The URL with the stream token (a credential) replaced by a fingerprint that tells tokens apart. */
export function redact(url) {
  const parsed = new URL(url);
  const token = parsed.searchParams.get("token");
  if (token !== null) {
    const digest = createHash("sha256").update(token).digest("hex").slice(0, 12);
    parsed.searchParams.set("token", `sha256:${digest}`);
  }
  return `${parsed.pathname}${parsed.search}`;
}

/**
 * A TCP proxy in front of the gateway. `cut()` drops every open connection
 * and refuses new ones (as a lost network would) until `restore()`.
 */
export async function startProxy(targetPort) {
  const pairs = new Set();
  let refusing = false;
  const server = net.createServer((client) => {
    if (refusing) {
      client.destroy();
      return;
    }
    const upstream = net.connect(targetPort, "127.0.0.1");
    const pair = { client, upstream };
    pairs.add(pair);
    const end = () => {
      pairs.delete(pair);
      client.destroy();
      upstream.destroy();
    };
    client.on("error", end).on("close", end);
    upstream.on("error", end).on("close", end);
    client.pipe(upstream);
    upstream.pipe(client);
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    port: server.address().port,
    cut() {
      refusing = true;
      const dropped = pairs.size;
      for (const { client, upstream } of [...pairs]) {
        client.destroy();
        upstream.destroy();
      }
      pairs.clear();
      return dropped;
    },
    restore() {
      refusing = false;
    },
    close() {
      for (const { client, upstream } of pairs) {
        client.destroy();
        upstream.destroy();
      }
      server.close();
    },
  };
}

/** Run `handlers[cmd.cmd](cmd)` for each command line on stdin, one at a time. */
export function serveCommands(handlers) {
  const lines = readline.createInterface({ input: process.stdin });
  let chain = Promise.resolve();
  lines.on("line", (line) => {
    if (!line.trim()) return;
    chain = chain.then(async () => {
      let cmd;
      try {
        cmd = JSON.parse(line);
      } catch (err) {
        emit({ kind: "command-error", error: `not JSON: ${line}` });
        return;
      }
      const handler = handlers[cmd.cmd];
      if (!handler) {
        emit({ kind: "command-error", error: `unknown command ${cmd.cmd}` });
        return;
      }
      try {
        const reply = await handler(cmd);
        if (reply !== undefined) emit({ kind: "reply", cmd: cmd.cmd, ...reply });
      } catch (err) {
        emit({ kind: "command-error", cmd: cmd.cmd, error: String(err && err.message ? err.message : err) });
      }
    });
  });
  // The test harness went away: do not leave Chromium behind.
  lines.on("close", () => handlers.close?.({ cmd: "close", eof: true }));
}

/**
 * The `finish(extra)` of a driver: once only, whoever calls it first (the `close`
 * command, stdin's end, the page itself): `cleanup()` (the browser, a proxy), then
 * the `result` line with `fields` and `extra`, then exit.
 */
export function finisher(cleanup, fields = {}) {
  let finished = false;
  return async (extra = {}) => {
    if (finished) return;
    finished = true;
    await cleanup();
    emit({ kind: "result", ok: true, ...fields, ...extra });
    process.exit(0);
  };
}

/** Report the page's uncaught exceptions (`page-error`) and console errors (`console`), with `fields`. */
export function reportPageErrors(page, report, fields = {}) {
  page.on("pageerror", (err) => report({ kind: "page-error", ...fields, message: String(err && err.message) }));
  page.on("console", (msg) => {
    if (msg.type() === "error") report({ kind: "console", ...fields, text: msg.text() });
  });
}

/** Fail the run after `seconds` whatever happens, so a hung browser never hangs the tests. */
export function deadline(seconds, onExpiry) {
  const timer = setTimeout(async () => {
    await onExpiry();
    fail(`the driver's deadline of ${seconds} s passed`);
  }, seconds * 1000);
  timer.unref();
}

/**
 * Bundle a page's TypeScript/React entry with the workspace's esbuild (in
 * memory, nothing written): `@herald/client` and `@herald/react` resolve to
 * their sources in clients/js/packages.
 */
export async function bundle(entry) {
  const require = createRequire(path.join(JS_ROOT, "package.json"));
  let esbuild;
  try {
    esbuild = require("esbuild");
  } catch (err) {
    fail(`esbuild is not installed under ${JS_ROOT}: ${INSTALL_HINT} (${err.message})`);
  }
  const result = await esbuild.build({
    entryPoints: [entry],
    bundle: true,
    format: "esm",
    platform: "browser",
    target: ["es2020"],
    write: false,
    absWorkingDir: JS_ROOT,
    nodePaths: [path.join(JS_ROOT, "node_modules")],
    define: { "process.env.NODE_ENV": '"development"' },
    jsx: "automatic",
    logLevel: "warning",
  });
  return result.outputFiles[0].text;
}

/**
 * An HTTP server standing where an application's server would: it serves the
 * application's own files and API (`routes`: path → () => {status, type, body})
 * and passes every other request to the gateway on `targetPort`, streaming
 * the answer (SSE included). Same origin for both, as in production behind
 * one reverse proxy.
 *
 * `cut()` drops every open connection and refuses new ones until `restore()`,
 * as a lost network would. The gateway may be restarted on the same port.
 */
export async function startAppServer(targetPort, routes) {
  const { createServer, request: httpRequest } = await import("node:http");
  const sockets = new Set();
  const upstreams = new Set();
  let refusing = false;
  const hopByHop = new Set(["connection", "keep-alive", "transfer-encoding", "upgrade", "proxy-connection"]);

  const server = createServer((req, res) => {
    const url = new URL(req.url, "http://app.test");
    const route = routes[url.pathname];
    if (route) {
      const { status = 200, type, body } = route(req);
      res.writeHead(status, { "content-type": type, "cache-control": "no-store" });
      res.end(body);
      return;
    }
    const headers = { ...req.headers, host: `127.0.0.1:${targetPort}` };
    for (const name of hopByHop) delete headers[name];
    const upstream = httpRequest(
      { host: "127.0.0.1", port: targetPort, method: req.method, path: req.url, headers },
      (answer) => {
        const out = {};
        for (const [name, value] of Object.entries(answer.headers)) {
          if (!hopByHop.has(name)) out[name] = value;
        }
        res.writeHead(answer.statusCode ?? 502, out);
        res.flushHeaders();
        answer.on("data", (chunk) => res.write(chunk));
        answer.on("end", () => res.end());
        answer.on("error", () => res.destroy());
        answer.on("aborted", () => res.destroy());
      },
    );
    upstreams.add(upstream);
    upstream.on("close", () => upstreams.delete(upstream));
    upstream.on("error", () => {
      if (!res.headersSent) {
        res.writeHead(502, { "content-type": "text/plain" });
        res.end("gateway unreachable");
      } else {
        res.destroy();
      }
    });
    res.on("close", () => upstream.destroy());
    req.pipe(upstream);
  });
  server.on("connection", (socket) => {
    if (refusing) {
      socket.destroy();
      return;
    }
    sockets.add(socket);
    socket.on("close", () => sockets.delete(socket));
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  const dropAll = () => {
    const dropped = sockets.size;
    for (const socket of [...sockets]) socket.destroy();
    for (const upstream of [...upstreams]) upstream.destroy();
    sockets.clear();
    return dropped;
  };
  return {
    port: server.address().port,
    cut() {
      refusing = true;
      return dropAll();
    },
    restore() {
      refusing = false;
    },
    close() {
      dropAll();
      server.close();
    },
  };
}
