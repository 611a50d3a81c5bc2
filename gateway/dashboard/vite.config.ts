import { defineConfig } from "vite";

// The dashboard builds into dist/, which the gateway embeds (gateway/src/dashboard.rs).
// Hashed file names under assets/ let the gateway cache them for a year.
export default defineConfig({
  base: "/",
  build: {
    outDir: "dist",
    emptyOutDir: true,
    target: "es2022",
    assetsInlineLimit: 0,
    modulePreload: { polyfill: false },
    reportCompressedSize: false,
  },
  esbuild: { jsx: "automatic", jsxImportSource: "preact", legalComments: "none" },
  test: { environment: "node", include: ["test/**/*.test.ts"] },
} as never);
