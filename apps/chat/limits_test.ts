// The chat server's limits as pure functions: buckets (pacing and refusal), the output
// budget, the accept backoff, the connection cap from the open-file limit, address keys.
// Rules that must hold whatever happens are checked under generated sequences.
import assert from "node:assert/strict";
import fc from "fast-check";
import {
  addressKey,
  admitOutput,
  defaultMaxConnections,
  frameCost,
  KEY_OFFER_COST,
  mayRead,
  parseOpenFileLimit,
  readOpenFileLimit,
  takeCodeAttempt,
} from "./limits.ts";

Deno.test("limits: every frame costs; a key offer costs more", () => {
  assert.equal(frameCost({ type: "heartbeat" }), 1);
  assert.equal(frameCost({ type: "send" }), 1);
  assert.equal(frameCost({ type: "history" }), 1);
  assert.equal(frameCost({ type: "hello" }), 1);
  assert.equal(frameCost({ type: "key_offer" }), KEY_OFFER_COST);
  assert.equal(frameCost({ type: "code" }), KEY_OFFER_COST);
  assert.equal(frameCost(null), 1);
  assert.equal(frameCost(42), 1);
  assert.equal(frameCost({}), 1);
  assert.ok(KEY_OFFER_COST > 1);
});

Deno.test("limits: output above the watermark stops reading; above the budget cuts off", () => {
  const limits = { watermarkBytes: 256 * 1024, budgetBytes: 1024 * 1024 };
  assert.equal(mayRead(0, limits), true);
  assert.equal(mayRead(256 * 1024, limits), true);
  assert.equal(mayRead(256 * 1024 + 1, limits), false);
  assert.equal(admitOutput(0, 65_540, limits), "queue");
  assert.equal(admitOutput(1024 * 1024 - 10, 10, limits), "queue");
  assert.equal(admitOutput(1024 * 1024 - 10, 11, limits), "cut_off");
  fc.assert(
    fc.property(
      fc.array(
        fc.oneof(
          fc.record({ frame: fc.integer({ min: 1, max: 65_540 }) }),
          fc.record({ written: fc.integer({ min: 0, max: 200_000 }) }),
        ),
      ),
      (events) => {
        // A connection that queues only what is admitted never holds more than its budget.
        let unwritten = 0;
        for (const event of events) {
          if ("frame" in event) {
            if (admitOutput(unwritten, event.frame, limits) === "cut_off") return;
            unwritten += event.frame;
          } else unwritten = Math.max(0, unwritten - event.written);
          assert.ok(unwritten <= limits.budgetBytes);
        }
      },
    ),
  );
});

Deno.test("limits: the open-file limit is read from /proc/self/limits; the cap keeps a reserve", () => {
  const text = [
    "Limit                     Soft Limit           Hard Limit           Units     ",
    "Max processes             127346               127346               processes ",
    "Max open files            1024                 524288               files     ",
    "Max locked memory         8388608              8388608              bytes     ",
  ].join("\n");
  assert.equal(parseOpenFileLimit(text), 1024, "the soft limit");
  assert.equal(
    parseOpenFileLimit("Max open files            unlimited            unlimited            files"),
    undefined,
  );
  assert.equal(parseOpenFileLimit("nothing here"), undefined);
  assert.equal(defaultMaxConnections(1024), 896);
  assert.equal(defaultMaxConnections(20_000), 18_000);
  assert.equal(defaultMaxConnections(200), 72);
  assert.equal(defaultMaxConnections(50), 1);
  assert.equal(defaultMaxConnections(undefined), 1000);
});

Deno.test({
  name: "limits: the open-file limit is read with all permissions and with duet's own",
  ignore: Deno.build.os !== "linux",
  async fn() {
    const shell = await new Deno.Command("sh", { args: ["-c", "ulimit -n"] }).output();
    const expected = Number(new TextDecoder().decode(shell.stdout).trim());
    assert.equal(readOpenFileLimit(), expected, "from /proc/self/limits");
    // As `deno task duet` runs it: no --allow-all, so /proc/self/limits is closed to it.
    const script = await Deno.makeTempFile({ suffix: ".ts" });
    await Deno.writeTextFile(
      script,
      `import { readOpenFileLimit } from "${new URL("./limits.ts", import.meta.url).href}";\n` +
        `let proc = "closed";\n` +
        `try { Deno.readTextFileSync("/proc/self/limits"); proc = "readable"; } catch { /* */ }\n` +
        "console.log(proc, readOpenFileLimit());\n",
    );
    const child = await new Deno.Command(Deno.execPath(), {
      args: ["run", "--allow-read", "--allow-run", "--allow-env", script],
    }).output();
    await Deno.remove(script);
    assert.equal(
      new TextDecoder().decode(child.stdout).trim(),
      `closed ${expected}`,
      "from ulimit -n",
    );
  },
});

