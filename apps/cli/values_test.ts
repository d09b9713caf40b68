// Every number a user gives any command is checked by the field's rules: a port, a count, a
// size, a duration. A bad one is exit 2 and one line naming the option, before anything runs.
import assert from "node:assert/strict";
import { everyCommand } from "./testdata/commands.ts";
import { inProcess } from "./testdata/in_process.ts";

/** Values no option of these kinds accepts, whatever its range. */
const BAD: Record<string, string[]> = {
  port: ["65536", "99999", "-1", "1.5", "80x", "", "0x50"],
  ms: ["-1", "1.5e400", "soon", "", "NaN", "Infinity"],
  n: ["-1", "1.5", "many", "", "1e400"],
  bytes: ["-1", "1.5", "lots", "", "1e400"],
  days: ["-1", "0.5x", "", "forever"],
};

Deno.test("every port, count, size and duration option of every command refuses what its field does not allow: exit 2, one line naming it", async () => {
  let checked = 0;
  for (const [path, command] of await everyCommand()) {
    for (const option of command.options) {
      const kind = option.flags.match(/<(port|ms|n|bytes|days)>$/)?.[1];
      if (!kind || !option.long) continue;
      for (const value of BAD[kind]!) {
        const { code, out, err } = await inProcess([...path, option.long, value]);
        const where: string = `duet ${path.join(" ")} ${option.long} ${JSON.stringify(value)}`;
        assert.equal(code, 2, `${where}: exit status (${err})`);
        assert.equal(out, "", where);
        const lines = err.trimEnd().split("\n");
        assert.equal(lines.length, 1, `${where}: one line: ${err}`);
        assert.ok(
          lines[0]!.startsWith(`duet ${path.join(" ")}: `) && lines[0]!.includes(option.long),
          `${where}: names the command and the option: ${err}`,
        );
        checked++;
      }
    }
  }
  assert.ok(checked > 150, `${checked} values checked`);
});

Deno.test("a port inside an address or URL, and a duration that the protocol rules out, are checked the same way: exit 2, one line naming the option", async () => {
  const cases: [string[], string][] = [
    [["chat", "--server", "127.0.0.1:99999", "--name", "a", "--room", "r"], "--server"],
    [["chat", "--server", "127.0.0.1:0", "--name", "a", "--room", "r"], "--server"],
    [["ping", "--nameserver", "127.0.0.1:70000"], "--nameserver"],
    [["ping", "--url", "https://127.0.0.1:99999/ping"], "--url"],
    [["syncpoint", "wait", "x", "--url", "http://127.0.0.1:99999"], "--url"],
    [["syncpoint", "--redis-url", "redis://127.0.0.1:99999"], "--redis-url"],
    // Shorter than two client heartbeats: healthy clients would be closed as idle.
    [["chat-server", "--idle-timeout-ms", "15000"], "--idle-timeout-ms"],
  ];
  for (const [args, option] of cases) {
    const { code, err } = await inProcess(args);
    assert.equal(code, 2, `${args.join(" ")}: ${err}`);
    assert.equal(err.trimEnd().split("\n").length, 1, err);
    assert.ok(err.includes(option), `${args.join(" ")} names ${option}: ${err}`);
  }
});

Deno.test("every option that takes a value, followed by another option instead of a value, says so: exit 2, one line naming both", async () => {
  let checked = 0;
  for (const [path, command] of await everyCommand()) {
    const names = command.options.flatMap((o) => [o.long, o.short]).filter((n) => n !== undefined);
    for (const option of command.options) {
      if (!option.required || !option.long) continue;
      // The next option on the list (or --help): what a forgotten value would run into.
      const next = names.find((name) => name !== option.long && name !== option.short)!;
      for (const follower of [next, "--help"]) {
        const { code, out, err } = await inProcess([...path, option.long, follower, "x"]);
        const where: string = `${["duet", ...path].join(" ")} ${option.long} ${follower}`;
        assert.equal(code, 2, `${where}: exit status (${err})`);
        assert.equal(out, "", where);
        assert.equal(err.trimEnd().split("\n").length, 1, `${where}: one line: ${err}`);
        assert.ok(
          err.startsWith(
            `${["duet", ...path].join(" ")}: option '${option.flags}' argument ` +
              `'${follower}' is invalid: ${follower} is an option of its own, so ${option.long} ` +
              `has no value; give it one first (see --help)`,
          ),
          `${where}: ${err}`,
        );
        checked++;
      }
    }
  }
  assert.ok(checked > 100, `${checked} options checked`);
});

Deno.test("every option and argument of every command refuses text the runtime decoded lossily (U+FFFD): exit 2, one line naming it", async () => {
  let checked = 0;
  for (const [path, command] of await everyCommand()) {
    const prefix = ["duet", ...path].join(" ");
    for (const option of command.options) {
      if (!option.required || !option.long) continue;
      const { code, out, err } = await inProcess([...path, option.long, "a\uFFFDb"]);
      const where: string = `${prefix} ${option.long}`;
      assert.deepEqual([code, out], [2, ""], `${where}: ${err}`);
      assert.match(
        err,
        new RegExp(
          `^${prefix}: option '${option.flags}' argument '.*' is invalid: it is not ` +
            `UTF-8 text \\(the runtime reads such bytes as U\\+FFFD.*\\(see --help\\)\\n$`,
        ),
        where,
      );
      checked++;
    }
    // Arguments: a word in each place the command takes one (after its required options).
    if (command.registeredArguments.length === 0) continue;
    const words = command.registeredArguments.map((_, i) => i === 0 ? "a\uFFFDb" : "x");
    const { code, err } = await inProcess([...path, ...words]);
    assert.equal(code, 2, `${prefix} ${words}: ${err}`);
    assert.match(err, /argument '\w+' is invalid: it is not UTF-8 text/, `${prefix}: ${err}`);
    checked++;
  }
  assert.ok(checked > 50, `${checked} values checked`);
});
