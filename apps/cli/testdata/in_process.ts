/** Runs the duet command line in this process with captured output (for CLI tests). */
import { runCli } from "../cli.ts";
import type { CliIo } from "../io.ts";

export async function inProcess(
  args: string[],
  stdin = "",
): Promise<{ code: number; out: string; err: string }> {
  let out = "";
  let err = "";
  const io: CliIo = {
    out: (text) => void (out += text),
    err: (text) => void (err += text),
    readStdin: () => Promise.resolve(stdin),
    shutdownSignal: new AbortController().signal,
  };
  return { code: await runCli(args, io), out, err };
}
