import { defineConfig } from "vite";

// The daemon serves the page at /ui/ from the files embedded in its binary (crates/dashboard
// build.rs reads ../dist). Hashed file names let the daemon cache them for good.
export default defineConfig({
  base: "/ui/",
  build: {
    outDir: "../dist",
    emptyOutDir: true,
    target: "es2022",
    sourcemap: false,
    // Small enough to inline nothing: every file is served from /ui/assets/ under the CSP.
    assetsInlineLimit: 0,
    modulePreload: { polyfill: false },
  },
});
