// The chat guarantee end to end, with real `duet` processes: each sender's messages arrive
// once and in the order typed - a burst piped into line mode, with history after restarts;
// two clients on the default key store at once; one service reached by two address
// spellings is one identity; line mode ends on end of input and on SIGTERM.
import assert from "node:assert/strict";
import { waitFor } from "@duet/testkit";
import { type LineParty, spawnLineParty } from "./testdata/spawn.ts";
import { ChatStore, openPglite, type RunningChatServer, startChatServer } from "@duet/chat";

const options = { sanitizeOps: false, sanitizeResources: false };

async function server(dir: string): Promise<RunningChatServer> {
  return await startChatServer({ store: new ChatStore(await openPglite(dir)), port: 0 });
}

type Party = LineParty;

/** `duet chat --line` with `--key-store` unless `home` is given (then the default path). */
function party(
  address: string,
  name: string,
  room: string,
  store: { keyStore: string } | { home: string },
  extra: string[] = [],
): Party {
  return spawnLineParty([
    "chat",
    "--server",
    address,
    "--name",
    name,
    "--room",
    room,
    ...("keyStore" in store ? ["--key-store", store.keyStore] : []),
    "--line",
    ...extra,
  ], "home" in store ? { env: { HOME: store.home, XDG_DATA_HOME: "" } } : {});
}

const out = (p: Party) => p.process.lines.stdout;
const err = (p: Party) => p.process.lines.stderr.join("\n");
const from = (p: Party, sender: string) =>
  out(p).filter((l) => l.startsWith(`${sender}: `)).map((l) => l.slice(sender.length + 2));

