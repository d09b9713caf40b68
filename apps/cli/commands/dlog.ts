/**
 * `duet dlog prove` and `duet dlog verify`: the dlog proof library on the command line,
 * in the exact forms the top README lists ("The `duet` command").
 *
 * @module
 */
import { Command, InvalidArgumentError } from "commander";
import {
  decodePoint,
  decodeScalar,
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
      ? 'not JSON; expected {"t": HEX66, "s": HEX64} or what duet dlog prove printed ' +
        "(from a file: --proof - < FILE)"
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
function proofDocument(
  text: string,
  yOption: string | undefined,
): { y: string; yFrom: string; proof: string } {
  let document: unknown;
  try {
    document = JSON.parse(text);
  } catch {
    document = undefined; // DLogProof.fromString says what is wrong with it
  }
  // Either field of what `duet dlog prove` prints marks it (a bare proof has "t" and "s").
  const whole = typeof document === "object" && document !== null &&
    ("proof" in document || "y" in document);
  const y = whole ? (document as { y?: unknown }).y : undefined;
  if (whole) checkWholeOutput(document as Record<string, unknown>);
  if (whole && typeof y === "string" && yOption !== undefined && y !== yOption) {
    throw new UsageError("--y differs from the y in --proof; give one of them");
  }
  const chosen = yOption ?? (typeof y === "string" ? y : undefined);
  if (chosen === undefined) {
    // What is wrong with the proof itself is the news, before the missing Y.
    if (!whole) parseOption("--proof", () => DLogProof.fromString(text));
    if (whole) {
      throw new UsageError(
        'Invalid --proof: it has "proof" but no "y"; give --y, or all of what duet dlog ' +
          "prove printed",
      );
    }
    throw new UsageError(
      "required option '--y <hex66>' not specified (or give duet dlog prove's whole output " +
        "as --proof)",
    );
  }
  return {
    y: chosen,
    // Where a bad Y came from, for its message: the option, or the field inside --proof.
    yFrom: yOption === undefined ? '--proof\'s "y"' : "--y",
    proof: whole ? JSON.stringify((document as { proof: unknown }).proof) : text,
  };
}

/**
 * What `duet dlog prove` prints has "proof" and "y", a string, and nothing else.
 *
 * @throws {UsageError} naming the field that is not so.
 */
function checkWholeOutput(document: Record<string, unknown>): void {
  const unknown = Object.keys(document).find((key) => key !== "y" && key !== "proof");
  if (unknown !== undefined) {
    throw new UsageError(
      `Invalid --proof: unknown field ${JSON.stringify(unknown)} (duet dlog prove prints ` +
        `{"y": HEX66, "proof": {...}})`,
    );
  }
  if (!("proof" in document)) {
    throw new UsageError(
      'Invalid --proof: it has "y" but no "proof" (duet dlog prove prints ' +
        '{"y": HEX66, "proof": {...}})',
    );
  }
  const y = document["y"];
  if (y !== undefined && typeof y !== "string") {
    const got = y === null ? "null" : Array.isArray(y) ? "an array" : `a ${typeof y}`;
    throw new UsageError(`Invalid --proof: its "y" must be a string of 66 hex digits, got ${got}`);
  }
}

/**
 * `-` means "read it from standard input", which keeps secrets off the process list.
 *
 * @throws {UsageError} when standard input held nothing but whitespace.
 */
async function valueOrStdin(option: string, value: string, io: CliIo): Promise<string> {
  if (value !== "-") return value;
  const text = (await io.readStdin().catch((error) => {
    // readStdin ends a sentence about standard input ("which is a directory").
    if (!(error instanceof UsageError)) throw error;
    throw new UsageError(`Invalid ${option}: - reads it from standard input, ${error.message}`);
  })).trim();
  if (text === "") {
    throw new UsageError(`Invalid ${option}: - reads it from standard input, which was empty`);
  }
  return text;
}

/** The secret x: 64 lowercase hex digits (the library's check and words), not 0. */
function parseSecret(text: string): bigint {
  const x = decodeScalar(text, "--secret");
  if (x === 0n) throw new RangeError("the secret must be in [1, q-1]; it is 0");
  return x;
}

/**
 * A session id: any text but none. An empty one is almost always a shell variable that was
 * not set, and would bind the proof to nothing in particular.
 */
function parseSid(text: string): string {
  if (text === "") {
    throw new InvalidArgumentError(
      "it is empty; a proof is bound to its session id, so give one (an unset variable?)",
    );
  }
  return text;
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
    .requiredOption("--sid <sid>", "session id the proof is bound to", parseSid)
    .requiredOption("--pid <pid>", "party id, a decimal integer in [0, 2^256)")
    .requiredOption(
      "--secret <hex64>",
      "the secret x in [1, q-1] as 64 lowercase hex digits (openssl rand -hex 32 makes " +
        "one), or - to read it from stdin",
    )
    .option("--base <hex66>", "base point B, SEC1 compressed (default: the generator G)")
    .addHelpText("after", statementHelp)
    .action(async (options: { sid: string; pid: string; secret: string; base?: string }) => {
      const pid = parseOption("--pid", () => parsePid(options.pid));
      const secret = await valueOrStdin("--secret", options.secret, io);
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
    .requiredOption("--sid <sid>", "session id the proof must be bound to", parseSid)
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
        const given = proofDocument(await valueOrStdin("--proof", options.proof, io), options.y);
        const y = parseOption(given.yFrom, () => decodePoint(given.y, given.yFrom));
        const proof = parseOption("--proof", () => DLogProof.fromString(given.proof));
        oneShot();
        const valid = proof.verify(options.sid, pid, y, base);
        io.out(valid ? "valid\n" : "invalid\n");
        if (!valid) throw new ExitStatus(1);
      },
    );

  return dlog;
}
