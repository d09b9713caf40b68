/**
 * Finding a ping server without being told its address: DNS-SD over multicast DNS
 * (`_duet-ping._udp.local`, RFC 6762/6763) on the local network, then a DNS SRV record
 * (`_duet-ping._udp.DOMAIN`, RFC 2782). The server side announces itself over mDNS only
 * when asked (`duet ping serve --announce`).
 *
 * Messages are encoded and decoded by dns-packet. The sockets are Deno's own UDP sockets:
 * node:dgram's multicast membership does not take effect under Deno (measured: no query
 * arrives), while `Deno.listenDatagram` with `joinMulticastV4` works. Deno offers no
 * IP_MULTICAST_IF, so multicast replies leave by the route to 224.0.0.251.
 *
 * @module
 */
import { Buffer } from "node:buffer";
// @ts-types="@types/dns-packet"
import * as dnsPacket from "dns-packet";
import { getLogger } from "@logtape/logtape";

/** The DNS-SD service type. */
export const SERVICE_TYPE = "_duet-ping._udp";
const MDNS_GROUP = "224.0.0.251";
const MDNS_PORT = 5353;
const SERVICE = `${SERVICE_TYPE}.local`;
const log = getLogger(["duet", "ping", "discovery"]);

/** A server found, and how. */
export interface Discovered {
  url: URL;
  via: string;
}

/** Announcer settings. */
export interface AnnounceOptions {
  /** The server's UDP port. */
  port: number;
  /** Interface names or IPv4 addresses to announce on; all IPv4 interfaces when absent. */
  interfaces?: string[];
  /** The instance name (default: the host name). */
  instance?: string;
}

/** A running announcer. */
export interface Announcer {
  /** The addresses announced. */
  addresses: string[];
  /** Sends a goodbye (TTL 0) and stops answering. */
  stop(): Promise<void>;
}

/** Resolves interface names or addresses to IPv4 addresses. */
export function announceAddresses(interfaces?: string[]): string[] {
  const all = Deno.networkInterfaces().filter((i) => i.family === "IPv4");
  if (!interfaces?.length) {
    const external = all.filter((i) => !i.address.startsWith("127."));
    return [...new Set((external.length ? external : all).map((i) => i.address))];
  }
  return [
    ...new Set(interfaces.map((wanted) => {
      if (/^\d+\.\d+\.\d+\.\d+$/.test(wanted)) return wanted;
      const found = all.find((i) => i.name === wanted);
      if (!found) throw new Error(`no IPv4 interface named ${wanted}`);
      return found.address;
    })),
  ];
}

function mdnsSocket(): Deno.DatagramConn {
  // reuseAddress: a responder and a browser (or avahi) on one host share port 5353.
  return Deno.listenDatagram({
    transport: "udp",
    hostname: "0.0.0.0",
    port: MDNS_PORT,
    reuseAddress: true,
    loopback: true,
  });
}

const localName = (name: string) => name.replace(/\.$/, "").replace(/[^A-Za-z0-9-]/g, "-");

/** Answers mDNS queries for the service with PTR, SRV, TXT and A records. */
export async function startAnnouncer(options: AnnounceOptions): Promise<Announcer> {
  const addresses = announceAddresses(options.interfaces);
  if (!addresses.length) throw new Error("no IPv4 address to announce");
  const host = `${localName(Deno.hostname())}.local`;
  const instance = `${options.instance ?? localName(Deno.hostname())}.${SERVICE}`;
  const socket = mdnsSocket();
  for (const address of addresses) {
    const membership = await socket.joinMulticastV4(MDNS_GROUP, address);
    await membership.setLoopback(true);
  }
  const records = (ttl: number): dnsPacket.Answer[] => [
    { name: SERVICE, type: "PTR", ttl, data: instance },
    {
      name: instance,
      type: "SRV",
      ttl,
      data: { port: options.port, target: host, priority: 0, weight: 0 },
    },
    { name: instance, type: "TXT", ttl, data: ["v=1", "path=/ping"] },
    ...addresses.map((address): dnsPacket.Answer => ({
      name: host,
      type: "A",
      ttl,
      data: address,
    })),
  ];
  const send = (ttl: number) =>
    socket.send(
      dnsPacket.encode({
        type: "response",
        id: 0,
        flags: dnsPacket.AUTHORITATIVE_ANSWER,
        answers: records(ttl),
      }),
      { transport: "udp", hostname: MDNS_GROUP, port: MDNS_PORT },
    );
  let stopped = false;
  const serving = (async () => {
    for (;;) {
      let packet: Uint8Array;
      try {
        [packet] = await socket.receive();
      } catch {
        return; // closed
      }
      let query: dnsPacket.Packet;
      try {
        query = dnsPacket.decode(Buffer.from(packet));
      } catch {
        continue; // not DNS: ignore, as every mDNS responder must
      }
      if (query.type !== "query") continue;
      const asked = query.questions?.some((q) =>
        (q.name.toLowerCase() === SERVICE.toLowerCase() &&
          (q.type === "PTR" || (q.type as string) === "ANY")) ||
        q.name.toLowerCase() === instance.toLowerCase()
      );
      if (asked && !stopped) {
        log.debug("Answering an mDNS query for {service}", { service: SERVICE });
        await send(120).catch((error) =>
          log.warn("mDNS answer failed: {error}", { error: String(error) })
        );
      }
    }
  })();
  await send(120); // the unsolicited announcement (RFC 6762 section 8.3)
  log.info("Announcing {instance} on {addresses}", { instance, addresses: addresses.join(", ") });
  return {
    addresses,
    async stop() {
      stopped = true;
      await send(0).catch(() => {}); // goodbye: caches drop the records at once
      socket.close();
      await serving;
    },
  };
}

