/**
 * The ping server: WebTransport (QUIC) on UDP port P, and on TCP port P the browser page,
 * `/healthz`, `/.well-known/duet-ping.json` and the WebSocket echo `/ws`.
 *
 * Both sides admit clients by the same rules (policy.ts): the bearer token, the Origin
 * allow-list and a cap per client address; `/ws` also bounds message size and rate. The
 * TCP side runs on `serveResilient`, so running out of file descriptors pauses accepting
 * instead of ending the process. The TCP side's routes are `http.ts`'s Hono app, the
 * WebSocket echo is `ws_echo.ts`.
 *
 * @module
 */
import { withDefaults } from "@duet/core/defaults";
import { checkDuration } from "@duet/core/duration";
import { getLogger } from "@logtape/logtape";
import { AddressCounter } from "@duet/net/address";
import { bytesToHex } from "@noble/hashes/utils.js";
import type { RunningService } from "@duet/core/service";
import {
  CertificateRotation,
  checkPinnable,
  type GeneratedCertificate,
  serveWebTransport,
  type SessionRequest,
  type WebTransportServer,
  type WebTransportSession,
} from "@duet/webtransport";
import { type ResilientServer, serveResilient } from "@duet/net/serve";
import "reflect-metadata";
import * as x509 from "@peculiar/x509";
import { answerDatagram, serveLines } from "./protocol.ts";
import { loadPage } from "./page.ts";
import { createPingApp } from "./http.ts";
import { WebSocketEcho } from "./ws_echo.ts";
import { checkAccess, choosePingProtocol, forLog, publishedInfo, type Refusal } from "./policy.ts";

export type { PingServerInfo } from "./policy.ts";

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
  /**
   * A bearer token clients must present (`?token=` or `Authorization: Bearer`), for
   * WebTransport sessions and `/ws` alike.
   */
  token?: string;
  /** Origins allowed besides the server's own page; "*" allows every origin. */
  allowedOrigins: string[];
  /**
   * WebTransport sessions one client address may hold at once; 0 for no cap (behind a
   * proxy or load balancer that gives every client the same address, a cap per address
   * caps everyone).
   */
  maxSessionsPerClient: number;
  /** `/ws` WebSockets one client address may hold at once; 0 for no cap. More get 429. */
  maxWebSocketsPerClient: number;
  /**
   * Messages per second one `/ws` socket may send (a token bucket holding
   * {@link WS_BURST_SECONDS} seconds' worth); messages past it are dropped unanswered.
   * 0 for no limit.
   */
  wsMessageRate: number;
  /** Streams of each kind one connection may have open at once. */
  maxStreamsPerConnection: number;
  /**
   * A QUIC connection that sends nothing for this long is closed (QUIC idle timeout); a
   * `/ws` peer that does not answer a WebSocket ping within it (rounded up to seconds) too.
   */
  idleTimeoutMs: number;
  /**
   * The WebTransport URL to publish, when clients reach the server by another name or
   * port than it listens on (a load balancer mapping 443 to 4433, say). Without it the
   * well-known document publishes the port and path only, and clients use the host they
   * reached the server by.
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
  maxWebSocketsPerClient: 16,
  wsMessageRate: 1000,
  maxStreamsPerConnection: 256,
  idleTimeoutMs: 30_000,
};

/** The WebTransport path. */
const PING_PATH = "/ping";

/** A started server: a {@link RunningService} with the ping server's own figures. */
export interface RunningPingServer extends RunningService {
  /** The port, UDP and TCP. */
  port: number;
  /** The WebTransport URL, https://HOST:PORT/ping. */
  url: URL;
  /** The TCP side: the page, /healthz, /.well-known/duet-ping.json, /ws. */
  httpUrl: URL;
  /** SHA-256 of the certificates clients may pin: current and next when generated. */
  certificateHashes(): Uint8Array[];
  /**
   * The IP addresses the certificate names (its IP subject alternative names), where a
   * client reaching the server by address can verify it: 127.0.0.1 and ::1 for a
   * generated one.
   */
  certificateAddresses(): string[];
  /** Sessions open now. */
  readonly sessions: number;
  /** `/ws` sockets open now. */
  readonly webSockets: number;
  /** How many times the TCP side stopped accepting (out of file descriptors) since the start. */
  readonly acceptFailures: number;
  /**
   * Winds down: GOAWAY and DRAIN to sessions, a grace period (default 2000 ms), then
   * closes everything. Idempotent: later calls share the first one's end.
   */
  shutdown(graceMs?: number): Promise<void>;
}

const log = getLogger(["duet", "ping"]);

/**
 * Starts the server; resolves once both sides listen. Its `finished` resolves after
 * `shutdown()`, and rejects when the QUIC side stopped by itself (its endpoint failed):
 * the TCP side is then shut down too.
 *
 * @throws Deno.errors.AddrInUse when the port is taken (with port 0, after 20 tries), and
 *   whatever listening, reading the page or checking the certificate throws.
 */
