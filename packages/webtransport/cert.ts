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
import { bytesToHex } from "@noble/hashes/utils.js";
import { setLongTimeout } from "@duet/core/long-timeout";

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
  /** Start of validity. */
  notBefore: Date;
  /** End of validity. */
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

/** A random 128-bit serial number, hex: positive, with no leading zero byte. */
function randomSerial(): string {
  const serial = crypto.getRandomValues(new Uint8Array(16));
  serial[0] = 0x01;
  return bytesToHex(serial);
}

function validity(
  options: { validityDays?: number; now?: Date },
): { notBefore: Date; notAfter: Date } {
  const validityDays = options.validityDays ?? 10;
  if (!(validityDays > 0 && validityDays <= MAX_VALIDITY_DAYS)) {
    throw new RangeError(`validityDays must be in (0, ${MAX_VALIDITY_DAYS}], got ${validityDays}`);
  }
  const notBefore = new Date((options.now ?? new Date()).getTime() - 60_000);
  return { notBefore, notAfter: new Date(notBefore.getTime() + validityDays * 86_400_000) };
}

function leafExtensions(options: CertificateOptions): x509.Extension[] {
  const names = [
    ...(options.hostnames ?? ["localhost"]).map((value) => ({ type: "dns" as const, value })),
    ...(options.ips ?? ["127.0.0.1", "::1"]).map((value) => ({ type: "ip" as const, value })),
  ];
  return [
    new x509.BasicConstraintsExtension(false, undefined, true),
    new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
    new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth]),
    new x509.SubjectAlternativeNameExtension(names),
  ];
}

async function finish(
  certificate: x509.X509Certificate,
  keys: CryptoKeyPair,
): Promise<GeneratedCertificate> {
  const der = certificate.rawData;
  return {
    certPem: pem("CERTIFICATE", der),
    keyPem: pem("PRIVATE KEY", await crypto.subtle.exportKey("pkcs8", keys.privateKey)),
    sha256: new Uint8Array(await crypto.subtle.digest("SHA-256", der)),
    notBefore: certificate.notBefore,
    notAfter: certificate.notAfter,
  };
}

/** DER as PEM under `label`, 64 columns, ending with a newline. */
function pem(label: string, der: ArrayBuffer): string {
  return `${x509.PemConverter.encode(der, label)}\n`;
}

/**
 * Generates a self-signed ECDSA P-256 certificate.
 *
 * @throws {RangeError} validityDays outside (0, 14].
 *
 * @example Serve with a fresh certificate; clients pin its hash
 * ```ts ignore
 * import { generateCertificate, serveWebTransport } from "@duet/webtransport";
 *
 * const certificate = await generateCertificate({ hostnames: ["localhost"], validityDays: 10 });
 * const server = serveWebTransport({ cert: certificate.certPem, key: certificate.keyPem });
 * const pin = { algorithm: "sha-256", value: certificate.sha256 } as const;
 * ```
 */
export async function generateCertificate(
  options: CertificateOptions = {},
): Promise<GeneratedCertificate> {
  const { notBefore, notAfter } = validity(options);
  const keys = await crypto.subtle.generateKey(ALGORITHM, true, ["sign", "verify"]);
  const certificate = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: randomSerial(),
    name: "CN=duet",
    notBefore,
    notAfter,
    keys,
    signingAlgorithm: ALGORITHM,
    extensions: leafExtensions(options),
  }, crypto);
  return await finish(certificate, keys);
}

/**
 * A private certificate authority, for clients that trust roots rather than pin hashes:
 * `Deno.connectQuic` accepts `caCerts` but refuses a self-signed leaf passed as one
 * (`CaUsedAsEndEntity`). Its leaves are ordinary pinnable certificates for browsers.
 */
export interface CertificateAuthority {
  /** The CA certificate, PEM: what clients put in `caCerts`. */
  certPem: string;
  /** Issues a leaf (ECDSA P-256, at most 14 days) signed by this CA. */
  issue(options?: CertificateOptions): Promise<GeneratedCertificate>;
}

