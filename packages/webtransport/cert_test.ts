import { test } from "node:test";
import assert from "node:assert/strict";
import "reflect-metadata";
import * as x509 from "@peculiar/x509";
import { CertificateRotation, checkPinnable, generateCertificate } from "./cert.ts";

test("generateCertificate() makes a self-signed ECDSA P-256 server certificate for 10 days", async () => {
  const now = new Date("2026-11-24T12:00:00Z");
  const generated = await generateCertificate({ now, hostnames: ["localhost", "ping.test"] });
  const certificate = new x509.X509Certificate(generated.certPem);
  assert.equal((certificate.publicKey.algorithm as EcKeyAlgorithm).namedCurve, "P-256");
  assert.equal(certificate.signatureAlgorithm.name, "ECDSA");
  assert.equal(certificate.notBefore.getTime(), now.getTime() - 60_000);
  assert.equal(certificate.notAfter.getTime() - certificate.notBefore.getTime(), 10 * 86_400_000);
  assert.ok(await certificate.verify({ signatureOnly: true }, crypto), "self-signed");
  const san = certificate.getExtension(x509.SubjectAlternativeNameExtension)!;
  assert.deepEqual(san.names.toJSON().map((n) => n.value), [
    "localhost",
    "ping.test",
    "127.0.0.1",
    "::1",
  ]);
  const basic = certificate.getExtension(x509.BasicConstraintsExtension)!;
  assert.equal(basic.ca, false);
  const eku = certificate.getExtension(x509.ExtendedKeyUsageExtension)!;
  assert.deepEqual([...eku.usages], [x509.ExtendedKeyUsage.serverAuth]);
  assert.match(generated.keyPem, /^-----BEGIN PRIVATE KEY-----\n/);
});

test("generateCertificate() hash is SHA-256 of the DER, and differs per certificate", async () => {
  const a = await generateCertificate();
  const b = await generateCertificate();
  const der = new x509.X509Certificate(a.certPem).rawData;
  assert.deepEqual(a.sha256, new Uint8Array(await crypto.subtle.digest("SHA-256", der)));
  assert.notDeepEqual(a.sha256, b.sha256);
});

test("generateCertificate() refuses validity over 14 days (browsers would refuse it)", async () => {
  await assert.rejects(generateCertificate({ validityDays: 15 }), RangeError);
  await assert.rejects(generateCertificate({ validityDays: 0 }), RangeError);
  const longest = await generateCertificate({ validityDays: 14 });
  assert.equal(longest.notAfter.getTime() - longest.notBefore.getTime(), 14 * 86_400_000);
});

test("CertificateRotation publishes current and next; rotate() moves next to current", async () => {
  const rotation = await CertificateRotation.start({ validityDays: 3 });
  try {
    const [current, next] = rotation.hashes();
    assert.notDeepEqual(current, next);
    assert.deepEqual(current, rotation.current.sha256);
    const seen: Uint8Array[] = [];
    rotation.onRotate((certificate) => seen.push(certificate.sha256));
    await rotation.rotate();
    assert.deepEqual(rotation.current.sha256, next, "the published next is what is presented now");
    assert.deepEqual(seen, [next]);
    assert.notDeepEqual(rotation.next.sha256, current);
    assert.notDeepEqual(rotation.next.sha256, next);
    assert.equal(
      rotation.next.notAfter.getTime() - rotation.next.notBefore.getTime(),
      3 * 86_400_000,
    );
  } finally {
    rotation.stop();
  }
});

test("CertificateRotation rotates by itself on its timer", async () => {
  const rotation = await CertificateRotation.start({ rotateEveryMs: 30 });
  try {
    const first = rotation.current.sha256;
    const rotated = new Promise((resolve) => rotation.onRotate(resolve));
    await rotated;
    assert.notDeepEqual(rotation.current.sha256, first);
  } finally {
    rotation.stop();
  }
});

test("CertificateRotation refuses a period that would let current expire", async () => {
  await assert.rejects(
    CertificateRotation.start({ validityDays: 2, rotateEveryMs: 1.5 * 86_400_000 }),
    RangeError,
  );
});

