// deno-lint-ignore-file no-console -- an anchor program: printing is what it does
// Anchor: the dlog package alone doing what `duet dlog prove` does: import, y = x*G, prove.
import { DLogProof, G } from "@duet/dlog";
const x = 12345n;
const y = G.multiply(x);
console.log(JSON.stringify(DLogProof.prove("s", 5n, x, y).toDict()));
