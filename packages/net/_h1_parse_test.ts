// The request parser alone: framing as RFC 9112 has it, in any pieces, and what it refuses.
import assert from "node:assert/strict";
import fc from "fast-check";
import { MAX_HEAD_BYTES, type ParseEvent, RequestParser } from "./_h1_parse.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** A request as the tests write it, and what parsing it must give. */
interface Sample {
  method: string;
  target: string;
  fields: [string, string][];
  body: string;
  framing: "length" | "chunked" | "none";
  /** Chunk sizes the body is cut into (chunked only). */
  cuts: number[];
}

function encode(sample: Sample): string {
  let head = `${sample.method} ${sample.target} HTTP/1.1\r\n`;
  for (const [name, value] of sample.fields) head += `${name}: ${value}\r\n`;
  if (sample.framing === "length") {
    head += `Content-Length: ${encoder.encode(sample.body).length}\r\n`;
  }
  if (sample.framing === "chunked") head += "Transfer-Encoding: chunked\r\n";
  head += "\r\n";
  if (sample.framing !== "chunked") return head + sample.body;
  let rest = sample.body;
  let out = head;
  for (const cut of sample.cuts) {
    if (rest === "") break;
    const piece = rest.slice(0, cut);
    rest = rest.slice(cut);
    out += `${piece.length.toString(16)};ext=1\r\n${piece}\r\n`;
  }
  if (rest !== "") out += `${rest.length.toString(16)}\r\n${rest}\r\n`;
  return out + "0\r\nTrailer-Field: x\r\n\r\n";
}

/** The events of `bytes` pushed in `pieces`, with each request's data joined. */
function parse(
  bytes: Uint8Array,
  cuts: number[] = [],
): { heads: ParseEvent[]; bodies: string[]; errors: ParseEvent[] } {
  const parser = new RequestParser();
  const events: ParseEvent[] = [];
  let at = 0;
  for (const cut of [...cuts.filter((c) => c > 0 && c < bytes.length)].sort((a, b) => a - b)) {
    // A copy: the parser may keep views of what it was given.
    events.push(...parser.push(bytes.slice(at, cut)));
    at = cut;
  }
  events.push(...parser.push(bytes.slice(at)));
  const heads: ParseEvent[] = [];
  const bodies: string[] = [];
  const errors: ParseEvent[] = [];
  let body: Uint8Array[] = [];
  for (const event of events) {
    if (event.kind === "head") (heads.push(event), body = []);
    else if (event.kind === "data") body.push(event.bytes);
    else if (event.kind === "end") bodies.push(decoder.decode(concat(body)));
    else errors.push(event);
  }
  return { heads, bodies, errors };
}

function concat(chunks: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(chunks.reduce((n, c) => n + c.length, 0));
  let at = 0;
  for (const c of chunks) (out.set(c, at), at += c.length);
  return out;
}

