/**
 * The ping server: WebTransport (QUIC) on UDP port P, and on TCP port P the browser page,
 * `/healthz`, `/.well-known/duet-ping.json` and the WebSocket echo `/ws`.
 *
 * @module
 */
import { createHash, timingSafeEqual } from "node:crypto";
import { getLogger } from "@logtape/logtape";
import { bytesToHex } from "@noble/hashes/utils.js";
import {
  CertificateRotation,
  checkPinnable,
  serveWebTransport,
  type SessionRequest,
  type WebTransportServer,
  type WebTransportSession,
} from "@duet/webtransport";
import { answerDatagram, serveLines } from "./protocol.ts";
import { pageResponse } from "./page.ts";

/** Server settings; every field but the certificate has a default in {@link DEFAULTS}. */
export interface PingServerConfig {
  /** Interface to listen on (UDP and TCP). */
  hostname: string;
  /** The port, UDP and TCP alike; 0 picks one that is free on both. */
  port: number;
  /** Certificate and key (PEM) for QUIC and, when given, HTTPS on the TCP side. */
  cert?: { certPem: string; keyPem: string };
  /** Extra DNS names for generated certificates (localhost and loopback IPs are in). */
  certificateNames: string[];
  /** A bearer token clients must present (`?token=` or `Authorization: Bearer`). */
  token?: string;
  /** Origins allowed besides the server's own page; "*" allows every origin. */
  allowedOrigins: string[];
  /**
   * Sessions one client address may hold at once; 0 for no cap (behind a proxy or load
   * balancer that gives every client the same address, a cap per address caps everyone).
   */
  maxSessionsPerClient: number;
  /** Streams of each kind one connection may have open at once. */
  maxStreamsPerConnection: number;
  /** A connection that sends nothing for this long is closed (QUIC idle timeout). */
  idleTimeoutMs: number;
  /**
   * The WebTransport URL to publish, when clients reach the server by another name or
   * port than it listens on (a load balancer mapping 443 to 4433, say).
   */
  publicUrl?: string;
}

/** The defaults of `duet ping serve`. */
export const DEFAULTS: Omit<PingServerConfig, "cert" | "token" | "publicUrl"> = {
  hostname: "127.0.0.1",
  port: 4433,
  certificateNames: [],
  allowedOrigins: [],
  maxSessionsPerClient: 16,
  maxStreamsPerConnection: 256,
  idleTimeoutMs: 30_000,
};

/** What `/.well-known/duet-ping.json` holds. */
export interface PingServerInfo {
  url: string;
  certificateHashes: { algorithm: "sha-256"; value: string }[];
}

/** A started server. */
export interface RunningPingServer {
  /** The port, UDP and TCP. */
  port: number;
  /** The WebTransport URL, https://HOST:PORT/ping. */
  url: URL;
  /** The TCP side: the page, /healthz, /.well-known/duet-ping.json, /ws. */
  httpUrl: URL;
  /** SHA-256 of the certificates clients may pin: current and next when generated. */
  certificateHashes(): Uint8Array[];
  /** Sessions open now. */
  readonly sessions: number;
  /** Winds down: GOAWAY and DRAIN to sessions, a grace period, then closes everything. */
  shutdown(graceMs?: number): Promise<void>;
}

const log = getLogger(["duet", "ping"]);

