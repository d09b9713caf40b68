// deno-lint-ignore-file no-console -- a script's usage and its mistakes go to the terminal
/**
 * The command line of a developer script: the benchmarks under bench/ and the build tools
 * under tools/. node:util's `parseArgs` parses it; this adds what that leaves to each caller,
 * once for every script:
 *
 * - `--help` (or `-h`) prints the script's own module documentation (its first `/** … *\/`
 *   comment: what it does, its usage, what it needs) and exits 0;
 * - an unknown option, a missing value or a stray argument is one line naming the script,
 *   exit 2, not a stack trace, and never ignored: `deno task build:ping-page --chek` used to
 *   rebuild the file it was meant to check;
 * - counts are whole numbers within bounds, lists are checked item by item, so `--runs abc`
 *   or `--counts 10,,20` is refused before anything starts instead of running a loop of NaN
 *   rounds or timing nothing.
 *
 * @module
 */
import { resolve } from "node:path";
import { parseArgs } from "node:util";

/**
 * One option of a developer script. `internal`: not for people (the script passes it to
 * itself), so its documentation need not mention it.
 */
export type ScriptOption =
  & { internal?: boolean }
  & (
    /** A whole number from `min` (1 if not given) to `max` (if given), e.g. `--runs 30`. */
    | { type: "count"; default: number; min?: number; max?: number }
    /** Comma-separated whole numbers, each at or above `min` (1 if not given). */
    | { type: "counts"; default: readonly number[]; min?: number }
    /**
     * Comma-separated decimal numbers in [`min`, `max`] with at most `decimals` digits after
     * the point, e.g. loss rates in percent to a hundredth.
     */
    | { type: "numbers"; default: readonly number[]; min: number; max: number; decimals: number }
    /** One name of `choices`, e.g. which listener to start. */
    | { type: "choice"; default: string; choices: readonly string[] }
    /** Comma-separated names, each one of `choices`, e.g. which scenarios to run. */
    | { type: "names"; default: readonly string[]; choices: readonly string[] }
    /**
     * A directory that exists and holds the file `holding` (e.g. a checkout's `deno.json`);
     * its value is the absolute path, a relative one taken from the current directory.
     */
    | { type: "directory"; holding: string; default?: string }
    /** Free text (a URL, a name): the script checks what it needs. */
    | { type: "string"; default?: string }
    /** Present or not. */
    | { type: "boolean" }
  );

/** The parsed value of each option, by its declaration. */
export type ScriptValues<O extends Record<string, ScriptOption>> = {
  [K in keyof O]: O[K] extends { type: "count" } ? number
    : O[K] extends { type: "counts" | "numbers" } ? number[]
    : O[K] extends { type: "names" } ? string[]
    : O[K] extends { type: "choice" } ? string
    : O[K] extends { type: "boolean" } ? boolean
    : O[K] extends { type: "string" | "directory"; default: string } ? string
    : string | undefined;
};

/** A command-line mistake: its message is the line printed, its exit status 2. */
export class ScriptUsageError extends Error {
  override name = "ScriptUsageError";
}

/**
 * The options of the script at `script` (its `import.meta.url`), parsed from `args`.
 * Prints and exits on `--help` (0) and on a mistake (2); {@link parseScriptOptions} is the
 * same without printing or exiting.
 */
export function scriptOptions<const O extends Record<string, ScriptOption>>(
  script: string,
  options: O,
  args: readonly string[] = Deno.args,
): ScriptValues<O> {
  const name = scriptName(script);
  try {
    const parsed = parseScriptOptions(options, args);
    if (parsed === "help") {
      const doc = moduleDoc(script) ?? "";
      const missing = undocumented(options, doc);
      if (missing.length) {
        // The script's fault, not the user's: its documentation is its usage.
        console.error(`${name}: its documentation does not mention ${missing.join(", ")}`);
        Deno.exit(1);
      }
      console.log(doc);
      Deno.exit(0);
    }
    return parsed;
  } catch (error) {
    if (!(error instanceof ScriptUsageError)) throw error;
    console.error(`${name}: ${error.message} (--help for usage)`);
    Deno.exit(2);
  }
}

/**
 * `args` parsed by `options`, or "help" when `--help` or `-h` is among them.
 *
 * @throws {ScriptUsageError} on an unknown option, a missing or empty value, an option given
 *   twice, a stray argument, or a value outside its option's type
 */
export function parseScriptOptions<const O extends Record<string, ScriptOption>>(
  options: O,
  args: readonly string[],
): ScriptValues<O> | "help" {
  if (args.some((arg) => arg === "--help" || arg === "-h")) return "help";
  let parsed: ReturnType<typeof parseArgs>;
  try {
    parsed = parseArgs({
      args: [...args],
      options: Object.fromEntries(
        Object.entries(options).map((
          [key, option],
        ) => [key, { type: option.type === "boolean" ? "boolean" : "string" } as const]),
      ),
      strict: true,
      tokens: true,
    });
  } catch (error) {
    // parseArgs' own messages name the option ("Unknown option '--foo'", "Option '--n
    // <value>' argument missing"); some run over several lines, printed here as one.
    const message = error instanceof Error ? error.message : String(error);
    throw new ScriptUsageError(message.replace(/\s*\n\s*/g, " "));
  }
  // parseArgs keeps the last of a repeated option: `--runs=abc --runs=4` ran 4, silently.
  const named = parsed.tokens!.filter((token) => token.kind === "option").map((t) => t.name);
  const repeated = named.find((name, i) => named.indexOf(name) !== i);
  if (repeated !== undefined) throw new ScriptUsageError(`--${repeated} is given more than once`);
  const values = parsed.values as Record<string, string | boolean | undefined>;
  const result: Record<string, unknown> = {};
  for (const [key, option] of Object.entries(options)) {
    const given = values[key];
    if (option.type === "boolean") result[key] = given === true;
    else if (given === undefined) {
      const fallback = "default" in option ? option.default : undefined;
      result[key] = typeof fallback === "object" ? [...fallback] : fallback;
    } else result[key] = checked(key, option, String(given));
  }
  return result as ScriptValues<O>;
}

