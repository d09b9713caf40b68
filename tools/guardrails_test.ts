// The house rules of the layout (docs/architecture.md, "House rules"), checked on this tree; and
// the checker itself (tools/guardrails.ts), shown to catch each kind of violation on small
// synthetic trees. The function-length rule is the lint plugin's (tools/lint/duet_plugin.ts),
// run here over apps/ and packages/ until `deno lint` loads it.
import assert from "node:assert/strict";
import plugin from "./lint/duet_plugin.ts";
import {
  checkRepository,
  documentReferences,
  extractReferences,
  formatViolations,
  lintIgnored,
  readRepository,
  type RepoFile,
  type Repository,
  resolveSpecifier,
  type RuleId,
  RULES,
  testdataPaths,
  type Violation,
} from "./guardrails.ts";

const root = new URL("../", import.meta.url);

// Names that must not appear literally in this file, or the check of the real tree would find
// them here: they are put together at run time.
const MD = ".md";
const SHARED = ".." + "/shared";
const STACK_FACTS = "stack" + "-facts";

const members = new Map([
  ["@duet/core", "packages/core"],
  ["@duet/net", "packages/net"],
  ["@duet/testkit", "packages/testkit"],
  ["@duet/chat", "apps/chat"],
  ["@duet/ping", "apps/ping"],
  ["@duet/cli", "apps/cli"],
]);

/**
 * The violations of a synthetic tree. The rules on names of files and sections are left out
 * unless asked for: the other trees' comments name files they do not hold, on purpose.
 */
function check(
  files: Record<string, string>,
  rules: readonly RuleId[] = (Object.keys(RULES) as RuleId[]).filter((rule) =>
    rule !== "missing-file" && rule !== "missing-anchor"
  ),
  paths?: readonly string[],
): Violation[] {
  const list: RepoFile[] = Object.entries(files).map(([path, text]) => ({ path, text }));
  return checkRepository({ files: list, members, ...(paths ? { paths } : {}) })
    .filter((violation) => rules.includes(violation.rule));
}

function found(files: Record<string, string>): string[] {
  return check(files).map((v) => `${v.rule} ${v.file}:${v.line}`);
}

// ---------------------------------------------------------------------------------------------
// The checker, on synthetic trees.

Deno.test("guardrails: a clean tree has no violations", () => {
  assert.deepEqual(
    found({
      "packages/net/rate.ts":
        `import { x } from "./address.ts";\nimport { y } from "@duet/core/delay";`,
      "packages/net/address.ts": `export const x = 1;`,
      "apps/chat/server.ts": `import { x } from "@duet/net/rate";\nimport z from "npm:zod@4";`,
      "apps/chat/server_test.ts": `import { c } from "./testdata/client.ts";`,
      "apps/chat/testdata/client.ts": `export const c = 1;`,
      "apps/cli/cli.ts": `import "@duet/chat";\nimport "../chat/server.ts";`,
      "README.md": `See [the docs](docs/a${MD}) and \`apps/chat/README${MD}\`.`,
      "docs/a.md": "",
      "apps/chat/README.md": "[top](../../README.md)",
    }),
    [],
  );
});

Deno.test("guardrails: a package importing an app or bench/, by path or by name", () => {
  assert.deepEqual(
    found({
      "packages/net/a.ts": `import { x } from "@duet/chat";`,
      "packages/net/b.ts": `export { y } from "../../apps/ping/mod.ts";`,
      "packages/net/c.ts": `const m = await import("../../bench/wsping/plain_ping.ts");`,
      "packages/net/d.ts": `type T = import("@duet/cli").T;`,
      "packages/net/e.ts": `import type { U } from "@duet/chat/tui";`,
      "packages/net/f.ts": `const u = new URL("../../apps/chat/x.ts", import.meta.url);`,
    }),
    [
      "package-imports-app packages/net/a.ts:1",
      "package-imports-app packages/net/b.ts:1",
      "package-imports-app packages/net/c.ts:1",
      "package-imports-app packages/net/d.ts:1",
      "package-imports-app packages/net/e.ts:1",
      "package-imports-app packages/net/f.ts:1",
    ],
  );
});

