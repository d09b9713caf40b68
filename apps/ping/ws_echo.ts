/**
 * The ping server's WebSocket echo, `/ws`: admitted by the same rules as a WebTransport
 * session (token 401, origin 403, sockets per address 429), refused before the upgrade;
 * then each message is answered as a datagram would be, within the size, rate and backlog
 * bounds.
 *
 * @module
 */
import { getLogger } from "@logtape/logtape";
import { AddressCounter } from "@duet/net/address";
import { fullBucket, type Rate, tryTake } from "@duet/net/rate";
import { answerDatagram, answerMessage, MAX_LINE_BYTES } from "./protocol.ts";
import { type AccessPolicy, checkAccess, forLog, messageTooLong, type Refusal } from "./policy.ts";
import { WS_BURST_SECONDS } from "./policy.ts";

/**
 * Replies waiting to be sent on one `/ws` socket, in bytes, past which further replies are
 * dropped: a client that sends without reading cannot make the server queue without end.
 */
export const WS_MAX_BACKLOG_BYTES = 1 << 20;

/** The body of a refused HTTP request: the status's name, no detail. */
export const REFUSED_TEXT: Readonly<Record<Refusal["status"], string>> = {
  400: "bad request\n",
  401: "unauthorized\n",
  403: "forbidden\n",
  404: "not found\n",
  429: "too many connections from this address\n",
};

/** The settings of the echo. */
export interface WebSocketEchoConfig extends AccessPolicy {
  /** Sockets one client address may hold at once; 0 for no cap. */
  maxWebSocketsPerClient: number;
  /** Messages per second one socket may send (bursts of twice that); 0 for no limit. */
  wsMessageRate: number;
  /** A peer that does not answer a WebSocket ping within this (rounded up to seconds) is closed. */
  idleTimeoutMs: number;
}

const log = getLogger(["duet", "ping"]);
const decoder = new TextDecoder();

/** The WebSocket echo: upgrades requests and keeps count of the sockets open. */
export class WebSocketEcho {
  readonly #config: WebSocketEchoConfig;
  readonly #perClient: AddressCounter;
  readonly #sockets = new Set<WebSocket>();

  constructor(config: WebSocketEchoConfig) {
    this.#config = config;
    this.#perClient = new AddressCounter(config.maxWebSocketsPerClient);
  }

  /** Sockets open now. */
  get size(): number {
    return this.#sockets.size;
  }

  /** Closes every socket (1001, going away). */
  closeAll(): void {
    for (const socket of this.#sockets) socket.close(1001, "server shutting down");
  }

  /** Answers an upgrade request from `client` (its IP address): a refusal, or the upgrade. */
  upgrade(request: Request, client: string): Response {
    const refused = ({ status, reason }: Refusal) => {
      log.info("Refused a WebSocket from {client}: {why}", { client, why: forLog(reason) });
      return new Response(REFUSED_TEXT[status], { status });
    };
    const url = new URL(request.url);
    const refusal = checkAccess(
      { url, headers: request.headers, origin: request.headers.get("origin") },
      this.#config,
    );
    if (refusal) return refused(refusal);
    if (!this.#perClient.tryAcquire(client)) {
      return refused({
        status: 429,
        reason: `already ${this.#perClient.held(client)} WebSockets from this address`,
      });
    }
    let upgraded: { socket: WebSocket; response: Response };
    try {
      upgraded = Deno.upgradeWebSocket(request, {
        idleTimeout: Math.ceil(this.#config.idleTimeoutMs / 1000),
      });
    } catch (error) {
      this.#perClient.release(client);
      log.info("Bad WebSocket request from {client}: {error}", {
        client,
        error: forLog(String(error)),
      });
      return new Response("bad WebSocket request\n", { status: 400 });
    }
    this.#serve(upgraded.socket, client);
    return upgraded.response;
  }

  /** Answers each message of `socket` until it closes, then gives its slot back. */
  #serve(socket: WebSocket, client: string): void {
    socket.binaryType = "arraybuffer";
    this.#sockets.add(socket);
    const limits = { overRate: 0, overBacklog: 0 };
    socket.onmessage = messageHandler(socket, this.#config.wsMessageRate, limits);
    let released = false;
    socket.onclose = () => {
      if (released) return;
      released = true;
      this.#sockets.delete(socket);
      this.#perClient.release(client);
      if (limits.overRate || limits.overBacklog) {
        log.info(
          "Dropped messages from {client}'s WebSocket: {overRate} over the rate limit, " +
            "{overBacklog} while replies were not being read",
          { client, ...limits },
        );
      }
    };
  }
}

/** The echo of one socket: size, rate and backlog checks, then the datagram answer. */
function messageHandler(
  socket: WebSocket,
  perSecond: number,
  dropped: { overRate: number; overBacklog: number },
): (event: MessageEvent<string | ArrayBuffer>) => void {
  const rate: Rate | undefined = perSecond
    ? { perSecond, burst: perSecond * WS_BURST_SECONDS }
    : undefined;
  let bucket = rate && fullBucket(rate);
  return (event) => {
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
        dropped.overRate++;
        return;
      }
    }
    if (socket.bufferedAmount > WS_MAX_BACKLOG_BYTES) {
      dropped.overBacklog++;
      return;
    }
    // The same protocol as WebTransport datagrams: one line per message.
    socket.send(
      typeof data === "string"
        ? answerMessage(data)
        : decoder.decode(answerDatagram(new Uint8Array(data))),
    );
  };
}
