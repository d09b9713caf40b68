// deno-lint-ignore-file no-console -- a developer tool: its output is for the terminal
/**
 * Runs the runtime-neutral library tests on Node: every *_test.ts under packages/ that is
 * written against node:test. Node 20 cannot load TypeScript or Deno's npm: import map, so
 * `deno bundle` turns each test file into one plain ES module (dependencies inlined, node:
 * built-ins left as imports) and `node --test` runs them.
 *
 *   deno task test:node            (node from PATH; DUET_NODE=/path/to/node to pick another)
 *
 * @module
 */
import { dirname, join, relative } from "node:path";
import { fileURLToPath } from "node:url";
import { scriptOptions } from "./_options.ts";

scriptOptions(import.meta.url, {}); // --help; no options
const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const outDir = join(root, ".cache", "node-tests");
const node = Deno.env.get("DUET_NODE") || "node";

async function* testFiles(dir: string): AsyncGenerator<string> {
  for await (const entry of Deno.readDir(dir)) {
    const path = join(dir, entry.name);
    if (entry.isDirectory && entry.name !== "node_modules") yield* testFiles(path);
    else if (entry.isFile && entry.name.endsWith("_test.ts")) {
      if (/from "node:test"/.test(await Deno.readTextFile(path))) yield path;
    }
  }
}

async function exec(command: string, args: string[]): Promise<number> {
  const { code } = await new Deno.Command(command, { args, cwd: root }).spawn().status;
  return code;
}

const files: string[] = [];
for await (const file of testFiles(join(root, "packages"))) files.push(relative(root, file));
files.sort();
if (files.length === 0) {
  console.error("test:node: no runtime-neutral test files found under packages/");
  Deno.exit(1);
}
await Deno.remove(outDir, { recursive: true }).catch(() => {});
const bundled: string[] = [];
for (const file of files) {
  const out = join(outDir, file.replace(/\.ts$/, ".mjs"));
  if (await exec(Deno.execPath(), ["bundle", "--quiet", "--platform", "deno", "-o", out, file])) {
    console.error(`test:node: could not bundle ${file}`);
    Deno.exit(1);
  }
  bundled.push(out);
}
const version = new TextDecoder().decode(
  (await new Deno.Command(node, { args: ["--version"], stdout: "piped" }).output()).stdout,
).trim();
console.error(`test:node: ${bundled.length} files on Node ${version}`);
Deno.exit(await exec(node, ["--test", "--test-reporter=spec", ...bundled]));