export async function startPingServer(
  overrides: Partial<PingServerConfig> = {},
): Promise<RunningPingServer> {
  const config: PingServerConfig = withDefaults(DEFAULTS, overrides);
  // It becomes QUIC's idle timeout: whole milliseconds; named here rather than as
  // transport.maxIdleTimeout, which the caller did not set.
  checkDuration("idleTimeoutMs", config.idleTimeoutMs, {
    zero: false,
    infinite: false,
    integer: true,
    max: Number.MAX_SAFE_INTEGER,
  });
  const page = await loadPage();
  const certificates = await prepareCertificates(config);
  const sessions = new SessionGate(config);
  const echo = new WebSocketEcho(config);
  // Set once both sides listen; a request before that sees the TCP side as accepting.
  const sides: { tcp?: ResilientServer } = {};
  let port = config.port;
  const app = createPingApp({
    page,
    info: () =>
      // From configuration only: nothing of the request (Host, say) goes into it.
      publishedInfo(
        { ...(config.publicUrl ? { publicUrl: config.publicUrl } : {}), port, path: PING_PATH },
        certificates.hashes().map(bytesToHex),
      ),
    health: () => ({
      accepting: !(sides.tcp?.outage ?? false) && !certificates.stuck,
      sessions: sessions.open,
      acceptFailures: sides.tcp?.acceptFailures ?? 0,
    }),
    upgradeWebSocket: (request, client) => echo.upgrade(request, client),
  });
  const { transport, http, port: bound } = await listenBoth(
    config,
    certificates.current,
    (request, info) => app.fetch(request, { remoteAddr: info.remoteAddr }),
  );
  sides.tcp = http;
  port = bound;
  certificates.presentTo(transport);

  let shutdown: Promise<void> | undefined;
  const stop = (graceMs = 2000) => {
    // Checked before the shutdown starts: a bad call leaves the server running.
    try {
      checkDuration("shutdown: graceMs", graceMs);
    } catch (error) {
      return Promise.reject(error);
    }
    return shutdown ??= (async () => {
      certificates.stop();
      echo.closeAll();
      await Promise.all([transport.shutdown({ graceMs }), http.shutdown()]);
      await accepting.catch(() => {});
      log.info("Ping server stopped");
    })();
  };
  const accepting = sessions.serve(transport);
  // The QUIC side ending by itself (not from shutdown()) is a failure: the rest stops too.
  const finished = accepting.then(
    () => shutdown ?? Promise.reject(new Error("the QUIC endpoint stopped accepting sessions")),
    (error) => shutdown ?? Promise.reject(error),
  ).then(
    () => stop(),
    async (error) => {
      await stop().catch(() => {});
      throw error;
    },
  );
  finished.catch(() => {}); // handled by whoever awaits it; never an unhandled rejection
  const { url, httpUrl } = listening(config, port);
  return {
    addr: transport.addr,
    finished,
    port,
    url,
    httpUrl,
    certificateHashes: () => certificates.hashes(),
    certificateAddresses: () => [...certificates.addresses],
    get sessions() {
      return sessions.open;
    },
    get webSockets() {
      return echo.size;
    },
    get acceptFailures() {
      return http.acceptFailures;
    },
    shutdown: stop,
  };
}

/**
 * The server's two URLs on `port` (WebTransport, and the page over HTTP or HTTPS), logged as
 * listening: here, as syncpoint and chat log theirs, so that `duet serve` says it too.
 */
function listening(config: PingServerConfig, port: number): { url: URL; httpUrl: URL } {
  const scheme = config.cert ? "https" : "http";
  const shownHost = config.hostname.includes(":") ? `[${config.hostname}]` : config.hostname;
  const url = new URL(`https://${shownHost}:${port}${PING_PATH}`);
  const httpUrl = new URL(`${scheme}://${shownHost}:${port}/`);
  log.info("Ping server listening on {url} (page {page})", { url: url.href, page: httpUrl.href });
  return { url, httpUrl };
}

/**
 * The IP addresses a generated certificate names: `generateCertificate`'s default `ips`
 * in packages/webtransport/cert.ts (`--cert-name` adds DNS names only).
 */
const GENERATED_IPS: readonly string[] = ["127.0.0.1", "::1"];

/** The IP subject alternative names of a PEM certificate (none when it has none). */
function certificateIps(certPem: string): string[] {
  const certificate = new x509.X509Certificate(certPem);
  const names = certificate.getExtension(x509.SubjectAlternativeNameExtension)?.names;
  return (names?.items ?? []).filter((name) => name.type === "ip").map((name) => name.value);
}

/** The certificate QUIC presents: the one given, or generated ones rotated in turn. */
interface Certificates {
  current: { certPem: string; keyPem: string };
  /** SHA-256 of the certificates clients may pin. */
  hashes(): Uint8Array[];
  /** The IP addresses the certificate names. */
  addresses: readonly string[];
  /** True while a rotated certificate could not be presented (retried every second). */
  readonly stuck: boolean;
  /** Presents every rotated certificate to `transport` from now on. */
  presentTo(transport: WebTransportServer): void;
  stop(): void;
}

