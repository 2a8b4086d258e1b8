// Build the page into dist/ (served by app.py): dist/index.html and dist/app.js.
//
//   npm run build
//
// @herald/client and @herald/react are the workspace's TypeScript sources
// (file: links into clients/js/packages), bundled as they are. Their own
// imports resolve from clients/js (eventsource-parser), except React and
// TanStack Query: a page must have exactly one copy of each, this package's.

import { copyFileSync, mkdirSync } from "node:fs";
import { fileURLToPath } from "node:url";

import { build } from "esbuild";

const here = fileURLToPath(new URL(".", import.meta.url));
const single = /^(react|react-dom|@tanstack\/react-query)(\/.*)?$/;

const oneCopy = {
  name: "one-copy",
  setup(b) {
    b.onResolve({ filter: single }, async (args) => {
      if (args.pluginData?.oneCopy) return undefined;
      const found = await b.resolve(args.path, { kind: args.kind, resolveDir: here, pluginData: { oneCopy: true } });
      return found.errors.length > 0 ? { errors: found.errors } : { path: found.path };
    });
  },
};

mkdirSync(`${here}dist`, { recursive: true });
const result = await build({
  entryPoints: [`${here}src/main.tsx`],
  outfile: `${here}dist/app.js`,
  absWorkingDir: here,
  bundle: true,
  format: "esm",
  platform: "browser",
  target: ["es2022"],
  jsx: "automatic",
  minify: true,
  sourcemap: true,
  define: { "process.env.NODE_ENV": '"production"' },
  plugins: [oneCopy],
  metafile: true,
  logLevel: "warning",
});
// Fail rather than ship a page with two Reacts (hooks would break at run time).
const shared = /node_modules\/(react|react-dom|@tanstack\/react-query)\//;
const strays = Object.keys(result.metafile.inputs).filter((input) => shared.test(input) && !input.startsWith("node_modules/"));
if (strays.length > 0) {
  console.error(`a second copy of React or TanStack Query in the bundle: ${strays.slice(0, 3).join(", ")}`);
  process.exit(1);
}
copyFileSync(`${here}index.html`, `${here}dist/index.html`);
console.log(`built ${here}dist/`);
