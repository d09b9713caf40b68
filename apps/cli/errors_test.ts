// What a user sees when a file or value they gave is wrong: one line of ours naming the
// option (exit 2), never a library's or the runtime's words alone.
import assert from "node:assert/strict";
import { generateCertificate } from "@duet/webtransport";
import { runDuet, spawnDuet } from "./testdata/spawn.ts";

/** Runs `duet ARGS` to its end: exit code and stderr. */
Deno.test("duet ping serve: a --cert or --key that is not PEM, or a key the runtime cannot read, is a usage error naming it", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const good = await generateCertificate();
    await Deno.writeTextFile(`${dir}/cert.pem`, good.certPem);
    await Deno.writeTextFile(`${dir}/key.pem`, good.keyPem);
    await Deno.writeTextFile(`${dir}/text`, "hello\n");
    const notCert = await runDuet(
      ["ping", "serve", "--port", "0", "--cert", `${dir}/text`, "--key", `${dir}/key.pem`],
    );
    assert.equal(notCert.code, 2, notCert.err);
    assert.match(notCert.err, /^duet ping serve: --cert \S+\/text: not a PEM X\.509 certificate/);
    assert.doesNotMatch(notCert.err, /Unsupported format/);
    const keyAsCert = await runDuet(
      ["ping", "serve", "--port", "0", "--cert", `${dir}/key.pem`, "--key", `${dir}/key.pem`],
    );
    assert.equal(keyAsCert.code, 2, keyAsCert.err);
    assert.match(keyAsCert.err, /--cert \S+\/key\.pem: not a PEM X\.509 certificate/);
    const certAsKey = await runDuet(
      ["ping", "serve", "--port", "0", "--cert", `${dir}/cert.pem`, "--key", `${dir}/cert.pem`],
    );
    assert.equal(certAsKey.code, 2, certAsKey.err);
    assert.match(certAsKey.err, /--key \S+\/cert\.pem: not a PEM private key/);
    const other = await generateCertificate();
    await Deno.writeTextFile(
      `${dir}/other-key.pem`,
      other.keyPem.replace(/[A-Za-z0-9+/]{8}\n/, "AAAAAAAA\n"),
    );
    const unreadable = await runDuet(
      [
        "ping",
        "serve",
        "--port",
        "0",
        "--cert",
        `${dir}/cert.pem`,
        "--key",
        `${dir}/other-key.pem`,
      ],
    );
    assert.equal(unreadable.code, 2, unreadable.err);
    assert.match(unreadable.err, /--cert \S+ and --key \S+ cannot be used together/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("duet ping --ca FILE that is not a PEM certificate is a usage error naming it, before connecting", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await Deno.writeTextFile(`${dir}/text`, "hello\n");
    const run = await runDuet(["ping", "--url", "https://127.0.0.1:1/ping", "--ca", `${dir}/text`]);
    assert.equal(run.code, 2, run.err);
    assert.match(run.err, /^duet ping: --ca \S+\/text: not a PEM certificate/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a path Deno's sandbox withholds (/proc) is said in our words, never as 'run again with --allow-all'; as JSON under --log-format json", async () => {
  // Through deno task duet: the permissions the README's command grants, not --allow-all.
  const task = async (args: string[]) => {
    const run = spawnDuet(args);
    const { code } = await run.child.status;
    await run.done;
    return { code, err: run.lines.stderr };
  };
  const args = ["chat-server", "--port", "0", "--data-dir", "/proc/duet-test"];
  const plain = await task([...args, "--quiet"]);
  assert.equal(plain.code, 1, plain.err.join("\n"));
  assert.deepEqual(plain.err, [
    "duet chat-server: cannot open the database: duet may not have all access to " +
    "/proc/duet-test: Deno keeps system paths such as /proc, /dev and /sys for --allow-all, " +
    "which duet's run command does not grant; choose another path",
  ]);
  const json = await task([...args, "--log-format", "json"]);
  assert.equal(json.code, 1);
  const records = json.err.map((line) => JSON.parse(line));
  const last = records.at(-1);
  assert.equal(last.level, "ERROR");
  assert.match(last.message, /^duet chat-server: cannot open the database: duet may not have/);
  assert.doesNotMatch(json.err.join("\n"), /run again with/);
});
