// The promises the README makes about the repository itself.
import assert from "node:assert/strict";

const root = new URL("../", import.meta.url);
const readme = await Deno.readTextFile(new URL("README.md", root));
const ci = await Deno.readTextFile(new URL(".ci/run", root));

Deno.test("README gives the two commands with the Deno version that runs the tests", () => {
  const deno = `npx --yes deno@${Deno.version.deno}`;
  const run = `${deno} run -q -P --lock=deno.run.lock apps/cli/main.ts serve`;
  assert.ok(readme.includes(run), `README must give "${run}"`);
  assert.ok(readme.includes(`${deno} task test`), `README must give "${deno} task test"`);
});

Deno.test(".ci/run runs the README's test command with DUET_REQUIRE_ALL=1", () => {
  const testCommand = readme.match(/^(npx --yes deno@[\d.]+ task test)\b/m)?.[1];
  assert.ok(testCommand, "README has a test command line");
  assert.ok(ci.includes(testCommand), `.ci/run must run "${testCommand}"`);
  assert.match(ci, /^export DUET_REQUIRE_ALL=1$/m);
  assert.match(ci, /apt-get install -y[^\n]*python3-ecdsa/);
  assert.match(ci, /apt-get install -y[^\n]*chromium/);
});

Deno.test("deno.json pins every npm dependency to an exact version", async () => {
  const config = JSON.parse(await Deno.readTextFile(new URL("deno.json", root)));
  for (const [name, target] of Object.entries(config.imports as Record<string, string>)) {
    if (target.startsWith("npm:")) {
      assert.match(target, /^npm:(@[^/@]+\/)?[^/@]+@\d+\.\d+\.\d+$/, `${name} -> ${target}`);
    }
  }
});
