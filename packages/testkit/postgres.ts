/**
 * A private PostgreSQL server for tests that stop, kill or restart their database: a fresh
 * cluster in a temporary directory, on a free port of 127.0.0.1, never the shared server.
 *
 * @module
 */

import { findCommand, freePort, type Requirement, run, waitFor } from "./mod.ts";

const isRoot = Deno.uid() === 0;

/** The OS user that owns and runs the server when tests run as root (PostgreSQL refuses root). */
const serverUser = "postgres";

/** How long a server may take to start, to shut down, or to die once killed. */
const startMs = 20_000;
const stopMs = 15_000;
const killMs = 5_000;
/** How long a restart keeps retrying while the port cannot be bound yet. */
const rebindMs = 5_000;

/**
 * Settings for speed (a test's data need not survive the machine crashing) and a small
 * footprint. synchronous_commit stays on: with fsync off a commit costs one write(2), and
 * what a transaction committed survives a kill of the server, as it would in production.
 */
const defaultSettings: Record<string, string> = {
  listen_addresses: "127.0.0.1",
  unix_socket_directories: "",
  fsync: "off",
  full_page_writes: "off",
  shared_buffers: "16MB",
};

/**
 * Where PostgreSQL's server programs are: `DUET_PG_BINDIR`, else `pg_config --bindir`, else
 * the newest /usr/lib/postgresql/N/bin (Debian keeps initdb and postgres off the PATH).
 */
async function findBindir(): Promise<{ bindir: string } | { missing: string }> {
  const has = (dir: string) => Deno.stat(`${dir}/initdb`).then((info) => info.isFile, () => false);
  const override = Deno.env.get("DUET_PG_BINDIR");
  if (override) {
    return (await has(override))
      ? { bindir: override }
      : { missing: `DUET_PG_BINDIR=${override} has no initdb` };
  }
  const candidates: string[] = [];
  const config = await run("pg_config", ["--bindir"]).catch(() => undefined);
  if (config?.code === 0) candidates.push(config.stdout.trim());
  try {
    const versions: string[] = [];
    for await (const entry of Deno.readDir("/usr/lib/postgresql")) versions.push(entry.name);
    versions.sort((a, b) => Number(b) - Number(a));
    candidates.push(...versions.map((version) => `/usr/lib/postgresql/${version}/bin`));
  } catch {
    // No Debian-style installation.
  }
  for (const dir of candidates) if (await has(dir)) return { bindir: dir };
  return {
    missing: "no initdb in `pg_config --bindir` or /usr/lib/postgresql/*/bin " +
      "(apt-get install postgresql, or set DUET_PG_BINDIR)",
  };
}

let bindirFound: Promise<{ bindir: string } | { missing: string }> | undefined;

/**
 * The command prefix that runs a server program as {@link serverUser} (as root) or as
 * ourselves, and has it killed when the process that started it (this one) dies.
 */
function asServerUser(): string[] {
  const user = isRoot ? [`--reuid=${serverUser}`, `--regid=${serverUser}`, "--init-groups"] : [];
  return ["setpriv", ...user, "--pdeathsig=KILL", "--"];
}

/** Whether initdb and postgres are installed and run here (as the `postgres` user, as root). */
export async function findPrivatePostgres(): Promise<Requirement> {
  const name = "PostgreSQL server programs (initdb, postgres)";
  const found = await (bindirFound ??= findBindir());
  if ("missing" in found) return { name, missing: found.missing };
  const [command, ...args] = asServerUser();
  for (const program of ["initdb", "postgres"]) {
    const { missing } = await findCommand(name, command!, [
      ...args,
      `${found.bindir}/${program}`,
      "--version",
    ]);
    if (missing) return { name, missing };
  }
  return { name, missing: undefined };
}

/**
 * Resolves with `promise`, or rejects after `ms` with `what` in the message (the promise is
 * then left to settle on its own).
 */
