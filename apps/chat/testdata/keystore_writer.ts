/**
 * One of several processes writing one key store at once, for keystore_test.ts:
 * `deno run keystore_writer.ts <path> <worker> <rounds>`. It says "ready" and waits for
 * the end of stdin (so that all workers open the file at the same moment), then per round gets the
 * identity of, and appends to the outbox of, a conversation of its own (four, in turn),
 * appends to one conversation all workers share, gets the identity of one more
 * conversation all make in this round, and reads them back. At the end it
 * prints the secrets of the conversations all share, as JSON. Any surprise is an exception: exit 1.
 */
import { bytesToHex } from "@noble/hashes/utils.js";
import { KeyStore } from "../keystore.ts";

const [path, worker, rounds] = [Deno.args[0]!, Deno.args[1]!, Number(Deno.args[2])];
const service = "service:0b5e7d0c-1111-4a4a-8888-0123456789ab";
const shared = { service, room: "shared", name: "all" };

const say = (line: string) => Deno.stdout.write(new TextEncoder().encode(`${line}\n`));
await say("ready");
await Deno.stdin.readable.pipeTo(new WritableStream()); // until the test closes stdin
const store = await KeyStore.open(path);
const random = () => crypto.getRandomValues(new Uint8Array(32));
const sharedSecret = bytesToHex(store.identity(shared, random).secret);
const secrets = new Map<string, string>();
const together: string[] = [];

for (let i = 0; i < rounds; i++) {
  const own = { service, room: `room-${worker}`, name: `n${i % 4}` };
  const secret = bytesToHex(store.identity(own, random).secret);
  if ((secrets.get(own.name) ?? secret) !== secret) throw new Error(`${own.name}: secret changed`);
  secrets.set(own.name, secret);
  if (i % 4 === 0) store.setParty(own, 1);
  store.addPeerKey(own, `peer-${i}`, new Uint8Array(32).fill(i % 256), i % 2 === 0);
  const entry = {
    clientMsgId: `w${worker}-${i}`,
    text: `${worker}:${i}`,
    nonce: new Uint8Array(12),
    ciphertext: new Uint8Array(16).fill(i % 256),
    peerPublicKey: `peer-${i}`,
  };
  const mine = store.addToOutbox(own, entry);
  if (mine.seq !== Math.floor(i / 4) + 1) throw new Error(`own seq ${mine.seq} in round ${i}`);
  const ours = store.addToOutbox(shared, entry);
  const last = store.outbox(own).at(-1);
  if (last?.clientMsgId !== entry.clientMsgId || last.seq !== mine.seq) {
    throw new Error(`round ${i}: own outbox ends with ${last?.clientMsgId}`);
  }
  if (store.outboxEntry(shared, entry.clientMsgId)?.seq !== ours.seq) {
    throw new Error(`round ${i}: shared entry ${entry.clientMsgId} not there`);
  }
  // All workers make this one at about the same moment: one secret must win for all.
  together.push(bytesToHex(store.identity({ ...shared, room: `together-${i}` }, random).secret));
  if (bytesToHex(store.identity(shared, random).secret) !== sharedSecret) {
    throw new Error("the shared secret changed");
  }
}
store.close();
await say(JSON.stringify({ sharedSecret, together }));
