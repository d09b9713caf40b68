// `duet chat --line --code` as real processes: one party makes a code (--code new) and the
// other types it back; both say the conversation is verified, and their lines arrive. Through
// a relay that substitutes the keys and answers the code runs under a guess, both exit 1
// saying the code did not match, print nothing as the peer's, and store nothing. A code that
// is not one is a usage error naming what is wrong.
import assert from "node:assert/strict";
import { waitFor } from "@duet/testkit";
import { generateCode } from "@duet/pake";
import { ChatStore, openPglite, startChatServer } from "@duet/chat";
import { startRelay, substitutingRelay } from "@duet/chat/testing";
import { type LineParty, runDuet, spawnLineParty } from "./testdata/spawn.ts";
import { codeOption } from "./commands/_options.ts";

const options = { sanitizeOps: false, sanitizeResources: false };

function party(server: string, name: string, dir: string, code: string, room = "tea") {
  return spawnLineParty([
    "chat",
    ...["--server", server, "--name", name, "--room", room],
    ...["--key-store", `${dir}/${name}.sqlite`, "--line", "--code", code, "--linger-ms", "5000"],
  ]);
}

const err = (p: LineParty) => p.process.lines.stderr.join("\n");
const said = (p: LineParty, what: string | RegExp) => () =>
  p.process.lines.stderr.some((l) => typeof what === "string" ? l.includes(what) : what.test(l));

Deno.test({
  name: "duet chat --line --code: --code new prints a code, the peer types it back, both are " +
    "verified and their lines arrive",
  ...options,
  async fn() {
    const dir = await Deno.makeTempDir();
    const server = await startChatServer({
      store: new ChatStore(await openPglite(`${dir}/db`)),
      port: 0,
    });
    const at = `127.0.0.1:${server.addr.port}`;
    const alice = party(at, "alice", dir, "new");
    try {
      await waitFor(said(alice, /^Your code is /), "the code", 20_000);
      const line = alice.process.lines.stderr.find((l) => l.startsWith("Your code is "))!;
      const code = line.match(
        new RegExp(
          "^Your code is (\\S+) \\(3 words, 33 bits\\)\\. Read it to your peer, who starts " +
            `with: duet chat --server ${at} --room tea --code (\\S+)$`,
        ),
      );
      assert.ok(code && code[1] === code[2], line);
      await alice.say("hello bob\n");
      // Bob types it with spaces and capitals.
      const bob = party(at, "bob", dir, code[1]!.replaceAll("-", " ").toUpperCase());
      await waitFor(said(bob, "[code confirmed: alice has the same code"), "bob verified", 20_000);
      await waitFor(
        said(alice, "[code confirmed: bob has the same code"),
        "alice verified",
        20_000,
      );
      await waitFor(
        () => bob.process.lines.stdout.includes("alice: hello bob"),
        "the line",
        20_000,
      );
      await bob.say("hello alice\n");
      await waitFor(
        () => alice.process.lines.stdout.includes("bob: hello alice"),
        "bob's line",
        20_000,
      );
      assert.equal(await bob.end(), 0, err(bob));
      assert.equal(await alice.end(), 0, err(alice));
      assert.doesNotMatch(err(alice) + err(bob), /WARNING|held back/);
      // Alice again with --code new: confirmed before, so no new code to read out.
      const again = party(at, "alice", dir, "new");
      await waitFor(said(again, /confirmed by a code before/), "the earlier confirmation", 20_000);
      assert.equal(await again.end(), 0, err(again));
      assert.doesNotMatch(err(again), /Your code is/);
    } finally {
      await alice.end();
      await server.shutdown();
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "duet chat --line --code: through a relay in the middle, both exit 1, the code did " +
    "not match, nothing shown and nothing stored",
  ...options,
  async fn() {
    const dir = await Deno.makeTempDir();
    const store = new ChatStore(await openPglite(`${dir}/db`));
    const server = await startChatServer({ store, port: 0 });
    await using relay = startRelay(server.addr.port, substitutingRelay("tea", generateCode().text));
    const at = `127.0.0.1:${relay.port}`;
    const code = generateCode().text;
    const alice = party(at, "alice", dir, code);
    const bob = party(at, "bob", dir, code);
    try {
      await alice.say("for bob only\n");
      await bob.say("for alice only\n");
      const codes = await Promise.all([alice.end(), bob.end()]);
      assert.deepEqual(codes, [1, 1], err(alice) + "\n" + err(bob));
      for (const [p, peer] of [[alice, "bob"], [bob, "alice"]] as const) {
        assert.match(
          err(p),
          new RegExp(
            `duet chat: The code did not match: ${peer} typed another code, or someone in the middle`,
          ),
        );
        assert.match(err(p), /Nothing was sent/);
        assert.match(err(p), /1 message not yet stored; it stays in the outbox/);
        assert.doesNotMatch(err(p), /code confirmed/);
        assert.deepEqual(p.process.lines.stdout, [], "nothing printed as the peer's");
      }
      assert.equal((await store.history("tea", { limit: 10 })).messages.length, 0);
    } finally {
      await alice.end();
      await bob.end();
      await server.shutdown();
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test("duet chat --code: a code that is not one is a usage error naming what is wrong", async () => {
  const cases: [string, RegExp][] = [
    ["7-guitar-orbit-zzzz", /"zzzz" is not a word of the code list/],
    ["guitar-orbit-lazy", /number/],
    ["7-guitar-orbit", /a duet code has 3 words after its number.*this one has 2/],
    ["7-guitar-orbit-lazy-lazy", /this one has 4/],
    ["", /./],
  ];
  for (const [code, expected] of cases) {
    const result = await runDuet([
      "chat",
      ...["--server", "127.0.0.1:1", "--name", "a", "--room", "r", "--line", "--code", code],
    ]);
    assert.equal(result.code, 2, result.err);
    assert.match(result.err, /^duet chat: option '--code <code>' argument .* is invalid: /);
    assert.match(result.err, expected);
  }
  const help = await runDuet(["chat", "--help"]);
  assert.match(help.out, /--code <code>/);
  assert.match(help.out, /Meeting by a code/);
});

Deno.test("codeOption: new in any case, a code in its canonical text, dashes of any kind", () => {
  assert.equal(codeOption("NEW"), "new");
  assert.equal(codeOption(" New "), "new");
  assert.equal(codeOption("7 GUIT orbi.lazy"), "7-guitar-orbit-lazy");
  assert.equal(codeOption("7—guitar–orbit−lazy"), "7-guitar-orbit-lazy");
  assert.throws(() => codeOption("newt"), /a code starts with its number/);
});
