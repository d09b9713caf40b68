// deno-lint-ignore-file no-console -- a developer tool: its output is for the terminal
/**
 * `deno doc --lint` over every public entry point of the workspace: each member's deno.json
 * "exports", read here so that a new export is checked without editing a list. Every public
 * symbol must carry its documentation (shapes, units, errors). packages/testkit is left out:
 * it is test support, never published, and its signatures name playwright's and puppeteer's
 * types, which `deno doc --lint` reports as private however they are re-exported.
 *
 * Usage: deno task doc-lint
 *
 * @module
 */
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { scriptOptions } from "./_options.ts";

scriptOptions(import.meta.url, {}); // --help; no options
const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const UNPUBLISHED = new Set(["./packages/testkit"]);

const workspace: string[] = JSON.parse(await Deno.readTextFile(join(root, "deno.json"))).workspace;
const entries: string[] = [];
for (const member of workspace) {
  if (UNPUBLISHED.has(member)) continue;
  const config = JSON.parse(await Deno.readTextFile(join(root, member, "deno.json")));
  const exports: string | Record<string, string> = config.exports;
  const paths = typeof exports === "string" ? [exports] : Object.values(exports);
  for (const path of paths) {
    // Test fixtures published on purpose (a part's "./testing" export) are not the product.
    if (path.includes("/testdata/")) continue;
    entries.push(join(member, path));
  }
}
const { code, stdout, stderr } = await new Deno.Command(Deno.execPath(), {
  args: ["doc", "--lint", ...entries],
  cwd: root,
  // Plain text to filter (and what it says is passed on as plain text).
  env: { NO_COLOR: "1" },
  stdout: "piped",
  stderr: "piped",
}).output();
// deno doc warns about every reference it cannot follow inside npm packages' own
// declarations (@types/node, @types/react: 83 warnings with their context lines); they say
// nothing about ours. Everything else it says is passed on.
const text = new TextDecoder().decode(stderr);
const said = text.split(/\n(?=\S)/).filter((block) =>
  block.trim() && !/^Warning Failed resolving types\..*\(@types\//s.test(block)
);
await Deno.stdout.write(stdout);
if (said.length) console.error(said.join("\n"));
if (code === 0) {
  console.error(`doc-lint: ${entries.length} entry points, every public symbol documented`);
}
Deno.exit(code);
