/**
 * The ping server: WebTransport (QUIC) on UDP port P, and on TCP port P the browser page,
 * `/healthz`, `/.well-known/duet-ping.json` and the WebSocket echo `/ws`.
 *
 * Both sides admit clients by the same rules (policy.ts): the bearer token, the Origin
 * allow-list and a cap per client address; `/ws` also bounds message size and rate. The
 * TCP side runs on `serveResilient`, so running out of file descriptors pauses accepting
 * instead of ending the process.
 *
 * @module
 */
import { getLogger } from "@logtape/logtape";
import { AddressCounter } from "@duet/net/address";
import { fullBucket, type Rate, tryTake } from "@duet/net/rate";
import { bytesToHex } from "@noble/hashes/utils.js";
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
import { answerDatagram, answerMessage, MAX_LINE_BYTES, serveLines } from "./protocol.ts";
import { pageResponse } from "./page.ts";
import {
  checkAccess,
  choosePingProtocol,
  forLog,
  messageTooLong,
  type PingServerInfo,
  publishedInfo,
  type Refusal,
  WS_BURST_SECONDS,
} from "./policy.ts";

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

/**
 * Replies waiting to be sent on one `/ws` socket, in bytes, past which further replies are
 * dropped: a client that sends without reading cannot make the server queue without end.
 */
export const WS_MAX_BACKLOG_BYTES = 1 << 20;

/** The WebTransport path. */
const PING_PATH = "/ping";

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
  /** `/ws` sockets open now. */
  readonly webSockets: number;
  /** How many times the TCP side stopped accepting (out of file descriptors) since the start. */
  readonly acceptFailures: number;
  /** Winds down: GOAWAY and DRAIN to sessions, a grace period, then closes everything. */
  shutdown(graceMs?: number): Promise<void>;
}

const log = getLogger(["duet", "ping"]);
const decoder = new TextDecoder();

/** The body of a refused HTTP request: the status's name, no detail. */
const REFUSED_TEXT: Record<Refusal["status"], string> = {
  400: "bad request\n",
  401: "unauthorized\n",
  403: "forbidden\n",
  404: "not found\n",
  429: "too many connections from this address\n",
};

