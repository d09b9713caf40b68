/**
 * QPACK field sections (RFC 9204) with the static table only. duet advertises a dynamic
 * table capacity of 0 (SETTINGS_QPACK_MAX_TABLE_CAPACITY = 0), so a peer may not refer
 * to a dynamic table: any such reference is QPACK_DECOMPRESSION_FAILED. No encoder or
 * decoder stream instructions are ever needed. Header names and values are byte strings
 * (as in fetch's Headers): one character per byte.
 *
 * @module
 */
import { H3, H3Error } from "./errors.ts";
import { huffmanDecode, huffmanEncode, huffmanLength } from "./huffman.ts";
import { STATIC_TABLE } from "./_qpack_static.ts";

/** A field line: [name, value]. */
export type Field = [name: string, value: string];

const fail = (message: string): never => {
  throw new H3Error(H3.QPACK_DECOMPRESSION_FAILED, message);
};

/** Writes a prefixed integer (RFC 7541 Section 5.1) whose first byte keeps `flags`. */
function writeInteger(out: number[], flags: number, prefixBits: number, value: number): void {
  const max = (1 << prefixBits) - 1;
  if (value < max) {
    out.push(flags | value);
    return;
  }
  out.push(flags | max);
  value -= max;
  while (value >= 128) {
    out.push((value % 128) + 128);
    value = Math.floor(value / 128);
  }
  out.push(value);
}

/** A cursor over a field section. */
class Cursor {
  offset = 0;
  constructor(readonly bytes: Uint8Array) {}

  byte(): number {
    if (this.offset >= this.bytes.length) fail("Field section ends early");
    return this.bytes[this.offset]!;
  }

  integer(prefixBits: number): number {
    const max = (1 << prefixBits) - 1;
    let value = this.byte() & max;
    this.offset++;
    if (value < max) return value;
    for (let shift = 0;; shift += 7) {
      const next = this.byte();
      this.offset++;
      value += (next & 0x7f) * 2 ** shift;
      if (value > Number.MAX_SAFE_INTEGER) fail("Integer too large");
      if ((next & 0x80) === 0) return value;
    }
  }

  /** A string literal whose H bit is `huffmanBit` of the first byte and length has `prefixBits`. */
  string(huffmanBit: number, prefixBits: number): string {
    const huffman = (this.byte() & huffmanBit) !== 0;
    const length = this.integer(prefixBits);
    if (this.offset + length > this.bytes.length) {
      fail("String literal runs past the field section");
    }
    const raw = this.bytes.subarray(this.offset, this.offset + length);
    this.offset += length;
    const bytes = huffman ? huffmanDecode(raw) : raw;
    let text = "";
    for (const b of bytes) text += String.fromCharCode(b);
    return text;
  }
}

function staticEntry(index: number): readonly [string, string] {
  return STATIC_TABLE[index] ?? fail(`Static table index ${index} does not exist`);
}

/**
 * Decodes a field section (the payload of a HEADERS frame). Refuses dynamic table
 * references and sections larger than `maxSize` (RFC 9114 4.2.2 size: name + value + 32
 * per line).
 */
export function decodeFieldSection(payload: Uint8Array, maxSize = 16 * 1024): Field[] {
  const cursor = new Cursor(payload);
  if (cursor.integer(8) !== 0) fail("Field section refers to the dynamic table (capacity is 0)");
  cursor.integer(7); // Delta Base: meaningless with Required Insert Count 0
  const fields: Field[] = [];
  let size = 0;
  while (cursor.offset < payload.length) {
    const first = cursor.byte();
    let field: Field;
    if (first & 0x80) { // Indexed Field Line: 1 T index(6)
      if (!(first & 0x40)) fail("Indexed field line refers to the dynamic table");
      const [name, value] = staticEntry(cursor.integer(6));
      field = [name, value];
    } else if (first & 0x40) { // Literal with Name Reference: 01 N T index(4)
      if (!(first & 0x10)) fail("Literal refers to a dynamic table name");
      const [name] = staticEntry(cursor.integer(4));
      field = [name, cursor.string(0x80, 7)];
    } else if (first & 0x20) { // Literal with Literal Name: 001 N H length(3)
      const name = cursor.string(0x08, 3);
      field = [name, cursor.string(0x80, 7)];
    } else { // 0001 (post-base index) and 0000 (post-base name): dynamic only
      fail("Post-base reference to the dynamic table");
    }
    size += field![0].length + field![1].length + 32;
    if (size > maxSize) {
      throw new H3Error(H3.EXCESSIVE_LOAD, `Field section exceeds ${maxSize} bytes`);
    }
    fields.push(field!);
  }
  return fields;
}

function latin1(text: string): Uint8Array {
  const bytes = new Uint8Array(text.length);
  for (let i = 0; i < text.length; i++) {
    const code = text.charCodeAt(i);
    if (code > 0xff) throw new TypeError(`Header text must be bytes, got U+${code.toString(16)}`);
    bytes[i] = code;
  }
  return bytes;
}

/** Appends a string literal, Huffman-coded when that is shorter. */
function writeString(
  out: number[],
  flags: number,
  huffmanBit: number,
  prefixBits: number,
  text: string,
) {
  const raw = latin1(text);
  if (huffmanLength(raw) < raw.length) {
    const coded = huffmanEncode(raw);
    writeInteger(out, flags | huffmanBit, prefixBits, coded.length);
    out.push(...coded);
  } else {
    writeInteger(out, flags, prefixBits, raw.length);
    out.push(...raw);
  }
}

const exact = new Map<string, number>();
const byName = new Map<string, number>();
STATIC_TABLE.forEach(([name, value], index) => {
  exact.set(`${name}\0${value}`, index);
  if (!byName.has(name)) byName.set(name, index);
});

/**
 * Encodes a field section with static references and literals only (Required Insert
 * Count 0), never asking the peer to keep state.
 *
 * @example
 * ```ts
 * import { decodeFieldSection, encodeFieldSection } from "./qpack.ts";
 * const section = encodeFieldSection([[":status", "200"], ["sec-webtransport-http3-draft", "draft02"]]);
 * const fields = decodeFieldSection(section);
 * if (fields[1]![1] !== "draft02") throw new Error();
 * ```
 */
export function encodeFieldSection(fields: readonly Field[]): Uint8Array {
  const out: number[] = [0x00, 0x00]; // Required Insert Count 0, Base 0
  for (const [name, value] of fields) {
    const full = exact.get(`${name}\0${value}`);
    const named = byName.get(name);
    if (full !== undefined) {
      writeInteger(out, 0xc0, 6, full); // 11 index: static indexed
    } else if (named !== undefined) {
      writeInteger(out, 0x50, 4, named); // 0101 index: static name, N = 0
      writeString(out, 0, 0x80, 7, value);
    } else {
      writeString(out, 0x20, 0x08, 3, name); // 001 0 H: literal name, N = 0
      writeString(out, 0, 0x80, 7, value);
    }
  }
  return Uint8Array.from(out);
}
