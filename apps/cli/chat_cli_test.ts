// `duet chat --line` as real processes against a real server (PGlite in a directory):
// messages both ways with the same key on both sides, history after a restart, an outbox
// that survives a server restart (with the refusals told once), a tampered message, a
// peer's escape sequences, over-long messages, a changed peer key; and the commands' usage
// errors and an unreachable database.
import assert from "node:assert/strict";
import { findPostgres, freePort, testWith, waitFor } from "@duet/testkit";
import { type LineParty, spawnDuet, spawnLineParty } from "./testdata/spawn.ts";
import {
  ChatClient,
  ChatStore,
  KeyStore,
  MAX_TEXT_BYTES,
  openPglite,
  type RunningChatServer,
  startChatServer,
} from "@duet/chat";

const options = { sanitizeOps: false, sanitizeResources: false };
const postgresRequirement = await findPostgres();

interface Party extends LineParty {
  /** Sends one line (the line break is added). */
  say(line: string): Promise<void>;
}

function party(
  port: number,
  name: string,
  room: string,
  keyStore: string,
  extra: string[] = [],
): Party {
  const spawned = spawnLineParty([
    "chat",
    "--server",
    `127.0.0.1:${port}`,
    "--name",
    name,
    "--room",
    room,
    "--key-store",
    keyStore,
    "--line",
    ...extra,
  ]);
  return { ...spawned, say: (line) => spawned.say(`${line}\n`) };
}

async function server(dir: string, port = 0): Promise<RunningChatServer & { store: ChatStore }> {
  const store = new ChatStore(await openPglite(dir));
  return Object.assign(await startChatServer({ store, port }), { store });
}

const out = (p: Party) => p.process.lines.stdout;
const err = (p: Party) => p.process.lines.stderr.join("\n");

