// What each command loads before it runs: the static import graph (imports that are not
// dynamic `import()`), from `deno info --json`. `duet --help` must load the command line
// alone, `duet dlog prove` only the dlog package besides; the apps load when their command runs.
import assert from "node:assert/strict";

interface InfoModule {
  specifier: string;
  dependencies?: { code?: { specifier: string }; isDynamic?: boolean }[];
}

/** The files and npm packages `entry` loads statically (before any dynamic import runs). */
async function staticGraph(entry: string): Promise<{ files: string[]; npm: string[] }> {
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
      if (dependency.code && !dependency.isDynamic) visit(dependency.code.specifier);
    }
  };
  visit(new URL(entry, import.meta.url).href);
  return {
    files: [...files].map((file) => file.slice(root.length)).sort(),
    npm: [...npm].sort(),
  };
}

Deno.test("duet --help loads the command line alone: no app, no library but commander", async () => {
  const graph = await staticGraph("./main.ts");
  assert.deepEqual(graph.files, ["apps/cli/cli.ts", "apps/cli/io.ts", "apps/cli/main.ts"]);
  assert.deepEqual(graph.npm, ["commander"]);
});

Deno.test("duet dlog loads the dlog package and nothing of the other parts", async () => {
  const graph = await staticGraph("./commands/dlog.ts");
  const outside = graph.files.filter((file) =>
    !file.startsWith("apps/cli/") && !file.startsWith("packages/dlog/")
  );
  assert.deepEqual(outside, []);
  assert.deepEqual(graph.npm.filter((name) => !name.startsWith("@noble/")), ["commander"]);
});

Deno.test("duet chat loads the screen (ink, React) only when it draws one", async () => {
  const graph = await staticGraph("./commands/chat.ts");
  assert.ok(graph.files.includes("apps/chat/mod.ts"));
  assert.deepEqual(graph.files.filter((file) => file === "apps/chat/tui.ts"), []);
  assert.deepEqual(graph.npm.filter((name) => name === "ink" || name === "react"), []);
});
