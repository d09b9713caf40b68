// deno.run.lock is the part of deno.lock that running duet needs, and running needs no more.
import assert from "node:assert/strict";
import { run, spawnLines, waitFor } from "@duet/testkit";
import { type Lockfile, lockfileText, pruneLockfile } from "./run_lock.ts";

const root = new URL("../", import.meta.url).pathname;

const LOCK: Lockfile = {
  version: "5",
  specifiers: {
    "npm:app@1.0.0": "1.0.0",
    "npm:dev-tool@2.0.0": "2.0.0",
    "npm:@scope/with-peer@3.0.0": "3.0.0_peer@1.1.0",
  },
  npm: {
    "app@1.0.0": { integrity: "sha512-a", dependencies: ["lib", "ansi@6.0.0"] },
    "lib@1.0.0": { integrity: "sha512-l", optionalDependencies: ["native"] },
    "native@1.0.0": { integrity: "sha512-n" },
    "ansi@6.0.0": { integrity: "sha512-6" },
    "ansi@5.0.0": { integrity: "sha512-5" },
    "dev-tool@2.0.0": { integrity: "sha512-d", dependencies: ["ansi@5.0.0"] },
    "@scope/with-peer@3.0.0_peer@1.1.0": {
      integrity: "sha512-w",
      dependencies: ["peer"],
      optionalPeers: ["optional-peer"],
    },
    "peer@1.1.0": { integrity: "sha512-p" },
    "optional-peer@1.0.0": { integrity: "sha512-o" },
  },
  workspace: { dependencies: ["npm:app@1.0.0", "npm:dev-tool@2.0.0"] },
};

Deno.test("pruneLockfile: keeps the roots and what they depend on, bare and versioned, optional included", () => {
  const pruned = pruneLockfile(LOCK, ["app@1.0.0"]);
  assert.deepEqual(Object.keys(pruned.npm!).sort(), [
    "ansi@6.0.0",
    "app@1.0.0",
    "lib@1.0.0",
    "native@1.0.0",
  ]);
  assert.deepEqual(pruned.specifiers, { "npm:app@1.0.0": "1.0.0" });
  // Entries are copied as they are: the same integrity, the same dependencies.
  assert.deepEqual(pruned.npm!["app@1.0.0"], LOCK.npm!["app@1.0.0"]);
  // The workspace section must match deno.json, or Deno calls the lockfile out of date.
  assert.deepEqual(pruned["workspace"], LOCK["workspace"]);
});

Deno.test("pruneLockfile: a root with peers keeps its peers, not its optional peers", () => {
  const pruned = pruneLockfile(LOCK, ["@scope/with-peer@3.0.0_peer@1.1.0"]);
  assert.deepEqual(Object.keys(pruned.npm!).sort(), [
    "@scope/with-peer@3.0.0_peer@1.1.0",
    "peer@1.1.0",
  ]);
  assert.deepEqual(pruned.specifiers, { "npm:@scope/with-peer@3.0.0": "3.0.0_peer@1.1.0" });
});

Deno.test("pruneLockfile: a root the lockfile does not hold, or an ambiguous bare name, is an error", () => {
  assert.throws(() => pruneLockfile(LOCK, ["missing@1.0.0"]), /missing@1\.0\.0 matches 0 packages/);
  assert.throws(() => pruneLockfile(LOCK, ["ansi"]), /ansi matches 2 packages/);
});

Deno.test("pruneLockfile: the text is what Deno writes, so a rewrite leaves the file alone", () => {
  const text = lockfileText(pruneLockfile(LOCK, ["app@1.0.0"]));
  assert.ok(text.endsWith("}\n"));
  assert.equal(lockfileText(JSON.parse(text)), text);
});

Deno.test("deno task lock:run --check: the committed deno.run.lock is what deno.lock gives", async () => {
  const { code, stderr } = await run(Deno.execPath(), [
    "run",
    "--allow-read",
    "--allow-write",
    "--allow-run",
    "--allow-env",
    "tools/run_lock.ts",
    "--check",
  ], { cwd: root });
  assert.equal(code, 0, stderr);
  assert.match(stderr, /deno\.run\.lock is up to date \((\d+) of (\d+) npm packages\)/);
});

