/**
 * Application protocol negotiation for WebTransport sessions (draft-ietf-webtrans-http3
 * drafts 10–16, "Application Protocol Negotiation"; the W3C API's `protocols` option and
 * `protocol` attribute). The client lists protocols in `WT-Available-Protocols`, a
 * Structured Field List of Strings in preference order; the server answers one of them in
 * `WT-Protocol`, a String Item. A member of any other type makes the whole field ignored;
 * parameters are ignored. Structured Fields (RFC 9651) are parsed and written by the
 * `structured-headers` package.
 *
 * @module
 */
import { parseItem, parseList, serializeItem, serializeList } from "structured-headers";

/** The request field, lowercase as HTTP/3 carries it. */
export const AVAILABLE_PROTOCOLS = "wt-available-protocols";
/** The response field. */
export const PROTOCOL = "wt-protocol";

/** The longest protocol name the W3C API accepts, in bytes. */
export const MAX_PROTOCOL_LENGTH = 512;

/**
 * Checks a client's `protocols` as the W3C constructor does: each non-empty, at most 512
 * characters, printable ASCII (what a Structured Field String can hold), no repeats.
 *
 * @throws {SyntaxError} naming the first offending value.
 */
export function validateProtocols(protocols: readonly string[]): void {
  const seen = new Set<string>();
  for (const protocol of protocols) {
    if (protocol.length === 0 || protocol.length > MAX_PROTOCOL_LENGTH) {
      throw new SyntaxError(
        `A WebTransport protocol name has 1 to ${MAX_PROTOCOL_LENGTH} characters; got ${protocol.length}`,
      );
    }
    if (!/^[\x20-\x7e]*$/.test(protocol)) {
      throw new SyntaxError(
        `WebTransport protocol ${JSON.stringify(protocol)} is not printable ASCII`,
      );
    }
    if (seen.has(protocol)) {
      throw new SyntaxError(`WebTransport protocol ${JSON.stringify(protocol)} is listed twice`);
    }
    seen.add(protocol);
  }
}

/** The `WT-Available-Protocols` value for `protocols` (validate them first). */
export function encodeAvailableProtocols(protocols: readonly string[]): string {
  return serializeList(protocols.map((protocol) => [protocol, new Map()]));
}

/**
 * The protocols of a `WT-Available-Protocols` value, in the client's order; undefined when
 * the field is absent, malformed, or holds anything but Strings (the field is then ignored).
 */
export function parseAvailableProtocols(value: string | undefined): string[] | undefined {
  if (value === undefined) return undefined;
  try {
    const list = parseList(value);
    const protocols: string[] = [];
    for (const [member] of list) {
      if (typeof member !== "string") return undefined;
      protocols.push(member);
    }
    return protocols;
  } catch {
    return undefined; // malformed: ignored, as RFC 9651 recommends
  }
}

/** The `WT-Protocol` value naming `protocol`. */
export function encodeProtocol(protocol: string): string {
  return serializeItem([protocol, new Map()]);
}

/** The protocol a `WT-Protocol` value names; undefined when absent, malformed or not a String. */
export function parseProtocol(value: string | undefined): string | undefined {
  if (value === undefined) return undefined;
  try {
    const [item] = parseItem(value);
    return typeof item === "string" ? item : undefined;
  } catch {
    return undefined;
  }
}

/**
 * The server's choice: the client's most preferred protocol that the server speaks, or
 * undefined when they share none.
 */
export function chooseProtocol(
  offered: readonly string[],
  supported: readonly string[],
): string | undefined {
  return offered.find((protocol) => supported.includes(protocol));
}
