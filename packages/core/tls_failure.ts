/**
 * TLS failures in duet's words. The runtime's TLS (rustls, through Deno's fetch, connectTls
 * and QUIC) reports a refused certificate as "invalid peer certificate: NAME", where NAME is
 * one of rustls' `CertificateError` variants ("UnknownIssuer", "Expired",
 * "Other(OtherError(CaUsedAsEndEntity))"), and a peer that does not speak TLS at all as
 * "received corrupt message of type InvalidContentType". Those names mean nothing to a
 * person; these functions turn them into a phrase that says what is wrong with the
 * certificate or the peer. Pure: no runtime calls, so the ping page's bundle may use them.
 *
 * @module
 */

/** rustls' certificate error names, each with what it means for the certificate shown. */
const CERTIFICATE_PROBLEMS: [RegExp, string][] = [
  [/UnknownIssuer/, "it is not issued by a CA trusted here, and no hash given matches it"],
  [
    /CaUsedAsEndEntity/,
    "it is a CA certificate, which may issue a server's certificate but not be one",
  ],
  [/NotValidYet/, "it is not valid yet (check this machine's clock)"],
  [/Expired/, "it has expired"],
  [/NotValidForName/, "it is not issued for the host name in the URL"],
  [/Revoked/, "it has been revoked"],
  [/BadSignature|UnsupportedSignatureAlgorithm/, "its signature does not verify"],
  [/BadEncoding/, "it is not a well-formed certificate"],
  [/InvalidPurpose/, "it is not issued for identifying a server"],
  [/UnhandledCriticalExtension/, "it has a critical extension this client does not know"],
];

/**
 * What is wrong with a certificate the runtime's TLS refused, as a phrase ("it has
 * expired"), from the refusal's text; the rustls name is kept in parentheses where no phrase
 * is known ("it was refused (Other(...))").
 *
 * @param text The runtime's message, or just its reason ("invalid peer certificate: Expired").
 * @returns A phrase starting with "it", never empty.
 */
export function certificateProblem(text: string): string {
  for (const [pattern, phrase] of CERTIFICATE_PROBLEMS) {
    if (pattern.test(text)) return phrase;
  }
  const name = text.match(/invalid peer certificate: (.*)$/)?.[1] ?? text;
  return `it was refused (${name})`;
}

/**
 * A TLS or HTTP failure in duet's words, or undefined when `text` is neither: a refused
 * certificate ("the server's TLS certificate was refused: it has expired"), a peer that
 * answers without TLS, a peer that answers without HTTP, or a connection closed during the
 * TLS handshake.
 *
 * @param text The runtime's message or its innermost cause.
 */
export function tlsFailure(text: string): string | undefined {
  if (/invalid peer certificate/i.test(text)) {
    return `the server's TLS certificate was refused: ${certificateProblem(text)}`;
  }
  if (/corrupt message|InvalidContentType|wrong version number|record overflow/i.test(text)) {
    return "what answered does not speak TLS";
  }
  if (/invalid HTTP version|invalid HTTP|HTTP parse error|invalid status/i.test(text)) {
    return "what answered does not speak HTTP";
  }
  if (/tls handshake eof|handshake.*(closed|eof)|peer closed connection/i.test(text)) {
    return "the connection closed during the TLS handshake, before any answer";
  }
  return undefined;
}

/**
 * Whether `text` says the peer closed the connection before it answered: the server may be
 * starting, stopping or overloaded, so trying again may help.
 */
export function closedBeforeAnswer(text: string): boolean {
  return /tls handshake eof|handshake.*(closed|eof)|connection closed before message completed|unexpected eof|connection reset|broken pipe/i
    .test(text);
}
