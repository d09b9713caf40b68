// Discovery: parsing mDNS answers, SRV through a DNS server of our own on loopback, and
// mDNS end to end inside a network namespace that holds only a loopback interface (never
// on a real interface: no multicast leaves the test).
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
// @ts-types="@types/dns-packet"
import * as dnsPacket from "dns-packet";
import {
  type Requirement,
  run,
  spawnDuet,
  type SpawnedDuet,
  testWith,
  waitFor,
} from "@duet/testkit";
import { fromResponse, lookupSrv } from "./discovery.ts";
import { inProcess } from "../cli/testdata/in_process.ts";
import { startPingServer } from "./mod.ts";

const SERVICE = "_duet-ping._udp.local";
const INSTANCE = `box.${SERVICE}`;

function response(answers: dnsPacket.Answer[]): dnsPacket.Packet {
  return dnsPacket.decode(dnsPacket.encode({ type: "response", id: 0, answers }));
}

Deno.test("fromResponse(): PTR -> SRV -> A gives the URL; incomplete answers and goodbyes do not", () => {
  const ptr: dnsPacket.Answer = { name: SERVICE, type: "PTR", ttl: 120, data: INSTANCE };
  const srv: dnsPacket.Answer = {
    name: INSTANCE,
    type: "SRV",
    ttl: 120,
    data: { port: 4433, target: "box.local" },
  };
  const a: dnsPacket.Answer = { name: "box.local", type: "A", ttl: 120, data: "192.0.2.7" };
  assert.deepEqual(fromResponse(response([ptr, srv, a])), {
    url: new URL("https://192.0.2.7:4433/ping"),
    via: `mDNS (${INSTANCE})`,
  });
  assert.equal(fromResponse(response([ptr, srv])), null, "no address");
  assert.equal(fromResponse(response([srv, a])), null, "no PTR for our service");
  assert.equal(fromResponse(response([{ ...ptr, ttl: 0 }, srv, a])), null, "a goodbye");
  const other = { ...ptr, name: "_http._tcp.local" } as dnsPacket.Answer;
  assert.equal(fromResponse(response([other, srv, a])), null, "another service");
});

/** A DNS server on loopback UDP answering SRV questions from `records`. */
function fakeDns(
  records: Record<string, { priority: number; weight: number; port: number; target: string }[]>,
) {
  const socket = Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port: 0 });
  (async () => {
    for (;;) {
      let packet: Uint8Array, from: Deno.Addr;
      try {
        [packet, from] = await socket.receive();
      } catch {
        return;
      }
      const query = dnsPacket.decode(Buffer.from(packet));
      const question = query.questions![0]!;
      const found = records[question.name];
      const reply = dnsPacket.encode({
        type: "response",
        id: query.id,
        flags: dnsPacket.RECURSION_DESIRED | dnsPacket.RECURSION_AVAILABLE | (found ? 0 : 3), // 3: NXDOMAIN
        questions: query.questions!,
        answers: (found ?? []).map((data) => ({
          name: question.name,
          type: "SRV" as const,
          ttl: 60,
          data,
        })),
      });
      await socket.send(reply, from);
    }
  })();
  return {
    address: `127.0.0.1:${(socket.addr as Deno.NetAddr).port}`,
    close: () => socket.close(),
  };
}

Deno.test({
  name: "lookupSrv(): the lowest priority, then the highest weight; no record is null",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const dns = fakeDns({
      "_duet-ping._udp.example.test": [
        { priority: 20, weight: 100, port: 1, target: "backup.example.test" },
        { priority: 10, weight: 5, port: 2, target: "light.example.test" },
        { priority: 10, weight: 50, port: 4433, target: "main.example.test" },
      ],
    });
    try {
      assert.deepEqual(await lookupSrv("example.test", dns.address), {
        url: new URL("https://main.example.test:4433/ping"),
        via: "DNS SRV _duet-ping._udp.example.test",
      });
      assert.equal(await lookupSrv("nothing.test", dns.address), null);
    } finally {
      dns.close();
    }
  },
});

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
      const found = await inProcess([...args, "--domain", "example.test"]);
      assert.equal(found.code, 0, found.err);
      assert.match(
        found.out,
        /^found https:\/\/localhost:\d+\/ping by DNS SRV _duet-ping\._udp\.example\.test$/m,
      );
      assert.match(found.out, /2 transmitted, 2 received/);
      const missing = await inProcess([...args, "--domain", "nothing.test"]);
      assert.equal(missing.code, 1);
      assert.match(
        missing.err,
        /no ping server found \(tried mDNS: skipped \(--no-mdns\); DNS SRV _duet-ping\._udp\.nothing\.test: no record\); pass --url/,
      );
      const nowhere = await inProcess(["ping", "--no-mdns", "--count", "1"]);
      assert.equal(nowhere.code, 1);
      assert.match(nowhere.err, /DNS SRV: skipped, no --domain given/);
    } finally {
      dns.close();
      await server.shutdown(50);
    }
  },
});

// --- mDNS inside a network namespace ----------------------------------------------------

const namespace = `duet-test-${Deno.pid}`;

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
  name: "mDNS: a server started with --announce is found by duet ping with no --url, " +
    "inside a loopback-only network namespace",
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
