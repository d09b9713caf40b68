import assert from "node:assert/strict";
import { moduleDoc, parseScriptOptions, ScriptUsageError, undocumented } from "./_options.ts";

const options = {
  runs: { type: "count", default: 30 },
  idle: { type: "count", default: 1000, min: 0 },
  port: { type: "count", default: 0, min: 0, max: 65535 },
  counts: { type: "counts", default: [2000, 10000] },
  loss: { type: "numbers", default: [0, 1, 5], min: 0, max: 100, decimals: 2 },
  only: { type: "names", default: ["a", "b"], choices: ["a", "b", "c"] },
  listener: { type: "choice", default: "duet", choices: ["raw", "duet"] },
  before: { type: "string" },
  repo: { type: "string", default: "/x/" },
  pin: { type: "boolean" },
} as const;

/** `args` are refused with a {@link ScriptUsageError} whose message matches `message`. */
function assertRefused(args: string[], message: RegExp): void {
  assert.throws(() => parseScriptOptions(options, args), (error: unknown) => {
    assert.ok(error instanceof ScriptUsageError, `${args}: ${error}`);
    assert.match(error.message, message, args.join(" "));
    return true;
  });
}

Deno.test("script options: defaults, and each kind of value as given", () => {
  assert.deepEqual(parseScriptOptions(options, []), {
    runs: 30,
    idle: 1000,
    port: 0,
    counts: [2000, 10000],
    loss: [0, 1, 5],
    only: ["a", "b"],
    listener: "duet",
    before: undefined,
    repo: "/x/",
    pin: false,
  });
  assert.deepEqual(
    parseScriptOptions(options, [
      "--runs",
      "5",
      "--idle=0",
      "--port",
      "65535",
      "--counts",
      "1,20",
      "--loss",
      "0.5,100",
      "--only",
      "c",
      "--listener",
      "raw",
      "--before",
      "/tmp/b",
      "--pin",
    ]),
    {
      runs: 5,
      idle: 0,
      port: 65535,
      counts: [1, 20],
      loss: [0.5, 100],
      only: ["c"],
      listener: "raw",
      before: "/tmp/b",
      repo: "/x/",
      pin: true,
    },
  );
});

Deno.test("script options: a default list is a copy, never the declaration itself", () => {
  const first = parseScriptOptions(options, []);
  assert.ok(first !== "help");
  first.counts.push(1);
  const second = parseScriptOptions(options, []);
  assert.ok(second !== "help");
  assert.deepEqual(second.counts, [2000, 10000]);
});

Deno.test("script options: --help and -h ask for the usage", () => {
  assert.equal(parseScriptOptions(options, ["--help"]), "help");
  assert.equal(parseScriptOptions(options, ["--runs", "3", "-h"]), "help");
});

Deno.test("script options: a count is a whole number within its bounds, nothing else", () => {
  const refused: [string[], RegExp][] = [
    [["--runs", "abc"], /^--runs "abc": must be a whole number of 1 or more$/],
    [["--runs", "0"], /^--runs "0": must be a whole number of 1 or more$/],
    [["--runs", "1.5"], /whole number/],
    [["--runs", "1e3"], /whole number/],
    [["--runs", " 5"], /whole number/],
    [
      ["--runs", "-3"],
      /^Option '--runs' argument is ambiguous\. Did you forget [^\n]*'--runs=-XYZ'\.$/,
    ],
    [["--runs=-3"], /^--runs "-3": must be a whole number/],
    [["--runs", ""], /^--runs is empty; leave it out for its default$/],
    [["--runs", "9007199254740993"], /whole number/],
    [["--port", "65536"], /^--port "65536": must be a whole number from 0 to 65535$/],
    [["--counts", "10,,20"], /^--counts "10,,20": each item must be a whole number of 1 or more$/],
    [["--counts", "10,x"], /^--counts "10,x": each item/],
  ];
  for (const [args, message] of refused) assertRefused(args, message);
});