Deno.test({
  name: "duet chat --line: 200 lines piped at once reach the peer once each, in the order " +
    "typed, and history after a restart shows them in that order too",
  ...options,
  async fn() {
    const dir = await Deno.makeTempDir();
    const running = await server(`${dir}/db`);
    const address = `127.0.0.1:${running.addr.port}`;
    const bob = party(address, "bob", "burst", { keyStore: `${dir}/bob.sqlite` });
    const alice = party(address, "alice", "burst", { keyStore: `${dir}/alice.sqlite` }, [
      "--linger-ms",
      "60000",
    ]);
    let again: Party | undefined;
    try {
      await waitFor(() => err(alice).includes("key agreed with bob"), "the key", 20_000);
      const lines = Array.from({ length: 200 }, (_, i) => `m${i + 1}`);
      await alice.say(lines.join("\n") + "\n");
      assert.equal(await alice.end(), 0, err(alice));
      await waitFor(() => from(bob, "alice").length >= 200, "200 at bob", 30_000);
      assert.deepEqual(from(bob, "alice"), lines, "live, in order, once");
      assert.equal(await bob.end(), 0);
      again = party(address, "bob", "burst", { keyStore: `${dir}/bob.sqlite` }, [
        "--linger-ms",
        "0",
      ]);
      await waitFor(() => from(again!, "alice").length >= 200, "history", 30_000);
      assert.deepEqual(from(again, "alice"), lines, "history: in order, once");
    } finally {
      await alice.end();
      await bob.end();
      await again?.end();
      await running.shutdown();
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "duet chat --line: two clients on the default key store at once both work",
  ...options,
  async fn() {
    const dir = await Deno.makeTempDir();
    const running = await server(`${dir}/db`);
    const address = `127.0.0.1:${running.addr.port}`;
    const home = `${dir}/home`;
    const rounds = 3;
    try {
      for (let round = 0; round < rounds; round++) {
        const room = `two-${round}`;
        const alice = party(address, "alice", room, { home });
        const bob = party(address, "bob", room, { home });
        try {
          await waitFor(
            () => err(alice).includes("key agreed") && err(bob).includes("key agreed"),
            "both keys",
            20_000,
          ).catch((error) => {
            throw new Error(`${error.message}\nalice: ${err(alice)}\nbob: ${err(bob)}`);
          });
          await alice.say("hello bob\n");
          await bob.say("hello alice\n");
          await waitFor(() => from(bob, "alice").includes("hello bob"), "alice to bob", 20_000);
          await waitFor(() => from(alice, "bob").includes("hello alice"), "bob to alice", 20_000);
          assert.equal(await alice.end(), 0, err(alice));
          assert.equal(await bob.end(), 0, err(bob));
          assert.doesNotMatch(err(alice) + err(bob), /locked/);
        } finally {
          await alice.end();
          await bob.end();
        }
      }
      const mode = (await Deno.stat(`${home}/.local/share/duet/chat-keys.sqlite`)).mode! & 0o777;
      assert.equal(mode, 0o600);
    } finally {
      await running.shutdown();
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "duet chat --line: localhost and 127.0.0.1 reach one service and are one identity: " +
    "no key change for the peer, nothing stranded",
  ...options,
  async fn() {
    const dir = await Deno.makeTempDir();
    const running = await server(`${dir}/db`);
    const port = running.addr.port;
    const bob = party(`127.0.0.1:${port}`, "bob", "spell", { keyStore: `${dir}/bob.sqlite` });
    try {
      const first = party(`127.0.0.1:${port}`, "alice", "spell", {
        keyStore: `${dir}/alice.sqlite`,
      });
      await waitFor(() => err(first).includes("key agreed with bob"), "the key", 20_000);
      await first.say("by number\n");
      assert.equal(await first.end(), 0, err(first));
      const second = party(`localhost:${port}`, "alice", "spell", {
        keyStore: `${dir}/alice.sqlite`,
      });
      await second.say("by name\n");
      assert.equal(await second.end(), 0, err(second));
      await waitFor(() => from(bob, "alice").length >= 2, "both at bob", 20_000);
      assert.deepEqual(from(bob, "alice"), ["by number", "by name"]);
      assert.doesNotMatch(err(bob), /CHANGED/, "the same key");
      assert.doesNotMatch(err(second), /key agreed/, "no new agreement: the key is known");
    } finally {
      await bob.end();
      await running.shutdown();
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "duet chat --line: an empty input ends the client, with the server up (exit 0) or " +
    "down (exit 1 once --linger-ms passes, saying so); SIGTERM ends it too",
  ...options,
  async fn() {
    const dir = await Deno.makeTempDir();
    const running = await server(`${dir}/db`);
    const address = `127.0.0.1:${running.addr.port}`;
    try {
      const empty = party(address, "alice", "eof", { keyStore: `${dir}/a.sqlite` });
      assert.equal(await empty.end(), 0, err(empty));
      const nowhere = party("127.0.0.1:1", "alice", "eof", { keyStore: `${dir}/b.sqlite` }, [
        "--linger-ms",
        "300",
      ]);
      assert.equal(await nowhere.end(), 1, err(nowhere));
      assert.match(err(nowhere), /never got into the room: no welcome from 127\.0\.0\.1:1 within/);
      const waiting = party(address, "alice", "eof", { keyStore: `${dir}/c.sqlite` });
      await waitFor(() => err(waiting).includes("[connected]"), "connected", 20_000);
      waiting.process.child.kill("SIGTERM");
      const { code } = await waiting.process.child.status;
      assert.equal(code, 0, err(waiting));
      await waiting.end();
    } finally {
      await running.shutdown();
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "duet chat --line: /key in a script waits for the key; a slash word that is no " +
    "command is not sent, and the exit status says a line was not sent",
  ...options,
  async fn() {
    const dir = await Deno.makeTempDir();
    const running = await server(`${dir}/db`);
    const address = `127.0.0.1:${running.addr.port}`;
    const alice = party(address, "alice", "cmd", { keyStore: `${dir}/alice.sqlite` });
    try {
      // Bob's first lines: /key before any key exists, then a typo'd command.
      const bob = party(address, "bob", "cmd", { keyStore: `${dir}/bob.sqlite` });
      await bob.say("/key\n/exit\n//slash is text\n");
      assert.equal(await bob.end(), 1, err(bob));
      assert.match(out(bob)[0] ?? "", /^[0-9a-f]{64}$/, "the key's SHA-256 on stdout");
      assert.match(err(bob), /\/exit is not a command, so it was not sent/);
      assert.match(err(bob), /1 line not sent/);
      await waitFor(() => from(alice, "bob").length >= 1, "bob's text", 20_000);
      assert.deepEqual(from(alice, "bob"), ["/slash is text"], "/exit never reached alice");
    } finally {
      await alice.end();
      await running.shutdown();
      await Deno.remove(dir, { recursive: true });
    }
  },
});