Deno.test("duet chat, duet chat-server: usage errors exit 2 with one line", async () => {
  const dir = await Deno.makeTempDir();
  await Deno.writeTextFile(`${dir}/file`, "");
  try {
    const at = ["--server", "127.0.0.1:1", "--key-store", `${dir}/k.sqlite`];
    for (
      const [args, message] of [
        [["chat", "--name", "a", "--room", "r"], /required option '--server/],
        [["chat", ...at, "--room", "r"], /required option '--name/],
        [["chat", "--server", "nohost", "--name", "a", "--room", "r"], /expected HOST:PORT/],
        [["chat", ...at, "--name", "a b", "--room", "r"], /1-32 of A-Z/],
        [["chat", ...at, "--name", "a", "--room", "r/s"], /1-64 of A-Z/],
        [["chat-server", "--port", "70000"], /from 0 to 65535/],
        [["chat-server", "--database-url", "http://x/"], /postgres/],
        // No terminal (stdin and stdout are pipes here) and no --line: no blank interface.
        [["chat", ...at, "--name", "a", "--room", "r"], /needs a terminal .* use --line/],
        // A mistyped key store path is said, not made.
        [
          ["chat", "--server", "127.0.0.1:1", "--key-store", `${dir}/no/such/k.sqlite`, "--line"]
            .concat(["--name", "a", "--room", "r"]),
          /--key-store .*\/no\/such\/k\.sqlite: .*\/no\/such does not exist \(create it first/,
        ],
        [
          ["chat", "--server", "127.0.0.1:1", "--key-store", `${dir}/file/k.sqlite`, "--line"]
            .concat(["--name", "a", "--room", "r"]),
          /\/file is not a directory/,
        ],
      ] as const
    ) {
      const child = spawnDuet([...args], { direct: true, stdin: true });
      await child.child.stdin.close();
      const { code } = await child.child.status;
      await child.done;
      const text = child.lines.stderr.join("\n");
      assert.equal(code, 2, `${args.join(" ")}: ${text}`);
      assert.match(text, message);
      assert.equal(child.lines.stderr.length, 1, text);
    }
    await assert.rejects(Deno.stat(`${dir}/no`), Deno.errors.NotFound, "no directory made");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("duet chat-server: an unreachable database is waited for, named without its password; SIGTERM ends the wait", async () => {
  const port = freePort(); // nothing listens there
  const child = spawnDuet(
    [
      "chat-server",
      "--port",
      "0",
      "--database-url",
      `postgres://chat:secret@127.0.0.1:${port}/chat`,
    ],
    { direct: true },
  );
  try {
    await waitFor(
      () => child.lines.stderr.some((l) => l.includes("Waiting for the database")),
      "the waiting line",
      20_000,
    );
    const text = child.lines.stderr.join("\n");
    assert.match(
      text,
      new RegExp(
        `Waiting for the database \\("?PostgreSQL at postgres://chat:\\*\\*\\*@127\\.0\\.0\\.1:${port}/chat"?\\): .*ECONNREFUSED`,
      ),
    );
    assert.ok(!text.includes("secret"), "no password in the message");
    assert.deepEqual(child.lines.stdout, [], "not listening yet");
  } finally {
    child.child.kill("SIGTERM");
  }
  const { code } = await child.child.status;
  await child.done;
  assert.equal(code, 0, child.lines.stderr.join("\n"));
});

testWith(postgresRequirement, {
  name: "duet chat-server: a database that refuses us is named in one line, exit 1",
  async fn() {
    const url = new URL(postgresRequirement.url);
    url.password = "secret";
    url.pathname = `/duet_no_such_database_${crypto.randomUUID().slice(0, 8)}`;
    const child = spawnDuet(["chat-server", "--port", "0", "--database-url", url.href], {
      direct: true,
    });
    const { code } = await child.child.status;
    await child.done;
    const text = child.lines.stderr.join("\n");
    assert.equal(code, 1, text);
    assert.match(
      text,
      /^duet chat-server: cannot use the database \(PostgreSQL at postgres:\/\/[^ ]*\*\*\*@[^)]*duet_no_such_database_[^)]*\): .*does not exist/,
    );
    assert.ok(!text.includes("secret"), "no password in the message");
  },
});

Deno.test({
  name: "duet chat --line: two parties exchange messages both ways, see the same key, and " +
    "read the whole history after a restart",
  ...options,
  async fn() {
    const dir = await Deno.makeTempDir();
    let running = await server(`${dir}/db`);
    const port = running.addr.port;
    try {
      const alice = party(port, "alice", "tea", `${dir}/alice.sqlite`);
      await alice.say("hello before bob came"); // waits in the outbox for a key
      const bob = party(port, "bob", "tea", `${dir}/bob.sqlite`);
      await waitFor(
        () => out(bob).includes("alice: hello before bob came"),
        "bob to read alice",
        20_000,
      );
      await bob.say("hi alice, привет 👋");
      await waitFor(
        () => out(alice).includes("bob: hi alice, привет 👋"),
        "alice to read bob",
        20_000,
      );
      await alice.say("/key");
      await bob.say("/key");
      await waitFor(
        () =>
          out(alice).some((l) => /^[0-9a-f]{64}$/.test(l)) &&
          out(bob).some((l) => /^[0-9a-f]{64}$/.test(l)),
        "fingerprints",
      );
      const fingerprint = (p: Party) => out(p).find((l) => /^[0-9a-f]{64}$/.test(l));
      assert.equal(fingerprint(alice), fingerprint(bob), "both see the same key");
      assert.equal(await alice.end(), 0, err(alice));
      assert.equal(await bob.end(), 0, err(bob));
      assert.equal((await Deno.stat(`${dir}/alice.sqlite`)).mode! & 0o777, 0o600);

      // A restarted client reads everything again with its stored key.
      await running.shutdown();
      running = await server(`${dir}/db`, port);
      const again = party(port, "bob", "tea", `${dir}/bob.sqlite`);
      await waitFor(() => out(again).length >= 2, "history", 20_000);
      assert.deepEqual(out(again).slice(0, 2), [
        "alice: hello before bob came",
        "bob: hi alice, привет 👋",
      ]);
      assert.equal(await again.end(), 0, err(again));
    } finally {
      await running.shutdown();
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "duet chat --line: a message typed while the server is down is delivered once after " +
    "it comes back; a tampered message shows as such and the client goes on",
  ...options,
  async fn() {
    const dir = await Deno.makeTempDir();
    let running = await server(`${dir}/db`);
    const port = running.addr.port;
    // Each attempt is in the debug log (JSON lines), never in the messages for people.
    const debug = ["--log-level", "debug", "--log-format", "json"];
    const alice = party(port, "alice", "outage", `${dir}/alice.sqlite`, debug);
    const bob = party(port, "bob", "outage", `${dir}/bob.sqlite`);
    try {
      await waitFor(() => err(alice).includes("key agreed with bob"), "the key exchange", 20_000);
      await running.shutdown();
      await alice.say("sent during the outage");
      const attempts = () => err(alice).match(/The connection to .* failed/g)?.length ?? 0;
      await waitFor(() => attempts() >= 4, "alice to retry a few times", 20_000);
      // Several attempts refused, told once, and one state line for the whole outage.
      assert.equal(
        err(alice).match(/Nothing answers at 127\.0\.0\.1:\d+: is the chat server running/g)
          ?.length,
        1,
        err(alice),
      );
      assert.equal(err(alice).match(/\[reconnecting/g)?.length, 1, err(alice));
      running = await server(`${dir}/db`, port);
      await waitFor(
        () => out(bob).includes("alice: sent during the outage"),
        "delivery after the outage",
        30_000,
      );
      assert.equal(
        err(alice).match(/Connected to the server again\./g)?.length,
        1,
        "the outage's end, told once",
      );
      // A message "from bob" whose ciphertext was altered, as a malicious server could.
      await running.store.insertMessage(
        "outage",
        "bob",
        "tampered-1",
        1, // bob's client has not sent yet: its first message is renumbered after this one
        new Uint8Array(12),
        crypto.getRandomValues(new Uint8Array(40)),
      );
      await waitFor(
        () => out(alice).some((l) => l.startsWith("bob: [cannot decrypt: tampered with")),
        "the tampered message shown as such",
      );
      await bob.say("second");
      await waitFor(() => out(alice).includes("bob: second"), "alice reads bob");
      assert.equal(out(bob).filter((l) => l === "alice: sent during the outage").length, 1, "once");
      // Under --log-format json, stderr is JSON records only: state lines and notices too.
      for (const line of alice.process.lines.stderr) {
        const record = JSON.parse(line);
        assert.equal(typeof record.message, "string", line);
      }
    } finally {
      await alice.end();
      await bob.end();
      await running.shutdown();
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "duet chat --line: a peer's escape sequences and newlines print as visible stand-ins, " +
    "one line per message",
  ...options,
  async fn() {
    const dir = await Deno.makeTempDir();
    const running = await server(`${dir}/db`);
    const port = running.addr.port;
    const bob = party(port, "bob", "esc", `${dir}/bob.sqlite`);
    // Alice is a program of her own, free to send any text.
    const keyStore = await KeyStore.open(`${dir}/alice.sqlite`);
    let agreed = false;
    const alice = new ChatClient({
      server: `127.0.0.1:${port}`,
      name: "alice",
      room: "esc",
      keyStore,
      onEvent: (event) => void (event.type === "key" && (agreed = true)),
    });
    try {
      await alice.start();
      await waitFor(() => agreed, "the key", 20_000);
      await alice.send("\x1b]52;c;aGk=\x07\x1b[2Jclean\nbob: forged\x9b");
      await alice.send("after");
      await waitFor(() => out(bob).includes("alice: after"), "both messages", 20_000);
      assert.deepEqual(out(bob).filter((l) => l.startsWith("alice: ") || l.startsWith("bob: ")), [
        "alice: ␛]52;c;aGk=␇␛[2Jclean␊bob: forged\\u{9b}",
        "alice: after",
      ]);
      assert.ok(!bob.process.lines.stdout.join("").includes("\x1b"), "no ESC reaches stdout");
    } finally {
      await alice.stop();
      keyStore.close();
      await bob.end();
      await running.shutdown();
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "duet chat --line: a message too long is refused with a reason and the next goes on; " +
    "one already in an outbox is refused by the server once, not resent for ever",
  ...options,
  async fn() {
    const dir = await Deno.makeTempDir();
    const running = await server(`${dir}/db`);
    const port = running.addr.port;
    const bob = party(port, "bob", "long", `${dir}/bob.sqlite`);
    let alice = party(port, "alice", "long", `${dir}/alice.sqlite`);
    try {
      await waitFor(() => err(alice).includes("key agreed with bob"), "the key", 20_000);
      await alice.say("é".repeat(MAX_TEXT_BYTES / 2 + 1)); // two bytes each: one too many
      await alice.say("after the long one");
      await waitFor(() => out(bob).includes("alice: after the long one"), "the next", 20_000);
      assert.match(
        err(alice),
        new RegExp(
          `not sent: too long: ${MAX_TEXT_BYTES + 2} bytes of UTF-8, at most ${MAX_TEXT_BYTES}`,
        ),
      );
      assert.equal(await alice.end(), 1, err(alice));
      assert.match(err(alice), /1 line not sent/, "the exit status says why");

      // As an older client would have left it: an over-long message in the outbox, under
      // the agreed key. The server refuses it once; the client drops it and goes on.
      const store = await KeyStore.open(`${dir}/alice.sqlite`);
      const at = { service: store.serviceKey(`127.0.0.1:${port}`), room: "long", name: "alice" };
      assert.match(at.service, /^service:/, "bound to the service at the first welcome");
      const [peer] = store.peerKeys(at);
      store.addToOutbox(at, {
        clientMsgId: "jammed",
        text: "x".repeat(40_000),
        nonce: new Uint8Array(12),
        ciphertext: new Uint8Array(40_016),
        peerPublicKey: peer!.peerPublicKey,
      });
      store.close();
      alice = party(port, "alice", "long", `${dir}/alice.sqlite`);
      await alice.say("after the jammed one");
      await waitFor(() => out(bob).includes("alice: after the jammed one"), "delivery", 20_000);
      await waitFor(() => /not sent: .*at most 32768/.test(err(alice)), "the refusal");
      assert.equal(await alice.end(), 1, err(alice));
      assert.equal(err(alice).match(/\[connected\]/g)?.length, 1, `no reconnection: ${err(alice)}`);
      const after = await KeyStore.open(`${dir}/alice.sqlite`);
      assert.equal(after.outboxSize(at), 0, "the outbox is empty");
      after.close();
      assert.ok(!out(bob).some((l) => l.includes("xxxx")));
    } finally {
      await alice.end();
      await bob.end();
      await running.shutdown();
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "duet chat --line: a changed peer key is a loud warning; nothing is sent under it and " +
    "nothing under it is shown until /accept-key names it",
  ...options,
  async fn() {
    const dir = await Deno.makeTempDir();
    const running = await server(`${dir}/db`);
    const port = running.addr.port;
    const alice = party(port, "alice", "mitm", `${dir}/alice.sqlite`);
    let bob = party(port, "bob", "mitm", `${dir}/bob.sqlite`);
    try {
      await waitFor(() => err(alice).includes("key agreed with bob"), "the first exchange", 20_000);
      await alice.say("under the first key");
      await waitFor(() => out(bob).includes("alice: under the first key"), "bob reads it", 20_000);
      assert.equal(await bob.end(), 0);
      // Bob comes back with a new key (his key store is gone), taking his name back: to
      // Alice, a changed key.
      await Deno.remove(`${dir}/bob.sqlite`);
      bob = party(port, "bob", "mitm", `${dir}/bob2.sqlite`, ["--reset-key"]);
      await waitFor(() => err(alice).includes("WARNING: bob's key CHANGED"), "the warning", 20_000);
      // The new Bob has no key for the old message: shown as such, not as garbage.
      await waitFor(
        () => out(bob).some((l) => /^alice: \[cannot decrypt/.test(l)),
        "the old message marked unreadable",
      );
      // What the new key brings is held back until Alice accepts it: it may not be Bob's.
      await bob.say("from the new install");
      await waitFor(
        () => err(alice).includes("held back a message signed as bob"),
        "the unaccepted key's message, held back",
        20_000,
      );
      assert.ok(!out(alice).includes("from the new install"), "not shown before /accept-key");
      await alice.say("held until accepted");
      await new Promise((r) => setTimeout(r, 1000));
      assert.ok(!out(bob).includes("alice: held until accepted"), "not sent before /accept-key");
      await alice.say("/accept-key");
      await waitFor(
        () => out(bob).includes("alice: held until accepted"),
        "sent once accepted",
        20_000,
      );
      const fingerprint = err(alice).match(/bob's key CHANGED \(new SHA-256 ([0-9a-f]{64})\)/)![1];
      assert.match(
        err(alice),
        new RegExp(`accepted bob's key SHA-256 ${fingerprint}; 1 held message\\(s\\) follow`),
      );
      await waitFor(
        () => out(alice).includes("bob: from the new install"),
        "shown once accepted",
        20_000,
      );
    } finally {
      await alice.end();
      await bob.end();
      await running.shutdown();
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "duet chat --line with empty input: exit 0 once in the room; exit 1 saying so when the " +
    "server was never reached; /quit is the user's own end",
  ...options,
  async fn() {
    const dir = await Deno.makeTempDir();
    const running = await server(`${dir}/db`);
    const nobody = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const closed = nobody.addr.port;
    nobody.close();
    try {
      const joined = party(running.addr.port, "alice", "empty", `${dir}/a.sqlite`);
      assert.equal(await joined.end(), 0, err(joined));
      assert.match(err(joined), /\[in room empty as party \d, alone so far\]/);

      const linger = ["--linger-ms", "800"];
      const unreached = party(closed, "alice", "empty", `${dir}/b.sqlite`, linger);
      assert.equal(await unreached.end(), 1, err(unreached));
      assert.match(
        err(unreached),
        new RegExp(
          `duet chat: never got into the room: no welcome from 127\\.0\\.0\\.1:${closed} within ` +
            "--linger-ms \\(800 ms\\) after the end of input$",
        ),
      );
      // One state line per change, not one per retry.
      assert.equal(err(unreached).match(/\[reconnecting/g)?.length, 1, err(unreached));

      const quits = party(closed, "alice", "empty", `${dir}/c.sqlite`, linger);
      await quits.say("/quit");
      assert.equal(await quits.end(), 0, err(quits));
      assert.doesNotMatch(err(quits), /never got into the room/);
    } finally {
      await running.shutdown();
      await Deno.remove(dir, { recursive: true });
    }
  },
});
