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
import { checkDuration } from "@duet/core/duration";
import { Buffer } from "node:buffer";
// @ts-types="@types/dns-packet"
import * as dnsPacket from "dns-packet";
import { getLogger } from "@logtape/logtape";
import { setLongTimeout } from "@duet/core/long-timeout";

/** The DNS-SD service type. */
export const SERVICE_TYPE = "_duet-ping._udp";
const MDNS_GROUP = "224.0.0.251";
const MDNS_PORT = 5353;
const SERVICE = `${SERVICE_TYPE}.local`;
const log = getLogger(["duet", "ping", "discovery"]);

/** A server found, and how. */
export interface Discovered {
  /** The WebTransport URL to try first. */
  url: URL;
  /** Every server found, in the order to try them (`url` first); absent when only `url`. */
  urls?: URL[];
  /** How it was found, for people: "mDNS (INSTANCE)" or "DNS SRV NAME". */
  via: string;
}

/** Announcer settings. */
export interface AnnounceOptions {
  /** The server's UDP port. */
  port: number;
  /**
   * The address the server listens on (its `addr.hostname`): only addresses it serves are
   * announced. `0.0.0.0` or `::`: every interface.
   */
  listening: string;
  /** The IP addresses the server's certificate names: only those are announced. */
  certificateAddresses: readonly string[];
  /**
   * Interface names or IPv4 addresses to announce on; when absent, every address the
   * server serves that its certificate names (see {@link planAnnouncement}).
   */
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

/** What {@link planAnnouncement} decides from. */
export interface AnnouncePlanInput {
  /** Interface names or IPv4 addresses asked for; absent or empty: choose. */
  requested?: readonly string[];
  /** The address the server listens on; `0.0.0.0` or `::` for every interface. */
  listening: string;
  /** This host's IPv4 interfaces. */
  interfaces: readonly { name: string; address: string }[];
  /**
   * The IP addresses the server's certificate names; undefined when it is not known yet
   * (before the server starts): every check but the certificate's is made.
   */
  certificateAddresses: readonly string[] | undefined;
}

const IPV4 = /^\d+\.\d+\.\d+\.\d+$/;
const isLoopbackV4 = (address: string) => address.startsWith("127.");

/**
 * The IPv4 address an `--announce` entry stands for: an interface's name, or an address one
 * of this host's interfaces has.
 *
 * @throws RangeError, saying which, for a wildcard, an IPv6 address, an address no interface
 *   has, or a name no interface has.
 */
function requestedAddress(
  wanted: string,
  interfaces: readonly { name: string; address: string }[],
): string {
  if (wanted === "0.0.0.0" || wanted === "::" || wanted === "[::]") {
    throw new RangeError(
      `${wanted} is not an address but every interface: name interfaces or addresses, or ` +
        "give --announce alone for every address the server may announce",
    );
  }
  if (wanted.includes(":")) {
    throw new RangeError(`cannot announce ${wanted}: mDNS here announces IPv4 addresses only`);
  }
  if (IPV4.test(wanted)) {
    if (!interfaces.some((i) => i.address === wanted)) {
      throw new RangeError(`cannot announce ${wanted}: no interface of this host has it`);
    }
    return wanted;
  }
  const named = interfaces.find((i) => i.name === wanted)?.address;
  if (named === undefined) throw new RangeError(`no IPv4 interface named ${wanted}`);
  return named;
}

/**
 * Which IPv4 addresses to announce: only addresses the server listens on (the one it is
 * bound to, or with `0.0.0.0`/`::` any interface's) and that its certificate names, so
 * that a client finding the server there reaches it and can verify it. Asked for some, each
 * must be such an address (an interface name stands for its address). Asked for none:
 * every such address, loopback ones left out when others qualify; when the server listens
 * beyond loopback and only loopback addresses qualify (a generated certificate names only
 * those), nothing fits. Pure.
 *
 * @returns The addresses, at least one, without repeats, in order.
 * @throws RangeError, saying why, when an address asked for is unknown, not listened on
 *   or not named by the certificate, or when no address fits.
 */
export function planAnnouncement(input: AnnouncePlanInput): string[] {
  const { listening, interfaces, certificateAddresses } = input;
  const wildcard = listening === "0.0.0.0" || listening === "::" || listening === "[::]";
  const served = wildcard ? interfaces.map((i) => i.address) : [listening];
  const named = certificateAddresses?.join(", ") || "none";
  const certified = (address: string) => certificateAddresses?.includes(address) ?? true;
  const certificateHint = "give a certificate that names it (--cert, --key)";
  if (input.requested?.length) {
    return [
      ...new Set(input.requested.map((wanted) => {
        const address = requestedAddress(wanted, interfaces);
        if (!served.includes(address)) {
          throw new RangeError(
            `cannot announce ${address}: the server does not listen there (it listens on ` +
              `${listening}; --host 0.0.0.0 listens on every interface)`,
          );
        }
        if (!certified(address)) {
          throw new RangeError(
            `cannot announce ${address}: the server's certificate does not name it (it ` +
              `names ${named}), so clients finding the server there could not verify it; ` +
              certificateHint,
          );
        }
        return address;
      })),
    ];
  }
  if (!wildcard && !IPV4.test(listening)) {
    throw new RangeError(
      `nothing to announce: the server listens on ${listening}, and mDNS here announces ` +
        "IPv4 addresses only",
    );
  }
  const fit = [...new Set(served.filter(certified))];
  const outside = fit.filter((a) => !isLoopbackV4(a));
  if (outside.length) return outside;
  if (fit.length && !served.some((a) => !isLoopbackV4(a))) return fit;
  throw new RangeError(
    `nothing to announce: the server listens on ${served.join(", ") || listening} and its ` +
      `certificate names ${named}; ${
        fit.length ? "loopback alone is no use to other hosts; " : ""
      }${certificateHint}, or listen on 127.0.0.1 (--host) to be found on this host only`,
  );
}

/**
 * The checks of {@link planAnnouncement} that need no certificate, on this host's
 * interfaces: made before the server starts, so that an announcement it could never make is
 * refused before anything listens.
 *
 * @param requested Interface names or IPv4 addresses asked for; absent or empty: choose.
 * @param listening The IP address the server will listen on (not a host name).
 * @throws RangeError, as {@link planAnnouncement} does.
 */
export function precheckAnnouncement(
  requested: readonly string[] | undefined,
  listening: string,
): void {
  planAnnouncement({
    ...(requested ? { requested } : {}),
    listening,
    interfaces: ipv4Interfaces(),
    certificateAddresses: undefined,
  });
}

/** This host's IPv4 interfaces. */
function ipv4Interfaces(): { name: string; address: string }[] {
  return Deno.networkInterfaces().filter((i) => i.family === "IPv4");
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

/**
 * Answers mDNS queries for the service with PTR, SRV, TXT and A records, the A records
 * naming the addresses {@link planAnnouncement} chooses.
 *
 * @throws RangeError from {@link planAnnouncement}, before any socket is opened; the
 *   socket's errors.
 */
export async function startAnnouncer(options: AnnounceOptions): Promise<Announcer> {
  const addresses = planAnnouncement({
    ...(options.interfaces ? { requested: options.interfaces } : {}),
    listening: options.listening,
    interfaces: ipv4Interfaces(),
    certificateAddresses: options.certificateAddresses,
  });
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

/**
 * Browses for the service over mDNS; resolves with the first complete answer, or null
 * after `timeoutMs`.
 *
 * @throws RangeError naming `timeoutMs` when it is not a number ≥ 0.
 */
export async function browseMdns(timeoutMs: number): Promise<Discovered | null> {
  checkTimeout("browseMdns", timeoutMs);
  const socket = mdnsSocket();
  try {
    await socket.joinMulticastV4(MDNS_GROUP, "0.0.0.0");
    await socket.send(
      dnsPacket.encode({ type: "query", id: 0, questions: [{ name: SERVICE, type: "PTR" }] }),
      { transport: "udp", hostname: MDNS_GROUP, port: MDNS_PORT },
    );
    let cancel = () => {};
    // Any timeoutMs: setTimeout fires almost at once past 2^31 - 1 ms.
    const timeout = new Promise<null>((resolve) => {
      cancel = setLongTimeout(() => resolve(null), timeoutMs);
    });
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
    cancel();
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

/** What {@link orderSrv} needs of an SRV record: RFC 2782's two numbers. */
export interface SrvRank {
  /** 0 to 65535; lower is tried first. */
  priority: number;
  /** 0 to 65535; within one priority, the share of first picks. */
  weight: number;
}

/**
 * Orders SRV records the way RFC 2782 tells a client to try them: by ascending priority,
 * and within one priority by repeated weighted random selection. For each pick the records
 * not yet ordered are arranged weight-0 first (otherwise in their given order), their
 * running sums of weights taken, a whole number N uniform in [0, sum] drawn, and the first
 * record whose running sum is at least N picked. So a record of weight W is picked first
 * in W of the sum + 1 equally likely draws, and the one arranged first gets one more: a
 * weight-0 record has that small chance only (none, with several of weight 0, but the
 * first), and when every weight is 0 the given order stands.
 *
 * Pure: the randomness is a parameter. One draw is made per pick while more than one
 * record of that priority is left (a group of K records uses K - 1 draws), groups in
 * ascending priority.
 *
 * @param records The SRV records (or anything with `priority` and `weight`); not changed.
 * @param random Uniform in [0, 1) (default `Math.random`); a value outside is clamped.
 * @returns A new array holding every record once, in the order to try them.
 */
export function orderSrv<T extends SrvRank>(
  records: readonly T[],
  random: () => number = Math.random,
): T[] {
  const byPriority = new Map<number, T[]>();
  for (const record of records) {
    const group = byPriority.get(record.priority);
    if (group) group.push(record);
    else byPriority.set(record.priority, [record]);
  }
  const ordered: T[] = [];
  for (const priority of [...byPriority.keys()].sort((a, b) => a - b)) {
    const group = byPriority.get(priority)!;
    // Weight 0 first, then the rest, each in its given order.
    const left = [...group.filter((r) => r.weight === 0), ...group.filter((r) => r.weight !== 0)];
    while (left.length > 1) {
      const sum = left.reduce((total, r) => total + r.weight, 0);
      const draw = random();
      const n = Math.min(sum, Math.floor((draw >= 0 ? draw : 0) * (sum + 1)));
      let running = 0;
      let picked = left.length - 1;
      for (const [i, record] of left.entries()) {
        running += record.weight;
        if (running >= n) {
          picked = i;
          break;
        }
      }
      ordered.push(...left.splice(picked, 1));
    }
    ordered.push(...left);
  }
  return ordered;
}

/**
 * Looks up `_duet-ping._udp.DOMAIN` SRV and orders what it finds with {@link orderSrv}
 * (RFC 2782: priority, then weighted random). Targets of "." (RFC 2782: the service is
 * decidedly not offered there) are dropped; none left, or no such name, is null.
 *
 * @param domain The domain under which to look, e.g. "example.com" (a trailing dot is fine).
 * @param nameserver The DNS server, HOST:PORT (an IPv6 host in brackets); the system's when absent.
 * @param random Uniform in [0, 1), for the weighted selection (default `Math.random`).
 * @returns `url` the first to try, `urls` all of them in order (`url` first), `via` the name
 *   looked up; null when there is no such record.
 * @throws Deno's DNS errors other than NotFound (a server that does not answer, say).
 */
export async function lookupSrv(
  domain: string,
  nameserver?: string,
  random: () => number = Math.random,
): Promise<Discovered | null> {
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
  records = records.filter((r) => r.target !== "." && r.target !== "");
  if (!records.length) return null;
  const urls = orderSrv(records, random).map((r) =>
    new URL(`https://${r.target.replace(/\.$/, "")}:${r.port}/ping`)
  );
  return { url: urls[0]!, urls, via: `DNS SRV ${name}` };
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
  /** Uniform in [0, 1), for the SRV weighted selection (default `Math.random`). */
  random?: () => number;
}

/**
 * mDNS first (the first complete answer: one server), then SRV (every target, in RFC 2782
 * order, in `urls`).
 *
 * @throws Error naming everything that was tried, when nothing was found; RangeError
 *   naming `timeoutMs` when it is not a number ≥ 0.
 */
export async function discoverServer(options: DiscoverOptions = {}): Promise<Discovered> {
  if (options.timeoutMs !== undefined) checkTimeout("discoverServer", options.timeoutMs);
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
      const found = await lookupSrv(options.domain, options.nameserver, options.random);
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

/** @throws RangeError naming `timeoutMs` when it is not a number ≥ 0. */
function checkTimeout(where: string, timeoutMs: number): void {
  checkDuration(`${where}: timeoutMs`, timeoutMs);
}