/** Starts the server; resolves once both sides listen. */
export async function startPingServer(
  overrides: Partial<PingServerConfig> = {},
): Promise<RunningPingServer> {
  const config: PingServerConfig = { ...DEFAULTS, ...overrides };
  let rotation: CertificateRotation | undefined;
  let pinnable: Uint8Array[] = [];
  if (config.cert) {
    const check = await checkPinnable(config.cert.certPem);
    if (check.problems.length) {
      // Still usable by clients that trust its issuer; browsers cannot pin it.
      log.warn("The certificate cannot be pinned by hash: {problems}", {
        problems: check.problems.join("; "),
      });
    } else {
      pinnable = [check.sha256];
    }
  } else {
    rotation = await CertificateRotation.start({
      hostnames: ["localhost", ...config.certificateNames],
    });
  }
  const current = config.cert ?? rotation!.current;
  const hashes = () => rotation ? rotation.hashes() : pinnable;

  const { transport, http, port } = listenBoth(config, current);
  rotation?.onRotate((next) => {
    transport.setCertificate(next.certPem, next.keyPem);
    log.info("Rotated the certificate; it expires {notAfter}", {
      notAfter: next.notAfter.toISOString(),
    });
  });
  const scheme = config.cert ? "https" : "http";
  const shownHost = config.hostname.includes(":") ? `[${config.hostname}]` : config.hostname;
  const url = new URL(`https://${shownHost}:${port}/ping`);
  const httpUrl = new URL(`${scheme}://${shownHost}:${port}/`);

  const perClient = new Map<string, number>();
  const open = new Set<WebTransportSession>();
  const accepting = (async () => {
    for await (const request of transport.requests) {
      handleRequest(request).catch((error) =>
        log.warn("Session request failed: {error}", { error: String(error) })
      );
    }
  })();

  async function handleRequest(request: SessionRequest): Promise<void> {
    const client = request.remoteAddr.hostname;
    const refuse = async (status: number, why: string) => {
      log.info("Refused a session from {client}: {why}", { client, why });
      await request.reject(status);
    };
    if (request.url.pathname !== "/ping") {
      return refuse(404, `no such path ${request.url.pathname}`);
    }
    if (config.token !== undefined && !tokenMatches(presentedToken(request), config.token)) {
      return refuse(401, "missing or wrong token");
    }
    if (!originAllowed(request.origin, request.url, config.allowedOrigins)) {
      return refuse(403, `origin ${request.origin} not allowed`);
    }
    const held = perClient.get(client) ?? 0;
    if (config.maxSessionsPerClient && held >= config.maxSessionsPerClient) {
      return refuse(429, `already ${held} sessions from this address`);
    }
    perClient.set(client, held + 1);
    try {
      const session = await request.accept();
      open.add(session);
      log.debug("Session from {client} opened", { client });
      serveSession(session);
      const info = await session.closed;
      open.delete(session);
      log.debug("Session from {client} closed ({code})", { client, code: info.closeCode });
    } finally {
      // Also when accepting fails (the client left first): its slot comes back.
      const left = (perClient.get(client) ?? 1) - 1;
      if (left) perClient.set(client, left);
      else perClient.delete(client);
    }
  }

  return {
    port,
    url,
    httpUrl,
    certificateHashes: hashes,
    get sessions() {
      return open.size;
    },
    async shutdown(graceMs = 2000) {
      rotation?.stop();
      await Promise.all([transport.shutdown({ graceMs }), http.shutdown()]);
      await accepting;
    },
  };

  /** Binds UDP and then TCP on the same port; with port 0, retries until both are free. */
  function listenBoth(
    config: PingServerConfig,
    certificate: { certPem: string; keyPem: string },
  ): { transport: WebTransportServer; http: Deno.HttpServer; port: number } {
    for (let attempt = 0;; attempt++) {
      const transport = serveWebTransport({
        hostname: config.hostname,
        port: config.port,
        cert: certificate.certPem,
        key: certificate.keyPem,
        transport: {
          maxIdleTimeout: config.idleTimeoutMs,
          maxConcurrentBidirectionalStreams: config.maxStreamsPerConnection,
          maxConcurrentUnidirectionalStreams: config.maxStreamsPerConnection,
        },
      });
      const port = transport.addr.port;
      try {
        const http = Deno.serve({
          hostname: config.hostname,
          port,
          onListen() {},
          ...(config.cert ? { cert: config.cert.certPem, key: config.cert.keyPem } : {}),
        }, (request) => handleHttp(request, port));
        return { transport, http, port };
      } catch (error) {
        transport.close();
        if (!(error instanceof Deno.errors.AddrInUse) || config.port !== 0 || attempt >= 20) {
          throw error;
        }
      }
    }
  }

  function handleHttp(request: Request, port: number): Response {
    const path = new URL(request.url).pathname;
    if (path === "/ws" && request.headers.get("upgrade")?.toLowerCase() === "websocket") {
      const { socket, response } = Deno.upgradeWebSocket(request);
      // The same protocol as WebTransport datagrams: one line per message.
      socket.onmessage = (event) => {
        const data = typeof event.data === "string"
          ? new TextEncoder().encode(event.data)
          : new Uint8Array(event.data as ArrayBuffer);
        socket.send(new TextDecoder().decode(answerDatagram(data)));
      };
      return response;
    }
    if (request.method !== "GET" && request.method !== "HEAD") {
      return new Response("method not allowed\n", { status: 405, headers: { allow: "GET" } });
    }
    if (path === "/healthz") {
      return Response.json({ status: "ok", sessions: open.size });
    }
    if (path === "/.well-known/duet-ping.json") {
      // The URL names the host the client used, so a client that came by name stays on it.
      const host = new URL(request.url).hostname;
      const shown = host.includes(":") ? `[${host}]` : host;
      const info: PingServerInfo = {
        url: config.publicUrl ?? `https://${shown}:${port}/ping`,
        certificateHashes: hashes().map((h) => ({ algorithm: "sha-256", value: bytesToHex(h) })),
      };
      return Response.json(info, {
        headers: { "cache-control": "no-store", "access-control-allow-origin": "*" },
      });
    }
    return pageResponse(path) ?? new Response("not found\n", { status: 404 });
  }
}

/** Answers every stream and datagram of a session until it ends. */
function serveSession(session: WebTransportSession): void {
  (async () => {
    for await (const stream of session.incomingBidirectionalStreams) {
      serveLines(stream.readable, stream.writable);
    }
  })().catch(() => {});
  (async () => {
    const writer = session.datagrams.writable.getWriter();
    for await (const datagram of session.datagrams.readable) {
      writer.write(answerDatagram(datagram)).catch(() => {});
    }
  })().catch(() => {});
  // Unidirectional streams have no way back: refuse them by stopping their senders.
  (async () => {
    for await (const stream of session.incomingUnidirectionalStreams) {
      stream.cancel("ping uses bidirectional streams").catch(() => {});
    }
  })().catch(() => {});
}

/** `?token=` (browsers cannot set headers on WebTransport) or `Authorization: Bearer`. */
function presentedToken(request: SessionRequest): string | undefined {
  const header = request.headers.get("authorization");
  if (header?.startsWith("Bearer ")) return header.slice(7);
  return request.url.searchParams.get("token") ?? undefined;
}

/** Compares tokens in time independent of where they differ (both hashed to one length). */
function tokenMatches(presented: string | undefined, expected: string): boolean {
  if (presented === undefined) return false;
  const digest = (s: string) => createHash("sha256").update(s).digest();
  return timingSafeEqual(digest(presented), digest(expected));
}

/**
 * No Origin (not a browser), the server's own page (same host and port, http or https),
 * or a listed origin.
 */
function originAllowed(origin: string | null, url: URL, allowed: string[]): boolean {
  if (origin === null) return true;
  if (allowed.includes("*") || allowed.includes(origin)) return true;
  try {
    const parsed = new URL(origin);
    return parsed.host === url.host &&
      (parsed.protocol === "http:" || parsed.protocol === "https:");
  } catch {
    return false;
  }
}
