// Impersonation in chat, end to end with real `duet chat` processes: someone who knows the
// room and a party's name cannot take the name without its key; a take-over (--reset-key)
// is told to the other party, whose client holds back everything under the new key (in
// line mode and in the terminal interface, in tmux) and sends nothing to it; when the real
// party comes back with the key that was accepted, the conversation goes on under it, and
// /accept-key never trusts the impostor's key by default.
import assert from "node:assert/strict";
import { findCommand, run, testWith, waitFor } from "@duet/testkit";
import { type LineParty, spawnLineParty } from "./testdata/spawn.ts";
import { ChatStore, openPglite, type RunningChatServer, startChatServer } from "@duet/chat";

const options = { sanitizeOps: false, sanitizeResources: false };

type Party = LineParty;

function party(address: string, name: string, keyStore: string, extra: string[] = []): Party {
  return spawnLineParty([
    "chat",
    "--server",
    address,
    "--name",
    name,
    "--room",
    "tea",
    "--key-store",
    keyStore,
    "--line",
    ...extra,
  ]);
}

const out = (p: Party) => p.process.lines.stdout.join("\n");
const err = (p: Party) => p.process.lines.stderr.join("\n");

async function server(dir: string): Promise<RunningChatServer> {
  return await startChatServer({ store: new ChatStore(await openPglite(`${dir}/db`)), port: 0 });
}

Deno.test({
  name: "duet chat --line: an impostor cannot take a name without its key; a take-over is " +
    "held back, never shown as the peer's, and the real peer's return restores the key",
  ...options,
  async fn() {
    const dir = await Deno.makeTempDir();
    const running = await server(dir);
    const address = `127.0.0.1:${running.addr.port}`;
    const alice = party(address, "alice", `${dir}/alice.sqlite`, ["--linger-ms", "60000"]);
    const started: Party[] = [alice];
    try {
      let bob = party(address, "bob", `${dir}/bob.sqlite`);
      started.push(bob);
      await waitFor(() => err(alice).includes("key agreed with bob"), "alice agrees a key", 30_000);
      await bob.say("hello from the real bob\n/key\n");
      await waitFor(
        () => out(alice).includes("bob: hello from the real bob"),
        "bob's hello",
        30_000,
      );
      await waitFor(() => /^[0-9a-f]{64}$/m.test(out(bob)), "bob's /key", 30_000);
      const realKey = out(bob).match(/^[0-9a-f]{64}$/m)![0];
      assert.equal(await bob.end(), 0);

      // 1. Mallory knows the room and the name, not the key: refused, and nobody is told.
      const mallory = party(address, "bob", `${dir}/mallory.sqlite`);
      started.push(mallory);
      await mallory.say("FORGED: send me the code\n");
      assert.equal(await mallory.end(), 1);
      assert.match(err(mallory), /belongs to another key/);
      assert.match(err(mallory), /--reset-key/);

      // 2. Mallory takes the name over: alice is warned, the forged message is held back
      // (said on stderr with the key's fingerprint), never printed as bob's.
      const takeover = party(address, "bob", `${dir}/mallory.sqlite`, [
        "--reset-key",
        "--linger-ms",
        "60000",
      ]);
      started.push(takeover);
      await takeover.say("FORGED: send me the code\n");
      await waitFor(
        () => err(alice).includes("held back a message signed as bob"),
        "the forged message is held back",
        30_000,
      );
      assert.match(
        err(alice),
        /bob's key CHANGED \(new SHA-256 [0-9a-f]{64}\): the name was taken back without the old key/,
      );
      // What alice types now waits: nothing goes out under a key she has not accepted.
      await alice.say("the code is 0451\n");
      // /accept-key names the fingerprint it would trust: a wrong one is refused.
      await alice.say("/accept-key 00000000\n");
      await waitFor(() => err(alice).includes("not accepted: no waiting key"), "wrong fp refused");

      // 3. The real bob comes back: his key no longer holds the name (someone reset it), and
      // his client says so and stops.
      bob = party(address, "bob", `${dir}/bob.sqlite`);
      started.push(bob);
      await bob.say("I am back\n");
      assert.equal(await bob.end(), 1);
      assert.match(err(bob), /belongs to another key/);
      // He takes it back: alice's client is on the key she accepted again, and what she
      // typed meanwhile goes to him.
      bob = party(address, "bob", `${dir}/bob.sqlite`, ["--reset-key", "--linger-ms", "60000"]);
      started.push(bob);
      await waitFor(
        () => err(alice).includes("bob is back on the key you accepted"),
        "the accepted key is back",
        30_000,
      );
      await waitFor(() => out(bob).includes("alice: the code is 0451"), "alice's message", 30_000);
      // What he typed while refused stayed in his outbox and reaches her now.
      await waitFor(() => out(alice).includes("bob: I am back"), "bob's held message", 30_000);
      await alice.say("/key\n/accept-key\n");
      await waitFor(
        () => err(alice).includes("not accepted: the peer's current key is accepted already"),
        "no default accept of the impostor's key",
      );
      await waitFor(() => out(alice).includes(realKey), "alice's /key is the real one", 10_000);
      await takeover.end();
      assert.equal(await alice.end(), 0);

      const everything = [out(alice), err(alice)].join("\n");
      assert.ok(!out(alice).includes("FORGED"), "the forged text never reached alice's output");
      assert.ok(!/^bob: FORGED/m.test(everything));
      assert.ok(!out(takeover).includes("0451"), "the impostor never read alice's message");
    } finally {
      for (const p of started) {
        try {
          p.process.child.kill("SIGTERM");
        } catch { /* ended */ }
        await p.process.done.catch(() => {});
      }
      await running.shutdown();
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    }
  },
});

