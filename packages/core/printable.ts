/**
 * Text from elsewhere (a peer's messages, a server's error texts) made safe to print on a
 * terminal. Decryption proves who wrote a message, not that it is harmless: an escape
 * sequence inside one would reach the terminal as a command (move the cursor, rewrite the
 * screen, set the window title, write the clipboard with OSC 52), and a newline would let
 * a peer forge a line of line mode's `NAME: TEXT` output. Written here because it is a
 * one-line mapping that no terminal library offers as such.
 *
 * @module
 */

/**
 * Replaces every control character with a visible stand-in: C0 controls and DEL with
 * their Unicode control pictures (a newline shows as ␊, ESC as ␛), C1 controls as
 * `\u{85}` and the like. Everything else, bidirectional marks included, is kept.
 */
export function printable(text: string): string {
  // deno-lint-ignore no-control-regex
  return text.replace(/[\u0000-\u001f\u007f-\u009f]/g, (c) => {
    const code = c.charCodeAt(0);
    if (code < 0x20) return String.fromCharCode(0x2400 + code);
    if (code === 0x7f) return "\u2421";
    return `\\u{${code.toString(16)}}`;
  });
}
