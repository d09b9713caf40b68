// What each command loads, from `deno info --json`. Deno reads (fetches, parses, resolves)
// the whole graph of literal specifiers before the program starts, dynamic `import()`s
// included; evaluation then follows static imports only. `duet --help` must read the command
// line alone, `duet dlog prove` only the dlog package besides; the apps load when their
// command runs (apps/cli/cli.ts imports commands by computed specifiers for that reason).
import assert from "node:assert/strict";

interface InfoModule {
  specifier: string;
  dependencies?: { code?: { specifier: string }; isDynamic?: boolean }[];
}

/**
 * The files and npm packages of `entry`'s graph: with `dynamic`, every literal specifier
 * (what Deno reads before the start); without, static imports only (what evaluating
 * `entry` runs before any dynamic import).
 */
async function graph(entry: string, dynamic: boolean): Promise<{ files: string[]; npm: string[] }> {
  const output = await new Deno.Command(Deno.execPath(), {
    args: ["info", "--json", new URL(entry, import.meta.url).pathname],
    stdout: "piped",
  }).output();
  assert.ok(output.success, "deno info failed");
  const info = JSON.parse(new TextDecoder().decode(output.stdout)) as { modules: InfoModule[] };
  const bySpecifier = new Map(info.modules.map((m) => [m.specifier, m]));
  const root = new URL("../../", import.meta.url).href;
  const files = new Set<string>();
  const npm = new Set<string>();
  const visit = (specifier: string) => {
    if (specifier.startsWith("npm:")) {
      npm.add(specifier.replace(/^npm:\/?/, "").replace(/(.)@.*$/, "$1"));
      return;
    }
    if (!specifier.startsWith("file:") || files.has(specifier)) return;
    files.add(specifier);
    for (const dependency of bySpecifier.get(specifier)?.dependencies ?? []) {
      if (dependency.code && (dynamic || !dependency.isDynamic)) visit(dependency.code.specifier);
    }
  };
  visit(new URL(entry, import.meta.url).href);
  return {
    files: [...files].map((file) => file.slice(root.length)).sort(),
    npm: [...npm].sort(),
  };
}

Deno.test("duet --help reads the command line alone: no app; commander, and LogTape for logging", async () => {
  const read = await graph("./main.ts", true);
  assert.deepEqual(read.files, [
    "apps/cli/cli.ts",
    "apps/cli/io.ts",
    "apps/cli/logging.ts",
    "apps/cli/main.ts",
    "apps/cli/suggest.ts", // "(Did you mean ...?)"
    "packages/core/explain_error.ts", // how an error is worded
    "packages/core/tls_failure.ts", // ... a TLS failure too: no imports of its own
  ]);
  assert.deepEqual(read.npm, ["@logtape/logtape", "commander"]);
  // And runs less: logging is set up when a command that logs runs.
  const run = await graph("./main.ts", false);
  assert.deepEqual(run.files, [
    "apps/cli/cli.ts",
    "apps/cli/io.ts",
    "apps/cli/main.ts",
    "apps/cli/suggest.ts",
    "packages/core/explain_error.ts",
    "packages/core/tls_failure.ts",
  ]);
  assert.deepEqual(run.npm, ["commander"]);
});

Deno.test("duet dlog reads the dlog package and nothing of the other parts", async () => {
  const read = await graph("./commands/dlog.ts", true);
  const outside = read.files.filter((file) =>
    !file.startsWith("apps/cli/") && !file.startsWith("packages/dlog/")
  );
  assert.deepEqual(outside, []);
  assert.deepEqual(read.npm.filter((name) => !name.startsWith("@noble/")), ["commander"]);
});

Deno.test("duet chat loads the screen (ink, React) only when it draws one", async () => {
  const run = await graph("./commands/chat.ts", false);
  assert.ok(run.files.includes("apps/chat/mod.ts"));
  assert.deepEqual(run.files.filter((file) => file === "apps/chat/tui.ts"), []);
  assert.deepEqual(run.npm.filter((name) => name === "ink" || name === "react"), []);
});
