// Runtime errors, raised for real here, come out in duet's words.
import assert from "node:assert/strict";
import { explainError, isPermanentNetworkError } from "./explain_error.ts";

async function caught(action: () => Promise<unknown>): Promise<unknown> {
  try {
    await action();
  } catch (error) {
    return error;
  }
  throw new Error("expected a failure");
}

/** A TCP port on loopback where nothing listens (bound, then let go). */
function closedPort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const { port } = listener.addr;
  listener.close();
  return port;
}

Deno.test("explainError: fetch to a Fetch-standard bad port is said so, and is permanent", async () => {
  const error = await caught(() => fetch("http://127.0.0.1:1/"));
  assert.match(explainError(error), /^port 1 is on the Fetch standard's list of "bad ports"/);
  assert.equal(isPermanentNetworkError(error), true);
});

Deno.test("explainError: a refused connection, through fetch or Deno.connect, is one sentence and not permanent", async () => {
  const port = closedPort();
  for (
    const error of [
      await caught(() => fetch(`http://127.0.0.1:${port}/`)),
      await caught(() => Deno.connect({ hostname: "127.0.0.1", port })),
    ]
  ) {
    assert.equal(
      explainError(error),
      "connection refused (is the server running, and on this port?)",
    );
    assert.equal(isPermanentNetworkError(error), false);
  }
});

Deno.test("explainError: a missing file keeps the path, without the runtime's os error number", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const error = await caught(() => Deno.readFile(`${dir}/missing`));
    assert.match(explainError(error), /^No such file or directory: (open|readfile) '.*\/missing'$/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("explainError: what Deno's sandbox withholds names the path and never advises --allow-all", async () => {
  // A child without --allow-all (deno eval would have every permission): Deno keeps /proc
  // for --allow-all.
  const dir = await Deno.makeTempDir();
  const script = `${dir}/child.ts`;
  await Deno.writeTextFile(
    script,
    `import { explainError } from ${
      JSON.stringify(new URL("./explain_error.ts", import.meta.url).href)
    };
    try { await Deno.mkdir("/proc/duet-test", { recursive: true }); } catch (e) { console.log(explainError(e)); }`,
  );
  const { stdout } = await new Deno.Command(Deno.execPath(), {
    args: ["run", "--no-config", "--allow-read", "--allow-write", script],
    stdout: "piped",
    stderr: "inherit",
  }).output();
  await Deno.remove(dir, { recursive: true });
  const said = new TextDecoder().decode(stdout).trim();
  assert.match(said, /^duet may not have \w+ access to \/proc\/duet-test: Deno keeps system paths/);
  assert.doesNotMatch(said, /run again with/);
});

Deno.test("explainError: an error of duet's own keeps its message", () => {
  assert.equal(explainError(new Error("--port must be 1-65535")), "--port must be 1-65535");
  assert.equal(explainError("plain text"), "plain text");
});

Deno.test("explainError: a directory asked where a file stands says so; other system refusals lose only the error number", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await Deno.writeTextFile(`${dir}/file`, "");
    const exists = await caught(() => Deno.mkdir(`${dir}/file`, { recursive: true }));
    assert.equal(
      explainError(exists),
      `${dir}/file is a file, not a directory; choose a directory (or a path not there yet)`,
    );
    const tooLong = await caught(() => Deno.mkdir(`${dir}/${"b".repeat(300)}`));
    assert.match(explainError(tooLong), /^File name too long: mkdir '/);
    assert.doesNotMatch(explainError(tooLong), /os error/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("explainError: a directory where a file is asked says so, with the path", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const error = await caught(() => Deno.open(dir, { read: true, write: true }));
    assert.equal(
      explainError(error),
      `${dir} is a directory, not a file; give the path of a file (or of one not there yet)`,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
