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
  const h3 = new H3Connection(conn);
  h3.run().catch(() => {});
  try {
    const stream = await conn.createBidirectionalStream();
    const request: Field[] = [
      [":method", "CONNECT"],
      [":protocol", "webtransport"],
      [":scheme", "https"],
      [":authority", url.host],
      [":path", `${url.pathname}${url.search}`],
      ["sec-webtransport-http3-draft02", "1"],
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
      throw new WebTransportRejectedError(status);
    }
    const rest = remainderStream(source, frames.takeRemainder()).getReader();
    const session = new WebTransportSession(
      Number(stream.writable.id),
      conn,
      stream,
      url,
      new Map(request),
      rest,
    );
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
    conn.close({ closeCode: 0x10c, reason: "" }); // H3_REQUEST_CANCELLED
    throw error;
  }
}