/** Generates a CA (ECDSA P-256) valid for `validityDays` (default 10, at most 14). */
export async function generateCertificateAuthority(
  options: { validityDays?: number; now?: Date } = {},
): Promise<CertificateAuthority> {
  const { notBefore, notAfter } = validity(options);
  const keys = await crypto.subtle.generateKey(ALGORITHM, true, ["sign", "verify"]);
  const ca = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: randomSerial(),
    name: "CN=duet local CA",
    notBefore,
    notAfter,
    keys,
    signingAlgorithm: ALGORITHM,
    extensions: [
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(
        x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign,
        true,
      ),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey, false, crypto),
    ],
  }, crypto);
  return {
    certPem: pem("CERTIFICATE", ca.rawData),
    async issue(leafOptions: CertificateOptions = {}) {
      const window = validity(leafOptions);
      const leafKeys = await crypto.subtle.generateKey(ALGORITHM, true, ["sign", "verify"]);
      const leaf = await x509.X509CertificateGenerator.create({
        serialNumber: randomSerial(),
        subject: "CN=duet",
        issuer: ca.subject,
        notBefore: window.notBefore,
        notAfter: window.notAfter,
        signingKey: keys.privateKey,
        publicKey: leafKeys.publicKey,
        signingAlgorithm: ALGORITHM,
        extensions: [
          ...leafExtensions(leafOptions),
          await x509.AuthorityKeyIdentifierExtension.create(ca, false, crypto),
        ],
      }, crypto);
      return await finish(leaf, leafKeys);
    },
  };
}

/** Options of {@link CertificateRotation.start}. */
export interface RotationOptions extends Omit<CertificateOptions, "now"> {
  /**
   * Time between rotations, in ms (default: a third of the validity): more than 0 and at
   * most half the validity (so at most 7 days, well inside `setTimeout`'s range; the timer
   * is a long timeout all the same).
   */
  rotateEveryMs?: number;
}

/**
 * Generated certificates that replace themselves before they expire, for hash pinning.
 * Two are alive at any time: `current`, which the server presents, and `next`, which it
 * will present after the next rotation. Publishing both hashes lets clients that fetched
 * them a moment before a rotation still connect after it. At each rotation `next` becomes
 * `current` and a fresh `next` is made, so with the default period `current` always has at
 * least a third of its validity left.
 */
export class CertificateRotation {
  #current: GeneratedCertificate;
  #next: GeneratedCertificate;
  readonly #options: RotationOptions;
  readonly #listeners = new Set<(current: GeneratedCertificate) => void>();
  /** Cancels the pending rotation; undefined once stopped. */
  #cancel?: () => void;

  private constructor(
    current: GeneratedCertificate,
    next: GeneratedCertificate,
    options: RotationOptions,
  ) {
    this.#current = current;
    this.#next = next;
    this.#options = options;
  }

