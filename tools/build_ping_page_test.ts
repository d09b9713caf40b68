// The bundle's module comments do not depend on where the checkout or Deno's cache lives.
import assert from "node:assert/strict";
import { stableModuleComments } from "./build_ping_page.ts";

Deno.test("stableModuleComments: a module from Deno's npm cache is named by package and version, at any depth", () => {
  for (
    const prefix of ["../../root/.cache/deno", "../../../root/.cache/deno", "../../home/u/deno-dir"]
  ) {
    assert.equal(
      stableModuleComments(
        `a();\n// ${prefix}/npm/registry.npmjs.org/@noble/hashes/2.4.0/utils.js\nb();\n`,
      ),
      "a();\n// npm:@noble/hashes@2.4.0/utils.js\nb();\n",
    );
  }
  assert.equal(
    stableModuleComments("// ../x/npm/registry.npmjs.org/hono/4.9.1/dist/index.js\n"),
    "// npm:hono@4.9.1/dist/index.js\n",
  );
});

Deno.test("stableModuleComments: a module from a local node_modules is named by package", () => {
  assert.equal(
    stableModuleComments(
      "// node_modules/.deno/@noble+hashes@2.4.0/node_modules/@noble/hashes/utils.js\n",
    ),
    "// npm:@noble/hashes/utils.js\n",
  );
});

Deno.test("stableModuleComments: the repository's own modules and code lines are kept", () => {
  const text =
    "// apps/ping/stats.ts\nconst url = '// registry.npmjs.org/a/1/b';\n// packages/core/backoff.ts\n";
  assert.equal(stableModuleComments(text), text);
});
