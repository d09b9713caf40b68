import { test } from "node:test";
import assert from "node:assert/strict";
import fc from "fast-check";
import {
  chooseProtocol,
  encodeAvailableProtocols,
  encodeProtocol,
  parseAvailableProtocols,
  parseProtocol,
  validateProtocols,
} from "./protocols.ts";

test("WT-Available-Protocols and WT-Protocol are Structured Field strings", () => {
  assert.equal(
    encodeAvailableProtocols(["duet-ping.v2", "duet-ping.v1"]),
    '"duet-ping.v2", "duet-ping.v1"',
  );
  assert.equal(encodeProtocol('say "hi"'), '"say \\"hi\\""');
  assert.deepEqual(parseAvailableProtocols('"a", "b";q=1'), ["a", "b"]); // parameters ignored
  assert.equal(parseProtocol('"a";x=1'), "a");
});

test("a member that is not a String, or a malformed field, makes the whole field ignored", () => {
  assert.equal(parseAvailableProtocols('"a", b'), undefined); // a Token
  assert.equal(parseAvailableProtocols('"a", 1'), undefined);
  assert.equal(parseAvailableProtocols('"a", ("b")'), undefined); // an Inner List
  assert.equal(parseAvailableProtocols('"unterminated'), undefined);
  assert.equal(parseAvailableProtocols(undefined), undefined);
  assert.deepEqual(parseAvailableProtocols(""), []);
  assert.equal(parseProtocol("token"), undefined);
  assert.equal(parseProtocol('"a", "b"'), undefined);
  assert.equal(parseProtocol(undefined), undefined);
});

test("validateProtocols() refuses what the W3C constructor refuses, with SyntaxError", () => {
  assert.doesNotThrow(() => validateProtocols(["a", "b b", "x".repeat(512)]));
  assert.throws(() => validateProtocols([""]), SyntaxError);
  assert.throws(() => validateProtocols(["x".repeat(513)]), SyntaxError);
  assert.throws(() => validateProtocols(["a", "a"]), SyntaxError);
  assert.throws(() => validateProtocols(["é"]), SyntaxError);
  assert.throws(() => validateProtocols(["tab\there"]), SyntaxError);
});

test("chooseProtocol() takes the client's most preferred one the server speaks", () => {
  assert.equal(chooseProtocol(["v3", "v2", "v1"], ["v1", "v2"]), "v2");
  assert.equal(chooseProtocol(["v3"], ["v1"]), undefined);
  assert.equal(chooseProtocol([], ["v1"]), undefined);
});

test("property: any valid protocol list round-trips through its field", () => {
  const name = fc.string({
    unit: fc.integer({ min: 0x20, max: 0x7e }).map((c) => String.fromCharCode(c)),
    minLength: 1,
    maxLength: 40,
  });
  fc.assert(fc.property(fc.uniqueArray(name, { maxLength: 8 }), (protocols) => {
    validateProtocols(protocols);
    assert.deepEqual(parseAvailableProtocols(encodeAvailableProtocols(protocols)), protocols);
    for (const protocol of protocols) {
      assert.equal(parseProtocol(encodeProtocol(protocol)), protocol);
    }
  }));
});