const tmux = await findCommand("tmux", "tmux", ["-V"]);
const root = new URL("../../", import.meta.url).pathname;

testWith(tmux, {
  name: "duet chat (interface, in tmux): a forged message under a taken-over name is held " +
    "back as a warning, never shown as the peer's",
  ...options,
  async fn() {
    const dir = await Deno.makeTempDir();
    const running = await server(dir);
    const address = `127.0.0.1:${running.addr.port}`;
    const socket = `duet-imp-${Deno.pid}`;
    const t = (...args: string[]) => run("tmux", ["-L", socket, ...args]);
    const pane = async () => (await t("capture-pane", "-p", "-J", "-t", "alice")).stdout;
    const started: Party[] = [];
    try {
      await t(
        "new-session",
        "-d",
        "-s",
        "alice",
        "-x",
        "100",
        "-y",
        "30",
        "-e",
        "CI=true",
        `cd ${root} && ${Deno.execPath()} run -A apps/cli/main.ts chat --server ${address} ` +
          `--name alice --room tea --key-store ${dir}/alice.sqlite 2>${dir}/alice.err; ` +
          `echo EXIT=$?; sleep 30`,
      );
      const bob = party(address, "bob", `${dir}/bob.sqlite`, ["--linger-ms", "60000"]);
      started.push(bob);
      await bob.say("genuine hello\n");
      await waitFor(async () => (await pane()).includes("genuine hello"), "bob's hello", 30_000);
      await bob.end();
      const takeover = party(address, "bob", `${dir}/mallory.sqlite`, [
        "--reset-key",
        "--linger-ms",
        "60000",
      ]);
      started.push(takeover);
      await takeover.say("FORGED send me the code\n");
      await waitFor(
        async () => (await pane()).includes("Held back a message signed as bob"),
        "the held-back warning",
        30_000,
      );
      const screen = await pane();
      assert.match(screen, /bob's key CHANGED/);
      assert.ok(!screen.includes("FORGED"), `the forged text is not on screen:\n${screen}`);
      assert.match(screen, /key [0-9a-f]{8} CHANGED/, "the title bar says the key changed");
      await t("send-keys", "-t", "alice", "/quit", "Enter");
      await waitFor(async () => (await pane()).includes("EXIT=0"), "alice quits", 10_000);
      await takeover.end();
    } finally {
      await t("kill-server").catch(() => {});
      for (const p of started) {
        try {
          p.process.child.kill("SIGTERM");
        } catch { /* ended */ }
        await p.process.done.catch(() => {});
      }
      await running.shutdown();
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    }
  },
});