/**
 * The given certificate (its hash published only if a browser could pin it), or a
 * generated one, rotated.
 */
async function prepareCertificates(config: PingServerConfig): Promise<Certificates> {
  if (config.cert) {
    let pinnable: Uint8Array[] = [];
    const check = await checkPinnable(config.cert.certPem);
    if (check.problems.length) {
      // Still usable by clients that trust its issuer; browsers cannot pin it.
      log.warn("The certificate cannot be pinned by hash: {problems}", {
        problems: check.problems.join("; "),
      });
    } else {
      pinnable = [check.sha256];
    }
    return {
      current: config.cert,
      hashes: () => pinnable,
      addresses: certificateIps(config.cert.certPem),
      stuck: false,
      presentTo() {},
      stop() {},
    };
  }
  const rotation = await CertificateRotation.start({
    hostnames: ["localhost", ...config.certificateNames],
  });
  // A certificate that cannot be presented (measured: never for lack of descriptors, but
  // a failure here would leave QUIC without a listener) is tried again every second.
  let retry: ReturnType<typeof setTimeout> | undefined;
  const certificates = {
    current: rotation.current,
    hashes: () => rotation.hashes(),
    addresses: GENERATED_IPS,
    stuck: false,
    presentTo(transport: WebTransportServer) {
      const present = (next: GeneratedCertificate) => {
        clearTimeout(retry);
        try {
          transport.setCertificate(next.certPem, next.keyPem);
          certificates.stuck = false;
          log.info("Rotated the certificate; it expires {notAfter}", {
            notAfter: next.notAfter.toISOString(),
          });
        } catch (error) {
          certificates.stuck = true;
          log.error("Could not present the rotated certificate: {error}; trying again in 1 s", {
            error: String(error),
          });
          retry = setTimeout(() => present(rotation.current), 1000);
        }
      };
      rotation.onRotate(present);
    },
    stop() {
      rotation.stop();
      clearTimeout(retry);
    },
  };
  return certificates;
}

/** Admits WebTransport sessions (path, token, origin, protocol, cap per address) and serves them. */
class SessionGate {
  readonly #config: PingServerConfig;
  readonly #perClient: AddressCounter;
  readonly #open = new Set<WebTransportSession>();

  constructor(config: PingServerConfig) {
    this.#config = config;
    this.#perClient = new AddressCounter(config.maxSessionsPerClient);
  }

  /** Sessions open now. */
  get open(): number {
    return this.#open.size;
  }

  /** Handles every session request until the server stops taking them. */
  async serve(transport: WebTransportServer): Promise<void> {
    for await (const request of transport.requests) {
      this.#handle(request).catch((error) =>
        log.warn("Session request failed: {error}", { error: forLog(String(error)) })
      );
    }
  }

  async #handle(request: SessionRequest): Promise<void> {
    const client = request.remoteAddr.hostname;
    const refuse = async ({ status, reason }: Refusal) => {
      log.info("Refused a session from {client}: {why}", { client, why: forLog(reason) });
      await request.reject(status);
    };
    if (request.url.pathname !== PING_PATH) {
      return refuse({ status: 404, reason: `no such path ${request.url.pathname}` });
    }
    const refusal = checkAccess(request, this.#config);
    if (refusal) return refuse(refusal);
    const chosen = choosePingProtocol(request.protocols);
    if ("status" in chosen) return refuse(chosen);
    if (!this.#perClient.tryAcquire(client)) {
      return refuse({
        status: 429,
        reason: `already ${this.#perClient.held(client)} sessions from this address`,
      });
    }
    try {
      const session = await request.accept(chosen);
      this.#open.add(session);
      log.debug("Session from {client} opened", { client });
      serveSession(session);
      const info = await session.closed;
      this.#open.delete(session);
      log.debug("Session from {client} closed ({code})", { client, code: info.closeCode });
    } finally {
      // Also when accepting fails (the client left first): its slot comes back.
      this.#perClient.release(client);
    }
  }
}

/** Binds UDP and then TCP on the same port; with port 0, retries until both are free. */
async function listenBoth(
  config: PingServerConfig,
  certificate: { certPem: string; keyPem: string },
  handler: Deno.ServeHandler<Deno.NetAddr>,
): Promise<{ transport: WebTransportServer; http: ResilientServer; port: number }> {
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
      // A session needs one connection; twice the session cap leaves room for reconnects
      // while old connections wind down, and keeps one address from holding connections
      // (each may park requests until its SETTINGS) without end.
      maxConnectionsPerAddress: config.maxSessionsPerClient * 2,
    });
    const port = transport.addr.port;
    try {
      const http = await serveResilient({
        hostname: config.hostname,
        port,
        ...(config.cert ? { cert: config.cert.certPem, key: config.cert.keyPem } : {}),
      }, handler);
      return { transport, http, port };
    } catch (error) {
      transport.close();
      if (!(error instanceof Deno.errors.AddrInUse) || config.port !== 0 || attempt >= 20) {
        throw error;
      }
    }
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
