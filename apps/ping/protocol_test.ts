import assert from "node:assert/strict";
import fc from "fast-check";
import {
  answer,
  answerDatagram,
  answerMessage,
  type LineEvent,
  LineSplitter,
  MAX_LINE_BYTES,
  serveLines,
} from "./protocol.ts";

const bytes = (s: string) => new TextEncoder().encode(s);
const text = (b: Uint8Array) => new TextDecoder().decode(b);

Deno.test("answer(): ping and ping PAYLOAD get pong; anything else an error naming it", () => {
  assert.equal(answer("ping"), "pong");
  assert.equal(answer("ping 42 abc"), "pong 42 abc");
  assert.equal(answer("ping "), "pong ", "an empty payload is still a payload");
  assert.equal(answer("ping  two spaces"), "pong  two spaces");
  assert.equal(answer("PING"), 'error expected "ping" or "ping PAYLOAD", got "PING"');
  assert.equal(answer(""), 'error expected "ping" or "ping PAYLOAD", got ""');
  assert.equal(answer("pingpong"), 'error expected "ping" or "ping PAYLOAD", got "pingpong"');
  assert.match(answer("x".repeat(100)), /got "x{32}\.\.\."$/);
});

Deno.test("answerDatagram(): one line without newline; not UTF-8 and newlines are errors", () => {
  assert.equal(text(answerDatagram(bytes("ping 7"))), "pong 7");
  assert.equal(
    text(answerDatagram(bytes("ping\n"))),
    "error a datagram holds one line, no newline",
  );
  assert.equal(text(answerDatagram(new Uint8Array([0x70, 0xff]))), "error not UTF-8");
});

Deno.test("LineSplitter: lines come out whole however the bytes are cut", () => {
  fc.assert(
    fc.property(
      fc.array(fc.string({ unit: "grapheme", maxLength: 40 }).filter((s) => !s.includes("\n")), {
        maxLength: 8,
      }),
      fc.array(fc.nat(), { maxLength: 10 }),
      (lines, cuts) => {
        const all = bytes(lines.map((l) => `${l}\n`).join(""));
        const points = [...new Set(cuts.map((c) => c % (all.length + 1)))].sort((a, b) => a - b);
        const splitter = new LineSplitter();
        const out: string[] = [];
        let previous = 0;
        for (const point of [...points, all.length]) {
          for (const event of splitter.push(all.subarray(previous, point))) {
            assert.equal(event.kind, "line");
            if (event.kind === "line") out.push(event.line);
          }
          previous = point;
        }
        // A trailing CR is dropped by design; the generator may produce one.
        assert.deepEqual(out, lines.map((l) => l.replace(/\r$/, "")));
        assert.equal(splitter.pendingBytes, 0);
      },
    ),
  );
});

Deno.test("LineSplitter: CRLF is accepted; a partial line waits; bad UTF-8 is reported", () => {
  const splitter = new LineSplitter();
  assert.deepEqual(splitter.push(bytes("ping\r\npi")), [{ kind: "line", line: "ping" }]);
  assert.equal(splitter.pendingBytes, 2);
  assert.deepEqual(splitter.push(bytes("ng 1\n")), [{ kind: "line", line: "ping 1" }]);
  assert.deepEqual(splitter.push(new Uint8Array([0xc3, 0x28, 0x0a])), [{ kind: "not-utf8" }]);
  // A line that begins with U+FEFF is that line, not "ping": the decoder keeps the mark.
  assert.deepEqual(splitter.push(bytes("\ufeffping\n")), [{ kind: "line", line: "\ufeffping" }]);
  assert.match(text(answerDatagram(bytes("\ufeffping"))), /^error expected "ping"/);
});

Deno.test("LineSplitter: a line over the limit is refused, in one chunk or across many", () => {
  const exact = new LineSplitter(8);
  assert.deepEqual(exact.push(bytes("12345678\n")), [{ kind: "line", line: "12345678" }]);
  assert.deepEqual(new LineSplitter(8).push(bytes("123456789\n")), [{ kind: "too-long" }]);
  const slow = new LineSplitter(8);
  assert.deepEqual(slow.push(bytes("12345")), []);
  assert.deepEqual(slow.push(bytes("6789")), [{ kind: "too-long" }], "no newline needed");
  assert.equal(MAX_LINE_BYTES, 16_384);
});

