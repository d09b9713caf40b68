/**
 * `duet dlog prove` and `duet dlog verify`: the dlog proof library on the command line,
 * in the exact forms the top README lists ("The `duet` command").
 *
 * @module
 */
import { Command } from "commander";
import {
  CURVE_ORDER,
  decodePoint,
  DLogProof,
  encodePoint,
  G,
  parsePid,
  type Point,
} from "@duet/dlog";
import { type CliIo, ExitStatus, UsageError } from "../io.ts";

/** Runs a parser over user input; its error becomes a usage error naming the option. */
function parseOption<T>(option: string, parse: () => T): T {
  try {
    return parse();
  } catch (error) {
    // The library's message names its own field ("Invalid pid: ...", "Cannot decode --y:
    // ..."); the user needs the option's name once.
    const message = (error as Error).message;
    // JSON.parse's own words ("Unexpected token 'o', ...") say where, not what was expected.
    const detail = /is not valid JSON|Unexpected (token|end of JSON)/.test(message)
      ? 'not JSON; expected {"t": HEX66, "s": HEX64} or what duet dlog prove printed'
      : message.replace(/^(Invalid [\w.-]+|Cannot decode [^:]+): /, "");
    throw new UsageError(`Invalid ${option}: ${detail}`);
  }
}

/**
 * The proof and Y that `duet dlog verify` checks: `--proof` is the proof alone (`{"t", "s"}`,
 * Y from `--y`) or all of what `duet dlog prove` printed (`{"y", "proof"}`), so that one
 * command's output feeds the other. A Y in both places must be the same.
 *
 * @throws {UsageError} when there is no Y, or two different ones.
 */
function proofDocument(text: string, yOption: string | undefined): { y: string; proof: string } {
  let document: unknown;
  try {
    document = JSON.parse(text);
  } catch {
    document = undefined; // DLogProof.fromString says what is wrong with it
  }
  const whole = typeof document === "object" && document !== null && "proof" in document;
  const y = whole ? (document as { y?: unknown }).y : undefined;
  if (whole && typeof y === "string" && yOption !== undefined && y !== yOption) {
    throw new UsageError("--y differs from the y in --proof; give one of them");
  }
  const chosen = yOption ?? (typeof y === "string" ? y : undefined);
  if (chosen === undefined) {
    // What is wrong with the proof itself is the news, before the missing Y.
    if (!whole) parseOption("--proof", () => DLogProof.fromString(text));
    throw new UsageError(
      "required option '--y <hex66>' not specified (or give duet dlog prove's whole output " +
        "as --proof)",
    );
  }
  return {
    y: chosen,
    proof: whole ? JSON.stringify((document as { proof: unknown }).proof) : text,
  };
}

/** `-` means "read it from standard input", which keeps secrets off the process list. */
async function valueOrStdin(value: string, io: CliIo): Promise<string> {
  return value === "-" ? (await io.readStdin()).trim() : value;
}

function parseSecret(text: string): bigint {
  if (text.length !== 64) {
    throw new SyntaxError(`expected 64 hex characters, got ${text.length}`);
  }
  if (!/^[0-9a-f]*$/.test(text)) {
    throw new SyntaxError(
      /^[0-9a-fA-F]*$/.test(text)
        ? "expected lowercase hex digits [0-9a-f]; it has uppercase ones (write it in lowercase)"
        : "expected hex digits [0-9a-f] only",
    );
  }
  const x = BigInt("0x" + text);
  if (x === 0n || x >= CURVE_ORDER) throw new RangeError("the secret must be in [1, q-1]");
  return x;
}

function parseBase(text: string | undefined): Point {
  return text === undefined ? G : parseOption("--base", () => decodePoint(text, "--base"));
}

const statementHelp = `
The proof shows knowledge of x with Y = x*B on secp256k1 (B = G unless --base), bound to
the session id and party id. Encoding: DLOG-SECP256K1-SHA256/v1 (packages/dlog/README.md).
PID is a decimal integer in [0, 2^256); HEX64/HEX66 are lowercase hex.`;

/**
 * Tunes noble's table of multiples of G for a process that makes one proof or one check.
 * The library's default (a 6-bit window table, built at the first multiplication) pays for
 * itself over many multiplications; one command makes three or four, so building it costs
 * more than it saves (measured: prove plus its check 42-46 ms with the table, 20-21 ms
 * without, AMD EPYC). Window 1 is noble's documented "no table" setting; results are the same.
 */
function oneShot(): void {
  G.precompute(1);
}

/** The `dlog` command group. */
export function dlogCommand(io: CliIo): Command {
  const dlog = new Command("dlog");

  dlog
    .command("prove")
    .description('prove knowledge of the secret x; prints {"y": HEX66, "proof": {...}}')
    .requiredOption("--sid <sid>", "session id the proof is bound to")
    .requiredOption("--pid <pid>", "party id, a decimal integer in [0, 2^256)")
    .requiredOption(
      "--secret <hex64>",
      "the secret x in [1, q-1] as 64 lowercase hex digits, or - to read it from stdin",
    )
    .option("--base <hex66>", "base point B, SEC1 compressed (default: the generator G)")
    .addHelpText("after", statementHelp)
    .action(async (options: { sid: string; pid: string; secret: string; base?: string }) => {
      const pid = parseOption("--pid", () => parsePid(options.pid));
      const secret = await valueOrStdin(options.secret, io);
      const x = parseOption("--secret", () => parseSecret(secret));
      const base = parseBase(options.base);
      oneShot();
      const y = base.multiply(x);
      const proof = DLogProof.prove(options.sid, pid, x, y, base).toDict();
      // The README's form, with the spacing of Python's json.dumps.
      io.out(
        `{"y": "${encodePoint(y)}", "proof": {"t": "${proof.t}", "s": "${proof.s}"}}\n`,
      );
    });

  dlog
    .command("verify")
    .description("verify a proof: prints valid (exit 0) or invalid (exit 1); bad input exits 2")
    .requiredOption("--sid <sid>", "session id the proof must be bound to")
    .requiredOption("--pid <pid>", "party id, a decimal integer in [0, 2^256)")
    .option(
      "--y <hex66>",
      "public point Y = x*B, SEC1 compressed (required unless --proof is duet dlog prove's " +
        "whole output, which carries it)",
    )
    .requiredOption(
      "--proof <json>",
      'the proof as JSON {"t": HEX66, "s": HEX64}, or what duet dlog prove printed ' +
        '({"y": HEX66, "proof": {...}}), or - to read either from stdin',
    )
    .option("--base <hex66>", "base point B, SEC1 compressed (default: the generator G)")
    .addHelpText("after", statementHelp)
    .action(
      async (options: { sid: string; pid: string; y?: string; proof: string; base?: string }) => {
        const pid = parseOption("--pid", () => parsePid(options.pid));
        const base = parseBase(options.base);
        const given = proofDocument(await valueOrStdin(options.proof, io), options.y);
        const y = parseOption("--y", () => decodePoint(given.y, "--y"));
        const proof = parseOption("--proof", () => DLogProof.fromString(given.proof));
        oneShot();
        const valid = proof.verify(options.sid, pid, y, base);
        io.out(valid ? "valid\n" : "invalid\n");
        if (!valid) throw new ExitStatus(1);
      },
    );

  return dlog;
}
