/** Where a command's output goes; tests pass a capturing one. */
export interface CliIo {
  /** Writes to standard output. */
  out(text: string): void;
  /** Writes to standard error. */
  err(text: string): void;
  /** Reads all of standard input as text. */
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

/** The process's own standard streams and signals. */
export function processIo(): CliIo {
  const controller = new AbortController();
  for (const signal of ["SIGINT", "SIGTERM"] as const) {
    Deno.addSignalListener(signal, () => {
      if (controller.signal.aborted) Deno.exit(130); // a second Ctrl-C does not wait
      controller.abort(new Error(signal));
    });
  }
  return {
    out: (text) => writeAll(Deno.stdout, text),
    err: (text) => writeAll(Deno.stderr, text),
    readStdin: () => new Response(Deno.stdin.readable).text(),
    shutdownSignal: controller.signal,
  };
}
