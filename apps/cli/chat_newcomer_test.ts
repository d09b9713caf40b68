// `duet chat --line` as a newcomer meets it, as real processes: the peer leaving is told
// (the server says so: protocol version 4, `presence`); a third party in a full room is
// told to choose another room, exits 1 and keeps nothing to send; a server that is not
// there, a host that does not resolve, a server that is no chat server, and a server
// killed mid-chat are each told in a sentence of ours (what happened, what to do), never
// the runtime's text alone; a reconnection delay never prints as "0.0 s".
import assert from "node:assert/strict";
import { freePort, waitFor } from "@duet/testkit";
import { type LineParty, spawnDuet, spawnLineParty } from "./testdata/spawn.ts";
import { ChatStore, KeyStore, openPglite, startChatServer } from "@duet/chat";

const options = { sanitizeOps: false, sanitizeResources: false };

function party(server: string, name: string, room: string, keyStore: string, extra: string[] = []) {
  return spawnLineParty([
    "chat",
    ...["--server", server, "--name", name, "--room", room, "--key-store", keyStore, "--line"],
    ...extra,
  ]);
}

const err = (p: LineParty) => p.process.lines.stderr.join("\n");
const said = (p: LineParty, what: string | RegExp) => () =>
  p.process.lines.stderr.some((l) => typeof what === "string" ? l.includes(what) : what.test(l));

/** No status line prints a delay as 0.0 s, and no runtime text comes without ours. */
function assertHonest(p: LineParty): void {
  assert.doesNotMatch(err(p), /\b0\.0 s/, err(p));
  assert.doesNotMatch(err(p), /os error|failed to lookup|^connection failed:/m, err(p));
}

Deno.test({
  name: "duet chat --line: the peer leaving is told ([bob has left]); a third party in the " +
    "full room is told to choose another room, exits 1 and keeps nothing to send",
  ...options,
  async fn() {
    const dir = await Deno.makeTempDir();
    const server = await startChatServer({
      store: new ChatStore(await openPglite(`${dir}/db`)),
      port: 0,
    });
    const at = `127.0.0.1:${server.addr.port}`;
    const alice = party(at, "alice", "tea", `${dir}/alice.sqlite`);
    try {
      await waitFor(said(alice, "[in room tea"), "alice in", 20_000);
      const bob = party(at, "bob", "tea", `${dir}/bob.sqlite`);
      await waitFor(said(alice, "[bob is here now]"), "alice told bob came", 20_000);
      await waitFor(said(bob, "[alice is here]"), "bob told alice is there", 20_000);
      assert.equal(await bob.end(), 0, err(bob));
      await waitFor(said(alice, "[bob has left]"), "alice told bob left", 20_000);

      // Carol, third, with two lines typed: refused, nothing promised, nothing kept.
      const carol = party(at, "carol", "tea", `${dir}/carol.sqlite`);
      await carol.say("hello?\nanyone?\n");
      const code = await carol.end();
      const text = err(carol);
      assert.equal(code, 1, text);
      assert.match(text, /already has its two people.*choose another room with --room/);
      assert.match(text, /Nothing was sent/);
      assert.doesNotMatch(text, /next start|goes out|go out/, "nothing is promised");
      const keys = await KeyStore.open(`${dir}/carol.sqlite`);
      try {
        const conversation = { service: keys.serviceKey(at), room: "tea", name: "carol" };
        assert.equal(keys.outboxSize(conversation), 0, "nothing waits to be sent");
      } finally {
        keys.close();
      }
      assertHonest(alice);
      assertHonest(carol);
    } finally {
      await alice.end();
      await server.shutdown();
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "duet chat --line: no server, an unknown host, a server that is no chat server: a " +
    "sentence of ours each, naming --server; exit 1 with the line kept for the next start",
  ...options,
  async fn() {
    const dir = await Deno.makeTempDir();
    const http = Deno.serve(
      { port: 0, hostname: "127.0.0.1", onListen() {} },
      () => new Response("not chat"),
    );
    try {
      const cases: [string, RegExp][] = [
        [
          `127.0.0.1:${freePort()}`,
          /^Nothing answers at 127\.0\.0\.1:\d+: is the chat server running/m,
        ],
        ["nohost.invalid:7070", /^The host nohost\.invalid is not known .*check --server/m],
        [
          `127.0.0.1:${http.addr.port}`,
          /does not answer in duet chat's protocol .*duet chat-server/m,
        ],
      ];
      for (const [server, expected] of cases) {
        const p = party(server, "alice", "tea", `${dir}/k.sqlite`, ["--linger-ms", "300"]);
        await p.say("hello\n");
        await waitFor(said(p, expected), `told about ${server}`, 20_000).catch((e) => {
          throw new Error(`${e.message}\n${err(p)}`);
        });
        assert.equal(await p.end(), 1, err(p));
        assert.match(err(p), /The client keeps trying; Ctrl-C stops it\./);
        assert.match(err(p), /go(es)? out on the next start/, "a network failure keeps the line");
        assertHonest(p);
      }
    } finally {
      await http.shutdown();
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "duet chat --line: a server killed mid-chat is told as a lost connection, then as " +
    "nothing answering; SIGTERM ends the client",
  ...options,
  async fn() {
    const dir = await Deno.makeTempDir();
    const port = freePort();
    const server = spawnDuet(
      ["chat-server", "--port", String(port), "--data-dir", `${dir}/db`],
      { direct: true },
    );
    let alice: LineParty | undefined;
    try {
      await waitFor(() => server.lines.stdout.some((l) => l.startsWith("chat ")), "server", 30_000);
      alice = party(`127.0.0.1:${port}`, "alice", "tea", `${dir}/alice.sqlite`);
      await waitFor(said(alice, "[in room tea"), "alice in", 20_000);
      server.child.kill("SIGKILL");
      await server.child.status;
      await waitFor(said(alice, "Lost the connection to the server"), "lost", 20_000);
      await waitFor(said(alice, /^Nothing answers at/), "nothing answers", 20_000);
      alice.process.child.kill("SIGTERM");
      assert.equal((await alice.process.child.status).code, 0, err(alice));
      assertHonest(alice);
    } finally {
      try {
        server.child.kill("SIGKILL");
      } catch { /* ended */ }
      await server.done.catch(() => {});
      await alice?.end();
      await Deno.remove(dir, { recursive: true });
    }
  },
});
