// AcceptOutage through a real LogTape logger writing to a sink that keeps its records.
import assert from "node:assert/strict";
import { getLogger, type LogRecord } from "@logtape/logtape";
import { withLogRecords } from "@duet/testkit";
import { AcceptOutage } from "./outage.ts";

const withRecords = (fn: (records: LogRecord[]) => void | Promise<void>) =>
  withLogRecords(["test-outage"], "debug", fn);

const text = (record: LogRecord) =>
  record.message.map((part) => typeof part === "string" ? part : String(part)).join("");

Deno.test("AcceptOutage: one error line per outage, the rest debug; one info line at its end", () =>
  withRecords((records) => {
    let now = 1_000;
    const outage = new AcceptOutage({
      log: getLogger(["test-outage"]),
      port: () => 8080,
      now: () => now,
    });
    assert.equal(outage.active, false);
    outage.recovered(); // nothing to end: no line
    assert.equal(records.length, 0);

    outage.failed("EMFILE");
    outage.failed("EMFILE");
    assert.deepEqual([outage.active, outage.failures], [true, 2]);
    assert.deepEqual(records.map((r) => r.level), ["error", "debug"]);
    assert.match(text(records[0]!), /^Stopped accepting connections on port 8080: EMFILE; serving/);

    // The waits of one outage double from 5 ms to 1 s.
    const waits = Array.from({ length: 10 }, () => outage.nextAttemptMs());
    assert.deepEqual(waits, [5, 10, 20, 40, 80, 160, 320, 640, 1_000, 1_000]);

    now += 2_450;
    outage.recovered();
    assert.equal(outage.active, false);
    assert.equal(records.at(-1)!.level, "info");
    assert.equal(
      text(records.at(-1)!),
      "Accepting connections again on port 8080, after 2.5 s and 2 accept failures",
    );
    outage.recovered();
    assert.equal(records.length, 3, "an outage ends once");

    // A new outage starts its waits over and logs its own error line.
    outage.failed("EMFILE");
    assert.equal(outage.nextAttemptMs(), 5);
    assert.deepEqual(records.map((r) => r.level), ["error", "debug", "info", "error"]);
    assert.equal(outage.failures, 3, "failures count across outages");
  }));

Deno.test("AcceptOutage: a port taken while ours was closed is an error once per outage; other relisten failures are debug", () =>
  withRecords((records) => {
    const outage = new AcceptOutage({ log: getLogger(["test-outage"]), port: () => 9000 });
    // A relisten failure with no outage under way starts one.
    outage.relistenFailed(Object.assign(new Error("Too many open files"), { code: "EMFILE" }));
    assert.deepEqual([outage.active, outage.failures], [true, 1]);
    outage.relistenFailed(Object.assign(new Error("address in use"), { code: "EADDRINUSE" }));
    outage.relistenFailed(new Deno.errors.AddrInUse("address in use"));
    outage.relistenFailed(Object.assign(new Error("Too many open files"), { code: "EMFILE" }));
    assert.deepEqual(records.map((r) => r.level), ["error", "error", "debug", "debug"]);
    assert.match(text(records[1]!), /port 9000: another process has taken it/);
    assert.equal(outage.failures, 4);
    outage.recovered();
    outage.relistenFailed(new Deno.errors.AddrInUse("address in use"));
    assert.equal(
      records.filter((r) => /another process/.test(text(r))).length,
      2,
      "said again in a new outage",
    );
  }));
