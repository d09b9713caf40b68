import { test } from "node:test";
import assert from "node:assert/strict";
import "reflect-metadata";
import * as x509 from "@peculiar/x509";
import { generateCertificate } from "./cert.ts";

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