Deno.test("guardrails: imports in comments, strings and regular expressions are not imports", () => {
  assert.deepEqual(
    found({
      "packages/net/a.ts": [
        `// import { x } from "@duet/chat";`,
        `/** import { y } from "../../apps/ping/mod.ts"; */`,
        `const text = 'import { z } from "@duet/chat"';`,
        `const re = /from "@duet\\/chat"/;`,
        `export const s = "@duet/chat";`,
      ].join("\n"),
    }),
    [],
  );
});

Deno.test("guardrails: an app importing another app; apps/cli may", () => {
  assert.deepEqual(
    found({
      "apps/ping/a_test.ts": `import { inProcess } from "../cli/testdata/in_process.ts";`,
      "apps/chat/b.ts": `import { p } from "@duet/ping";`,
      "apps/chat/c.ts": `import { s } from "./server.ts";\nimport "@duet/chat";`,
      "apps/cli/d.ts": `import { p } from "@duet/ping";\nimport "../chat/server.ts";`,
    }),
    [
      "app-imports-app apps/chat/b.ts:1",
      "app-imports-app apps/ping/a_test.ts:1",
      "foreign-testdata apps/ping/a_test.ts:1",
    ],
  );
});

Deno.test("guardrails: apps and packages reaching into another part's testdata/, however it is named; bench/ may", () => {
  assert.deepEqual(
    found({
      "apps/cli/a_test.ts": `import { c } from "../chat/testdata/client.ts";`,
      "bench/chat/run.ts": "const m = await import(`${REPO}apps/chat/testdata/client.ts`);",
      "bench/wsping/run.ts":
        `const s = new URL("../../packages/wsping/testdata/echo_server.ts", import.meta.url);`,
      "packages/net/b_test.ts": `const p = "packages/webtransport/testdata/echo.ts";`,
      "packages/net/c_test.ts": [
        `import { own } from "./testdata/own.ts";`,
        `const page = new URL("testdata/page.html", here);`,
        `// packages/webtransport/testdata/echo.ts, in a comment, is only a pointer`,
        `const route = "/static/testdata/x";`,
      ].join("\n"),
    }),
    [
      "foreign-testdata apps/cli/a_test.ts:1",
      "foreign-testdata packages/net/b_test.ts:1",
    ],
  );
});

Deno.test("guardrails: packages (the testkit too) and apps other than the CLI naming the CLI's paths", () => {
  assert.deepEqual(
    found({
      "packages/testkit/mod.ts": [
        `const a = [Deno.execPath(), "run", "apps/cli/main.ts"];`,
        `import { runCli } from "../../apps/cli/cli.ts";`,
        `/** Starts \`deno run apps/cli/main.ts\`: a comment says how, the code must not. */`,
        `const b = "deno task duet";`,
      ].join("\n"),
      "apps/syncpoint/tools/measure.ts": 'const args = [`${root}apps/cli/main.ts`, "syncpoint"];',
      "apps/cli/spawn.ts": `const main = "apps/cli/main.ts";`,
      "bench/syncpoint/memory.ts": "const args = [`${root}apps/cli/main.ts`];",
    }),
    [
      "knows-cli apps/syncpoint/tools/measure.ts:1",
      "knows-cli packages/testkit/mod.ts:1",
      "knows-cli packages/testkit/mod.ts:2",
      "package-imports-app packages/testkit/mod.ts:2",
    ],
  );
});

Deno.test("guardrails: references outside the repository", () => {
  assert.deepEqual(
    found({
      "README.md":
        `Shared code is in \`${SHARED}\`; see [notes](../notes/webtransport-on-deno${MD}).`,
      "apps/chat/store.ts": `// \`end\` can hang after a disconnect (${STACK_FACTS}): bounded.`,
      "packages/net/a.ts": `import x from "../../../elsewhere/x.ts";`,
    }),
    [
      "foreign-reference README.md:1",
      "foreign-reference README.md:1",
      "foreign-reference apps/chat/store.ts:1",
      "foreign-reference packages/net/a.ts:1",
    ],
  );
});

