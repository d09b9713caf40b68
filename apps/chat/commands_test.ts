import assert from "node:assert/strict";
import fc from "fast-check";
import { COMMANDS, readTypedLine } from "./commands.ts";

Deno.test("readTypedLine(): commands in any case and with spaces around; other slash words are never text", () => {
  assert.deepEqual(readTypedLine("/key"), { kind: "command", command: "/key" });
  assert.deepEqual(readTypedLine("  /KEY "), { kind: "command", command: "/key" });
  assert.deepEqual(readTypedLine("/accept-key"), { kind: "command", command: "/accept-key" });
  assert.deepEqual(readTypedLine("/exit"), { kind: "unknown", word: "/exit" });
  assert.deepEqual(readTypedLine("/key now"), { kind: "unknown", word: "/key" });
  assert.deepEqual(readTypedLine("//key is a command"), {
    kind: "text",
    text: "/key is a command",
  });
  assert.deepEqual(readTypedLine(" hello /key"), { kind: "text", text: " hello /key" });
  assert.deepEqual(readTypedLine("   "), { kind: "empty" });
});

Deno.test("readTypedLine(): a line is sent as typed unless it starts with a slash", () => {
  fc.assert(
    fc.property(fc.string(), (line) => {
      const read = readTypedLine(line);
      const trimmed = line.trim();
      if (!trimmed) assert.equal(read.kind, "empty");
      else if (!trimmed.startsWith("/")) assert.deepEqual(read, { kind: "text", text: line });
      else if (read.kind === "command") assert.ok(COMMANDS.includes(read.command));
      else if (read.kind === "text") assert.ok(trimmed.startsWith("//"));
    }),
  );
});