/** Browses for the service over mDNS; resolves with the first complete answer, or null. */
export async function browseMdns(timeoutMs: number): Promise<Discovered | null> {
  const socket = mdnsSocket();
  try {
    await socket.joinMulticastV4(MDNS_GROUP, "0.0.0.0");
    await socket.send(
      dnsPacket.encode({ type: "query", id: 0, questions: [{ name: SERVICE, type: "PTR" }] }),
      { transport: "udp", hostname: MDNS_GROUP, port: MDNS_PORT },
    );
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<null>((
      resolve,
    ) => (timer = setTimeout(() => resolve(null), timeoutMs)));
    const listen = (async (): Promise<Discovered | null> => {
      for (;;) {
        const [packet] = await socket.receive();
        let response: dnsPacket.Packet;
        try {
          response = dnsPacket.decode(Buffer.from(packet));
        } catch {
          continue;
        }
        const found = fromResponse(response);
        if (found) return found;
      }
    })();
    const result = await Promise.race([listen, timeout]);
    clearTimeout(timer);
    return result;
  } finally {
    socket.close();
  }
}

/** Reads PTR -> SRV -> A out of one response; null if it is not a complete answer. */
export function fromResponse(response: dnsPacket.Packet): Discovered | null {
  if (response.type !== "response") return null;
  const records = [...(response.answers ?? []), ...(response.additionals ?? [])];
  for (const ptr of records) {
    if (ptr.type !== "PTR" || ptr.name.toLowerCase() !== SERVICE.toLowerCase() || ptr.ttl === 0) {
      continue;
    }
    const srv = records.find((r) => r.type === "SRV" && r.name === ptr.data);
    if (!srv || srv.type !== "SRV") continue;
    const a = records.find((r) => r.type === "A" && r.name === srv.data.target);
    if (!a || a.type !== "A") continue;
    return { url: new URL(`https://${a.data}:${srv.data.port}/ping`), via: `mDNS (${ptr.data})` };
  }
  return null;
}

/** Looks up `_duet-ping._udp.DOMAIN` SRV and picks by priority, then weight. */
export async function lookupSrv(domain: string, nameserver?: string): Promise<Discovered | null> {
  const name = `${SERVICE_TYPE}.${domain.replace(/\.$/, "")}`;
  const options = nameserver
    ? {
      nameServer: {
        ipAddr: nameserver.slice(0, nameserver.lastIndexOf(":")).replace(/^\[|\]$/g, ""),
        port: Number(nameserver.slice(nameserver.lastIndexOf(":") + 1)),
      },
    }
    : {};
  let records: Deno.SrvRecord[];
  try {
    records = await Deno.resolveDns(name, "SRV", options);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return null;
    throw error;
  }
  if (!records.length) return null;
  const best = records.reduce((a, b) =>
    a.priority < b.priority || (a.priority === b.priority && a.weight >= b.weight) ? a : b
  );
  const target = best.target.replace(/\.$/, "");
  return { url: new URL(`https://${target}:${best.port}/ping`), via: `DNS SRV ${name}` };
}

/** Discovery options. */
export interface DiscoverOptions {
  /** Try the SRV record under this domain after mDNS. */
  domain?: string;
  /** The DNS server for the SRV lookup, HOST:PORT (default: the system's). */
  nameserver?: string;
  /** How long mDNS listens. */
  timeoutMs?: number;
  /** Skip mDNS (no multicast query leaves this host). */
  mdns?: boolean;
}

/** mDNS first, then SRV; throws a message naming everything that was tried. */
export async function discoverServer(options: DiscoverOptions = {}): Promise<Discovered> {
  const tried: string[] = [];
  if (options.mdns === false) {
    tried.push("mDNS: skipped (--no-mdns)");
  } else {
    try {
      const found = await browseMdns(options.timeoutMs ?? 1500);
      if (found) return found;
      tried.push(`mDNS ${SERVICE}: no answer in ${options.timeoutMs ?? 1500} ms`);
    } catch (error) {
      tried.push(`mDNS ${SERVICE}: ${(error as Error).message}`);
    }
  }
  if (options.domain) {
    try {
      const found = await lookupSrv(options.domain, options.nameserver);
      if (found) return found;
      tried.push(`DNS SRV ${SERVICE_TYPE}.${options.domain}: no record`);
    } catch (error) {
      tried.push(`DNS SRV ${SERVICE_TYPE}.${options.domain}: ${(error as Error).message}`);
    }
  } else {
    tried.push("DNS SRV: skipped, no --domain given");
  }
  throw new Error(`no ping server found (tried ${tried.join("; ")}); pass --url`);
}
