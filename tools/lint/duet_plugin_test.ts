// The lint plugin, run on small sources with Deno.lint.runPlugin (only `deno test` offers it).
import assert from "node:assert/strict";
import plugin, { inFunctionLengthScope, MAX_FUNCTION_LINES } from "./duet_plugin.ts";

const root = new URL("../../", import.meta.url).pathname;
const inApps = `${root}apps/example/example.ts`;

/** Statements that fill `n` lines, with braces in strings, a template, a regex and comments. */
function body(n: number): string {
  const lines = [
    `  const a = "}}}";`,
    "  const b = `${a} }`;",
    "  const c = /}\\}/;",
    "  // } a comment",
    "  /* } */",
  ];
  return Array.from({ length: n }, (_, i) => lines[i % lines.length]).join("\n");
}

/** A function `name` spanning exactly `lines` lines, signature and closing brace included. */
function fn(name: string, lines: number): string {
  return `function ${name}() {\n${body(lines - 2)}\n}\n`;
}

function lint(source: string, fileName = inApps): string[] {
  return Deno.lint.runPlugin(plugin, fileName, source).map((d) => `${d.id}: ${d.message}`);
}

Deno.test("max-function-lines: a function of exactly the limit passes, one line more fails", () => {
  assert.deepEqual(lint(fn("fits", MAX_FUNCTION_LINES)), []);
  assert.deepEqual(lint(fn("tooLong", MAX_FUNCTION_LINES + 1)), [
    `duet/max-function-lines: tooLong is ${
      MAX_FUNCTION_LINES + 1
    } lines long, more than ${MAX_FUNCTION_LINES}`,
  ]);
});

Deno.test("max-function-lines: every kind of function is measured, and named in the report", () => {
  const n = MAX_FUNCTION_LINES + 5;
  const source = [
    `const arrow = () => {\n${body(n)}\n};`,
    `const expression = function () {\n${body(n)}\n};`,
    `class Store {\n  method() {\n${body(n)}\n  }\n  get value() {\n${
      body(n)
    }\n    return 1;\n  }\n}`,
    `const object = { handler(x: number) {\n${body(n)}\n  return x;\n} };`,
    `Deno.test("a long test", async () => {\n${body(n)}\n});`,
    `export default function () {\n${body(n)}\n}`,
    `Deno.test({ name: "an object test", fn: () => {\n${body(n)}\n} });`,
  ].join("\n");
  const messages = lint(source).map((m) => m.replace(/ is \d+ lines long.*/, ""));
  assert.deepEqual(
    messages.sort(),
    [
      "duet/max-function-lines: Store.method",
      "duet/max-function-lines: Store.value",
      "duet/max-function-lines: arrow",
      'duet/max-function-lines: callback of Deno.test "a long test"',
      "duet/max-function-lines: expression",
      "duet/max-function-lines: export default function",
      'duet/max-function-lines: fn of "an object test"',
      "duet/max-function-lines: handler",
    ].sort(),
  );
});

Deno.test("max-function-lines: an outer function counts its inner ones' lines; each is reported", () => {
  const inner = fn("inner", MAX_FUNCTION_LINES + 1).trimEnd();
  const messages = lint(`function outer() {\n${inner}\n}\n`);
  assert.equal(messages.length, 2);
  assert.match(messages[0]!, /outer is 103 lines long/);
  assert.match(messages[1]!, /inner is 101 lines long/);
});

Deno.test("max-function-lines: only apps/ and packages/ are held to it", () => {
  const long = fn("long", MAX_FUNCTION_LINES + 1);
  assert.equal(lint(long, `${root}packages/example/mod.ts`).length, 1);
  assert.deepEqual(lint(long, `${root}bench/example/run.ts`), []);
  assert.deepEqual(lint(long, `${root}tools/example.ts`), []);
  assert.ok(inFunctionLengthScope("apps/chat/server.ts"));
  assert.ok(!inFunctionLengthScope("tools/guardrails.ts"));
  assert.ok(!inFunctionLengthScope("/elsewhere/apps/chat/server.ts"));
});
