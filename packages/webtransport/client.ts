/**
 * The client side: a WebTransport session over Deno.connectQuic, on the same session
 * class as the server. Trust comes from pinned certificate hashes, `caCerts` (a private
 * CA, see cert.ts) or the system roots; there is no way to turn verification off.
 *
 * @module
 */
import { encodeFrame, FrameReader, FrameType } from "./frames.ts";
import { decodeFieldSection, encodeFieldSection, type Field } from "./qpack.ts";
import { H3Connection, readFrame, remainderStream, WebTransportSession } from "./server.ts";
import {
  type Dialect,
  DIALECTS,
  negotiate,
  peerDialects,
  requestFields,
  upgradeToken,
} from "./dialect.ts";
import {
  AVAILABLE_PROTOCOLS,
  encodeAvailableProtocols,
  parseProtocol,
  PROTOCOL,
  validateProtocols,
} from "./protocols.ts";
import { H3 } from "./errors.ts";
import type { FlowLimits } from "./flow.ts";

/** A certificate hash to pin, as in the W3C API's `serverCertificateHashes`. */
export interface CertificateHash {
  algorithm: "sha-256";
  value: Uint8Array;
}

/** Options of {@link connectWebTransport}. */
export interface ConnectOptions {
  /**
   * Accept only a server certificate whose SHA-256 is one of these, whoever issued it (the
   * browser's `serverCertificateHashes`). Deno checks the hash and the expiry; it does not
   * show us the certificate, so the ECDSA and 14-day rules browsers add are the server's
   * to keep (see `checkPinnable`). Used instead of `caCerts` and the system roots.
   */
  serverCertificateHashes?: CertificateHash[];
  /** PEM roots to trust in addition to the system's (e.g. a private CA's certificate). */
  caCerts?: string[];
  /** QUIC transport settings (idle timeout, keep-alive, stream limits). */
  transport?: Deno.QuicTransportOptions;
  /** The local QUIC endpoint (UDP socket) to connect from; by default one shared by all. */
  endpoint?: Deno.QuicEndpoint;
  /** The Origin header to send (browsers always send one; servers may require it). */
  origin?: string;
  /** More request header fields (lowercase names). */
  headers?: Field[];
  /**
   * The dialects to offer, any order (default: all four, see dialect.ts). The newest the
   * server also announces is spoken.
   */
  dialects?: readonly Dialect[];
  /** The session flow-control windows granted to the server in drafts 13–16 (see flow.ts). */
  flowWindows?: FlowLimits;
  /**
   * Application protocols to offer, most preferred first (the W3C `protocols` option, sent
   * as `WT-Available-Protocols`). The server's choice is the session's `protocol`.
   */
  protocols?: readonly string[];
}

/** The server's SETTINGS announce no WebTransport dialect this client offers. */
export class WebTransportUnsupportedError extends Error {
  override name = "WebTransportUnsupportedError";
  /** The dialects the server announced (possibly none). */
  readonly offered: Dialect[];
  constructor(offered: Dialect[], wanted: readonly Dialect[]) {
    super(
      offered.length
        ? `The server speaks WebTransport ${offered.join(", ")}; this client offered ${
          wanted.join(", ")
        }`
        : "The server does not offer WebTransport (its HTTP/3 SETTINGS announce no dialect)",
    );
    this.offered = offered;
  }
}

/** The server chose an application protocol the client did not offer (WT_ALPN_ERROR). */
export class WebTransportProtocolError extends Error {
  override name = "WebTransportProtocolError";
  constructor(chosen: string, offered: readonly string[]) {
    super(
      `The server chose protocol ${JSON.stringify(chosen)}, not one of ${
        offered.map((p) => JSON.stringify(p)).join(", ")
      }`,
    );
  }
}

/** The server answered the CONNECT with something other than 200. */
export class WebTransportRejectedError extends Error {
  override name = "WebTransportRejectedError";
  /** The HTTP status the server answered with. */
  readonly status: number;
  constructor(status: number) {
    super(`The server refused the WebTransport session with status ${status}`);
    this.status = status;
  }
}

let shared: Deno.QuicEndpoint | undefined;

/**
 * One client endpoint for every connection, as a browser keeps one socket: without it each
 * connectQuic binds a socket and builds an endpoint, which was a quarter of the CPU time of
 * connection setup here (setup p50 2.9 ms -> 2.2 ms, measured). Dual-stack where the host
 * has IPv6, IPv4 only where it does not.
 */
function sharedEndpoint(): Deno.QuicEndpoint {
  if (!shared) {
    try {
      shared = new Deno.QuicEndpoint({ hostname: "::", port: 0 });
    } catch {
      shared = new Deno.QuicEndpoint({ hostname: "0.0.0.0", port: 0 });
    }
  }
  return shared;
}