function checked(key: string, option: Exclude<ScriptOption, { type: "boolean" }>, text: string) {
  if (text === "") {
    // An unset shell variable, most likely: `--database-url=` fell back to PGlite silently.
    throw new ScriptUsageError(`--${key} is empty; leave it out for its default`);
  }
  if (option.type === "string") return text;
  if (option.type === "directory") {
    const held = `${text.replace(/\/?$/, "/")}${option.holding}`;
    const isFile = (path: string) => {
      try {
        return Deno.statSync(path).isFile;
      } catch {
        return false; // missing, or not ours to read: either way not what was asked for
      }
    };
    if (!isFile(held)) {
      throw new ScriptUsageError(
        `--${key} ${JSON.stringify(text)}: not a directory holding ${option.holding}`,
      );
    }
    return resolve(text);
  }
  if (option.type === "count") {
    const min = option.min ?? 1;
    const value = wholeNumber(text, min, option.max);
    if (value === undefined) {
      const range = option.max === undefined ? `of ${min} or more` : `from ${min} to ${option.max}`;
      throw new ScriptUsageError(
        `--${key} ${JSON.stringify(text)}: must be a whole number ${range}`,
      );
    }
    return value;
  }
  if (option.type === "choice") {
    if (!option.choices.includes(text)) {
      throw new ScriptUsageError(
        `--${key} ${JSON.stringify(text)}: must be one of ${option.choices.join(", ")}`,
      );
    }
    return text;
  }
  const items = text.split(",");
  if (option.type === "counts") {
    const values = items.map((item) => wholeNumber(item, option.min ?? 1));
    if (values.includes(undefined)) {
      throw new ScriptUsageError(
        `--${key} ${JSON.stringify(text)}: each item must be a whole number of ` +
          `${option.min ?? 1} or more`,
      );
    }
    return values;
  }
  if (option.type === "names") {
    const unknown = items.filter((item) => !option.choices.includes(item));
    if (unknown.length) {
      throw new ScriptUsageError(
        `--${key}: ${unknown.map((item) => JSON.stringify(item)).join(", ")} is not one of ` +
          option.choices.join(", "),
      );
    }
    return items;
  }
  // Decimal notation only: Number() also reads "0x10", "1e1" and " 5".
  const decimal = new RegExp(
    `^\\d+${option.decimals > 0 ? `(\\.\\d{1,${option.decimals}})?` : ""}$`,
  );
  return items.map((item) => {
    const value = decimal.test(item) ? Number(item) : NaN;
    if (!Number.isFinite(value) || value < option.min || value > option.max) {
      throw new ScriptUsageError(
        `--${key} ${JSON.stringify(text)}: each item must be a number from ${option.min} ` +
          `to ${option.max}, with at most ${option.decimals} decimals`,
      );
    }
    return value;
  });
}

/** `text` as a whole number (decimal digits only) in [`min`, `max`], or undefined. */
function wholeNumber(text: string, min: number, max = Number.MAX_SAFE_INTEGER): number | undefined {
  const value = /^\d+$/.test(text) ? Number(text) : NaN;
  return Number.isSafeInteger(value) && value >= min && value <= max ? value : undefined;
}

/**
 * The options (as `--name`) that `doc` does not mention, internal ones aside: `--help` shows
 * the documentation, so each option must be in it.
 */
export function undocumented(options: Record<string, ScriptOption>, doc: string): string[] {
  return Object.entries(options)
    .filter(([key, option]) => !option.internal && !new RegExp(`--${key}(?![\\w-])`).test(doc))
    .map(([key]) => `--${key}`);
}

/** `bench/cli/run.ts` for that file's URL: its path in the repository, as typed. */
function scriptName(script: string): string {
  const root = new URL("../", import.meta.url).pathname;
  const path = new URL(script).pathname;
  return path.startsWith(root) ? path.slice(root.length) : path;
}

/**
 * The text of the first documentation comment in the file at `script`, without its comment
 * marks and `@module` tag; undefined when it has none. Read from the file, so that `--help`
 * and the script's documentation are one text.
 */
export function moduleDoc(script: string): string | undefined {
  const source = Deno.readTextFileSync(new URL(script));
  const block = /\/\*\*([\s\S]*?)\*\//.exec(source)?.[1];
  if (block === undefined) return undefined;
  return block
    .split("\n")
    .map((line) => line.replace(/^\s*\* ?/, ""))
    .filter((line) => line.trim() !== "@module")
    .join("\n")
    .trim();
}