Deno.test("guardrails: documents that are not in the repository", () => {
  const violations = check({
    "README.md": [
      `Read [the design](DESIGN${MD}) first,`,
      `then \`notes/webtransport-on-deno${MD}\` and docs/missing${MD};`,
      `[found](docs/here${MD}#a-section), \`docs/here${MD}\`, https://example.com/far${MD}.`,
    ].join("\n"),
    "docs/here.md": "## A section",
    "apps/chat/a.ts": `// the protocol: docs/here${MD}; the design: DESIGN${MD}`,
    "apps/chat/README.md": `[broken](docs/here${MD}) and [fine](../../docs/here${MD})`,
  });
  assert.deepEqual(
    violations.map((v) => `${v.rule} ${v.file}:${v.line} ${v.detail}`),
    [
      `missing-document README.md:1 DESIGN${MD}`,
      `missing-document README.md:2 notes/webtransport-on-deno${MD}`,
      `missing-document README.md:2 docs/missing${MD}`,
      `missing-document apps/chat/README.md:1 docs/here${MD}`,
      `missing-document apps/chat/a.ts:1 DESIGN${MD}`,
    ],
  );
});

Deno.test("guardrails: links to sections that the document does not have, as GitHub makes anchors", () => {
  const violations = check(
    {
      "README.md": [
        `[ok](docs/a${MD}#limits-and-bounds) [ok](docs/a${MD}#duets-start-benchclirunts)`,
        `[ok](docs/a${MD}#limits-and-bounds-1) [ok](#usage) [missing](#nothing-here)`,
        `[missing](docs/a${MD}#syncpoint) [missing](docs/a${MD}#limits-and-bounds-2)`,
        "## Usage",
      ].join("\n"),
      "docs/a.md": [
        "# Limits and bounds",
        "## duet's start (`bench/cli/run.ts`)",
        "```sh",
        "# Syncpoint: a comment in a code block is no heading",
        "```",
        "## Limits and bounds",
      ].join("\n"),
    },
    ["missing-anchor"],
  );
  assert.deepEqual(violations.map((v) => `${v.file}:${v.line} ${v.detail}`), [
    "README.md:2 #nothing-here",
    `README.md:3 docs/a${MD}#syncpoint`,
    `README.md:3 docs/a${MD}#limits-and-bounds-2`,
  ]);
});

Deno.test("guardrails: files that documents and comments name but the repository lacks", () => {
  const violations = check(
    {
      "README.md": [
        "Run `apps/cli/main.ts`, or `./apps/cli/main.ts`, see `commands/dlog.ts` and `dlog.ts`;",
        "not `apps/cli/gone.ts` nor `pglite_init.ts`; `NAME.ts`, `my_server.ts`, `_test.ts` are",
        "patterns. https://example.com/x/far.ts is a URL.",
      ].join("\n"),
      "apps/cli/main.ts": [
        "// Loads commands/dlog.ts; written by tools/gen.py, which is gone.",
        'const path = "./not_checked_in_strings.ts";',
      ].join("\n"),
      "apps/cli/commands/dlog.ts": "",
    },
    ["missing-file"],
    ["README.md", "apps/cli/main.ts", "apps/cli/commands/dlog.ts"],
  );
  assert.deepEqual(violations.map((v) => `${v.file}:${v.line} ${v.detail}`), [
    "README.md:2 apps/cli/gone.ts",
    "README.md:2 pglite_init.ts",
    "apps/cli/main.ts:1 tools/gen.py",
  ]);
});

Deno.test("guardrails: a source file that does not parse is a violation; the others are checked", () => {
  assert.deepEqual(
    found({
      "apps/chat/broken.ts": `const a = 1;\n@@ a merge left half-done @@\n`,
      "apps/chat/b.ts": `import { p } from "@duet/ping";`,
    }),
    ["app-imports-app apps/chat/b.ts:1", "unparsable apps/chat/broken.ts:2"],
  );
});

