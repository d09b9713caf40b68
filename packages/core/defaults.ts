/**
 * Settings over defaults, where a setting given as `undefined` means "the default". A plain
 * spread (`{ ...DEFAULTS, ...overrides }`) lets `{ drainMs: undefined }` erase the default
 * and fail later, far from the call.
 *
 * @module
 */

/**
 * `defaults` with every property of `overrides` that is not `undefined` laid over it.
 *
 * @example
 * ```ts
 * const config = withDefaults({ port: 8080, drainMs: 5_000 }, { drainMs: undefined });
 * // { port: 8080, drainMs: 5000 }
 * ```
 */
export function withDefaults<T extends object, O extends Partial<T>>(
  defaults: T,
  overrides: O,
): T & { [K in keyof O as O[K] extends undefined ? never : K]: Exclude<O[K], undefined> } {
  const given = Object.fromEntries(
    Object.entries(overrides).filter(([, value]) => value !== undefined),
  );
  return { ...defaults, ...given } as never;
}
