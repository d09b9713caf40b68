// The committed generated files (_wasm.ts, dist/wsping.mjs) are what the sources build to.
import assert from "node:assert/strict";
import { run } from "@duet/testkit";

Deno.test("deno task build:wsping --check: a fresh offline build gives the committed bytes", async () => {
  const root = new URL("../../", import.meta.url).pathname;
  const { code, stderr } = await run(
    Deno.execPath(),
    [
      "run",
      "--allow-read",
      "--allow-write",
      "--allow-run",
      "--allow-env",
      "tools/build_wsping.ts",
      "--check",
    ],
    { cwd: root },
  );
  assert.equal(code, 0, stderr);
  assert.match(
    stderr,
    /committed files match a fresh build \(wasm \d+ bytes, sha256 [0-9a-f]{64}\)/,
  );
});
