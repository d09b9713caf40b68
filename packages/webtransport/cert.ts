/**
 * Certificates for WebTransport with `serverCertificateHashes`: ECDSA P-256, valid for at
 * most 14 days (browsers refuse anything else for hash pinning), self-signed, with the
 * names and addresses the server is reached by. Built with @peculiar/x509 on Web Crypto.
 * That library needs the `reflect-metadata` polyfill, which adds `Reflect.metadata` and
 * friends to the global `Reflect`; certificates are made by servers, where that is harmless.
 *
 * @module
 */
import "reflect-metadata";
import * as x509 from "@peculiar/x509";

/** The longest validity browsers accept for hash-pinned certificates. */
export const MAX_VALIDITY_DAYS = 14;

/** A generated certificate. */
export interface GeneratedCertificate {
  /** The certificate, PEM. */
  certPem: string;
  /** Its private key, PKCS #8 PEM. */
  keyPem: string;
  /** SHA-256 of the certificate's DER: the value for `serverCertificateHashes`. */
  sha256: Uint8Array;
  /** Start and end of validity. */
  notBefore: Date;
  notAfter: Date;
}

/** Options of {@link generateCertificate}. */
export interface CertificateOptions {
  /** DNS names (default: localhost). */
  hostnames?: string[];
  /** IP addresses (default: 127.0.0.1 and ::1). */
  ips?: string[];
  /** Days of validity, at most 14 (default 10). */
  validityDays?: number;
  /** The start of validity (default: now, less a minute for clock skew). */
  now?: Date;
}

const ALGORITHM = { name: "ECDSA", namedCurve: "P-256", hash: "SHA-256" } as const;

function pem(label: string, der: ArrayBuffer): string {
  const base64 = btoa(String.fromCharCode(...new Uint8Array(der)));
  return `-----BEGIN ${label}-----\n${
    base64.match(/.{1,64}/g)!.join("\n")
  }\n-----END ${label}-----\n`;
}

/**
 * Generates a self-signed ECDSA P-256 certificate.
 *
 * @throws {RangeError} validityDays outside (0, 14].
 */
export async function generateCertificate(
  options: CertificateOptions = {},
): Promise<GeneratedCertificate> {
  const validityDays = options.validityDays ?? 10;
  if (!(validityDays > 0 && validityDays <= MAX_VALIDITY_DAYS)) {
    throw new RangeError(`validityDays must be in (0, ${MAX_VALIDITY_DAYS}], got ${validityDays}`);
  }
  const notBefore = new Date((options.now ?? new Date()).getTime() - 60_000);
  const notAfter = new Date(notBefore.getTime() + validityDays * 86_400_000);
  const keys = await crypto.subtle.generateKey(ALGORITHM, true, ["sign", "verify"]);
  const names = [
    ...(options.hostnames ?? ["localhost"]).map((value) => ({ type: "dns" as const, value })),
    ...(options.ips ?? ["127.0.0.1", "::1"]).map((value) => ({ type: "ip" as const, value })),
  ];
  const serial = Array.from(
    crypto.getRandomValues(new Uint8Array(16)),
    (b) => b.toString(16).padStart(2, "0"),
  );
  serial[0] = "01"; // positive, no leading zero byte
  const certificate = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: serial.join(""),
    name: "CN=duet",
    notBefore,
    notAfter,
    keys,
    signingAlgorithm: ALGORITHM,
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
      new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth]),
      new x509.SubjectAlternativeNameExtension(names),
    ],
  }, crypto);
  const der = certificate.rawData;
  return {
    certPem: pem("CERTIFICATE", der),
    keyPem: pem("PRIVATE KEY", await crypto.subtle.exportKey("pkcs8", keys.privateKey)),
    sha256: new Uint8Array(await crypto.subtle.digest("SHA-256", der)),
    notBefore,
    notAfter,
  };
}