/**
 * Starts the server; resolves once both sides listen.
 *
 * @throws Deno.errors.AddrInUse when the port is taken (with port 0, after 20 tries), and
 *   whatever listening or reading the certificate throws.
 */
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

  const sessionsPerClient = new AddressCounter(config.maxSessionsPerClient);
  const socketsPerClient = new AddressCounter(config.maxWebSocketsPerClient);
  const open = new Set<WebTransportSession>();
  const sockets = new Set<WebSocket>();
  // Set once both sides listen; a request before that sees the TCP side as accepting.
  const sides: { tcp?: ResilientServer } = {};

  const { transport, http, port } = await listenBoth(config, current);
  sides.tcp = http;

  // A certificate that cannot be presented (measured: never for lack of descriptors, but
  // a failure here would leave QUIC without a listener) is tried again every second.
  let certificateRetry: ReturnType<typeof setTimeout> | undefined;
  let certificateStuck = false;
  const present = (next: GeneratedCertificate) => {
    clearTimeout(certificateRetry);
    try {
      transport.setCertificate(next.certPem, next.keyPem);
      certificateStuck = false;
      log.info("Rotated the certificate; it expires {notAfter}", {
        notAfter: next.notAfter.toISOString(),
      });
    } catch (error) {
      certificateStuck = true;
      log.error("Could not present the rotated certificate: {error}; trying again in 1 s", {
        error: String(error),
      });
      certificateRetry = setTimeout(() => present(rotation!.current), 1000);
    }
  };
  rotation?.onRotate(present);

  const scheme = config.cert ? "https" : "http";
  const shownHost = config.hostname.includes(":") ? `[${config.hostname}]` : config.hostname;
  const url = new URL(`https://${shownHost}:${port}${PING_PATH}`);
  const httpUrl = new URL(`${scheme}://${shownHost}:${port}/`);

  const accepting = (async () => {
    for await (const request of transport.requests) {
      handleRequest(request).catch((error) =>
        log.warn("Session request failed: {error}", { error: forLog(String(error)) })
      );
    }
  })();

  async function handleRequest(request: SessionRequest): Promise<void> {
    const client = request.remoteAddr.hostname;
    const refuse = async ({ status, reason }: Refusal) => {
      log.info("Refused a session from {client}: {why}", { client, why: forLog(reason) });
      await request.reject(status);
    };
    if (request.url.pathname !== PING_PATH) {
      return refuse({ status: 404, reason: `no such path ${request.url.pathname}` });
    }
    const refusal = checkAccess(request, config);
    if (refusal) return refuse(refusal);
    const chosen = choosePingProtocol(request.protocols);
    if ("status" in chosen) return refuse(chosen);
    if (!sessionsPerClient.tryAcquire(client)) {
      return refuse({
        status: 429,
        reason: `already ${sessionsPerClient.held(client)} sessions from this address`,
      });
    }
    try {
      const session = await request.accept(chosen);
      open.add(session);
      log.debug("Session from {client} opened", { client });
      serveSession(session);
      const info = await session.closed;
      open.delete(session);
      log.debug("Session from {client} closed ({code})", { client, code: info.closeCode });
    } finally {
      // Also when accepting fails (the client left first): its slot comes back.
      sessionsPerClient.release(client);
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
    get webSockets() {
      return sockets.size;
    },
    get acceptFailures() {
      return http.acceptFailures;
    },
    async shutdown(graceMs = 2000) {
      rotation?.stop();
      clearTimeout(certificateRetry);
      for (const socket of sockets) socket.close(1001, "server shutting down");
      await Promise.all([transport.shutdown({ graceMs }), http.shutdown()]);
      await accepting;
    },
  };

  /** Binds UDP and then TCP on the same port; with port 0, retries until both are free. */
  async function listenBoth(
    config: PingServerConfig,
    certificate: { certPem: string; keyPem: string },
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
        }, (request, info) => handleHttp(request, info.remoteAddr.hostname, port));
        return { transport, http, port };
      } catch (error) {
        transport.close();
        if (!(error instanceof Deno.errors.AddrInUse) || config.port !== 0 || attempt >= 20) {
          throw error;
        }
      }
    }
  }

  function handleHttp(request: Request, client: string, port: number): Response {
    const requestUrl = new URL(request.url);
    const path = requestUrl.pathname;
    if (path === "/ws" && request.headers.get("upgrade")?.toLowerCase() === "websocket") {
      return upgradeWebSocket(request, requestUrl, client);
    }
    if (request.method !== "GET" && request.method !== "HEAD") {
      return new Response("method not allowed\n", { status: 405, headers: { allow: "GET" } });
    }
    if (path === "/healthz") return health();
    if (path === "/.well-known/duet-ping.json") {
      // From configuration only: nothing of the request (Host, say) goes into it.
      const info: PingServerInfo = publishedInfo(
        { ...(config.publicUrl ? { publicUrl: config.publicUrl } : {}), port, path: PING_PATH },
        hashes().map(bytesToHex),
      );
      return Response.json(info, {
        headers: { "cache-control": "no-store", "access-control-allow-origin": "*" },
      });
    }
    return pageResponse(path) ?? new Response("not found\n", { status: 404 });
  }

  /**
   * Readiness: 200 `{"status":"ok","sessions":N}` while both sides accept connections;
   * 503 `{"status":"not accepting",...}` during a TCP accept outage (from an accept failure,
   * out of descriptors, until listening has lasted 5 s without another: serveResilient's
   * `outage`) or while QUIC has no certificate presented. `acceptFailures` (since the
   * start) appears once accepting has failed at least once.
   */
  function health(): Response {
    const accepting = !(sides.tcp?.outage ?? false) && !certificateStuck;
    const failures = sides.tcp?.acceptFailures ?? 0;
    return Response.json({
      status: accepting ? "ok" : "not accepting",
      sessions: open.size,
      ...(failures ? { acceptFailures: failures } : {}),
    }, { status: accepting ? 200 : 503, headers: { "cache-control": "no-store" } });
  }

  /**
   * `/ws`: the same admission as a WebTransport session (token 401, origin 403, sockets per
   * address 429), refused before the upgrade; then each message is answered as a datagram
   * would be, within the size, rate and backlog bounds.
   */
  function upgradeWebSocket(request: Request, requestUrl: URL, client: string): Response {
    const refused = ({ status, reason }: Refusal) => {
      log.info("Refused a WebSocket from {client}: {why}", { client, why: forLog(reason) });
      return new Response(REFUSED_TEXT[status], { status });
    };
    const refusal = checkAccess(
      { url: requestUrl, headers: request.headers, origin: request.headers.get("origin") },
      config,
    );
    if (refusal) return refused(refusal);
    if (!socketsPerClient.tryAcquire(client)) {
      return refused({
        status: 429,
        reason: `already ${socketsPerClient.held(client)} WebSockets from this address`,
      });
    }
    let upgraded: { socket: WebSocket; response: Response };
    try {
      upgraded = Deno.upgradeWebSocket(request, {
        idleTimeout: Math.ceil(config.idleTimeoutMs / 1000),
      });
    } catch (error) {
      socketsPerClient.release(client);
      log.info("Bad WebSocket request from {client}: {error}", {
        client,
        error: forLog(String(error)),
      });
      return new Response("bad WebSocket request\n", { status: 400 });
    }
    const { socket, response } = upgraded;
    socket.binaryType = "arraybuffer";
    sockets.add(socket);
    const rate: Rate | undefined = config.wsMessageRate
      ? { perSecond: config.wsMessageRate, burst: config.wsMessageRate * WS_BURST_SECONDS }
      : undefined;
    let bucket = rate && fullBucket(rate);
    let overRate = 0, overBacklog = 0;
    socket.onmessage = (event: MessageEvent<string | ArrayBuffer>) => {
      if (socket.readyState !== WebSocket.OPEN) return;
      const data = event.data;
      // Deno has already read the whole message (up to its own 64 MiB cap); past the
      // protocol's line limit the socket is closed, as a stream is ended for a long line.
      if (messageTooLong(data)) {
        socket.close(1009, `message longer than ${MAX_LINE_BYTES} bytes`);
        return;
      }
      if (rate && bucket) {
        const taken = tryTake(bucket, rate, performance.now());
        bucket = taken.bucket;
        if (!taken.ok) {
          overRate++;
          return;
        }
      }
      if (socket.bufferedAmount > WS_MAX_BACKLOG_BYTES) {
        overBacklog++;
        return;
      }
      // The same protocol as WebTransport datagrams: one line per message.
      socket.send(
        typeof data === "string"
          ? answerMessage(data)
          : decoder.decode(answerDatagram(new Uint8Array(data))),
      );
    };
    let released = false;
    socket.onclose = () => {
      if (released) return;
      released = true;
      sockets.delete(socket);
      socketsPerClient.release(client);
      if (overRate || overBacklog) {
        log.info(
          "Dropped messages from {client}'s WebSocket: {overRate} over the rate limit, " +
            "{overBacklog} while replies were not being read",
          { client, overRate, overBacklog },
        );
      }
    };
    return response;
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
