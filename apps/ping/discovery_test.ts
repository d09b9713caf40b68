// Discovery: parsing mDNS answers, RFC 2782's order of SRV records, and SRV lookups through a
// DNS server of our own on loopback (testdata/fake_dns.ts). The command line's discovery end to
// end (`duet ping --domain`, and mDNS inside a loopback-only network namespace) is tested in
// apps/cli/ping_discovery_test.ts.
import assert from "node:assert/strict";
import fc from "fast-check";
// @ts-types="@types/dns-packet"
import * as dnsPacket from "dns-packet";
import { fromResponse, lookupSrv, orderSrv, planAnnouncement } from "./discovery.ts";
import { fakeDns } from "./testdata/fake_dns.ts";

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

// --- planAnnouncement: only addresses served and covered ---------------------------------

const LO = { name: "lo", address: "127.0.0.1" };
const ETH = { name: "eth0", address: "192.0.2.7" };
const GENERATED = ["127.0.0.1", "::1"];

Deno.test("planAnnouncement(): with no certificate known yet, every check but the certificate's", () => {
  const plan = (listening: string, requested?: string[]) =>
    planAnnouncement({
      listening,
      interfaces: [LO, ETH],
      certificateAddresses: undefined,
      ...(requested ? { requested } : {}),
    });
  assert.deepEqual(plan("127.0.0.1"), ["127.0.0.1"]);
  assert.deepEqual(plan("0.0.0.0", ["eth0"]), ["192.0.2.7"], "no certificate to refuse it yet");
  assert.deepEqual(plan("0.0.0.0"), ["192.0.2.7"]);
  assert.throws(() => plan("127.0.0.1", ["192.0.2.7"]), /does not listen there/);
  assert.throws(() => plan("127.0.0.1", ["wlan9"]), /no IPv4 interface named wlan9/);
  assert.throws(() => plan("::1"), /IPv4 addresses only/);
  // What an entry stands for is checked before where the server listens.
  assert.throws(
    () => plan("0.0.0.0", ["10.9.9.9"]),
    /cannot announce 10\.9\.9\.9: no interface of this host has it/,
  );
  assert.throws(
    () => plan("0.0.0.0", ["0.0.0.0"]),
    /0\.0\.0\.0 is not an address but every interface/,
  );
  assert.throws(
    () => plan("::1", ["::1"]),
    /cannot announce ::1: mDNS here announces IPv4 addresses only/,
  );
});

Deno.test("planAnnouncement(): bound to one address, only that one, and only if the certificate names it", () => {
  const plan = (certificateAddresses: string[], requested?: string[]) =>
    planAnnouncement({
      listening: "127.0.0.1",
      interfaces: [LO, ETH],
      certificateAddresses,
      ...(requested ? { requested } : {}),
    });
  // The bug: 192.0.2.7 was announced for a server bound to 127.0.0.1.
  assert.deepEqual(plan(GENERATED), ["127.0.0.1"]);
  assert.deepEqual(plan(GENERATED, ["lo", "127.0.0.1"]), ["127.0.0.1"]);
  assert.throws(
    () => plan(GENERATED, ["192.0.2.7"]),
    new RangeError(
      "cannot announce 192.0.2.7: the server does not listen there (it listens on " +
        "127.0.0.1; --host 0.0.0.0 listens on every interface)",
    ),
  );
  assert.throws(
    () => plan(GENERATED, ["eth0"]),
    /cannot announce 192\.0\.2\.7: the server does not listen there/,
  );
  assert.throws(() => plan(GENERATED, ["wlan9"]), new RangeError("no IPv4 interface named wlan9"));
  assert.throws(
    () => plan(["10.0.0.1"]),
    /^RangeError: nothing to announce: the server listens on 127\.0\.0\.1 and its certificate names 10\.0\.0\.1;/,
  );
});

Deno.test("planAnnouncement(): on every interface, the addresses the certificate names; loopback alone only for a server on loopback", () => {
  const wild = (certificateAddresses: string[], requested?: string[]) =>
    planAnnouncement({
      listening: "0.0.0.0",
      interfaces: [LO, ETH],
      certificateAddresses,
      ...(requested ? { requested } : {}),
    });
  assert.deepEqual(wild(["192.0.2.7", "127.0.0.1"]), ["192.0.2.7"]);
  assert.deepEqual(wild(["192.0.2.7"], ["eth0"]), ["192.0.2.7"]);
  // A generated certificate names loopback only: clients elsewhere could not verify it.
  assert.throws(
    () => wild(GENERATED),
    /^RangeError: nothing to announce: the server listens on 127\.0\.0\.1, 192\.0\.2\.7 and its certificate names 127\.0\.0\.1, ::1; loopback alone is no use to other hosts;/,
  );
  assert.throws(
    () => wild(GENERATED, ["192.0.2.7"]),
    /^RangeError: cannot announce 192\.0\.2\.7: the server's certificate does not name it \(it names 127\.0\.0\.1, ::1\)/,
  );
  // A host with loopback alone: loopback it is.
  assert.deepEqual(
    planAnnouncement({ listening: "0.0.0.0", interfaces: [LO], certificateAddresses: GENERATED }),
    ["127.0.0.1"],
  );
  assert.throws(
    () => planAnnouncement({ listening: "::1", interfaces: [LO], certificateAddresses: GENERATED }),
    /IPv4 addresses only/,
  );
});

Deno.test("planAnnouncement() property: whatever it returns is listened on and named by the certificate", () => {
  const address: fc.Arbitrary<string> = fc.constantFrom(
    "127.0.0.1",
    "127.0.0.2",
    "192.0.2.7",
    "198.51.100.1",
    "10.0.0.1",
  );
  fc.assert(
    fc.property(
      fc.oneof(address, fc.constantFrom("0.0.0.0", "::")),
      fc.uniqueArray(address, { maxLength: 4 }),
      fc.uniqueArray(address, { maxLength: 4 }),
      fc.option(fc.array(address, { maxLength: 3 }), { nil: undefined }),
      (listening, up, certificateAddresses, requested) => {
        const interfaces = up.map((a, i) => ({ name: `if${i}`, address: a }));
        let planned: string[];
        try {
          planned = planAnnouncement({
            listening,
            interfaces,
            certificateAddresses,
            ...(requested ? { requested } : {}),
          });
        } catch (error) {
          assert.ok(error instanceof RangeError);
          return;
        }
        assert.ok(planned.length > 0);
        for (const a of planned) {
          assert.ok(listening === a || (["0.0.0.0", "::"].includes(listening) && up.includes(a)));
          assert.ok(certificateAddresses.includes(a));
        }
      },
    ),
  );
});

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