/** The README's run command's arguments to `deno`, without its final `serve`. */
function readmeRunCommand(): string[] {
  const readme = Deno.readTextFileSync(`${root}README.md`);
  const line = readme.match(/^npx --yes deno@[\d.]+ (run [^#\n]*?) serve +#/m)?.[1];
  assert.ok(line, "README gives a run command: npx --yes deno@VERSION run ... serve");
  return line.split(/ +/);
}

/**
 * A Deno cache holding only deno.run.lock's npm packages (hard links into this machine's cache),
 * so a run that needs anything else fails instead of quietly downloading it.
 */
async function runOnlyCache(): Promise<string> {
  const info = JSON.parse(
    (await run(Deno.execPath(), ["info", "--json"], { cwd: root })).stdout,
  ) as { npmCache: string };
  const lock = JSON.parse(await Deno.readTextFile(`${root}deno.run.lock`)) as Lockfile;
  const denoDir = await Deno.makeTempDir({ prefix: "duet-run-only-" });
  for (const id of Object.keys(lock.npm ?? {})) {
    const at = id.indexOf("@", 1);
    const [name, version] = [id.slice(0, at), id.slice(at + 1).split("_")[0]!];
    const from = `${info.npmCache}/registry.npmjs.org/${name}/${version}`;
    const into = `${denoDir}/npm/registry.npmjs.org/${name}`;
    await Deno.mkdir(into, { recursive: true });
    // Hard links: Deno refuses a module whose real path is outside its cache (a symlink's).
    const copied = await run("cp", ["-al", from, `${into}/${version}`]);
    assert.equal(copied.code, 0, copied.stderr);
  }
  return denoDir;
}

Deno.test("the README's run command runs every command with deno.run.lock's packages alone", async () => {
  const denoDir = await runOnlyCache();
  const home = await Deno.makeTempDir({ prefix: "duet-run-only-home-" });
  // Any download would go through this proxy, where nothing listens: it fails, loudly.
  const env = {
    DENO_DIR: denoDir,
    HOME: home,
    HTTPS_PROXY: "http://127.0.0.1:9",
    HTTP_PROXY: "http://127.0.0.1:9",
    NO_COLOR: "1",
  };
  const duet = readmeRunCommand();
  try {
    for (const command of [[], ["dlog"], ["syncpoint"], ["ping"], ["chat"], ["chat-server"]]) {
      const { code, stdout, stderr } = await run(
        Deno.execPath(),
        [...duet, ...command, "--help"],
        { cwd: root, env },
      );
      assert.equal(code, 0, `duet ${command.join(" ")} --help: ${stderr}`);
      assert.match(stdout, /^Usage: duet/);
      assert.equal(stderr, "", "no download or task chatter on stderr");
    }
    // duet serve on a new home: the embedded database is created (by a child process that
    // must also make do with these packages) and every URL printed.
    const serve = spawnLines(Deno.execPath(), [
      ...duet,
      "serve",
      "--syncpoint-port",
      "0",
      "--ping-port",
      "0",
      "--chat-port",
      "0",
    ], { cwd: root, env });
    const output = () => [...serve.lines.stdout, ...serve.lines.stderr].join("\n");
    try {
      await waitFor(
        async () => {
          if (serve.lines.stdout.includes("duet is running; Ctrl-C stops it.")) return true;
          const exited = await Promise.race([serve.child.status, Promise.resolve(null)]);
          if (exited) throw new Error(`duet serve exited ${exited.code}:\n${output()}`);
          return false;
        },
        "duet serve to print its URLs",
        60_000,
      );
      assert.match(serve.lines.stdout.join("\n"), /^chat +127\.0\.0\.1:\d+ +\(PGlite in /m);
      serve.child.kill("SIGINT");
      assert.equal((await serve.child.status).code, 0, output());
      await serve.done;
      assert.doesNotMatch(output(), /Download|error/i);
    } finally {
      try {
        serve.child.kill("SIGKILL");
      } catch { /* exited */ }
      await serve.done;
    }
  } finally {
    await Deno.remove(denoDir, { recursive: true });
    await Deno.remove(home, { recursive: true });
  }
});
