/** Where a command's output goes; tests pass a capturing one. */
export interface CliIo {
  /** Writes to standard output. */
  out(text: string): void;
  /** Writes to standard error. */
  err(text: string): void;
  /**
   * Reads all of standard input as text (UTF-8), at most {@link STDIN_LIMIT} bytes.
   *
   * @throws {UsageError} "which holds more than 64 KiB" or "which is a directory": the end
   *   of a sentence about standard input, for the caller to begin.
   * @throws {ExitStatus} 130 when a stop signal comes first.
   */
  readStdin(): Promise<string>;
  /** Resolves when the user asks the process to stop (SIGINT/SIGTERM). */
  shutdownSignal: AbortSignal;
}

/** A mistake in how the command was called: reported in one line, exit status 2. */
export class UsageError extends Error {
  override name = "UsageError";
}

/** A command's own verdict: print nothing more, exit with this status. */
export class ExitStatus extends Error {
  override name = "ExitStatus";
  /** The process exit status. */
  readonly status: number;
  constructor(status: number) {
    super(`exit status ${status}`);
    this.status = status;
  }
}

const encoder = new TextEncoder();

function writeAll(stream: { writeSync(p: Uint8Array): number }, text: string): void {
  const bytes = encoder.encode(text);
  for (let offset = 0; offset < bytes.length;) offset += stream.writeSync(bytes.subarray(offset));
}

/**
 * How long after a stop signal another one counts as the same request, in ms. One Ctrl-C
 * under `deno task` arrives twice: the terminal signals the whole process group, and the
 * task runner forwards the signal it got to its child (measured: 0.04 s from ^C to exit 130
 * when the second was taken for a second press). A person pressing again takes longer.
 */
export const SAME_SIGNAL_MS = 500;

/**
 * What a stop signal (SIGINT, SIGTERM) asks for, given when the first one came (undefined:
 * none yet) and now, in ms: "stop" gracefully, "ignore" (the same request delivered twice),
 * or "exit" at once (asked again: a second Ctrl-C does not wait).
 */
export function stopSignalAction(
  first: number | undefined,
  now: number,
): "stop" | "ignore" | "exit" {
  if (first === undefined) return "stop";
  return now - first < SAME_SIGNAL_MS ? "ignore" : "exit";
}

/** The exit status when standard output's reader has gone: 128 + SIGPIPE (13), as a shell shows. */
export const EXIT_BROKEN_PIPE = 141;

/**
 * The most of standard input a command reads, in bytes. What it reads there is one value
 * (a secret, a proof: under 1 KiB); far more is the wrong file or a device, not input, and
 * reading it all failed late ("string too long" after 600 MB).
 */
export const STDIN_LIMIT = 64 * 1024;

/** Standard input as text, refusing more than {@link STDIN_LIMIT} bytes or a directory. */
async function readStdinText(): Promise<string> {
  const chunks: Uint8Array<ArrayBuffer>[] = [];
  let size = 0;
  try {
    for await (const chunk of Deno.stdin.readable) {
      size += chunk.length;
      if (size > STDIN_LIMIT) {
        throw new UsageError(`which holds more than ${STDIN_LIMIT / 1024} KiB`);
      }
      chunks.push(chunk);
    }
  } catch (error) {
    if (error instanceof Deno.errors.IsADirectory) throw new UsageError("which is a directory");
    throw error;
  }
  return await new Blob(chunks).text(); // UTF-8; a Web API, so main.ts's graph stays as it is
}

/**
 * All of standard input, unless a stop signal comes first: then {@link ExitStatus} 130, and
 * nothing read is used. Deno ends a pending stdin read as if at end of input when a signal
 * it listens for arrives, so "what was read when the read ended" is not the input: Ctrl-C
 * under `duet dlog verify --proof -` printed `valid` for the half it had.
 */
async function readStdinUnlessStopped(signal: AbortSignal): Promise<string> {
  const stopped = new Promise<never>((_, reject) => {
    const stop = () => reject(new ExitStatus(130));
    if (signal.aborted) stop();
    else signal.addEventListener("abort", stop, { once: true });
  });
  const reading = readStdinText();
  reading.catch(() => {}); // after a stop signal, what reading says is no longer wanted
  const text = await Promise.race([reading, stopped]);
  if (signal.aborted) throw new ExitStatus(130);
  return text;
}

/** The process's own standard streams and signals. */
export function processIo(): CliIo {
  const controller = new AbortController();
  let first: number | undefined;
  for (const signal of ["SIGINT", "SIGTERM"] as const) {
    Deno.addSignalListener(signal, () => {
      const action = stopSignalAction(first, performance.now());
      if (action === "exit") Deno.exit(130);
      if (action === "ignore") return;
      first = performance.now();
      controller.abort(new Error(signal));
    });
  }
  return {
    out: (text) => {
      try {
        writeAll(Deno.stdout, text);
      } catch (error) {
        // The reader went away (`duet dlog prove | head -c 10`): end as a Unix tool ends on
        // SIGPIPE, quietly, with 128 + 13, instead of "Broken pipe (os error 32)".
        if (error instanceof Deno.errors.BrokenPipe) Deno.exit(EXIT_BROKEN_PIPE);
        throw error;
      }
    },
    err: (text) => writeAll(Deno.stderr, text),
    readStdin: () => readStdinUnlessStopped(controller.signal),
    shutdownSignal: controller.signal,
  };
}
