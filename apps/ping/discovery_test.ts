// Discovery: parsing mDNS answers, SRV through a DNS server of our own on loopback, and
// mDNS end to end inside a network namespace that holds only a loopback interface (never
// on a real interface: no multicast leaves the test).
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import fc from "fast-check";
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
import { fromResponse, lookupSrv, orderSrv } from "./discovery.ts";
import { startPingServer } from "./mod.ts";

/** Runs `duet ARGS` as a process (apps never import another app, the CLI included). */
async function duet(args: string[]): Promise<{ code: number; out: string; err: string }> {
  const spawned = spawnDuet(args, { direct: true });
  const { code } = await spawned.child.status;
  await spawned.done;
  const text = (lines: string[]) => lines.map((line) => `${line}\n`).join("");
  return { code, out: text(spawned.lines.stdout), err: text(spawned.lines.stderr) };
}

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

// --- orderSrv: RFC 2782's order ---------------------------------------------------------

/** mulberry32: a small seeded source of uniform numbers in [0, 1), for repeatable draws. */
function seeded(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Returns the given draws in turn and fails the test if more are asked for. */
function scripted(...draws: number[]): () => number {
  return () => {
    const draw = draws.shift();
    assert.ok(draw !== undefined, "orderSrv drew more numbers than expected");
    return draw;
  };
}

type Rec = { priority: number; weight: number; name: string };
const rec = (name: string, priority: number, weight: number): Rec => ({ name, priority, weight });
const names = (records: Rec[]) => records.map((r) => r.name);

Deno.test("orderSrv(): exact orders for fixed draws (priority first; weight 0 arranged first)", () => {
  // Priority 10 is arranged zero(0), light(5), main(50): running sums 0, 5, 55, so a
  // draw d picks N = floor(d * 56) and the first record whose running sum is >= N.
  const records = [
    rec("backup", 20, 100),
    rec("light", 10, 5),
    rec("main", 10, 50),
    rec("zero", 10, 0),
  ];
  const copy = structuredClone(records);
  // N = 0: the weight-0 record (its one chance); then N = 28 of [light, main]: main.
  assert.deepEqual(names(orderSrv(records, scripted(0, 0.5))), [
    "zero",
    "main",
    "light",
    "backup",
  ]);
  // N = 55: main; then N = floor(0.99 * 6) = 5 of [zero, light] (sums 0, 5): light.
  assert.deepEqual(names(orderSrv(records, scripted(0.99, 0.99))), [
    "main",
    "light",
    "zero",
    "backup",
  ]);
  // N = 2: light; then N = 0 of [zero, main]: zero.
  assert.deepEqual(names(orderSrv(records, scripted(0.05, 0))), [
    "light",
    "zero",
    "main",
    "backup",
  ]);
  // N = 1 of [zero, light, main]: light (0 < 1 <= 5); N = 1 of [zero, main]: main.
  assert.deepEqual(names(orderSrv(records, scripted(1 / 56, 1 / 51))), [
    "light",
    "main",
    "zero",
    "backup",
  ]);
  assert.deepEqual(records, copy, "the input is not changed");
  // Every weight 0: N is always 0, so the given order stands.
  const zeros = [rec("a", 1, 0), rec("b", 1, 0), rec("c", 1, 0)];
  assert.deepEqual(names(orderSrv(zeros, scripted(0.99, 0.99))), ["a", "b", "c"]);
  // Lone records of a priority take no draw; nothing in, nothing out.
  assert.deepEqual(names(orderSrv([rec("b", 2, 9), rec("a", 1, 9)], scripted())), ["a", "b"]);
  assert.deepEqual(orderSrv([], scripted()), []);
  // Draws outside [0, 1) are clamped, not trusted.
  assert.deepEqual(names(orderSrv([rec("x", 0, 1), rec("y", 0, 1)], scripted(1))), ["y", "x"]);
  assert.deepEqual(names(orderSrv([rec("x", 0, 1), rec("y", 0, 1)], scripted(NaN))), [
    "x",
    "y",
  ]);
});

const recordsArb = fc.array(
  fc.record({
    name: fc.string({ maxLength: 4 }),
    priority: fc.integer({ min: 0, max: 3 }),
    weight: fc.oneof(fc.constant(0), fc.integer({ min: 0, max: 65535 })),
  }),
  { maxLength: 12 },
);

Deno.test("orderSrv() property: a permutation of its input, in ascending priority, for any seed", () => {
  fc.assert(
    fc.property(recordsArb, fc.integer(), (records, seed) => {
      const ordered = orderSrv(records, seeded(seed));
      // The same objects, each once.
      assert.equal(ordered.length, records.length);
      assert.equal(new Set(ordered).size, ordered.length);
      assert.ok(ordered.every((r) => records.includes(r)));
      for (let i = 1; i < ordered.length; i++) {
        assert.ok(ordered[i - 1]!.priority <= ordered[i]!.priority, "priorities ascend");
      }
      // The randomness is all in the parameter: the same seed, the same order.
      assert.deepEqual(orderSrv(records, seeded(seed)), ordered);
    }),
  );
});

Deno.test("orderSrv() property: over every equally likely draw, each record is picked first in exactly weight (+1 for the one arranged first) of sum + 1", () => {
  fc.assert(
    fc.property(
      fc.array(fc.integer({ min: 0, max: 30 }), { minLength: 2, maxLength: 6 }),
      (weights) => {
        const group = weights.map((weight, i) => rec(`r${i}`, 7, weight));
        const sum = weights.reduce((a, b) => a + b, 0);
        const firsts = new Map<string, number>();
        // Draw n of 0..sum exactly once each: the whole distribution of the first pick.
        for (let n = 0; n <= sum; n++) {
          const first = orderSrv(group, scripted((n + 0.5) / (sum + 1), ...Array(10).fill(0)))[0]!;
          firsts.set(first.name, (firsts.get(first.name) ?? 0) + 1);
        }
        // RFC 2782's arrangement: weight 0 first, otherwise in the given order.
        const arrangedFirst = group.find((r) => r.weight === 0) ?? group[0]!;
        for (const r of group) {
          assert.equal(
            firsts.get(r.name) ?? 0,
            r.weight + (r === arrangedFirst ? 1 : 0),
            `${r.name} in ${JSON.stringify(weights)}`,
          );
        }
      },
    ),
  );
});

Deno.test("orderSrv(): with one fixed seed, 20,000 orderings give first picks in RFC 2782's shares", () => {
  // Seeded, so the counts are the same on every run: no flaky statistics.
  const group = [rec("none", 0, 0), rec("w10", 0, 10), rec("w30", 0, 30), rec("w60", 0, 60)];
  const random = seeded(2782);
  const firsts: Record<string, number> = { none: 0, w10: 0, w30: 0, w60: 0 };
  const runs = 20_000;
  for (let i = 0; i < runs; i++) firsts[orderSrv(group, random)[0]!.name]!++;
  // Expected shares of 101 draws: none 1, w10 10, w30 30, w60 60.
  for (const [name, share] of [["none", 1], ["w10", 10], ["w30", 30], ["w60", 60]] as const) {
    assert.ok(
      Math.abs(firsts[name]! / runs - share / 101) < 0.01,
      `${name}: ${firsts[name]} of ${runs}, expected about ${Math.round((runs * share) / 101)}`,
    );
  }
});

Deno.test({
  name: "lookupSrv(): every target, in RFC 2782 order (the lowest priority first, weighted " +
    'random within one); no record, or only ".", is null',
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const dns = fakeDns({
      "_duet-ping._udp.example.test": [
        { priority: 20, weight: 100, port: 1, target: "backup.example.test" },
        { priority: 10, weight: 5, port: 2, target: "light.example.test" },
        { priority: 10, weight: 50, port: 4433, target: "main.example.test" },
      ],
      "_duet-ping._udp.refused.test": [{ priority: 0, weight: 0, port: 0, target: "." }],
    });
    try {
      // A draw of 0.5 is N = 28 of sums (5, 55): main first, whatever order DNS gave.
      assert.deepEqual(await lookupSrv("example.test", dns.address, () => 0.5), {
        url: new URL("https://main.example.test:4433/ping"),
        urls: [
          new URL("https://main.example.test:4433/ping"),
          new URL("https://light.example.test:2/ping"),
          new URL("https://backup.example.test:1/ping"),
        ],
        via: "DNS SRV _duet-ping._udp.example.test",
      });
      // A draw of 0 is N = 0: light, the first with a running sum >= 0, when DNS kept
      // the order given.
      assert.deepEqual(
        (await lookupSrv("example.test", dns.address, () => 0))?.urls?.map((u) => u.host),
        ["light.example.test:2", "main.example.test:4433", "backup.example.test:1"],
      );
      assert.equal(await lookupSrv("nothing.test", dns.address), null);
      assert.equal(await lookupSrv("refused.test", dns.address), null);
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
      const found = await duet([...args, "--domain", "example.test"]);
      assert.equal(found.code, 0, found.err);
      assert.match(
        found.out,
        /^found https:\/\/localhost:\d+\/ping by DNS SRV _duet-ping\._udp\.example\.test$/m,
      );
      assert.match(found.out, /2 transmitted, 2 received/);
      const missing = await duet([...args, "--domain", "nothing.test"]);
      assert.equal(missing.code, 1);
      assert.match(
        missing.err,
        /no ping server found \(tried mDNS: skipped \(--no-mdns\); DNS SRV _duet-ping\._udp\.nothing\.test: no record\); pass --url/,
      );
      const nowhere = await duet(["ping", "--no-mdns", "--count", "1"]);
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
