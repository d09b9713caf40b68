import assert from "node:assert/strict";
import { CURVE_ORDER, DLogProof, encodePoint, G } from "@duet/dlog";
import { run } from "@duet/testkit";
import { everyCommand } from "./testdata/commands.ts";
import { inProcess } from "./testdata/in_process.ts";

/** Runs the CLI in-process with captured output. */
const duet = inProcess;

const secretHex = "00000000000000000000000000000000000000000000000000000000000000ff";
const x = 0xffn;
const y = G.multiply(x);
const yHex = encodePoint(y);

Deno.test("duet dlog prove prints y and a proof that verifies, in the README's form", async () => {
  const { code, out, err } = await duet([
    "dlog",
    "prove",
    "--sid",
    "s",
    "--pid",
    "3",
    "--secret",
    secretHex,
  ]);
  assert.equal(code, 0, err);
  assert.match(
    out,
    /^\{"y": "[0-9a-f]{66}", "proof": \{"t": "[0-9a-f]{66}", "s": "[0-9a-f]{64}"\}\}\n$/,
  );
  const { y: printedY, proof } = JSON.parse(out);
  assert.equal(printedY, yHex);
  assert.equal(DLogProof.fromDict(proof).verify("s", 3n, y), true);
});

Deno.test("duet dlog prove --base proves on another base point", async () => {
  const base = G.multiply(77n);
  const { code, out } = await duet([
    "dlog",
    "prove",
    "--sid",
    "s",
    "--pid",
    "0",
    "--secret",
    secretHex,
    "--base",
    encodePoint(base),
  ]);
  assert.equal(code, 0);
  const { y: printedY, proof } = JSON.parse(out);
  assert.equal(printedY, encodePoint(base.multiply(x)));
  assert.equal(DLogProof.fromDict(proof).verify("s", 0n, base.multiply(x), base), true);
});

Deno.test("duet dlog prove --secret - reads the secret from stdin", async () => {
  const { code, out } = await duet(
    ["dlog", "prove", "--sid", "s", "--pid", "1", "--secret", "-"],
    secretHex + "\n",
  );
  assert.equal(code, 0);
  assert.equal(JSON.parse(out).y, yHex);
});

Deno.test("duet dlog verify prints valid with exit 0 and invalid with exit 1", async () => {
  const proof = DLogProof.prove("s", 3n, x, y).toString();
  const ok = await duet([
    "dlog",
    "verify",
    "--sid",
    "s",
    "--pid",
    "3",
    "--y",
    yHex,
    "--proof",
    proof,
  ]);
  assert.deepEqual([ok.code, ok.out, ok.err], [0, "valid\n", ""]);
  const wrongPid = await duet([
    "dlog",
    "verify",
    "--sid",
    "s",
    "--pid",
    "4",
    "--y",
    yHex,
    "--proof",
    proof,
  ]);
  assert.deepEqual([wrongPid.code, wrongPid.out], [1, "invalid\n"]);
  const fromStdin = await duet(
    ["dlog", "verify", "--sid", "s", "--pid", "3", "--y", yHex, "--proof", "-"],
    proof,
  );
  assert.deepEqual([fromStdin.code, fromStdin.out], [0, "valid\n"]);
});

const proof = DLogProof.prove("s", 3n, x, y).toString();
/** `duet dlog verify` of {@link proof}, with `over` in place of its options. */
const verify = (over: Record<string, string>) => {
  const options = { "--sid": "s", "--pid": "3", "--y": yHex, "--proof": proof, ...over };
  return ["dlog", "verify", ...Object.entries(options).flat()];
};
/** `duet dlog prove` with `over` in place of its options. */
const prove = (over: Record<string, string>) => {
  const options = { "--sid": "s", "--pid": "3", "--secret": secretHex, ...over };
  return ["dlog", "prove", ...Object.entries(options).flat()];
};
/** `duet dlog verify` with `document` as --proof, as duet dlog prove's whole output, no --y. */
const whole = (
  document: unknown,
) => ["dlog", "verify", "--sid", "s", "--pid", "3", "--proof", JSON.stringify(document)];

