// The committed page/client.js is what page/client.ts bundles to.
import assert from "node:assert/strict";
import { run } from "@duet/testkit";

Deno.test("deno task build:ping-page --check: a fresh bundle of page/client.ts gives the committed page/client.js", async () => {
  const root = new URL("../../", import.meta.url).pathname;
  const { code, stderr } = await run(
    Deno.execPath(),
    [
      "run",
      "--allow-read",
      "--allow-write",
      "--allow-run",
      "--allow-env",
      "tools/build_ping_page.ts",
      "--check",
    ],
    { cwd: root },
  );
  assert.equal(code, 0, stderr);
  assert.match(stderr, /apps\/ping\/page\/client\.js is up to date \(\d+ bytes\)/);
});
