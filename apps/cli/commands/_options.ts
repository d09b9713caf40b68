import { hostPort as joinHostPort } from "@duet/net/address";
import { explainError } from "@duet/core/explain-error";
import { resolve } from "node:path";
import { InvalidArgumentError } from "commander";
import { type Code, DEFAULT_WORDS, parseCode } from "@duet/pake";
import { UsageError } from "../io.ts";

/** A commander argument parser for whole numbers in [min, max]. */
export function integer(min: number, max = Number.MAX_SAFE_INTEGER): (text: string) => number {
  return (text) => {
    // A negative number is a number out of range, not something else.
    if (!/^-?[0-9]+$/.test(text)) throw new InvalidArgumentError("expected a whole number");
    const value = Number(text);
    if (value < min || value > max) {
      throw new InvalidArgumentError(
        max === Number.MAX_SAFE_INTEGER
          ? `expected a whole number of at least ${min}`
          : `expected a number from ${min} to ${max}`,
      );
    }
    return value;
  };
}

/** A commander argument parser for HOST:PORT (an IPv6 host in brackets). */
export function hostPort(text: string): string {
  const match = /^([^\s:\[\]]+|\[[0-9a-fA-F:.]+\]):(\d{1,5})$/.exec(text);
  if (!match) {
    throw new InvalidArgumentError(
      text.split(":").length > 2 && !text.startsWith("[")
        ? "expected HOST:PORT (an IPv6 address in brackets: [::1]:7070)"
        : "expected HOST:PORT",
    );
  }
  const port = Number(match[2]);
  if (port < 1 || port > 65535) {
    throw new InvalidArgumentError(`expected HOST:PORT with a port from 1 to 65535, not ${port}`);
  }
  return text;
}

/** `host:port` as a client would type it: an IPv6 address goes in brackets. */
export function showHostPort(host: string, port: number): string {
  return joinHostPort(host, port);
}

/** A commander argument parser for text matching `re`; `what` says what is expected. */
export function pattern(re: RegExp, what: string): (text: string) => string {
  return (text) => {
    if (!re.test(text)) throw new InvalidArgumentError(`expected ${what}`);
    return text;
  };
}

/** A commander argument parser for absolute http(s) or redis URLs. */
export function url(...protocols: string[]): (text: string) => string {
  return (text) => {
    let parsed: URL;
    try {
      parsed = new URL(text);
    } catch {
      // The URL parser says only "invalid"; the usual mistake is a port out of range.
      const port = /^[a-z][a-z0-9+.-]*:\/\/(?:[^/@]*@)?(?:\[[^\]]*\]|[^/:]*):(\d+)/i.exec(text)
        ?.[1];
      if (port !== undefined && Number(port) > 65535) {
        throw new InvalidArgumentError(`expected a port from 1 to 65535, not ${port}`);
      }
      throw new InvalidArgumentError("expected an absolute URL");
    }
    if (!protocols.includes(parsed.protocol)) {
      throw new InvalidArgumentError(`expected a ${protocols.join(" or ")} URL`);
    }
    return text;
  };
}

/**
 * Fails as {@link explainListenError} does when TCP `port` on `host` cannot be listened on,
 * before a command does the slow or lasting part of its start (opening or creating a
 * database): a port in use ends it with nothing made. A probe, then closed: the service
 * listens again after, and a port taken in between is still explained then. Port 0 always
 * succeeds, and is not probed.
 */
export function probeTcpPort(host: string, port: number, option = "--port"): void {
  if (port === 0) return;
  try {
    Deno.listen({ hostname: host, port }).close();
  } catch (error) {
    explainListenError(error, host, port, option);
  }
}

/**
 * Turns listen errors into advice: "address in use" naming `option`, the option that sets
 * the port; a host that is not this machine's or does not resolve as a usage error (exit
 * 2); other errors pass through.
 */
export function explainListenError(
  error: unknown,
  host: string,
  port: number,
  option = "--port",
): never {
  if (error instanceof Deno.errors.AddrInUse) {
    throw new Error(
      `${
        showHostPort(host, port)
      } is already in use; choose another ${option} (0 picks a free one)`,
    );
  }
  if (error instanceof Deno.errors.AddrNotAvailable) {
    throw new UsageError(
      `cannot listen on ${showHostPort(host, port)}: ${host} is not an address of this ` +
        "machine (--host 127.0.0.1 for this machine only, 0.0.0.0 or :: for every interface)",
    );
  }
  // Deno.listen and Deno.serve say so in words only.
  const unresolved = /failed to lookup address/.test((error as Error)?.message ?? "");
  if (error instanceof Deno.errors.NotFound || unresolved) {
    throw new UsageError(`cannot listen on ${host}: no such host (give --host an IP address)`);
  }
  if (error instanceof Deno.errors.PermissionDenied) {
    throw new Error(
      `cannot listen on ${showHostPort(host, port)}: ` +
        (port > 0 && port < 1024
          ? "ports below 1024 need privileges this process lacks; choose a port from 1024 " +
            "to 65535, or 0 for any free one"
          : explainError(error)),
      { cause: error },
    );
  }
  throw error;
}

/** Resolves when the signal aborts. */
export function untilAborted(signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) resolve();
    else signal.addEventListener("abort", () => resolve(), { once: true });
  });
}

/**
 * The directory the user ran duet from. `deno task` runs its command from the repository
 * root and passes the directory it was started in as INIT_CWD (as npm does); run directly,
 * duet's own working directory is the user's.
 */
export function userDirectory(): string {
  return Deno.env.get("INIT_CWD") || Deno.cwd();
}

/**
 * A commander argument parser for a file or directory: resolved against the directory the
 * user ran the command from ({@link userDirectory}), so that `--cert ./cert.pem` means the
 * file beside them whatever the task runner's working directory is.
 */
export function userPath(text: string): string {
  if (text === "") throw new InvalidArgumentError("expected a path");
  return resolve(userDirectory(), text);
}

/**
 * A commander argument parser for `--code`: `new` (any case), or a code as a person types it
 * (packages/pake, parseCode), given back in its canonical text. duet makes codes of
 * DEFAULT_WORDS words, so a code with another count is a word dropped or added in the telling:
 * refused here rather than failing as another code at the other end.
 */
export function codeOption(text: string): string {
  if (text.trim().toLowerCase() === "new") return "new";
  let code: Code;
  try {
    code = parseCode(text);
  } catch (error) {
    throw new InvalidArgumentError((error as Error).message);
  }
  if (code.words.length !== DEFAULT_WORDS) {
    throw new InvalidArgumentError(
      `a duet code has ${DEFAULT_WORDS} words after its number, as --code new makes them; ` +
        `this one has ${code.words.length}: check it with the other party`,
    );
  }
  return code.text;
}
