// UDP blocked for real: the server and the client (duet ping, or Chromium with the page)
// run inside a network namespace of their own whose loopback drops every UDP packet
// (nftables), so QUIC gets no answer while TCP works. Both must ping over the WebSocket
// and say so, then return to WebTransport, and say so, once the drop rule is deleted.
// Needs root, ip and nft; skips with the reason otherwise (fails with DUET_REQUIRE_ALL=1).
import assert from "node:assert/strict";
import {
  chromiumPath,
  findChromium,
  findCommand,
  launchChromium,
  type Requirement,
  run,
  testWith,
  waitFor,
} from "@duet/testkit";
import { spawnDuet, type SpawnedDuet } from "./testdata/spawn.ts";

const options = { sanitizeOps: false, sanitizeResources: false };
let namespaces = 0;

/** Root, ip and nft, and a namespace in which nft can install the drop rule. */
async function findUdpBlocking(): Promise<Requirement> {
  const name = "a network namespace with nftables (root, ip, nft)";
  if (Deno.uid() !== 0) return { name, missing: "not root (ip netns and nft need it)" };
  for (
    const [command, args] of [["ip", ["-V"]], ["nft", ["--version"]]] as [string, string[]][]
  ) {
    const found = await findCommand(command, command, args);
    if (found.missing) {
      return { name, missing: `${found.missing} (apt-get install iproute2 nftables)` };
    }
  }
  try {
    await withUdpBlocked(() => Promise.resolve());
    return { name, missing: undefined };
  } catch (error) {
    return { name, missing: (error as Error).message };
  }
}

/** Controls on the namespace a scenario runs in. */
interface BlockedNamespace {
  /** The namespace's name; run commands in it with `prefix`. */
  name: string;
  prefix: string[];
  /** Deletes the drop rule: UDP flows again. */
  unblock(): Promise<void>;
}

/**
 * Runs `fn` in a fresh namespace (named after this process, unique) with only loopback,
 * up, and an nftables rule dropping every UDP packet it receives; deletes the namespace
 * afterwards, whatever happens. Never touches an interface outside it.
 *
 * @throws Error naming the command that failed while setting the namespace up.
 */
async function withUdpBlocked(fn: (ns: BlockedNamespace) => Promise<void>): Promise<void> {
  const name = `duet-udp-${Deno.pid}-${++namespaces}`;
  const prefix = ["ip", "netns", "exec", name];
  const inside = async (...args: string[]) => {
    const result = await run("ip", ["netns", "exec", name, ...args]);
    if (result.code !== 0) {
      throw new Error(`${args.join(" ")} in ${name}: ${result.stderr.trim() || result.code}`);
    }
    return result.stdout;
  };
  const created = await run("ip", ["netns", "add", name]);
  if (created.code !== 0) throw new Error(`ip netns add ${name}: ${created.stderr.trim()}`);
  try {
    await inside("ip", "link", "set", "lo", "up");
    const links = (await inside("ip", "-o", "link")).trim().split("\n");
    assert.equal(links.length, 1, `only loopback in the namespace: ${links.join(" | ")}`);
    await inside("nft", "add", "table", "inet", "t");
    await inside(
      "nft",
      "add",
      "chain",
      "inet",
      "t",
      "in",
      "{ type filter hook input priority 0; }",
    );
    await inside("nft", "add", "rule", "inet", "t", "in", "meta", "l4proto", "udp", "drop");
    await fn({
      name,
      prefix,
      unblock: async () => void await inside("nft", "flush", "chain", "inet", "t", "in"),
    });
  } finally {
    await run("ip", ["netns", "del", name]);
  }
}

async function stop(process: SpawnedDuet, signal: Deno.Signal = "SIGTERM") {
  try {
    process.child.kill(signal);
  } catch { /* gone */ }
  await process.child.status;
  await process.done;
}