Deno.test("script options: lists and names are checked item by item", () => {
  const refused: [string[], RegExp][] = [
    [
      ["--loss", "0,101"],
      /^--loss "0,101": each item must be a number from 0 to 100, with at most 2 decimals$/,
    ],
    [["--loss", "0.001"], /each item must be a number/],
    [["--loss", "0x10"], /each item must be a number/],
    [["--loss", "1e1"], /each item must be a number/],
    [["--loss", " 5"], /each item must be a number/],
    [["--loss", "5 ,1"], /each item must be a number/],
    [["--loss", "1."], /each item must be a number/],
    [["--loss", "1,"], /each item must be a number/],
    [["--loss=-1"], /^--loss "-1": each item must be a number from 0 to 100/],
    [["--loss", "NaN"], /each item/],
    [["--loss", "Infinity"], /each item/],
    [["--only", "a,d,e"], /^--only: "d", "e" is not one of a, b, c$/],
    [["--listener", "serv"], /^--listener "serv": must be one of raw, duet$/],
  ];
  for (const [args, message] of refused) assertRefused(args, message);
});

Deno.test("script options: a directory must exist and hold its file", () => {
  const declared = { before: { type: "directory", holding: "apps/cli/main.ts" } } as const;
  const root = new URL("../", import.meta.url).pathname;
  // The absolute path, a relative one from the current directory.
  assert.deepEqual(parseScriptOptions(declared, ["--before", root]), {
    before: root.replace(/\/$/, ""),
  });
  const here = Deno.cwd();
  try {
    Deno.chdir(`${root}apps`);
    assert.deepEqual(parseScriptOptions(declared, ["--before", ".."]), {
      before: root.replace(/\/$/, ""),
    });
  } finally {
    Deno.chdir(here);
  }
  assert.deepEqual(parseScriptOptions(declared, []), { before: undefined });
  for (const wrong of ["/nonexistent", `${root}apps`, `${root}apps/cli/main.ts`]) {
    assert.throws(
      () => parseScriptOptions(declared, ["--before", wrong]),
      (error: unknown) =>
        error instanceof ScriptUsageError &&
        error.message ===
          `--before ${JSON.stringify(wrong)}: not a directory holding apps/cli/main.ts`,
      wrong,
    );
  }
});

Deno.test("script options: unknown options, missing values and stray arguments are refused", () => {
  for (
    const [args, message] of [
      [["--rnus", "3"], /Unknown option '--rnus'/],
      [["--runs"], /--runs.*argument missing/],
      [["200"], /Unexpected argument '200'/],
      [["--pin=yes"], /--pin.*does not take an argument/],
      [["--runs=abc", "--runs=4"], /^--runs is given more than once$/],
      [["--runs", "3", "--runs", "7"], /^--runs is given more than once$/],
      [["--pin", "--pin"], /^--pin is given more than once$/],
      [["--before="], /^--before is empty; leave it out for its default$/],
      [["--repo", ""], /^--repo is empty/],
    ] as [string[], RegExp][]
  ) assertRefused(args, message);
});

Deno.test("script options: moduleDoc is the script's first doc comment, without its marks", () => {
  const doc = moduleDoc(new URL("../bench/cli/run.ts", import.meta.url).href)!;
  assert.match(doc, /^How long `duet` takes to start/);
  assert.match(doc, /\nUsage: deno run -A bench\/cli\/run\.ts \[--runs 30\] \[--before DIR\]\n/);
  assert.doesNotMatch(doc, /@module|^\s*\*/m);
});

Deno.test("script options: undocumented names each option its documentation leaves out", () => {
  const declared = {
    runs: { type: "count", default: 3 },
    "runs-warm": { type: "count", default: 3 },
    inner: { type: "boolean", internal: true },
  } as const;
  assert.deepEqual(undocumented(declared, "Usage: x.ts [--runs-warm 3]"), ["--runs"]);
  assert.deepEqual(undocumented(declared, "Usage: x.ts [--runs 3]"), ["--runs-warm"]);
  assert.deepEqual(undocumented(declared, "[--runs 3] [--runs-warm 3]"), []);
});

