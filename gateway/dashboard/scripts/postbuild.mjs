// After `vite build`: copies GraphiQL's pinned files next to its page, and writes a gzip
// twin of every text file the gateway serves (it answers the .gz to clients that take gzip).
// Usage: node scripts/postbuild.mjs [outDir]   (default dist)
import { copyFileSync, readFileSync, readdirSync, statSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { gzipSync } from "node:zlib";

const out = process.argv[2] ?? "dist";
const require = createRequire(import.meta.url);
const pkg = (name) => dirname(require.resolve(`${name}/package.json`));
const version = (name) => JSON.parse(readFileSync(join(pkg(name), "package.json"), "utf8")).version;

const copies = [
  [join(pkg("graphiql"), "graphiql.min.js"), `graphiql-${version("graphiql")}.min.js`],
  [join(pkg("graphiql"), "graphiql.min.css"), `graphiql-${version("graphiql")}.min.css`],
  [join(pkg("react"), "umd/react.production.min.js"), `react-${version("react")}.production.min.js`],
  [join(pkg("react-dom"), "umd/react-dom.production.min.js"), `react-dom-${version("react-dom")}.production.min.js`],
];
for (const [from, to] of copies) copyFileSync(from, join(out, "graphiql", to));

function* files(dir) {
  for (const name of readdirSync(dir).sort()) {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) yield* files(path);
    else yield path;
  }
}

for (const path of files(out)) {
  if (!/\.(js|css|html|svg|json)$/.test(path) || statSync(path).size < 1024) continue;
  writeFileSync(`${path}.gz`, gzipSync(readFileSync(path), { level: 9 }));
}
