// deno bench packages/pake/cpace_bench.ts -- results and ratios in docs/benchmarks.md.
// The anchor is what CPace is built on: one bare ristretto255 scalar multiplication in
// @noble/curves. A run costs each party a generator (hash and one-way map), two scalar
// multiplications and a hash.
import { ristretto255 } from "@noble/curves/ed25519.js";
import { finish, sampleScalar, start } from "./mod.ts";

const inputs = {
  prs: new TextEncoder().encode("7-guitar-orbit"),
  sid: crypto.getRandomValues(new Uint8Array(16)),
  ci: new TextEncoder().encode("bench"),
};
const point = ristretto255.Point.BASE.multiply(sampleScalar());
const peer = start(inputs);

Deno.bench(
  "anchor: noble ristretto255 scalar multiplication",
  { group: "cpace", baseline: true },
  () => {
    point.multiply(sampleScalar()).toBytes();
  },
);

Deno.bench("CPace start (generator, scalar, share)", { group: "cpace" }, () => {
  start(inputs);
});

Deno.bench("CPace one party's whole run (start + finish)", { group: "cpace" }, () => {
  finish(inputs, start(inputs), peer.message, "initiator");
});
