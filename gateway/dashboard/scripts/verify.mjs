// `make test`'s check that the committed dist/ is what the sources build to: builds into a
// temporary directory and compares. Gzip twins are compared by their content (zlib versions
// differ between Node releases; what they decompress to must not).
import { execFileSync } from "node:child_process";
import { build } from "vite";
import { mkdtempSync, readFileSync, readdirSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";
import { gunzipSync } from "node:zlib";

const fresh = mkdtempSync(join(tmpdir(), "troupe-dashboard-"));
try {
  const run = (cmd, args) => execFileSync(cmd, args, { stdio: "inherit" });
  await build({ logLevel: "warn", build: { outDir: fresh, emptyOutDir: true } });
  run(process.execPath, ["scripts/postbuild.mjs", fresh]);

  const list = (dir) => {
    const out = [];
    const walk = (d) => {
      for (const name of readdirSync(d)) {
        const p = join(d, name);
        if (statSync(p).isDirectory()) walk(p);
        else out.push(relative(dir, p));
      }
    };
    walk(dir);
    return out.sort();
  };
  const built = list(fresh);
  const committed = list("dist");
  const problems = [];
  for (const f of new Set([...built, ...committed])) {
    if (!built.includes(f)) problems.push(`dist/${f} is committed but the sources no longer build it`);
    else if (!committed.includes(f)) problems.push(`dist/${f} is built from the sources but not committed`);
    else {
      const read = (dir) => {
        const bytes = readFileSync(join(dir, f));
        return f.endsWith(".gz") ? gunzipSync(bytes) : bytes;
      };
      if (!read(fresh).equals(read("dist"))) problems.push(`dist/${f} differs from what the sources build`);
    }
  }
  if (problems.length) {
    console.error(problems.join("\n"));
    console.error("\nThe committed dashboard is stale: run `npm run build` in gateway/dashboard and commit dist/.");
    process.exit(1);
  }
  console.log(`dashboard dist/ matches its sources (${committed.length} files)`);
} finally {
  rmSync(fresh, { recursive: true, force: true });
}
