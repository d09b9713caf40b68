// Discovery through the command line, end to end: `duet ping --domain` finding a server through
// SRV from a DNS server of our own on loopback (`fakeDns` of `@duet/ping/testing`), and mDNS
// inside a network namespace that holds only a loopback interface (never on a real interface:
// no multicast leaves the test), where `--announce` names only the address the server listens
// on and refuses what it cannot serve. The discovery functions themselves are tested in
// apps/ping/discovery_test.ts.
import assert from "node:assert/strict";
import { type Requirement, run, testWith, waitFor } from "@duet/testkit";
import { startPingServer } from "@duet/ping";
import { fakeDns } from "@duet/ping/testing";
import { runDuet, spawnDuet, type SpawnedDuet } from "./testdata/spawn.ts";

Deno.test({
  name: "duet ping --domain: finds a live server through SRV (mDNS skipped), and says what " +
    "it tried when nothing is found",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const server = await startPingServer({ port: 0 });
    const dns = fakeDns({
      "_duet-ping._udp.example.test": [{
        priority: 0,
        weight: 0,
        port: server.port,
        target: "localhost",
      }],
    });
    try {
      const args = [
        "ping",
        "--no-mdns",
        "--nameserver",
        dns.address,
        "--count",
        "2",
        "--interval",
        "20",
      ];
      const found = await runDuet([...args, "--domain", "example.test"]);
      assert.equal(found.code, 0, found.err);
      assert.match(
        found.out,
        /^found https:\/\/localhost:\d+\/ping by DNS SRV _duet-ping\._udp\.example\.test$/m,
      );
      assert.match(found.out, /2 transmitted, 2 received/);
      const missing = await runDuet([...args, "--domain", "nothing.test"]);
      assert.equal(missing.code, 1);
      assert.match(
        missing.err,
        /no ping server found \(tried mDNS: skipped \(--no-mdns\); DNS SRV _duet-ping\._udp\.nothing\.test: no record\); pass --url/,
      );
      const nowhere = await runDuet(["ping", "--no-mdns", "--count", "1"]);
      assert.equal(nowhere.code, 2, "no --url, no --domain, --no-mdns: a usage error");
      assert.match(nowhere.err, /no server to ping: give --url, or let duet find one/);
    } finally {
      dns.close();
      await server.shutdown(50);
    }
  },
});

// --- mDNS inside a network namespace ----------------------------------------------------

const namespace = `duet-test-${Deno.pid}`;
/** A second address on the namespace's loopback (TEST-NET-1, never routed). */
const OTHER = "192.0.2.7";

/** Network namespaces need root (or CAP_SYS_ADMIN) and the ip command. */
async function findNetns(): Promise<Requirement> {
  const probe = await run("ip", ["netns", "add", `${namespace}-probe`]).catch((e) => ({
    code: -1,
    stdout: "",
    stderr: String(e),
  }));
  if (probe.code !== 0) {
    return {
      name: "network namespaces",
      missing: `cannot create one (ip netns add: ${probe.stderr.trim()})`,
    };
  }
  await run("ip", ["netns", "del", `${namespace}-probe`]);
  return { name: "network namespaces", missing: undefined };
}

async function inNamespace(fn: () => Promise<void>): Promise<void> {
  const ns = (...args: string[]) => run("ip", ["netns", "exec", namespace, ...args]);
  assert.equal((await run("ip", ["netns", "add", namespace])).code, 0);
  try {
    // Loopback alone, with multicast on it and the mDNS group routed to it.
    assert.equal((await ns("ip", "link", "set", "lo", "up", "multicast", "on")).code, 0);
    assert.equal((await ns("ip", "route", "add", "224.0.0.0/4", "dev", "lo")).code, 0);
    // An address beyond 127/8, on loopback still: what a host's LAN address is to the
    // announcer, which must not announce it for a server that does not listen there.
    assert.equal((await ns("ip", "addr", "add", `${OTHER}/32`, "dev", "lo")).code, 0);
    const links = (await ns("ip", "-o", "link")).stdout.trim().split("\n");
    assert.equal(links.length, 1, `only loopback in the namespace: ${links.join(" | ")}`);
    await fn();
  } finally {
    await run("ip", ["netns", "del", namespace]);
  }
}

async function stop(process: SpawnedDuet) {
  try {
    process.child.kill("SIGTERM");
  } catch { /* gone */ }
  await process.child.status;
  await process.done;
}

testWith(await findNetns(), {
  name: "mDNS: a server started with --announce is found by duet ping with no --url at the " +
    "address it listens on (not another of the host's), inside a loopback-only network " +
    "namespace; asked to announce what it cannot serve, it refuses in one line",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: () =>
    inNamespace(async () => {
      const prefix = ["ip", "netns", "exec", namespace];
      const server = spawnDuet(["ping", "serve", "--port", "4433", "--announce"], {
        direct: true,
        prefix,
      });
      try {
        await waitFor(
          () => server.lines.stdout.some((l) => l.startsWith("page ")),
          "the server",
          20_000,
        );
        const client = spawnDuet(["ping", "--count", "2", "--interval", "20"], {
          direct: true,
          prefix,
        });
        const status = await client.child.status;
        await client.done;
        const out = client.lines.stdout.join("\n");
        assert.equal(status.code, 0, `${out}\n${client.lines.stderr.join("\n")}`);
        assert.match(
          out,
          /^found https:\/\/127\.0\.0\.1:4433\/ping by mDNS \(.+\._duet-ping\._udp\.local\)$/m,
        );
        assert.match(out, /2 transmitted, 2 received/);
      } finally {
        await stop(server);
      }
      // Asked for an address it does not listen on, or one its generated certificate does
      // not name: one line, exit 2, nothing announced.
      for (
        const [args, said] of [
          [
            // Refused before the server starts: no log line at all, even without -q.
            ["--announce", OTHER],
            /^duet ping serve: --announce: cannot announce 192\.0\.2\.7: the server does not listen there \(it listens on 127\.0\.0\.1;/,
          ],
          [
            ["-q", "--host", "0.0.0.0", "--announce"],
            /^duet ping serve: --announce: nothing to announce: .*certificate names 127\.0\.0\.1, ::1; loopback alone is no use to other hosts;/,
          ],
          [
            ["-q", "--host", "0.0.0.0", "--announce", OTHER],
            /^duet ping serve: --announce: cannot announce 192\.0\.2\.7: the server's certificate does not name it/,
          ],
        ] as const
      ) {
        // -q: errors only (a server that must start to know its certificate's names logs its
        // stop before it refuses).
        const refused = spawnDuet(["ping", "serve", "--port", "0", ...args], {
          direct: true,
          prefix,
        });
        const { code } = await refused.child.status;
        await refused.done;
        const err = refused.lines.stderr.join("\n");
        assert.equal(code, 2, `${args.join(" ")}: ${err}`);
        assert.equal(refused.lines.stderr.length, 1, err);
        assert.match(err, said);
        assert.deepEqual(refused.lines.stdout, [], "refused before saying it serves");
      }
      // With the server gone (and its goodbye sent), discovery says what it tried.
      const alone = spawnDuet(["ping", "--count", "1", "--discovery-timeout-ms", "300"], {
        direct: true,
        prefix,
      });
      assert.equal((await alone.child.status).code, 1);
      await alone.done;
      assert.match(
        alone.lines.stderr.join("\n"),
        /no ping server found \(tried mDNS _duet-ping\._udp\.local: no answer in 300 ms/,
      );
    }),
});
