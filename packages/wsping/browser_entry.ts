// The shared suite in a browser page (testdata/browser_tests.html): runs every case
// against the plain ES module build and leaves the results on window for the harness.
// @ts-types="./mod.ts"
import { wsPing, WsPingError } from "./dist/wsping.mjs";
import { cases } from "./suite.ts";

interface Result {
  name: string;
  ok: boolean;
  error?: string;
}

// Only these two browser globals are used; a `lib="dom"` reference would leak DOM types
// into the type check of every other file.
const { location, document } = globalThis as unknown as {
  location: { href: string };
  document: { body: { textContent: string } };
};
const here = new URL(location.href);
const ctx = { ws: `ws://${here.host}`, http: here.origin, wsPing, WsPingError };
const results: Result[] = [];
for (const testCase of cases) {
  try {
    await testCase.run(ctx);
    results.push({ name: testCase.name, ok: true });
  } catch (error) {
    results.push({
      name: testCase.name,
      ok: false,
      error: String((error as Error)?.stack ?? error),
    });
  }
}
(globalThis as unknown as { wspingResults: Result[] }).wspingResults = results;
document.body.textContent = results.map((r) => `${r.ok ? "ok  " : "FAIL"} ${r.name}`).join("\n");