/** `duet ping serve --port 0` in the namespace, and the port it found. */
async function startServer(prefix: string[]): Promise<{ server: SpawnedDuet; port: number }> {
  const server = spawnDuet(["ping", "serve", "--port", "0"], { direct: true, prefix });
  try {
    await waitFor(
      () => server.lines.stdout.some((l) => l.startsWith("page ")),
      "the server",
      20_000,
    );
  } catch (error) {
    await stop(server, "SIGKILL");
    throw new Error(`${(error as Error).message}: ${server.lines.stderr.join("\n")}`);
  }
  const page = server.lines.stdout.find((l) => l.startsWith("page "))!;
  return { server, port: Number(page.match(/:(\d+)\//)![1]) };
}

const blocking = await findUdpBlocking();

testWith(blocking, {
  name: "duet ping with UDP dropped: pings over the WebSocket and says so once; with the " +
    "drop rule deleted it returns to WebTransport and says so; --no-fallback does not",
  ...options,
  fn: () =>
    withUdpBlocked(async ({ prefix, unblock }) => {
      const { server, port } = await startServer(prefix);
      const host = `127\\.0\\.0\\.1:${port}`;
      let client: SpawnedDuet | undefined;
      try {
        // WebTransport only: no answer, no WebSocket, the budget runs out. (A budget past
        // the 2 s a handshake waits, so that the first attempt ends and says why.)
        const strict = spawnDuet([
          "ping",
          "--url",
          `https://127.0.0.1:${port}/ping`,
          "--count",
          "2",
          "--no-fallback",
          "--give-up-after-ms",
          "3000",
        ], { direct: true, prefix });
        assert.equal((await strict.child.status).code, 1);
        await strict.done;
        const strictOut = strict.lines.stdout.join("\n");
        assert.doesNotMatch(strictOut, /WebSocket/);
        assert.match(strictOut, /giving up: no connection for/);
        assert.match(strictOut, /connecting timed out after 2000 ms/);

        client = spawnDuet([
          "ping",
          "--url",
          `https://127.0.0.1:${port}/ping`,
          "--interval",
          "100",
          "--probe-interval-ms",
          "500",
        ], { direct: true, prefix });
        const out = client.lines.stdout;
        const overWs = new RegExp(`^pong from ${host} via WebSocket: seq=\\d+ bytes=\\d+ time=`);
        const overWt = new RegExp(`^pong from ${host}: seq=\\d+ bytes=\\d+ time=`);
        await waitFor(
          () => out.filter((l) => overWs.test(l)).length >= 5,
          "pings over /ws",
          20_000,
        );
        // Still blocked: several probes have failed meanwhile, and nothing more was said.
        await new Promise((resolve) => setTimeout(resolve, 1500));
        await unblock();
        const unblockedAt = out.length;
        await waitFor(
          () => out.slice(unblockedAt).filter((l) => overWt.test(l)).length >= 5,
          "pings over WebTransport again",
          20_000,
        );
        client.child.kill("SIGINT");
        assert.equal((await client.child.status).code, 0, client.lines.stderr.join("\n"));
        await client.done;
        const said = out.filter((l) => /WebTransport (unreachable|reachable)/.test(l));
        assert.deepEqual(said, [
          `WebTransport unreachable (no QUIC answer in 2 s; UDP blocked?); pinging over ` +
          `WebSocket ws://127.0.0.1:${port}/ws`,
          `WebTransport reachable again; pinging over WebTransport https://127.0.0.1:${port}/ping`,
        ], out.join("\n"));
        // In that order: WebTransport replies only after the line back, and every ping
        // over the WebSocket was sent before any over WebTransport (a reply already on its
        // way over the WebSocket may still come in after the line).
        const back = out.indexOf(said[1]!);
        assert.ok(out.slice(0, back).every((l) => !overWt.test(l)), out.join("\n"));
        const seqs = (re: RegExp) =>
          out.filter((l) => re.test(l)).map((l) => Number(l.match(/seq=(\d+)/)![1]));
        assert.ok(Math.max(...seqs(overWs)) < Math.min(...seqs(overWt)), out.join("\n"));
        const wsReplies = out.filter((l) => overWs.test(l)).length;
        const wtReplies = out.filter((l) => overWt.test(l)).length;
        assert.ok(
          out.includes(
            `${wtReplies} replies over WebTransport, ${wsReplies} over WebSocket (UDP blocked)`,
          ),
          out.join("\n"),
        );
        assert.match(out.join("\n"), /\d+ transmitted, \d+ received/);
      } finally {
        if (client) await stop(client);
        await stop(server);
      }
    }),
});

const chromium = await findChromium();

testWith(blocking.missing ? blocking : chromium, {
  name: "page with UDP dropped: says WebTransport is unreachable and pings over the " +
    "WebSocket only; with the drop rule deleted it is back on WebTransport and says so",
  ...options,
  fn: () =>
    withUdpBlocked(async ({ name, prefix, unblock }) => {
      const { server, port } = await startServer(prefix);
      // Chromium runs inside the namespace too, through a wrapper playwright starts.
      const dir = await Deno.makeTempDir({ prefix: "duet-netns-chromium-" });
      const wrapper = `${dir}/chromium`;
      await Deno.writeTextFile(
        wrapper,
        `#!/bin/sh\nexec ip netns exec ${name} ${chromiumPath} "$@"\n`,
      );
      await Deno.chmod(wrapper, 0o755);
      const browser = await launchChromium({ executablePath: wrapper });
      try {
        const page = await browser.newPage();
        const errors: string[] = [];
        page.on("pageerror", (error) => errors.push(error.message));
        await page.goto(`http://127.0.0.1:${port}/`);
        type State = {
          wt: string;
          ws: string;
          mode: string;
          unreachable: string | null;
          fallbacks: number;
          restores: number;
          counts: Record<"stream" | "datagram" | "ws", { received: number }>;
        };
        const state = () =>
          page.evaluate(() => (globalThis as unknown as { duetPing: State }).duetPing);
        await waitFor(
          async () => {
            const s = await state();
            return s.mode === "websocket-only" && s.counts.ws.received >= 3;
          },
          "the page to say WebSocket only",
          30_000,
        );
        const blocked = await state();
        assert.equal(blocked.counts.stream.received, 0);
        assert.equal(blocked.unreachable, "no QUIC answer in 3 s");
        assert.equal(blocked.fallbacks, 1);
        assert.match(
          await page.locator("#fallback").innerText(),
          /^WebTransport unreachable \(UDP blocked\?\): WebSocket only/,
        );
        assert.ok(await page.locator("#fallback").isVisible());
        assert.match(await page.locator("#log").innerText(), /no QUIC answer in 3 s; UDP blocked/);

        await unblock();
        await waitFor(
          async () => {
            const s = await state();
            return s.mode === "webtransport" && s.counts.stream.received >= 3 &&
              s.counts.datagram.received >= 3;
          },
          "the page to be back on WebTransport",
          30_000,
        );
        const back = await state();
        assert.equal(back.restores, 1);
        assert.equal(back.fallbacks, 1, "one move to WebSocket only, not one per retry");
        assert.equal(back.unreachable, null);
        assert.ok(!(await page.locator("#fallback").isVisible()));
        assert.match(
          await page.locator("#log").innerText(),
          /WebTransport reachable again: back to WebTransport/,
        );
        assert.ok(back.counts.ws.received > blocked.counts.ws.received, "the WebSocket goes on");
        assert.deepEqual(errors, [], "no uncaught errors in the page");
      } finally {
        await browser.close();
        await Deno.remove(dir, { recursive: true });
        await stop(server);
      }
    }),
});