/** Opens a WebTransport session to an https: URL. */
export async function connectWebTransport(
  target: string | URL,
  options: ConnectOptions = {},
): Promise<WebTransportSession> {
  const url = new URL(target);
  if (url.protocol !== "https:") {
    throw new TypeError(`WebTransport needs an https: URL, got ${url.protocol}`);
  }
  const hashes = options.serverCertificateHashes;
  for (const hash of hashes ?? []) {
    if (hash.algorithm !== "sha-256" || hash.value.length !== 32) {
      throw new TypeError(
        `serverCertificateHashes takes sha-256 values of 32 bytes, got ${hash.algorithm} of ${hash.value.length}`,
      );
    }
  }
  if (hashes?.length === 0) throw new TypeError("serverCertificateHashes is empty");
  const dialects = options.dialects ?? DIALECTS;
  if (dialects.length === 0) throw new TypeError("dialects is empty");
  const protocols = options.protocols ?? [];
  validateProtocols(protocols);
  const hostname = url.hostname.replace(/^\[|\]$/g, "");
  const conn = await Deno.connectQuic({
    ...options.transport,
    endpoint: options.endpoint ?? sharedEndpoint(),
    hostname,
    port: Number(url.port || 443),
    alpnProtocols: ["h3"],
    ...(options.caCerts ? { caCerts: options.caCerts } : {}),
    // Not in Deno's published types, but the option its own WebTransport client passes:
    // the handshake then checks the hash (and expiry) instead of the chain (measured).
    ...(hashes ? { serverCertificateHashes: hashes } : {}),
  } as Deno.ConnectQuicOptions<false>);
  const h3 = new H3Connection(conn, undefined, {
    role: "client",
    dialects,
    flowWindows: options.flowWindows,
  });
  h3.run().catch(() => {});
  let closeCode: number = H3.REQUEST_CANCELLED;
  try {
    // The dialect is known from the server's SETTINGS, which a client must wait for before
    // its CONNECT (every draft). They come in the server's first flight.
    const serverSettings = await h3.peerSettings().catch(async () => {
      // Closed before its SETTINGS: say how the server closed it (a cap per address, say).
      const info = await conn.closed.catch(() => undefined);
      throw new Error(
        `The server closed the connection before its HTTP/3 SETTINGS${
          info
            ? ` (code 0x${info.closeCode.toString(16)}${info.reason ? `: ${info.reason}` : ""})`
            : ""
        }`,
      );
    });
    const offered = peerDialects("server", serverSettings);
    const dialect = negotiate(dialects, offered);
    if (!dialect) {
      closeCode = H3.WT_REQUIREMENTS_NOT_MET;
      throw new WebTransportUnsupportedError(offered, dialects);
    }
    const stream = await conn.createBidirectionalStream();
    const id = Number(stream.writable.id);
    // Streams and datagrams the server sends right behind its 200 may overtake it.
    h3.expectSession(id);
    const request: Field[] = [
      [":method", "CONNECT"],
      [":protocol", upgradeToken(dialect)],
      [":scheme", "https"],
      [":authority", url.host],
      [":path", `${url.pathname}${url.search}`],
      ...requestFields(dialect),
      ...(protocols.length
        ? [[AVAILABLE_PROTOCOLS, encodeAvailableProtocols(protocols)] as Field]
        : []),
      ...(options.origin ? [["origin", options.origin] as Field] : []),
      ...(options.headers ?? []),
    ];
    const writer = stream.writable.getWriter();
    await writer.write(encodeFrame(FrameType.HEADERS, encodeFieldSection(request)));
    writer.releaseLock();
    const source = stream.readable.getReader();
    const frames = new FrameReader();
    const frame = await readFrame(frames, source);
    if (!frame) throw new WebTransportRejectedError(0);
    const response = new Map(decodeFieldSection(frame.payload));
    const status = Number(response.get(":status"));
    if (frame.type !== FrameType.HEADERS || status !== 200) {
      h3.endRequest(id);
      throw new WebTransportRejectedError(status);
    }
    // A WT-Protocol that is malformed or absent means none was chosen; one the client did
    // not offer is an error (WT_ALPN_ERROR).
    const protocol = protocols.length ? parseProtocol(response.get(PROTOCOL)) ?? "" : "";
    if (protocol && !protocols.includes(protocol)) {
      h3.endRequest(id);
      closeCode = H3.WT_ALPN_ERROR;
      throw new WebTransportProtocolError(protocol, protocols);
    }
    const rest = remainderStream(source, frames.takeRemainder()).getReader();
    const session = new WebTransportSession({
      id,
      conn,
      connect: stream,
      url,
      headers: new Map(request),
      connectRest: rest,
      dialect,
      protocol,
      flow: h3.flowFor(dialect, serverSettings),
    });
    h3.addSession(session);
    // One connection per client session: when the session ends, the connection goes too,
    // but only once the server's FIN has answered (or 200 ms passed): closing a QUIC
    // connection discards what is unsent, our close capsule included. close() waits for
    // this, so a process may exit right after it without leaving the server to time out.
    let teardown: Promise<void> | undefined;
    session._afterClose = () =>
      teardown ??= (async () => {
        let timer: ReturnType<typeof setTimeout> | undefined;
        await Promise.race([
          session._peerDone(),
          new Promise((resolve) => (timer = setTimeout(resolve, 200))),
        ]);
        clearTimeout(timer);
        conn.close({ closeCode: 0, reason: "" });
        await conn.closed.catch(() => {});
      })();
    session.closed.then(() => session._afterClose?.());
    return session;
  } catch (error) {
    try {
      conn.close({ closeCode, reason: "" });
    } catch { /* closed already */ }
    throw error;
  }
}