Deno.test("guardrails: the pieces: specifiers, testdata paths, document references", () => {
  assert.equal(resolveSpecifier("@duet/chat/tui", "apps/cli/a.ts", members), "apps/chat");
  assert.equal(resolveSpecifier("../io.ts", "apps/cli/commands/a.ts", members), "apps/cli/io.ts");
  assert.equal(resolveSpecifier("npm:zod@4", "apps/cli/a.ts", members), null);
  assert.equal(resolveSpecifier("@noble/curves/secp256k1", "a.ts", members), null);
  assert.equal(resolveSpecifier("../../../x.ts", "apps/cli/a.ts", members), undefined);
  assert.deepEqual(testdataPaths("${…}apps/chat/testdata/client.ts", "bench/chat/m.ts"), [
    "apps/chat/testdata/client.ts",
  ]);
  assert.deepEqual(testdataPaths("./testdata/x.ts", "apps/chat/a_test.ts"), [
    "apps/chat/testdata/x.ts",
  ]);
  assert.deepEqual(
    documentReferences(`[a](b${MD}#c) \`d/e${MD}\` https://x.org/f${MD}`).map((r) => r.path),
    [`b${MD}`, `d/e${MD}`],
  );
  const refs = extractReferences(
    "x.ts",
    `import a from "./a.ts";\nexport * from "./b.ts";\nawait import("./c.ts");\n` +
      `type D = import("./d.ts").D;\nconst e = new URL("./e.ts", import.meta.url);\n` +
      `import f from "./f.json" with { type: "json" };\nconst g = "./g.ts";\n`,
  );
  assert.deepEqual(refs.map((r) => `${r.line} ${r.kind} ${r.value}`), [
    "1 import ./a.ts",
    "2 import ./b.ts",
    "3 dynamic-import ./c.ts",
    "4 type-import ./d.ts",
    "5 url ./e.ts",
    "6 import ./f.json",
    "6 string json",
    "7 string ./g.ts",
  ]);
});

Deno.test("guardrails: lint-ignore comments are read as deno lint reads them", () => {
  const rule = "duet/max-function-lines";
  const at = (text: string) => lintIgnored(text, text.indexOf("function f"), rule);
  assert.ok(at(`// deno-lint-ignore ${rule} -- a table of options\nfunction f() {}`));
  assert.ok(at(`// deno-lint-ignore no-console ${rule}\nexport function f() {}`));
  assert.ok(!at(`// deno-lint-ignore no-console\nfunction f() {}`));
  assert.ok(!at(`// deno-lint-ignore ${rule}\n\nfunction f() {}`));
  assert.ok(at(`// deno-lint-ignore-file\n// more\nfunction f() {}`));
  assert.ok(at(`/** a module */\n// deno-lint-ignore-file ${rule}\nfunction f() {}`));
  assert.ok(!at(`// deno-lint-ignore-file no-console -- a tool\nfunction f() {}`));
  assert.ok(!at(`const a = 1;\n// deno-lint-ignore-file\nfunction f() {}`));
});

// ---------------------------------------------------------------------------------------------
// This tree.

// Read once, when the first test of this tree runs (a file that does not parse then fails these
// tests, not the synthetic ones above).
let tree: Promise<{ repo: Repository; violations: Violation[] }> | undefined;
function thisTree(): Promise<{ repo: Repository; violations: Violation[] }> {
  tree ??= readRepository(root).then((repo) => ({ repo, violations: checkRepository(repo) }));
  return tree;
}

for (const rule of Object.keys(RULES) as RuleId[]) {
  Deno.test(`house rule: ${RULES[rule]}`, async () => {
    const own = (await thisTree()).violations.filter((v) => v.rule === rule);
    assert.ok(own.length === 0, `\n${formatViolations(own)}`);
  });
}

Deno.test("house rule: every workspace member is known to the check, by its deno.json name", async () => {
  const { repo } = await thisTree();
  const config = JSON.parse(Deno.readTextFileSync(new URL("deno.json", root)));
  assert.equal(repo.members.size, (config.workspace as string[]).length);
  for (const [name, dir] of repo.members) assert.match(name, /^@duet\//, dir);
});

Deno.test("house rule: no function in apps/ or packages/ is longer than 100 lines", async () => {
  const { repo } = await thisTree();
  const offenders: string[] = [];
  for (const file of repo.files) {
    if (!/^(apps|packages)\/.*\.(ts|tsx|js|mjs)$/.test(file.path)) continue;
    if (file.path.startsWith("packages/wsping/assembly/")) continue; // AssemblyScript, not linted
    let diagnostics: Deno.lint.Diagnostic[];
    try {
      diagnostics = Deno.lint.runPlugin(plugin, new URL(file.path, root).pathname, file.text);
    } catch {
      offenders.push(`  ${file.path}  cannot be parsed (see the rule "unparsable")`);
      continue;
    }
    for (const d of diagnostics) {
      if (lintIgnored(file.text, d.range[0], d.id)) continue;
      const line = file.text.slice(0, d.range[0]).split("\n").length;
      offenders.push(`  ${file.path}:${line}  ${d.message}`);
    }
  }
  assert.ok(offenders.length === 0, `\n${offenders.length} functions:\n${offenders.join("\n")}`);
});
