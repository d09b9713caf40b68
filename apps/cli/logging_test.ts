import assert from "node:assert/strict";
import { getLogger } from "@logtape/logtape";
import { parseLoggingOptions, resetLogging, setupLogging } from "./logging.ts";
import { UsageError } from "./io.ts";

function capture(options: Parameters<typeof setupLogging>[0]): string[] {
  const lines: string[] = [];
  setupLogging(options, (text) => lines.push(text));
  return lines;
}

Deno.test("setupLogging() writes records at or above the level, in JSON lines", () => {
  const lines = capture({ level: "info", format: "json" });
  try {
    const log = getLogger(["duet", "test"]);
    log.debug("hidden");
    log.info("pair {id} completed", { id: "abc" });
    assert.equal(lines.length, 1);
    const record = JSON.parse(lines[0]!);
    assert.equal(record.level, "INFO");
    assert.equal(record.message, 'pair "abc" completed');
    assert.deepEqual(record.logger, "duet.test");
  } finally {
    resetLogging();
  }
});

Deno.test("setupLogging() with quiet writes errors only", () => {
  const lines = capture({ quiet: true, level: "debug" });
  try {
    const log = getLogger(["duet", "test"]);
    log.info("not shown");
    log.warn("not shown either");
    log.error("shown");
    assert.equal(lines.length, 1);
    assert.match(lines[0]!, /shown/);
  } finally {
    resetLogging();
  }
});

Deno.test("setupLogging() pretty text names the level and category", () => {
  const lines = capture({ format: "pretty" });
  try {
    getLogger(["duet", "chat"]).warn("database unreachable");
    assert.match(lines[0]!, /WRN.*duet.chat.*database unreachable/);
  } finally {
    resetLogging();
  }
});

Deno.test("parseLoggingOptions() rejects unknown levels and formats", () => {
  assert.throws(() => parseLoggingOptions({ level: "loud" }), UsageError);
  assert.throws(() => parseLoggingOptions({ format: "xml" }), UsageError);
  assert.deepEqual(parseLoggingOptions({}), { level: "info", format: "pretty" });
});
