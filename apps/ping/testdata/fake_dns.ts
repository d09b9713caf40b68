/**
 * A DNS server of our own on loopback that answers SRV questions, for the discovery tests here
 * (apps/ping/discovery_test.ts) and the CLI's (apps/cli/ping_discovery_test.ts): published on
 * purpose as `@duet/ping/testing` (apps/ping/deno.json).
 *
 * @module
 */
import { Buffer } from "node:buffer";
// @ts-types="@types/dns-packet"
import * as dnsPacket from "dns-packet";

/** One SRV record a {@link fakeDns} server answers with. */
export interface FakeSrvRecord {
  priority: number;
  weight: number;
  port: number;
  target: string;
}

/** A running {@link fakeDns} server. */
export interface FakeDns {
  /** Where it listens, `127.0.0.1:PORT` (a `--nameserver`). */
  address: string;
  /** Stops it. */
  close(): void;
}

/** A DNS server on loopback UDP answering SRV questions from `records`. */
export function fakeDns(records: Record<string, FakeSrvRecord[]>): FakeDns {
  const socket = Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port: 0 });
  (async () => {
    for (;;) {
      let packet: Uint8Array, from: Deno.Addr;
      try {
        [packet, from] = await socket.receive();
      } catch {
        return;
      }
      const query = dnsPacket.decode(Buffer.from(packet));
      const question = query.questions![0]!;
      const found = records[question.name];
      const reply = dnsPacket.encode({
        type: "response",
        id: query.id,
        flags: dnsPacket.RECURSION_DESIRED | dnsPacket.RECURSION_AVAILABLE | (found ? 0 : 3), // 3: NXDOMAIN
        questions: query.questions!,
        answers: (found ?? []).map((data) => ({
          name: question.name,
          type: "SRV" as const,
          ttl: 60,
          data,
        })),
      });
      await socket.send(reply, from);
    }
  })();
  return {
    address: `127.0.0.1:${(socket.addr as Deno.NetAddr).port}`,
    close: () => socket.close(),
  };
}