Deno.test("LineSplitter: the limit leaves out the newline, LF or CR LF; a too-long line ends the splitting", () => {
  for (const ending of ["\n", "\r\n"]) {
    assert.deepEqual(new LineSplitter(8).push(bytes(`12345678${ending}`)), [
      { kind: "line", line: "12345678" },
    ], JSON.stringify(ending));
    assert.deepEqual(new LineSplitter(8).push(bytes(`123456789${ending}`)), [{ kind: "too-long" }]);
  }
  const splitter = new LineSplitter(8);
  assert.deepEqual(splitter.push(bytes("123456789")), [{ kind: "too-long" }]);
  assert.deepEqual(splitter.push(bytes("\nping\n")), [], "nothing after a too-long line");
  assert.equal(splitter.pendingBytes, 0);
});

Deno.test("LineSplitter: any bytes cut anywhere give the events of the bytes pushed at once", () => {
  const byte = fc.constantFrom(0x0a, 0x0d, 0x61, 0xc3, 0xa9, 0xff);
  fc.assert(
    fc.property(
      fc.array(byte, { minLength: 12, maxLength: 60, size: "max" }),
      fc.array(fc.nat(), { minLength: 1, maxLength: 12, size: "max" }),
      (all, cuts) => {
        const input = new Uint8Array(all);
        const whole = new LineSplitter(8).push(input);
        const points = [...new Set(cuts.map((c) => c % (input.length + 1)))].sort((a, b) => a - b);
        const splitter = new LineSplitter(8);
        const pieces: LineEvent[] = [];
        let previous = 0;
        for (const point of [...points, input.length]) {
          pieces.push(...splitter.push(input.subarray(previous, point)));
          previous = point;
        }
        assert.deepEqual(pieces, whole);
      },
    ),
  );
});

async function exchange(chunks: Uint8Array[]): Promise<string> {
  const request = new ReadableStream<Uint8Array>({
    start(controller) {
      for (const chunk of chunks) controller.enqueue(chunk);
      controller.close();
    },
  });
  const reply = new TransformStream<Uint8Array, Uint8Array>();
  const served = serveLines(request, reply.writable);
  const out = await new Response(reply.readable).text();
  await served;
  return out;
}

Deno.test("serveLines(): pipelined pings answered in order, then FIN", async () => {
  assert.equal(
    await exchange([bytes("ping 1\nping 2\n"), bytes("ping 3\n")]),
    "pong 1\npong 2\npong 3\n",
  );
  assert.equal(await exchange([]), "", "an empty stream gets an empty answer");
});

Deno.test("serveLines(): an oversized line gets an error and ends the stream", async () => {
  const big = bytes(`ping ${"x".repeat(MAX_LINE_BYTES)}\nping after\n`);
  assert.equal(
    await exchange([bytes("ping ok\n"), big]),
    `pong ok\nerror line longer than ${MAX_LINE_BYTES} bytes\n`,
  );
  const half = bytes("ping " + "y".repeat(MAX_LINE_BYTES / 2));
  assert.equal(
    await exchange([half, half, bytes("\n")]),
    `error line longer than ${MAX_LINE_BYTES} bytes\n`,
    "across chunks: one error, no complaint about the unfinished line",
  );
});

Deno.test("serveLines(): bad lines get errors, and a stream ending mid-line is told so", async () => {
  assert.equal(
    await exchange([bytes("hello\nping\nping unfinished")]),
    'error expected "ping" or "ping PAYLOAD", got "hello"\npong\n' +
      "error the stream ended inside a line\n",
  );
  assert.equal(
    await exchange([new Uint8Array([0xff, 0x0a]), bytes("ping\n")]),
    "error not UTF-8\n",
  );
});

Deno.test("answerMessage(): what answerDatagram() answers for the same text's UTF-8 bytes", () => {
  fc.assert(
    fc.property(
      fc.oneof(
        fc.string({ unit: "grapheme", maxLength: 60 }),
        fc.string({ unit: "grapheme", maxLength: 60 }).map((s) => `ping ${s}`),
      ),
      (line) => answerMessage(line) === text(answerDatagram(bytes(line))),
    ),
  );
  assert.equal(answerMessage("ping 7"), "pong 7");
  assert.equal(answerMessage("ping\nping"), "error a datagram holds one line, no newline");
});