async function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    return await Promise.race([
      promise,
      new Promise<never>((_, reject) => {
        timer = setTimeout(
          () => reject(new Error(`Timed out after ${ms} ms waiting for ${what}`)),
          ms,
        );
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Whether the server on `port` lets `postgres` in: a StartupMessage answered by
 * AuthenticationOk. While starting up or shutting down it answers with an error instead.
 */
async function acceptsConnections(port: number): Promise<boolean> {
  let conn: Deno.TcpConn;
  try {
    conn = await Deno.connect({ hostname: "127.0.0.1", port });
  } catch {
    return false;
  }
  // A server that accepts but never answers must not hang the probe.
  const timer = setTimeout(() => conn.close(), 1_000);
  try {
    const params = new TextEncoder().encode("user\0postgres\0database\0postgres\0\0");
    const startup = new Uint8Array(8 + params.length);
    const view = new DataView(startup.buffer);
    view.setInt32(0, startup.length);
    view.setInt32(4, 3 << 16); // protocol 3.0
    startup.set(params, 8);
    await conn.write(startup);
    const reply = new Uint8Array(9);
    let got = 0;
    while (got < reply.length) {
      const read = await conn.read(reply.subarray(got));
      if (read === null) return false;
      got += read;
    }
    const ok = reply[0] === "R".charCodeAt(0) && new DataView(reply.buffer).getInt32(5) === 0;
    if (ok) await conn.write(new Uint8Array([0x58, 0, 0, 0, 4])); // Terminate
    return ok;
  } catch {
    return false;
  } finally {
    clearTimeout(timer);
    try {
      conn.close();
    } catch {
      // Closed by the timer.
    }
  }
}

/** The pids of live processes whose working directory is `dir` (a server's are its data dir). */
async function processesIn(dir: string): Promise<number[]> {
  const pids: number[] = [];
  for await (const entry of Deno.readDir("/proc")) {
    const pid = Number(entry.name);
    if (!Number.isInteger(pid) || pid === Deno.pid) continue;
    // Fails for zombies, vanished processes and (not as root) other users' processes.
    const cwd = await Deno.readLink(`/proc/${pid}/cwd`).catch(() => undefined);
    if (cwd === dir) pids.push(pid);
  }
  return pids;
}

/**
 * Kept alive beside each server: when its standard input ends without "done" (the test
 * process died, or ended without close()), it kills whatever still runs in the data dir,
 * frees the SysV shared memory a killed server leaves, and deletes the directory.
 * It ignores the signals a terminal or a job control sends its process group.
 */
const watchdogScript = `
trap '' HUP INT TERM QUIT
if read -r word && [ "$word" = done ]; then exit 0; fi
dir=$1
data=$dir/data
i=0
while [ $i -lt 100 ]; do
  pids=$(find /proc -mindepth 2 -maxdepth 2 -name cwd -lname "$data" 2>/dev/null | cut -d/ -f3)
  [ -z "$pids" ] && break
  kill -KILL $pids 2>/dev/null
  sleep 0.05
  i=$((i + 1))
done
if [ -f "$data/postmaster.pid" ]; then
  shmid=$(sed -n 7p "$data/postmaster.pid" | awk '{ print $2 }')
  [ -n "$shmid" ] && ipcrm -m "$shmid" 2>/dev/null
fi
rm -rf "$dir"
`;

/**
 * A private PostgreSQL server a test can stop, kill and restart: `initdb` into a fresh
 * temporary directory (trust authentication, superuser `postgres`, no fsync), listening on
 * a free port of 127.0.0.1 only. As root, the cluster belongs to and runs as the `postgres`
 * OS user.
 *
 * Close it in a `finally` (or declare it with `await using`). Should the test process end
 * without that, the server is killed with it and a watchdog process deletes the directory.
 *
 * @example
 * ```ts ignore
 * testWith(await findPrivatePostgres(), {
 *   name: "survives a database crash",
 *   fn: async () => {
 *     const server = await PrivatePostgres.start();
 *     try {
 *       const sql = postgres(server.url);
 *       await server.kill();
 *       await server.restart();
 *     } finally {
 *       await server.close();
 *     }
 *   },
 * });
 * ```
 */
export class PrivatePostgres {
  /** The port on 127.0.0.1, the same across restarts. */
  readonly port: number;
  /** The cluster's data directory (inside a temporary directory that close() deletes). */
  readonly dataDir: string;
  readonly #dir: string;
  readonly #command: string[];
  readonly #watchdog: Deno.ChildProcess;
  #server: { child: Deno.ChildProcess; status: Promise<Deno.CommandStatus> } | undefined;
  #closing: Promise<void> | undefined;

  private constructor(
    dir: string,
    port: number,
    command: string[],
    watchdog: Deno.ChildProcess,
  ) {
    this.#dir = dir;
    this.dataDir = `${dir}/data`;
    this.port = port;
    this.#command = command;
    this.#watchdog = watchdog;
  }

  /** Whether initdb and postgres run here ({@link findPrivatePostgres}, as PrivateRedis.find). */
  static find(): Promise<Requirement> {
    return findPrivatePostgres();
  }

  /** postgres://postgres@127.0.0.1:PORT/postgres */
  get url(): string {
    return `postgres://postgres@127.0.0.1:${this.port}/postgres`;
  }

  /** Whether the server is running (started or restarted, and not stopped or killed since). */
  get running(): boolean {
    return this.#server !== undefined;
  }

  /**
   * Creates a cluster and starts it; resolves once it accepts connections. `settings` are
   * passed to the server as `-c name=value`, over the defaults (fsync off, and so on).
   */
  static async start(
    options: { settings?: Record<string, string> } = {},
  ): Promise<PrivatePostgres> {
    const found = await (bindirFound ??= findBindir());
    if ("missing" in found) throw new Error(`PrivatePostgres: ${found.missing}`);
    const dir = await Deno.realPath(await Deno.makeTempDir({ prefix: "duet-postgres-" }));
    // From here on the watchdog deletes the directory, whatever happens to this process.
    const watchdog = new Deno.Command("setsid", {
      args: ["sh", "-c", watchdogScript, "duet-postgres-watchdog", dir],
      stdin: "piped",
      stdout: "null",
      stderr: "null",
    }).spawn();
    watchdog.unref();
    let server: PrivatePostgres | undefined;
    try {
      if (isRoot) {
        const [uid, gid] = await Promise.all(["-u", "-g"].map(async (flag) => {
          const { code, stdout, stderr } = await run("id", [flag, serverUser]);
          if (code !== 0) throw new Error(`PrivatePostgres: id ${flag} ${serverUser}: ${stderr}`);
          return Number(stdout);
        }));
        await Deno.chown(dir, uid!, gid!);
      }
      const [sudo, ...sudoArgs] = asServerUser();
      const initdb = await run(sudo!, [
        ...sudoArgs,
        `${found.bindir}/initdb`,
        ...["-D", `${dir}/data`, "-U", "postgres", "-A", "trust"],
        ...["--no-sync", "--no-locale", "-E", "UTF8", "--no-instructions"],
      ], { cwd: dir });
      if (initdb.code !== 0) {
        throw new Error(`initdb exited ${initdb.code}: ${initdb.stderr.trim()}`);
      }
      const settings = { ...defaultSettings, ...options.settings };
      // A port that was free when chosen may be taken before the server binds it: try another.
      for (let attempt = 1;; attempt++) {
        const port = freePort();
        const command = [
          ...asServerUser(),
          `${found.bindir}/postgres`,
          ...["-D", `${dir}/data`, "-p", String(port)],
          ...Object.entries(settings).flatMap(([name, value]) => ["-c", `${name}=${value}`]),
        ];
        server = new PrivatePostgres(dir, port, command, watchdog);
        if (await server.#launch() === "started") return server;
        if (attempt === 5) throw new Error(`PrivatePostgres: port ${port} was taken (5 tries)`);
      }
    } catch (error) {
      if (server) await server.close().catch(() => {});
      else await closeWatchdog(watchdog, dir, true);
      throw error;
    }
  }

  /** Starts the server on the same port and data; resolves once it accepts connections. */
  async restart(): Promise<void> {
    if (this.#closing) throw new Error("PrivatePostgres: restart after close");
    if (this.#server) await this.stop();
    // Right after a kill the port may briefly refuse to be bound again: retry for a while.
    const deadline = Date.now() + rebindMs;
    while (await this.#launch() === "port-taken") {
      if (Date.now() > deadline) {
        throw new Error(`PrivatePostgres: port ${this.port} still taken after ${rebindMs} ms`);
      }
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }

  /** Shuts the server down (fast shutdown, as `pg_ctl stop -m fast`); keeps the data. */
  async stop(): Promise<void> {
    const server = this.#server;
    if (!server) return;
    server.child.ref();
    try {
      server.child.kill("SIGINT");
      await within(server.status, stopMs, `PostgreSQL on port ${this.port} to shut down`);
      this.#server = undefined;
    } catch {
      await this.kill();
    }
  }

  /**
   * Kills the server and every process it started with SIGKILL, as a crash would, and waits
   * until they are gone. The next restart() recovers from the write-ahead log.
   */
  async kill(): Promise<void> {
    const server = this.#server;
    if (!server) return;
    server.child.ref();
    try {
      server.child.kill("SIGKILL");
    } catch {
      // Already exited.
    }
    // Backends outlive a killed postmaster for a moment; no more are forked once it is gone.
    await waitFor(
      async () => {
        const pids = await processesIn(this.dataDir);
        for (const pid of pids) {
          try {
            Deno.kill(pid, "SIGKILL");
          } catch {
            // Gone meanwhile.
          }
        }
        return pids.length === 0;
      },
      `PostgreSQL processes in ${this.dataDir} to die`,
      killMs,
    );
    await within(server.status, killMs, `PostgreSQL on port ${this.port} to die`);
    this.#server = undefined;
  }

  /** Stops the server if it runs and deletes its directory. Safe to call more than once. */
  close(): Promise<void> {
    return this.#closing ??= this.#close();
  }

  /** `await using` support: {@link close}. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  async #close(): Promise<void> {
    let stopped = false;
    try {
      await this.stop();
      stopped = true;
    } finally {
      if (stopped) await this.#freeSharedMemory();
      // If the server would not die, the watchdog kills what is left before deleting.
      await closeWatchdog(this.#watchdog, this.#dir, stopped);
    }
  }

  /**
   * A killed server leaves its SysV shared memory segment (its id is on line 7 of
   * postmaster.pid); a restart would reuse it, but after close() nothing would.
   */
  async #freeSharedMemory(): Promise<void> {
    const pidFile = await Deno.readTextFile(`${this.dataDir}/postmaster.pid`).catch(() => "");
    const shmid = pidFile.split("\n")[6]?.trim().split(/\s+/)[1];
    if (shmid && /^\d+$/.test(shmid)) await run("ipcrm", ["-m", shmid]).catch(() => {});
  }

  /** The end of the server's log, for error messages. */
  async #logTail(from: number): Promise<string> {
    const log = await Deno.readTextFile(this.#logFile).catch(() => "");
    return log.slice(from).trim().split("\n").slice(-8).join("\n");
  }

  get #logFile(): string {
    return `${this.#dir}/postgres.log`;
  }

  /**
   * Runs the server and waits until it accepts connections. Resolves "port-taken" when it
   * exited because the port could not be bound; rejects when it exited otherwise or did not
   * become ready in time (and is then killed).
   */
  async #launch(): Promise<"started" | "port-taken"> {
    const logStart = await Deno.stat(this.#logFile).then((info) => info.size, () => 0);
    // The shell opens the log (as us) and execs the server, so the child is the postmaster.
    const child = new Deno.Command("sh", {
      args: ["-c", 'exec "$@" >>"$0" 2>&1', this.#logFile, ...this.#command],
      cwd: this.#dir,
      stdin: "null",
      stdout: "null",
      stderr: "null",
    }).spawn();
    // Should the caller never close(), this process may still end (and kill the server).
    child.unref();
    let exited: Deno.CommandStatus | undefined;
    const status = child.status.then((status) => {
      exited = status;
      return status;
    });
    this.#server = { child, status };
    try {
      await waitFor(
        async () => {
          if (exited) throw new Error("exited");
          return await acceptsConnections(this.port);
        },
        `PostgreSQL on port ${this.port}`,
        startMs,
      );
      return "started";
    } catch (error) {
      if (!exited) await this.kill();
      this.#server = undefined;
      const log = await this.#logTail(logStart);
      if (exited && /could not bind|could not create any TCP\/IP sockets/.test(log)) {
        return "port-taken";
      }
      const why = exited ? `exited with code ${exited.code}` : (error as Error).message;
      throw new Error(`PrivatePostgres on port ${this.port}: ${why}\n${log}`);
    }
  }
}

/**
 * Ends a server's watchdog and deletes the directory: when `stopped`, the server is down and
 * the watchdog just exits; otherwise it first kills what still runs there.
 */
async function closeWatchdog(
  watchdog: Deno.ChildProcess,
  dir: string,
  stopped: boolean,
): Promise<void> {
  watchdog.ref();
  try {
    const writer = watchdog.stdin.getWriter();
    if (stopped) await writer.write(new TextEncoder().encode("done\n"));
    await writer.close();
  } catch {
    // The watchdog died; then nothing will delete the directory but us.
  }
  await within(watchdog.status, 2 * killMs, "the PrivatePostgres watchdog to exit")
    .catch(() => {});
  await Deno.remove(dir, { recursive: true }).catch((error) => {
    if (!(error instanceof Deno.errors.NotFound)) throw error;
  });
}