const token = fc.stringMatching(/^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,12}$/);
const sample: fc.Arbitrary<Sample> = fc.record({
  method: fc.constantFrom("GET", "POST", "PUT", "DELETE", "PATCH"),
  target: fc.stringMatching(/^\/[A-Za-z0-9._~%!$&'()*+,;=:@/?-]{0,30}$/),
  fields: fc.array(
    fc.tuple(
      token.filter((t) => !/^(content-length|transfer-encoding|connection|expect)$/i.test(t)),
      fc.stringMatching(/^[\x21-\x7e]([\x20-\x7e]{0,20}[\x21-\x7e])?$/),
    ),
    { maxLength: 6 },
  ),
  body: fc.string({ maxLength: 300, unit: "grapheme-ascii" }),
  framing: fc.constantFrom("length", "chunked", "none"),
  cuts: fc.array(fc.integer({ min: 1, max: 80 }), { maxLength: 6 }),
}).map((s) => (s.framing === "none" ? { ...s, body: "" } : s));

Deno.test("h1 parse: any requests, pipelined and cut anywhere, give their heads and bodies in order", () => {
  fc.assert(
    fc.property(
      fc.array(sample, { minLength: 1, maxLength: 4 }),
      fc.array(fc.nat(), { maxLength: 10 }),
      (samples, cuts) => {
        const bytes = encoder.encode(samples.map(encode).join(""));
        const { heads, bodies, errors } = parse(bytes, cuts.map((c) => c % (bytes.length + 1)));
        assert.deepEqual(errors, []);
        assert.equal(heads.length, samples.length);
        assert.deepEqual(bodies, samples.map((s) => s.body));
        samples.forEach((s, i) => {
          const head = (heads[i] as Extract<ParseEvent, { kind: "head" }>).head;
          assert.equal(head.method, s.method);
          assert.equal(head.target, s.target);
          assert.equal(head.version, "1.1");
          assert.equal(head.keepAlive, true);
          assert.deepEqual(
            head.fields.filter((_, j) => j % 2 === 0).slice(0, s.fields.length),
            s.fields.map(([name]) => name.toLowerCase()),
          );
          assert.deepEqual(
            head.fields.filter((_, j) => j % 2 === 1).slice(0, s.fields.length),
            s.fields.map(([, value]) => value),
          );
        });
      },
    ),
    { numRuns: 300 },
  );
});

Deno.test("h1 parse: arbitrary bytes never throw, and nothing is parsed after a refusal", () => {
  fc.assert(
    fc.property(
      fc.uint8Array({ maxLength: 400 }),
      fc.array(fc.nat(), { maxLength: 5 }),
      (bytes, cuts) => {
        const parser = new RequestParser({ maxHeadBytes: 200 });
        let refused = false;
        let at = 0;
        for (
          const cut of [...cuts.map((c) => c % (bytes.length + 1)), bytes.length].sort((a, b) =>
            a - b
          )
        ) {
          for (const event of parser.push(bytes.slice(at, cut))) {
            assert.equal(refused, false, "no event after an error");
            if (event.kind === "error") refused = true;
          }
          at = cut;
        }
      },
    ),
    { numRuns: 500 },
  );
});

/** The one error of a request, or undefined; and how many heads came before it. */
function refusal(text: string, options = {}): { status?: number; reason?: string; heads: number } {
  const events = new RequestParser(options).push(encoder.encode(text));
  const error = events.find((e) => e.kind === "error") as
    | Extract<ParseEvent, { kind: "error" }>
    | undefined;
  return {
    status: error?.status,
    reason: error?.reason,
    heads: events.filter((e) => e.kind === "head").length,
  };
}

Deno.test("h1 parse: what RFC 9112 says to refuse is refused, with the status a server answers", () => {
  const cases: [string, number][] = [
    // Framing that two parsers could read two ways (request smuggling).
    [
      "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
      400,
    ],
    ["POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd", 400],
    ["POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3, 4\r\n\r\nabcd", 400],
    ["POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +3\r\n\r\nabc", 400],
    ["POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x3\r\n\r\nabc", 400],
    ["POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1e3\r\n\r\n", 400],
    ["POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n", 400],
    ["POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999\r\n\r\n", 400],
    ["POST / HTTP/1.1\r\nHost: a\r\nContent-Length : 3\r\n\r\nabc", 400],
    ["POST / HTTP/1.1\r\nHost: a\r\nX: y\r\n Content-Length: 3\r\n\r\nabc", 400],
    ["POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400],
    ["POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", 400],
    ["POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n", 400],
    ["POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 501],
    [
      "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0x3\r\nabc\r\n0\r\n\r\n",
      400,
    ],
    ["POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n-3\r\nabc\r\n0\r\n\r\n", 400],
    ["POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcd\r\n0\r\n\r\n", 400],
    ["POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffff\r\n", 400],
    ["POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\nabc\r\n0\r\n\r\n", 400],
    // Lines and characters outside the grammar.
    ["GET  / HTTP/1.1\r\nHost: a\r\n\r\n", 400],
    ["GET / HTTP/1.1 \r\nHost: a\r\n\r\n", 400],
    ["G(T / HTTP/1.1\r\nHost: a\r\n\r\n", 400],
    ["GET /a\x01b HTTP/1.1\r\nHost: a\r\n\r\n", 400],
    ["GET / HTTP/1.1\r\nHost: a\r\nX: a\x00b\r\n\r\n", 400],
    ["GET / HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n", 400],
    ["GET / HTTP/1.1\r\nHost: a\nX: b\r\n\r\n", 400],
    // A head whose lines all end in a bare LF is refused at once, not left to time out.
    ["GET / HTTP/1.1\nHost: a\n\n", 400],
    ["GET / HTTP/1.1\r\nHost: a\r\n\n", 400],
    ["GET / HTTP/1.1\r\n: empty name\r\n\r\n", 400],
    // Whitespace-only values ending in a control character, near the head limit: refused
    // in linear time (one regular expression over the line took hours at this length).
    ["GET / HTTP/1.1\r\nX:" + " \t".repeat(8_000) + "\x01\r\n\r\n", 400],
    ["GET / HTTP/1.1\r\nX: a" + " ".repeat(16_000) + "\x01\r\n\r\n", 400],
    ["GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505],
    ["GET / HTTP/0.9\r\nHost: a\r\n\r\n", 505],
  ];
  for (const [text, status] of cases) {
    assert.equal(refusal(text).status, status, JSON.stringify(text));
  }
});

Deno.test("h1 parse: the head limit holds at its byte, for heads and for trailers", () => {
  const head = (size: number) => {
    const start = "GET / HTTP/1.1\r\nX: ";
    return start + "a".repeat(size - start.length - 4) + "\r\n\r\n";
  };
  assert.equal(head(MAX_HEAD_BYTES).length, MAX_HEAD_BYTES);
  assert.deepEqual(refusal(head(MAX_HEAD_BYTES)), {
    status: undefined,
    reason: undefined,
    heads: 1,
  });
  assert.equal(refusal(head(MAX_HEAD_BYTES + 1)).status, 431);
  // Without its end yet, a head over the limit is refused as soon as it is over it.
  assert.equal(refusal("GET / HTTP/1.1\r\nX: " + "a".repeat(MAX_HEAD_BYTES)).status, 431);
  assert.equal(
    refusal("GET / HTTP/1.1\r\nX: " + "a".repeat(MAX_HEAD_BYTES - 40)).status,
    undefined,
  );
  const trailers = "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX: " +
    "a".repeat(MAX_HEAD_BYTES) + "\r\n\r\n";
  assert.equal(refusal(trailers).status, 431);
});

Deno.test("h1 parse: versions, keep-alive, Expect, empty lines before a request", () => {
  const head = (text: string) =>
    (new RequestParser().push(encoder.encode(text)).find((e) => e.kind === "head") as Extract<
      ParseEvent,
      { kind: "head" }
    >).head;
  assert.equal(head("GET / HTTP/1.1\r\n\r\n").keepAlive, true);
  assert.equal(head("GET / HTTP/1.1\r\nConnection: Upgrade, Close\r\n\r\n").keepAlive, false);
  assert.equal(head("GET / HTTP/1.0\r\n\r\n").keepAlive, false);
  assert.equal(head("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").keepAlive, true);
  assert.equal(head("GET / HTTP/1.0\r\n\r\n").version, "1.0");
  assert.equal(head("GET / HTTP/1.7\r\n\r\n").version, "1.1");
  assert.equal(head("GET / HTTP/1.1\r\nExpect: 100-Continue\r\n\r\n").expect, "100-continue");
  assert.equal(head("GET / HTTP/1.0\r\nExpect: 100-continue\r\n\r\n").expect, undefined);
  assert.equal(head("\r\n\r\nGET /x HTTP/1.1\r\n\r\n").target, "/x");
  assert.equal(head("POST / HTTP/1.1\r\nContent-Length: 5, 5\r\n\r\n").body, 5);
  assert.equal(head("POST / HTTP/1.1\r\nTransfer-Encoding: Chunked\r\n\r\n").body, "chunked");
  // obs-text in a value is kept, byte for byte.
  const latin = new Uint8Array([
    ...encoder.encode("GET / HTTP/1.1\r\nX: a"),
    0xe9,
    ...encoder.encode("\r\n\r\n"),
  ]);
  const parsed = new RequestParser().push(latin)[0] as Extract<ParseEvent, { kind: "head" }>;
  assert.deepEqual(parsed.head.fields, ["x", "a\u00e9"]);
});