Deno.test("limits: IPv6 addresses count by their /64, IPv4 ones as they are", () => {
  assert.equal(addressKey("127.0.0.1"), "127.0.0.1");
  assert.equal(addressKey("::1"), "0:0:0:0::/64");
  assert.equal(addressKey("2001:db8:1:2:3:4:5:6"), "2001:db8:1:2::/64");
  assert.equal(addressKey("2001:db8:1:2::7"), "2001:db8:1:2::/64");
  assert.equal(addressKey("2001:DB8:0001:0002:ffff::"), "2001:db8:1:2::/64");
  assert.equal(addressKey("[2001:db8:1:2::7]"), "2001:db8:1:2::/64");
  assert.equal(addressKey("fe80::1%eth0"), "fe80:0:0:0::/64");
  assert.equal(addressKey("::ffff:192.0.2.7"), "192.0.2.7");
  assert.equal(addressKey("64:ff9b::192.0.2.7"), "64:ff9b:0:0::/64");
  assert.equal(addressKey("not:an:address"), "not:an:address");
  assert.equal(addressKey("1::2::3"), "1::2::3");
  assert.equal(addressKey("localhost"), "localhost");
  fc.assert(
    fc.property(fc.ipV6(), (address) => {
      const key = addressKey(address);
      assert.ok(/^([0-9a-f]{1,4}:){4}:\/64$/.test(key) || /^\d+\.\d+\.\d+\.\d+$/.test(key), key);
    }),
  );
});

Deno.test("limits: code attempts, at most perWindow in a window, whatever the times", () => {
  fc.assert(
    fc.property(
      fc.integer({ min: 1, max: 12 }),
      fc.integer({ min: 1, max: 10_000 }),
      fc.array(fc.integer({ min: 0, max: 3_000 }), { maxLength: 60 }),
      (perWindow, windowMs, gaps) => {
        const rule = { perWindow, windowMs };
        let attempts = { count: 0, windowStartMs: null as number | null };
        let now = 1_000_000;
        const taken: number[] = [];
        for (const gap of gaps) {
          now += gap;
          const outcome = takeCodeAttempt(attempts, now, rule);
          if (outcome.ok) {
            attempts = outcome.attempts;
            taken.push(now);
          } else {
            // Refused only while a window is full, and told when it ends.
            assert.equal(attempts.count, perWindow);
            assert.ok(outcome.retryAfterMs > 0 && outcome.retryAfterMs <= windowMs);
            assert.equal(now + outcome.retryAfterMs, attempts.windowStartMs! + windowMs);
          }
        }
        // Fixed windows: any span of windowMs holds at most two windows' worth.
        for (const [i, t] of taken.entries()) {
          const within = taken.slice(i).filter((u) => u - t < windowMs).length;
          assert.ok(within <= 2 * perWindow, `${within} attempts within ${windowMs} ms`);
        }
        // The first perWindow attempts are never refused.
        assert.equal(Math.min(taken.length, perWindow), Math.min(gaps.length, perWindow));
      },
    ),
  );
  const rule = { perWindow: 2, windowMs: 100 };
  const one = takeCodeAttempt({ count: 0, windowStartMs: null }, 5, rule);
  assert.deepEqual(one, { ok: true, attempts: { count: 1, windowStartMs: 5 } });
  const two = takeCodeAttempt({ count: 1, windowStartMs: 5 }, 50, rule);
  assert.deepEqual(two, { ok: true, attempts: { count: 2, windowStartMs: 5 } });
  assert.deepEqual(takeCodeAttempt({ count: 2, windowStartMs: 5 }, 60, rule), {
    ok: false,
    retryAfterMs: 45,
  });
  assert.deepEqual(takeCodeAttempt({ count: 2, windowStartMs: 5 }, 105, rule), {
    ok: true,
    attempts: { count: 1, windowStartMs: 105 },
  });
});
