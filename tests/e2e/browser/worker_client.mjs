// @herald/client inside a dedicated Web Worker (no DOM there): the bundle the
// gateway serves (/demo/herald-client.js) is loaded with importScripts and
// streams over fetch; what the worker hears is posted to the page and reported.
//
//   node worker_client.mjs --gateway http://127.0.0.1:PORT --jwt JWT [--timeout 25]
//
// Reports `event` (name, id, data) and `state` (status, role) lines.

import { deadline, emit, fail, finisher, launch, parseArgs, serveCommands } from "./lib.mjs";

const args = parseArgs(process.argv.slice(2));
const gateway = (args.gateway ?? process.env.HERALD_URL ?? "").replace(/\/$/, "");
if (!gateway || !args.jwt) fail("usage: worker_client.mjs --gateway URL --jwt JWT");

const entries = [];
const report = (entry) => {
  const line = { ...entry, t: Date.now() };
  entries.push(line);
  emit(line);
};

const browser = await launch();
const finish = finisher(() => browser.close(), { entries });
deadline(Number(args.timeout ?? 25), () => browser.close());

const { page } = browser;
page.on("pageerror", (err) => report({ kind: "page-error", message: String(err && err.message) }));
await page.exposeFunction("__heraldReport", report);
await page.goto(`${gateway}/api/v1/events/health`);
await page.evaluate(
  ({ origin, jwt }) => {
    const source = `
      importScripts(${JSON.stringify(`${origin}/demo/herald-client.js`)});
      const client = new Herald.HeraldClient({
        url: ${JSON.stringify(`${origin}/api/v1/events/stream`)},
        getToken: () => ${JSON.stringify(jwt)},
      });
      client.subscribe((s) => postMessage({ kind: "state", status: s.status, role: s.role, dom: typeof document }));
      client.on("*", (e) => postMessage({ kind: "event", name: e.name, id: e.id, data: e.data }));
    `;
    const worker = new Worker(URL.createObjectURL(new Blob([source], { type: "text/javascript" })));
    worker.onmessage = (message) => window.__heraldReport(message.data);
    worker.onerror = (error) => window.__heraldReport({ kind: "page-error", message: String(error.message) });
    window.__worker = worker;
  },
  { origin: gateway, jwt: args.jwt },
);
report({ kind: "ready" });

serveCommands({ close: (cmd) => finish({ eof: Boolean(cmd.eof) }) });
