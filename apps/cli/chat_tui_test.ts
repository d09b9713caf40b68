// The real terminal interface of `duet chat`, driven in tmux (send-keys, capture-pane):
// panes with CI=true as on CI machines, editing Cyrillic and emoji with Backspace, the
// terminal's cursor at the end of the input,
// typing a message that shows in the other party's pane, Cyrillic and emoji, the key's
// fingerprint the same on both sides, scrolling with the "new below" marker, a resize,
// and Ctrl-C leaving the terminal usable with exit status 0; the peer who quit shown as
// gone; a third party in the full room told to choose another room, exit status 1.
import assert from "node:assert/strict";
import { findCommand, run, testWith, waitFor } from "@duet/testkit";
import { ChatStore, openPglite, startChatServer } from "@duet/chat";

const tmux = await findCommand("tmux", "tmux", ["-V"]);
const root = new URL("../../", import.meta.url).pathname;

/** Two `duet chat` interfaces in tmux panes ("alice", "bob"), on one tmux server of our own. */
function tmuxChat(dir: string, port: number) {
  const socket = `duet-test-${Deno.pid}`;
  const t = (...args: string[]) => run("tmux", ["-L", socket, ...args]);
  const pane = async (name: string) => (await t("capture-pane", "-p", "-J", "-t", name)).stdout;
  const start = (name: string) =>
    t(
      "new-session",
      "-d",
      "-s",
      name,
      "-x",
      "80",
      "-y",
      "20",
      // As on CI machines: ink, left to itself, draws nothing when CI is set.
      "-e",
      "CI=true",
      `cd ${root} && ${Deno.execPath()} run -A apps/cli/main.ts chat --server 127.0.0.1:${port} ` +
        `--name ${name} --room tui --key-store ${dir}/${name}.sqlite 2>${dir}/${name}.err; ` +
        `echo EXIT=$?; sleep 30`,
    );
  /** What each party's terminal and stderr showed, for a failure far from here. */
  const seen = async () => {
    const parts = [];
    for (const name of ["alice", "bob", "carol"]) {
      const screen = await pane(name).catch((e) => `(no pane: ${e})`);
      const err = await Deno.readTextFile(`${dir}/${name}.err`).catch(() => "");
      parts.push(`--- ${name}'s pane:\n${screen}\n--- ${name}'s stderr:\n${err}`);
    }
    return parts.join("\n");
  };
  return { t, pane, start, seen };
}

type TmuxChat = ReturnType<typeof tmuxChat>;

/** Both start and agree a key; the title bar says so. */
async function startBoth({ pane, start }: TmuxChat): Promise<void> {
  await start("alice");
  await start("bob");
  await waitFor(
    async () => (await pane("alice")).includes("Key agreed with bob"),
    "alice's key",
    30_000,
  );
  await waitFor(
    async () => (await pane("bob")).includes("Key agreed with alice"),
    "bob's key",
    30_000,
  );
  // The newcomer learns who is here once the server has read the room (a query after the
  // key exchange may still be under way): the title says so when it has.
  const title =
    /duet chat · tui {2}· {2}alice is here {2}· {2}● connected to server {2}· {2}key [0-9a-f]{8}/;
  await waitFor(async () => title.test(await pane("bob")), "bob's title: alice is here", 10_000)
    .catch(async (error) => {
      throw new Error(`${(error as Error).message}:\n${await pane("bob")}`);
    });
}

/** A message each way, Cyrillic and emoji, edited with Backspace, the cursor in place. */
async function talkAndEdit({ t, pane }: TmuxChat): Promise<void> {
  await t("send-keys", "-t", "alice", "hello bob, привет 👋", "Enter");
  await waitFor(
    async () => (await pane("bob")).includes("alice: hello bob, привет 👋"),
    "bob sees it",
  );
  await waitFor(
    async () => (await pane("alice")).includes("you: hello bob, привет 👋 ✓"),
    "stored mark",
  );

  // Editing: a Cyrillic letter and an emoji with a skin tone are one Backspace each.
  await t("send-keys", "-t", "alice", "опечаткаы👍🏽");
  await waitFor(async () => (await pane("alice")).includes("> опечаткаы👍🏽"), "typed");
  await t("send-keys", "-t", "alice", "BSpace");
  await t("send-keys", "-t", "alice", "BSpace");
  await waitFor(async () => /^> опечатка$/m.test(await pane("alice")), "edited");
  // The terminal's cursor, shown, right after the text on the bottom row: "> " and
  // eight letters of one column each.
  const cursor = async (name: string) =>
    (await t("display-message", "-p", "-t", name, "#{cursor_flag} #{cursor_x},#{cursor_y}"))
      .stdout.trim();
  await waitFor(async () => (await cursor("alice")) === "1 10,19", "the cursor").catch(
    async (error) => {
      throw new Error(`${error.message}: ${await cursor("alice")}`);
    },
  );
  await t("send-keys", "-t", "alice", "Enter");
  await waitFor(async () => (await pane("bob")).includes("alice: опечатка"), "the edited line");
  assert.ok(!(await pane("bob")).includes("опечаткаы"));
}