const root = new URL("../", import.meta.url);

/**
 * Every script under bench/ and tools/: a file that is run, not imported (no leading `_`),
 * not a test; tools/lint/ holds lint plugins, not scripts.
 */
async function scripts(): Promise<string[]> {
  const found: string[] = [];
  const walk = async (dir: URL, path: string) => {
    for await (const entry of Deno.readDir(dir)) {
      const child = `${path}/${entry.name}`;
      if (entry.isDirectory) await walk(new URL(`${entry.name}/`, dir), child);
      else if (/^[^_].*\.ts$/.test(entry.name) && !entry.name.endsWith("_test.ts")) {
        found.push(child.slice(1));
      }
    }
  };
  await walk(new URL("bench/", root), "/bench");
  await walk(new URL("tools/", root), "/tools");
  return found.filter((path) => !path.startsWith("tools/lint/")).sort();
}

/** Files under bench/ and tools/ that are not scripts of ours to run with options, and why. */
const NOT_SCRIPTS: Record<string, string> = {
  "bench/cli/empty.ts": "a start-up anchor: importing anything would change what it measures",
  "bench/cli/commander.ts": "a start-up anchor: it imports commander and nothing else",
  "bench/cli/dlog_alone.ts": "a start-up anchor: it imports the dlog package and nothing else",
  "tools/guardrails.ts": "a module: tools/guardrails_test.ts imports it",
};

Deno.test("scripts under bench/ and tools/: each reads its command line through scriptOptions, none by hand", async () => {
  const all = await scripts();
  const byHand: string[] = [];
  const without: string[] = [];
  for (const script of all) {
    const source = await Deno.readTextFile(new URL(script, root));
    if (/Deno\.args|parseArgs|process\.argv/.test(source)) byHand.push(script);
    if (!source.includes("scriptOptions(") && !(script in NOT_SCRIPTS)) without.push(script);
  }
  assert.deepEqual(byHand, [], "read their arguments by hand");
  assert.deepEqual(without, [], "no --help, and a mistake would be ignored");
  for (const script of Object.keys(NOT_SCRIPTS)) assert.ok(all.includes(script), script);
  assert.ok(all.length >= 25, `the scripts were found: ${all}`);
});

Deno.test("scripts under bench/ and tools/: --help prints the script's documentation; a mistake is one line and exit 2, before anything starts", async () => {
  const users = (await scripts()).filter((script) =>
    Deno.readTextFileSync(new URL(script, root)).includes("scriptOptions(")
  );
  const run = async (script: string, args: string[]) => {
    const { code, stdout, stderr } = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", script, ...args],
      cwd: root,
      stdout: "piped",
      stderr: "piped",
    }).output();
    const text = (bytes: Uint8Array) => new TextDecoder().decode(bytes);
    return { code, out: text(stdout), err: text(stderr) };
  };
  // Two at a time: each is a Deno start (the machines have 2 cores).
  for (let i = 0; i < users.length; i += 2) {
    await Promise.all(
      users.slice(i, i + 2).map(async (script) => {
        const help = await run(script, ["--help"]);
        assert.equal(help.code, 0, `${script} --help: ${help.err}`);
        assert.equal(help.out.trim(), moduleDoc(new URL(script, root).href), script);
        const wrong = await run(script, ["--no-such-option"]);
        assert.equal(wrong.code, 2, `${script}: ${wrong.err}`);
        assert.equal(wrong.out, "", script);
        assert.equal(
          wrong.err,
          `${script}: Unknown option '--no-such-option' (--help for usage)\n`,
        );
      }),
    );
  }
});