test("CertificateRotation: periods of 2^31 - 1 ms, 2^31 ms and 30 days are refused (RangeError naming rotateEveryMs), never fired early", async () => {
  for (const rotateEveryMs of [2 ** 31 - 1, 2 ** 31, 30 * 86_400_000, 0, -1, NaN]) {
    await assert.rejects(
      CertificateRotation.start({ validityDays: 14, rotateEveryMs }),
      (e) => e instanceof RangeError && /rotateEveryMs/.test(e.message),
    );
  }
  // The longest period allowed (half of 14 days) does not fire early either.
  const rotation = await CertificateRotation.start({
    validityDays: 14,
    rotateEveryMs: 7 * 86_400_000,
  });
  try {
    let rotated = false;
    rotation.onRotate(() => (rotated = true));
    await new Promise((resolve) => setTimeout(resolve, 100));
    assert.equal(rotated, false);
  } finally {
    rotation.stop();
  }
});

test("PEM: certificates and keys are base64 in 64 columns between BEGIN and END lines, ending with a newline, and round-trip", async () => {
  const generated = await generateCertificate();
  for (
    const [text, label] of [[generated.certPem, "CERTIFICATE"], [generated.keyPem, "PRIVATE KEY"]]
  ) {
    const lines = text!.split("\n");
    assert.equal(lines[0], `-----BEGIN ${label}-----`);
    assert.equal(lines.at(-2), `-----END ${label}-----`);
    assert.equal(lines.at(-1), "", "ends with a newline");
    for (const line of lines.slice(1, -2)) assert.match(line, /^[A-Za-z0-9+/=]{1,64}$/);
  }
  const der = new x509.X509Certificate(generated.certPem).rawData;
  assert.equal(x509.PemConverter.encode(der, "CERTIFICATE") + "\n", generated.certPem);
  const key = await crypto.subtle.importKey(
    "pkcs8",
    x509.PemConverter.decodeFirst(generated.keyPem),
    { name: "ECDSA", namedCurve: "P-256" },
    false,
    ["sign"],
  );
  assert.equal(key.type, "private");
});

async function selfSigned(
  algorithm: EcKeyGenParams | RsaHashedKeyGenParams,
  notBefore: Date,
  days: number,
): Promise<string> {
  const keys = await crypto.subtle.generateKey(algorithm, true, ["sign", "verify"]);
  const certificate = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: "01",
    name: "CN=test",
    notBefore,
    notAfter: new Date(notBefore.getTime() + days * 86_400_000),
    keys,
    signingAlgorithm: { ...algorithm, hash: "SHA-256" },
  }, crypto);
  return certificate.toString("pem");
}

test("checkPinnable() passes generated certificates and names what browsers would refuse", async () => {
  const now = new Date();
  const ours = await generateCertificate();
  const check = await checkPinnable(ours.certPem, now);
  assert.deepEqual(check.problems, []);
  assert.deepEqual(check.sha256, ours.sha256);

  const ec: EcKeyGenParams = { name: "ECDSA", namedCurve: "P-256" };
  const rsa = {
    name: "RSASSA-PKCS1-v1_5",
    modulusLength: 2048,
    publicExponent: new Uint8Array([1, 0, 1]),
    hash: "SHA-256",
  } as RsaHashedKeyGenParams;
  const long = await checkPinnable(await selfSigned(ec, now, 30), now);
  assert.equal(long.problems.length, 1);
  assert.match(long.problems[0] ?? "", /valid for 30\.0 days, more than 14/);
  const rsaCheck = await checkPinnable(await selfSigned(rsa, now, 5), now);
  assert.deepEqual(rsaCheck.problems, ["the key is RSASSA-PKCS1-v1_5, not ECDSA"]);
  const expired = await checkPinnable(
    await selfSigned(ec, new Date(now.getTime() - 5 * 86_400_000), 1),
    now,
  );
  assert.equal(expired.problems.length, 1);
  assert.match(expired.problems[0] ?? "", /not valid now/);
});

test("CertificateRotation.start(): a validityDays out of range is named, not reported as rotateEveryMs", async () => {
  for (const bad of [-1, 0, Number.NaN, 15]) {
    await assert.rejects(
      CertificateRotation.start({ validityDays: bad }),
      (e) => e instanceof RangeError && e.message.startsWith("validityDays must be"),
      String(bad),
    );
  }
});