/** /key and Ctrl-K show the same fingerprint on both sides. */
async function sameKey({ t, pane }: TmuxChat): Promise<void> {
  await t("send-keys", "-t", "alice", "/key", "Enter");
  await t("send-keys", "-t", "bob", "C-k");
  const fingerprint = async (name: string) => {
    const text = (await pane(name)).replace(/\s+/g, " ");
    return text.match(/Key SHA-256: ((?:[0-9a-f]{4} ){15}[0-9a-f]{4})/)?.[1];
  };
  await waitFor(
    async () => Boolean((await fingerprint("alice")) && (await fingerprint("bob"))),
    "both keys shown",
  );
  assert.equal(await fingerprint("alice"), await fingerprint("bob"));
}

/** Scrolling with the "new below" marker, a resize, then Ctrl-C leaving a usable terminal. */
async function scrollResizeQuit({ t, pane }: TmuxChat): Promise<void> {
  for (let i = 1; i <= 25; i++) await t("send-keys", "-t", "alice", `line ${i}`, "Enter");
  await waitFor(async () => (await pane("bob")).includes("alice: line 25"), "25 lines");
  await t("send-keys", "-t", "bob", "PPage");
  await waitFor(async () => !(await pane("bob")).includes("alice: line 25"), "scrolled up");
  await t("send-keys", "-t", "alice", "while you scrolled", "Enter");
  await waitFor(async () => (await pane("bob")).includes("1 new below (PgDn)"), "the marker");
  await t("send-keys", "-t", "bob", "NPage");
  await waitFor(
    async () => (await pane("bob")).includes("alice: while you scrolled"),
    "back down",
  );

  await t("resize-window", "-t", "bob", "-x", "50", "-y", "14");
  await t("send-keys", "-t", "alice", "after the resize", "Enter");
  await waitFor(
    async () => (await pane("bob")).includes("alice: after the resize"),
    "after resize",
  );
  const lines = (await t("capture-pane", "-p", "-t", "bob")).stdout.split("\n");
  assert.ok(lines.every((l) => [...l].length <= 50), "drawn to the new width");

  await t("send-keys", "-t", "bob", "C-c");
  await waitFor(async () => (await pane("bob")).includes("EXIT=0"), "a clean exit");
  assert.ok(!(await pane("bob")).includes("duet chat · tui"), "the alternate screen is gone");
}

/** Bob has quit: Alice's title and history say so, while she is still connected. */
async function peerLeft({ pane }: TmuxChat): Promise<void> {
  await waitFor(
    async () => /bob has left {2}· {2}● connected to server/.test(await pane("alice")),
    "alice's title says bob left",
  );
  assert.match(await pane("alice"), /\* bob has left; the server keeps what you send for them\./);
}

/**
 * A third name in the two-party room: told to choose another room; what it types is not
 * sent (and not kept); /quit exits 1 with the reason on stderr, promising nothing.
 */
async function roomFull({ t, pane, start }: TmuxChat, dir: string): Promise<void> {
  await start("carol");
  await waitFor(
    async () => (await pane("carol")).includes("choose another room with --room"),
    "carol told the room is full",
    30_000,
  );
  await t("send-keys", "-t", "carol", "hello?", "Enter");
  await waitFor(
    async () => (await pane("carol")).includes("not sent: the client has stopped"),
    "carol's line refused",
  );
  await t("send-keys", "-t", "carol", "/quit", "Enter");
  await waitFor(async () => (await pane("carol")).includes("EXIT=1"), "exit status 1");
  const err = await Deno.readTextFile(`${dir}/carol.err`);
  assert.match(err, /^duet chat: This room already has its two people/m);
  assert.doesNotMatch(err, /next start|goes out|go out/, err);
}

testWith(tmux, {
  name: "duet chat (interface, in tmux): messages both ways, same key, scroll, resize, Ctrl-C",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const dir = await Deno.makeTempDir();
    const server = await startChatServer({
      store: new ChatStore(await openPglite(`${dir}/db`)),
      port: 0,
    });
    const chat = tmuxChat(dir, server.addr.port);
    try {
      await startBoth(chat);
      await talkAndEdit(chat);
      await sameKey(chat);
      await scrollResizeQuit(chat);
      await peerLeft(chat);
      await roomFull(chat, dir);
    } catch (error) {
      (error as Error).message += `\n${await chat.seen()}`;
      throw error;
    } finally {
      await chat.t("kill-server");
      await server.shutdown();
      await Deno.remove(dir, { recursive: true });
    }
  },
});
