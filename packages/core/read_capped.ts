/**
 * Reads an HTTP answer's body as text, refusing one larger than the caller expects: a
 * service, proxy or impostor that sends gigabytes (`Response.text()` reads all of it into
 * memory, and past V8's string limit fails with "string too long") is cut off at `maxBytes`.
 * The Fetch standard has no size limit of its own; streaming the body and counting is the
 * way to have one.
 *
 * @module
 */

/** An answer's body was larger than the reader accepts. */
export class BodyTooLargeError extends Error {
  /** The limit that was passed, in bytes. */
  readonly maxBytes: number;
  /**
   * The error for an answer past `maxBytes`.
   *
   * @param maxBytes The limit that was passed, in bytes.
   */
  constructor(maxBytes: number) {
    super(`the answer is larger than ${maxBytes} bytes`);
    this.name = "BodyTooLargeError";
    this.maxBytes = maxBytes;
  }
}

/**
 * The body of `response` as UTF-8 text (malformed sequences as U+FFFD), at most `maxBytes`
 * bytes of it.
 *
 * @throws {BodyTooLargeError} as soon as more than `maxBytes` bytes have come (the rest is
 *   cancelled, not read); what reading the body throws (a connection lost mid-body).
 */
export async function readTextCapped(response: Response, maxBytes: number): Promise<string> {
  if (!response.body) return "";
  const declared = Number(response.headers.get("content-length"));
  if (declared > maxBytes) {
    await response.body.cancel();
    throw new BodyTooLargeError(maxBytes);
  }
  const decoder = new TextDecoder();
  let text = "";
  let bytes = 0;
  const reader = response.body.getReader();
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) return text + decoder.decode();
      bytes += value.byteLength;
      if (bytes > maxBytes) {
        await reader.cancel();
        throw new BodyTooLargeError(maxBytes);
      }
      text += decoder.decode(value, { stream: true });
    }
  } finally {
    reader.releaseLock();
  }
}
