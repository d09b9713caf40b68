/**
 * One line of JSON output that no terminal acts on: what duet's `--json` modes print, since
 * their values carry text from peers and servers (see `printable.ts` for why that matters).
 *
 * @module
 */

/**
 * JSON for one output line, with DEL and the C1 controls written as \u escapes too
 * (JSON.stringify escapes only U+0000-U+001F): the same value for a parser, nothing a
 * terminal would act on.
 */
export function jsonLine(
  value: unknown,
  replacer?: (key: string, value: unknown) => unknown,
): string {
  return JSON.stringify(value, replacer as never).replace(
    /[\u007f-\u009f]/g,
    (c) => `\\u00${c.charCodeAt(0).toString(16)}`,
  );
}
