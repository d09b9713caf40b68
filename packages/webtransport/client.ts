/**
 * The client side: a WebTransport session over Deno.connectQuic, on the same session
 * class as the server. Trust comes from `caCerts` (a private CA, see cert.ts) or the
 * system roots; Deno's QUIC client cannot pin a certificate hash, so there is no
 * `serverCertificateHashes` option rather than a silently insecure one.
 *
 * @module
 */
import { encodeFrame, FrameReader, FrameType } from "./frames.ts";
import { decodeFieldSection, encodeFieldSection, type Field } from "./qpack.ts";
import { H3Connection, readFrame, remainderStream, WebTransportSession } from "./server.ts";

/** Options of {@link connectWebTransport}. */
export interface ConnectOptions {
  /** PEM roots to trust instead of the system's (e.g. a private CA's certificate). */
  caCerts?: string[];
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

/** Opens a WebTransport session to an https: URL. */
export async function connectWebTransport(
  target: string | URL,
  options: ConnectOptions = {},
): Promise<WebTransportSession> {
  const url = new URL(target);
  if (url.protocol !== "https:") {
    throw new TypeError(`WebTransport needs an https: URL, got ${url.protocol}`);
  }
  const hostname = url.hostname.replace(/^\[|\]$/g, "");
  const conn = await Deno.connectQuic({
    hostname,
    port: Number(url.port || 443),
    alpnProtocols: ["h3"],
    ...(options.caCerts ? { caCerts: options.caCerts } : {}),
  });
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
    // One connection per client session: when the session ends (the server's FIN
    // answers our close, or theirs arrives), the connection goes too.
    session.closed.then(() => setTimeout(() => conn.close({ closeCode: 0, reason: "" }), 50));
    return session;
  } catch (error) {
    conn.close({ closeCode: 0x10c, reason: "" }); // H3_REQUEST_CANCELLED
    throw error;
  }
}