/** Malformed `duet dlog` command lines: a label, the words, what the one error line says. */
const MALFORMED_DLOG: [string, string[], RegExp][] = [
  ["proof not JSON", verify({ "--proof": "{" }), /^duet dlog verify: Invalid --proof: /],
  [
    "proof s = q",
    verify({ "--proof": JSON.stringify({ ...JSON.parse(proof), s: CURVE_ORDER.toString(16) }) }),
    /--proof: value is not below the group order q/,
  ],
  [
    "proof missing s",
    verify({ "--proof": JSON.stringify({ t: JSON.parse(proof).t }) }),
    /missing field "s"/,
  ],
  ["y uppercase", verify({ "--y": yHex.toUpperCase() }), /Invalid --y: expected lowercase hex/],
  ["y off the curve", verify({ "--y": "02" + "5".padStart(64, "0") }), /Invalid --y: x is not/],
  ["pid negative", verify({ "--pid": "-1" }), /Invalid --pid: "-1" is not a decimal integer/],
  [
    "pid 2^256",
    verify({ "--pid": (1n << 256n).toString() }),
    /Invalid --pid: must be in \[0, 2\^256\)/,
  ],
  ["pid hex", verify({ "--pid": "0x10" }), /Invalid --pid/],
  ["pid leading zero", verify({ "--pid": "05" }), /Invalid --pid: "05" has a leading zero/],
  ["pid with a space", verify({ "--pid": " 5" }), /Invalid --pid: " 5" has spaces around it/],
  [
    "base uppercase",
    verify({ "--base": encodePoint(G).toUpperCase() }),
    /Invalid --base: expected lowercase hex digits \[0-9a-f\]; it has uppercase ones/,
  ],
  [
    "whole output with an extra field",
    whole({ y: yHex, proof: JSON.parse(proof), extra: 1 }),
    /Invalid --proof: unknown field "extra"/,
  ],
  [
    "whole output with a y that is a number",
    whole({ y: 5, proof: JSON.parse(proof) }),
    /Invalid --proof: its "y" must be a string of 66 hex digits, got a number/,
  ],
  [
    "empty session id",
    prove({ "--sid": "" }),
    /option '--sid <sid>' argument '' is invalid: it is empty/,
  ],
  [
    "empty session id, verify",
    verify({ "--sid": "" }),
    /'--sid <sid>' argument '' is invalid: it is empty/,
  ],
  [
    "whole output with a y that is not hex",
    whole({ y: "zz", proof: JSON.parse(proof) }),
    /Invalid --proof's "y": expected 66 hex characters, got 2/,
  ],
  [
    "whole output without its y",
    whole({ proof: JSON.parse(proof) }),
    /Invalid --proof: it has "proof" but no "y"; give --y, or all of what duet dlog prove printed/,
  ],
  [
    "whole output without its proof",
    whole({ y: yHex }),
    /Invalid --proof: it has "y" but no "proof" \(duet dlog prove prints/,
  ],
  [
    "a file name as --proof",
    verify({ "--proof": "/tmp/proof.json" }),
    /Invalid --proof: not JSON; .* \(from a file: --proof - < FILE\)/,
  ],
  [
    "secret with a 0x prefix",
    prove({ "--secret": `0x${secretHex}` }),
    /Invalid --secret: expected 64 hex characters \(without a 0x prefix\), got 66/,
  ],
  ["base too short", verify({ "--base": "02ab" }), /Invalid --base: expected 66 hex/],
  [
    "secret short",
    prove({ "--secret": "ff" }),
    /Invalid --secret: expected 64 hex characters, got 2/,
  ],
  ["secret zero", prove({ "--secret": "0".repeat(64) }), /Invalid --secret: .*\[1, q-1\]/],
  [
    "secret = q",
    prove({ "--secret": CURVE_ORDER.toString(16) }),
    /Invalid --secret: value is not below the group order q/,
  ],
  [
    "secret uppercase",
    prove({ "--secret": secretHex.toUpperCase().replace("0", "A") }),
    /Invalid --secret: expected lowercase hex digits \[0-9a-f\]; it has uppercase ones/,
  ],
  [
    "secret not hex",
    prove({ "--secret": "g".repeat(64) }),
    /Invalid --secret: expected lowercase hex digits \[0-9a-f\] only/,
  ],
];

Deno.test("duet dlog rejects malformed input with exit 2 and one line naming the option", async () => {
  for (const [label, args, message] of MALFORMED_DLOG) {
    const { code, out, err } = await duet(args);
    assert.equal(code, 2, label);
    assert.equal(out, "", label);
    assert.match(err, message, label);
    assert.equal(err.trim().split("\n").length, 1, `${label}: one line, no stack trace`);
  }
});

Deno.test("duet dlog with - and nothing on standard input says so (exit 2)", async () => {
  for (
    const [args, option] of [
      [["prove", "--sid", "s", "--pid", "1", "--secret", "-"], "--secret"],
      [["verify", "--sid", "s", "--pid", "1", "--proof", "-"], "--proof"],
    ] as const
  ) {
    for (const stdin of ["", " \n"]) {
      const { code, out, err } = await duet(["dlog", ...args], stdin);
      assert.deepEqual([code, out], [2, ""]);
      assert.match(
        err,
        new RegExp(`Invalid ${option}: - reads it from standard input, which was empty`),
      );
    }
  }
});

Deno.test("duet reports unknown commands, unknown options and missing options with exit 2", async () => {
  const cases: [string[], RegExp][] = [
    [["frobnicate"], /^duet: unknown command 'frobnicate'/],
    [["dlog", "prove", "--sid", "s"], /^duet dlog prove: required option '--pid <pid>'/],
    // An unknown option is named even when required ones are missing too.
    [["dlog", "prove", "--bogus"], /^duet dlog prove: unknown option '--bogus'/],
    [["chat", "--bogus"], /^duet chat: unknown option '--bogus'/],
    [
      ["dlog", "verify", "--sid", "s", "--pid", "1", "--y", yHex, "--proof", "{}", "--bogus"],
      /^duet dlog verify: unknown option '--bogus'/,
    ],
    [["--log-level", "loud", "dlog", "prove"], /argument 'loud' is invalid/],
    // commander's suggestion is kept, on the same line.
    [["pnig"], /^duet: unknown command 'pnig' \(Did you mean ping\?\) \(see --help\)\n$/],
    [
      ["ping", "--cout", "3"],
      /^duet ping: unknown option '--cout' \(Did you mean --count\?\) \(see --help\)\n$/,
    ],
    // A command that runs by itself takes a misspelt subcommand for an argument too many.
    [
      ["syncpoint", "wiat", "x"],
      /^duet syncpoint: unknown command 'wiat' \(Did you mean wait\?\) \(see --help\)\n$/,
    ],
    [["syncpoint", "zzz"], /^duet syncpoint: unknown command 'zzz' \(see --help\)\n$/],
    // commander's "is invalid. expected ..." as one sentence; a negative port is out of range.
    [
      ["ping", "serve", "--port", "-1"],
      /^duet ping serve: option '--port <port>' argument '-1' is invalid: expected a number from 0 to 65535 \(see --help\)\n$/,
    ],
    [
      ["--log-level", "loud", "dlog", "prove"],
      /is invalid: Allowed choices are trace, debug, info, warning, error, fatal \(see --help\)\n$/,
    ],
  ];
  for (const [args, message] of cases) {
    const { code, err } = await duet(args);
    assert.equal(code, 2, args.join(" "));
    assert.match(err, message);
    assert.equal(err.split("\n").length, 2, `${args.join(" ")}: one line`);
  }
});

Deno.test("duet --help, duet dlog verify --help and --version exit 0 on stdout", async () => {
  const root = await duet(["--help"]);
  assert.equal(root.code, 0);
  assert.match(root.out, /Commands:[\s\S]*dlog[\s\S]*serve/);
  const verify = await duet(["dlog", "verify", "--help"]);
  assert.equal(verify.code, 0);
  assert.match(verify.out, /--proof <json> [\s\S]*\(required\)\n +--base/);
  assert.match(verify.out, /DLOG-SECP256K1-SHA256\/v1/);
  const version = await duet(["--version"]);
  assert.deepEqual([version.code, version.out], [0, "0.1.0\n"]);
});

Deno.test("duet --help shows the subcommands; duet help COMMAND... is COMMAND... --help", async () => {
  const root = await duet(["--help"]);
  for (
    const term of [
      "dlog prove|verify [options]",
      "syncpoint [wait ID] [options]",
      "ping [serve] [options]",
    ]
  ) {
    assert.ok(root.out.includes(`  ${term}`), term);
  }
  assert.deepEqual(await duet(["help"]), root);
  for (const words of [["dlog"], ["dlog", "prove"], ["syncpoint", "wait"], ["ping", "serve"]]) {
    const asked = await duet(["help", ...words]);
    assert.equal(asked.code, 0, words.join(" "));
    assert.deepEqual(asked, await duet([...words, "--help"]), words.join(" "));
    assert.match(asked.out, new RegExp(`^Usage: duet ${words.join(" ")} `));
  }
  const unknown = await duet(["help", "dlgo"]);
  assert.equal(unknown.code, 2);
  assert.match(unknown.err, /^duet: unknown command 'dlgo' \(Did you mean dlog\?\)/);
  for (
    const [words, said] of [
      [["dlog", "nosuch"], /^duet dlog: unknown command 'nosuch' \(see --help\)/],
      [["dlog", "prv"], /^duet dlog: unknown command 'prv' \(Did you mean prove\?\)/],
      [["dlog", "prove", "extra"], /^duet dlog prove: unknown command 'extra'/],
    ] as const
  ) {
    const asked = await duet(["help", ...words]);
    assert.deepEqual([asked.code, asked.out], [2, ""], words.join(" "));
    assert.match(asked.err, said);
  }
  assert.deepEqual(await duet(["help", "help"]), root, "help about help is the help");
  const withOption = await duet(["help", "--log-level", "debug", "dlog"]);
  assert.deepEqual(
    withOption,
    await duet(["dlog", "--help"]),
    "a program option's value is no command",
  );
});

Deno.test("deno task duet runs the same CLI as a process (exact exit codes)", async () => {
  const root = new URL("../../", import.meta.url).pathname;
  const task = (args: string[]) =>
    run(Deno.execPath(), ["task", "-q", "duet", ...args], { cwd: root });
  const proved = await task(["dlog", "prove", "--sid", "s", "--pid", "9", "--secret", secretHex]);
  assert.equal(proved.code, 0, proved.stderr);
  const { y: printedY, proof } = JSON.parse(proved.stdout);
  const verified = await task([
    "dlog",
    "verify",
    "--sid",
    "s",
    "--pid",
    "9",
    "--y",
    printedY,
    "--proof",
    JSON.stringify(proof),
  ]);
  assert.deepEqual([verified.code, verified.stdout], [0, "valid\n"]);
  const rejected = await task([
    "dlog",
    "verify",
    "--sid",
    "t",
    "--pid",
    "9",
    "--y",
    printedY,
    "--proof",
    JSON.stringify(proof),
  ]);
  assert.deepEqual([rejected.code, rejected.stdout], [1, "invalid\n"]);
  const malformed = await task([
    "dlog",
    "verify",
    "--sid",
    "t",
    "--pid",
    "9",
    "--y",
    "zz",
    "--proof",
    "{}",
  ]);
  assert.equal(malformed.code, 2);
  assert.doesNotMatch(malformed.stderr, /at .*\.ts:\d+/, "no stack trace");
});

Deno.test("every server command explains a --host it cannot listen on (exit 2) and a port in use", async () => {
  for (const command of [["syncpoint"], ["ping", "serve"], ["chat-server"]]) {
    const name = command.join(" ");
    const foreign = await duet([...command, "--host", "192.0.2.1", "--port", "0"]);
    assert.equal(foreign.code, 2, `${name}: ${foreign.err}`);
    assert.match(
      foreign.err,
      /192\.0\.2\.1 is not an address of this machine \(--host 127\.0\.0\.1/,
    );
    const unresolved = await duet([...command, "--host", "999.1.1.1", "--port", "0"]);
    assert.equal(unresolved.code, 2, `${name}: ${unresolved.err}`);
    assert.match(unresolved.err, /cannot listen on 999\.1\.1\.1: no such host/);
    using taken = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const port = String(taken.addr.port);
    // The chat server finds the port taken before it makes its database: nothing is left.
    const dir = await Deno.makeTempDir();
    const store = name === "chat-server" ? ["--data-dir", `${dir}/db`] : [];
    const busy = await duet([...command, "--host", "127.0.0.1", "--port", port, ...store]);
    assert.equal(busy.code, 1, `${name}: ${busy.err}`);
    assert.match(busy.err, new RegExp(`127\\.0\\.0\\.1:${port} is already in use; choose another`));
    assert.deepEqual(await Array.fromAsync(Deno.readDir(dir)), [], `${name}: nothing made`);
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("an error names its command even when a program option comes first", async () => {
  for (
    const args of [
      ["--log-level", "debug", "syncpoint", "--port", "0", "--host", "203.0.113.9"],
      ["-q", "syncpoint", "--port", "0", "--host", "203.0.113.9"],
      ["syncpoint", "--log-level", "warning", "--port", "0", "--host", "203.0.113.9"],
    ]
  ) {
    const { code, err } = await inProcess(args);
    assert.equal(code, 2, err);
    assert.match(err, /^duet syncpoint: cannot listen on 203\.0\.113\.9/, args.join(" "));
  }
});

Deno.test("every command's help: defaults written as commander writes them, required options marked", async () => {
  let required = 0;
  for (const [, command] of await everyCommand()) {
    for (const option of command.options) {
      const where = `${command.name()} ${option.flags}`;
      assert.doesNotMatch(option.description, /\(default [^:]/, `${where}: "(default: ...)"`);
      if (option.description.endsWith("(required)")) required++;
      assert.equal(option.mandatory, false, `${where}: checked after unknown options instead`);
    }
  }
  // chat's --server, --name, --room; dlog prove's and verify's --sid, --pid, --secret/--proof.
  assert.ok(required >= 9, `${required} options marked (required)`);
});

Deno.test("duet dlog prove's output feeds duet dlog verify --proof - as it is; a Y in both places must agree", async () => {
  const proved = await duet(["dlog", "prove", "--sid", "s", "--pid", "4", "--secret", secretHex]);
  assert.equal(proved.code, 0, proved.err);
  const verify = (args: string[]) =>
    inProcess(["dlog", "verify", "--sid", "s", "--pid", "4", "--proof", "-", ...args], proved.out);
  assert.deepEqual(await verify([]), { code: 0, out: "valid\n", err: "" });
  assert.deepEqual((await verify(["--y", yHex])).code, 0, "the same Y given twice");
  const other = encodePoint(G.multiply(2n));
  const differs = await verify(["--y", other]);
  assert.equal(differs.code, 2);
  assert.match(differs.err, /^duet dlog verify: --y differs from the y in --proof/);
  // The proof alone still needs --y.
  const alone = JSON.stringify(JSON.parse(proved.out).proof);
  const noY = await inProcess(["dlog", "verify", "--sid", "s", "--pid", "4", "--proof", alone]);
  assert.equal(noY.code, 2);
  assert.match(noY.err, /required option '--y <hex66>' not specified/);
  // A broken proof is reported as such, --y or not.
  const broken = await inProcess([
    "dlog",
    "verify",
    "--sid",
    "s",
    "--pid",
    "4",
    "--proof",
    "notjson",
  ]);
  assert.equal(broken.code, 2);
  assert.match(broken.err, /^duet dlog verify: Invalid --proof: /);
});

Deno.test("duet whose reader went away (| head) ends quietly with 141, as on SIGPIPE", async () => {
  const root = new URL("../../", import.meta.url).pathname;
  const { code, stdout, stderr } = await run("bash", [
    "-c",
    `set -o pipefail; ${Deno.execPath()} task -q duet dlog prove --sid s --pid 1 ` +
    `--secret ${secretHex} | true; echo "status $?"`,
  ], { cwd: root });
  assert.equal(code, 0, stderr);
  assert.equal(stdout, "status 141\n");
  assert.equal(stderr, "", "no Broken pipe line");
});

Deno.test("duet dlog reading - from stdin takes up to 64 KiB, and says so of more or of a directory: exit 2", async () => {
  const root = new URL("../../", import.meta.url).pathname;
  const prove = `${Deno.execPath()} run -P apps/cli/main.ts dlog prove --sid s --pid 1 --secret -`;
  const padded = (bytes: number) => `${secretHex}\n`.padEnd(bytes, " ");
  const cases: [string, string, number, RegExp][] = [
    ["64 KiB", `printf '%s' '${padded(65536)}' | ${prove}`, 0, /^$/],
    [
      "64 KiB and a byte",
      `printf '%s' '${padded(65537)}' | ${prove}`,
      2,
      /^duet dlog prove: Invalid --secret: - reads it from standard input, which holds more than 64 KiB \(see --help\)\n$/,
    ],
    [
      "a directory",
      `${prove} < /`,
      2,
      /^duet dlog prove: Invalid --secret: - reads it from standard input, which is a directory \(see --help\)\n$/,
    ],
  ];
  for (const [label, command, status, stderr] of cases) {
    const result = await run("bash", ["-c", `${command} 2>&1 >/dev/null; echo "status $?"`], {
      cwd: root,
    });
    const said = result.stdout.replace(/status \d+\n$/, "").replace(/^Warning .*\n/m, "");
    assert.equal(result.stdout.match(/status (\d+)\n$/)?.[1], String(status), `${label}: ${said}`);
    assert.match(said, stderr, label);
  }
});

/** read(2)'s system call number, as /proc/PID/task/TID/syscall shows it (Linux). */
const READ_SYSCALL = { x86_64: 0, aarch64: 63 }[Deno.build.arch];

/**
 * Whether process `pid` is blocked reading its standard input: one of its threads is in
 * read(2) on a descriptor that is the same pipe as its fd 0 (Deno reads a duplicate of it).
 * That read starts after the CLI's stop-signal listeners are in place. The signal mask in
 * /proc (SigCgt) cannot say so: Deno catches SIGHUP, SIGINT and SIGTERM itself as soon as
 * the first listener is added, and acts out the default for a signal with no listener yet,
 * so a SIGTERM sent between the SIGINT and SIGTERM listeners killed the process (143).
 */
async function readingStdin(pid: number): Promise<boolean> {
  if (READ_SYSCALL === undefined) throw new Error(`no read(2) number for ${Deno.build.arch}`);
  const proc = `/proc/${pid}`;
  const stdin = await Deno.readLink(`${proc}/fd/0`).catch(() => undefined);
  if (stdin === undefined) return false;
  for await (const task of Deno.readDir(`${proc}/task`)) {
    const call = await Deno.readTextFile(`${proc}/task/${task.name}/syscall`).catch(() => "");
    const [number, fd] = call.trim().split(" ");
    if (Number(number) !== READ_SYSCALL || fd === undefined) continue;
    const target = await Deno.readLink(`${proc}/fd/${Number(fd)}`).catch(() => undefined);
    if (target === stdin) return true;
  }
  return false;
}

Deno.test("duet dlog reading - from stdin: a stop signal ends it with 130, never acting on what was read", async () => {
  const root = new URL("../../", import.meta.url).pathname;
  const proved = await duet(["dlog", "prove", "--sid", "s", "--pid", "1", "--secret", secretHex]);
  const cases = [
    ["verify", "--sid", "s", "--pid", "1", "--proof", "-"],
    ["prove", "--sid", "s", "--pid", "1", "--secret", "-"],
  ];
  const inputs = [proved.out, `${secretHex}\n`];
  for (const [i, args] of cases.entries()) {
    for (const signal of ["SIGINT", "SIGTERM"] as const) {
      const child = new Deno.Command(Deno.execPath(), {
        args: ["run", "-P", "apps/cli/main.ts", "dlog", ...args],
        cwd: root,
        stdin: "piped",
        stdout: "piped",
        stderr: "piped",
      }).spawn();
      const writer = child.stdin.getWriter();
      // The whole input, but no end of input: the command must wait for more.
      await writer.write(new TextEncoder().encode(inputs[i]));
      let exited = false;
      child.status.then(() => (exited = true));
      for (const deadline = Date.now() + 20_000; !(await readingStdin(child.pid));) {
        if (exited || Date.now() > deadline) {
          if (!exited) child.kill("SIGKILL");
          await writer.close().catch(() => {});
          const { stderr } = await child.output();
          assert.fail(`${args[0]}: never read stdin\n${new TextDecoder().decode(stderr)}`);
        }
        await new Promise((r) => setTimeout(r, 20));
      }
      child.kill(signal);
      let timer: ReturnType<typeof setTimeout> | undefined;
      const output = child.output();
      const ended = await Promise.race([
        output,
        new Promise<undefined>((r) => timer = setTimeout(() => r(undefined), 10_000)),
      ]);
      clearTimeout(timer);
      await writer.close().catch(() => {});
      const { code, signal: killedBy, stdout } = ended ?? await output;
      assert.ok(ended, `${args[0]} ${signal}: still running 10 s after the signal`);
      // Exited by itself (killed by SIGINT would also read as 130).
      assert.deepEqual(
        [code, killedBy, new TextDecoder().decode(stdout)],
        [130, null, ""],
        `${args[0]} ${signal}`,
      );
    }
  }
});

Deno.test("duet syncpoint: a --max-timeout-ms below --timeout-ms names both values, and a default as such", async () => {
  const byDefault = await duet(["syncpoint", "--port", "0", "--max-timeout-ms", "1000"]);
  assert.equal(byDefault.code, 2);
  assert.match(byDefault.err, /--max-timeout-ms 1000 is below --timeout-ms 10000 \(its default\);/);
  const given = await duet([
    "syncpoint",
    "--port",
    "0",
    "--max-timeout-ms",
    "1000",
    "--timeout-ms",
    "2000",
  ]);
  assert.equal(given.code, 2);
  assert.match(given.err, /--max-timeout-ms 1000 is below --timeout-ms 2000; /);
});

Deno.test("duet ping serve: an --announce list that names nothing is refused before anything listens", async () => {
  for (const list of ["", ",,", " , "]) {
    const { code, out, err } = await duet(["ping", "serve", "--port", "0", "--announce", list]);
    assert.deepEqual([code, out], [2, ""], JSON.stringify(list));
    assert.match(
      err,
      /^duet ping serve: --announce ".*" names no interface: give names or addresses/,
    );
    assert.equal(err.trim().split("\n").length, 1, err);
  }
});
