/**
 * What a typed line means, for both interfaces (line mode and the terminal interface): a
 * command (`/key`, `/accept-key [FINGERPRINT]`, `/help`, `/quit`, in any case), a slash word that is no
 * command (never sent: a mistyped `/exit` would otherwise reach the peer), or text to
 * send. A line that starts with `//` is sent with one slash less, for text that begins
 * with a slash.
 *
 * @module
 */

/** The commands, as typed. */
export const COMMANDS = ["/key", "/accept-key", "/help", "/quit"] as const;
export type Command = (typeof COMMANDS)[number];

/** A typed line, read. */
export type TypedLine =
  | { kind: "empty" }
  | { kind: "command"; command: Command; argument?: string }
  | { kind: "unknown"; word: string }
  | { kind: "text"; text: string };

/** Reads one typed line (without its line break). */
export function readTypedLine(line: string): TypedLine {
  const trimmed = line.trim();
  if (!trimmed) return { kind: "empty" };
  if (trimmed.startsWith("//")) return { kind: "text", text: line.replace("/", "") };
  if (trimmed.startsWith("/")) {
    const word = trimmed.split(/\s/, 1)[0]!;
    const command = COMMANDS.find((c) => c === word.toLowerCase());
    // Only /accept-key takes an argument (the fingerprint it accepts): "/key now" is not
    // /key, and not text either.
    if (command && word.length === trimmed.length) return { kind: "command", command };
    if (command === "/accept-key") {
      return { kind: "command", command, argument: trimmed.slice(word.length).trim() };
    }
    return { kind: "unknown", word };
  }
  return { kind: "text", text: line };
}

/** What to say about a slash word that is no command. */
export function unknownCommandText(word: string): string {
  return `${word} is not a command, so it was not sent (${COMMANDS.join(" ")}; ` +
    `start a line with // to send one that begins with /)`;
}