  /**
   * Generates the first two certificates and starts the rotation timer.
   *
   * @throws {RangeError} `rotateEveryMs` is not in (0, validity / 2], or `validityDays` is
   *   not in (0, 14].
   *
   * @example Present the current certificate, follow rotations, publish both hashes
   * ```ts ignore
   * import { CertificateRotation, serveWebTransport } from "@duet/webtransport";
   *
   * const rotation = await CertificateRotation.start({ validityDays: 10 });
   * const { certPem, keyPem } = rotation.current;
   * const server = serveWebTransport({ cert: certPem, key: keyPem });
   * rotation.onRotate((current) => server.setCertificate(current.certPem, current.keyPem));
   * const published = rotation.hashes(); // current and next, for serverCertificateHashes
   * ```
   */
  static async start(options: RotationOptions = {}): Promise<CertificateRotation> {
    const validityDays = options.validityDays ?? 10;
    // Named here, before rotateEveryMs's check would report it in the wrong words.
    if (!(validityDays > 0 && validityDays <= MAX_VALIDITY_DAYS)) {
      throw new RangeError(
        `validityDays must be in (0, ${MAX_VALIDITY_DAYS}], got ${validityDays}`,
      );
    }
    const validityMs = validityDays * 86_400_000;
    const every = options.rotateEveryMs ?? validityMs / 3;
    if (!(every > 0 && every <= validityMs / 2)) {
      throw new RangeError(`rotateEveryMs must be in (0, validity / 2], got ${every}`);
    }
    const rotation = new CertificateRotation(
      await generateCertificate(options),
      await generateCertificate(options),
      options,
    );
    const tick = () => {
      rotation.#cancel = setLongTimeout(() => {
        rotation.rotate().catch(() => {}).finally(() => {
          if (rotation.#cancel !== undefined) tick();
        });
      }, every);
    };
    tick();
    return rotation;
  }

  /** The certificate to present now. */
  get current(): GeneratedCertificate {
    return this.#current;
  }

  /** The certificate the next rotation will present. */
  get next(): GeneratedCertificate {
    return this.#next;
  }

  /** SHA-256 of current and next, in that order: what to publish for pinning. */
  hashes(): Uint8Array[] {
    return [this.#current.sha256, this.#next.sha256];
  }

  /** Calls `listener` with the new current certificate after each rotation. */
  onRotate(listener: (current: GeneratedCertificate) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /** Rotates now: next becomes current, and a fresh next is generated. */
  async rotate(): Promise<void> {
    const fresh = await generateCertificate(this.#options);
    this.#current = this.#next;
    this.#next = fresh;
    for (const listener of this.#listeners) listener(this.#current);
  }

  /** Stops the timer. */
  stop(): void {
    this.#cancel?.();
    this.#cancel = undefined;
  }
}

/** What a certificate offers for hash pinning, and why a browser would refuse it. */
export interface PinningCheck {
  /** SHA-256 of the certificate's DER: the value to publish for `serverCertificateHashes`. */
  sha256: Uint8Array;
  /** Start of validity. */
  notBefore: Date;
  /** End of validity. */
  notAfter: Date;
  /** Empty when browsers accept the certificate for `serverCertificateHashes`. */
  problems: string[];
}

/**
 * Reads one X.509 certificate in PEM.
 *
 * @throws {TypeError} "not a PEM X.509 certificate", with the parser's own words as `cause`,
 *   when `certPem` is anything else (a key, a DER file, text).
 */
export function parseCertificatePem(certPem: string): x509.X509Certificate {
  if (!/-----BEGIN CERTIFICATE-----/.test(certPem)) {
    throw new TypeError("not a PEM X.509 certificate (no -----BEGIN CERTIFICATE----- line)");
  }
  try {
    return new x509.X509Certificate(certPem);
  } catch (error) {
    throw new TypeError("not a PEM X.509 certificate (its content does not parse)", {
      cause: error,
    });
  }
}

/**
 * Checks a PEM certificate against the rules browsers apply to `serverCertificateHashes`
 * (ECDSA key, validity at most 14 days, valid now). A client pinning a hash cannot apply
 * them itself: Deno's QUIC client checks the hash and expiry but does not show the
 * certificate, so the server checks the certificates it is given before publishing hashes.
 *
 * @throws {TypeError} from {@link parseCertificatePem}.
 */
export async function checkPinnable(certPem: string, now = new Date()): Promise<PinningCheck> {
  const certificate = parseCertificatePem(certPem);
  const problems: string[] = [];
  if (certificate.publicKey.algorithm.name !== "ECDSA") {
    problems.push(`the key is ${certificate.publicKey.algorithm.name}, not ECDSA`);
  }
  const days = (certificate.notAfter.getTime() - certificate.notBefore.getTime()) / 86_400_000;
  if (days > MAX_VALIDITY_DAYS) {
    problems.push(`it is valid for ${days.toFixed(1)} days, more than ${MAX_VALIDITY_DAYS}`);
  }
  if (now < certificate.notBefore || now > certificate.notAfter) {
    problems.push(
      `it is not valid now (${certificate.notBefore.toISOString()} to ${certificate.notAfter.toISOString()})`,
    );
  }
  return {
    sha256: new Uint8Array(await crypto.subtle.digest("SHA-256", certificate.rawData)),
    notBefore: certificate.notBefore,
    notAfter: certificate.notAfter,
    problems,
  };
}
