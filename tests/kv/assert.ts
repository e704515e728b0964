// Minimal assertions for the KV suites (the test machines reach npm but not JSR,
// so @std/assert is not importable; these follow its semantics for what we use).

export class AssertionError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "AssertionError";
  }
}

export function assert(expr: unknown, msg = "assertion failed"): asserts expr {
  if (!expr) throw new AssertionError(msg);
}

function show(value: unknown): string {
  return Deno.inspect(value, { depth: 10, sorted: true });
}

/** Structural equality: primitives (bigint included), Date, Uint8Array, Deno.KvU64, arrays, plain objects. */
export function equal(a: unknown, b: unknown): boolean {
  if (Object.is(a, b)) return true;
  if (typeof a !== typeof b || a === null || b === null || typeof a !== "object") return false;
  if (a instanceof Deno.KvU64 || b instanceof Deno.KvU64) {
    return a instanceof Deno.KvU64 && b instanceof Deno.KvU64 && a.value === b.value;
  }
  if (a instanceof Date || b instanceof Date) {
    return a instanceof Date && b instanceof Date && a.getTime() === b.getTime();
  }
  if (a instanceof Uint8Array || b instanceof Uint8Array) {
    return a instanceof Uint8Array && b instanceof Uint8Array && a.length === b.length &&
      a.every((x, i) => x === b[i]);
  }
  if (Array.isArray(a) || Array.isArray(b)) {
    return Array.isArray(a) && Array.isArray(b) && a.length === b.length &&
      a.every((x, i) => equal(x, b[i]));
  }
  const ka = Object.keys(a as object).sort();
  const kb = Object.keys(b as object).sort();
  return equal(ka, kb) &&
    ka.every((k) => equal((a as Record<string, unknown>)[k], (b as Record<string, unknown>)[k]));
}

export function assertEquals(actual: unknown, expected: unknown, msg = ""): void {
  if (!equal(actual, expected)) {
    throw new AssertionError(`${msg ? msg + ": " : ""}expected ${show(expected)}, got ${show(actual)}`);
  }
}

/** Awaits `fn`, which must reject with an error whose message contains `includes`. */
export async function assertRejects(
  fn: () => Promise<unknown>,
  includes: string,
): Promise<Error> {
  try {
    await fn();
  } catch (error) {
    const message = error instanceof Error ? error.message : String(error);
    if (!message.includes(includes)) {
      throw new AssertionError(`expected an error containing ${show(includes)}, got ${show(message)}`);
    }
    return error as Error;
  }
  throw new AssertionError(`expected a rejection containing ${show(includes)}, but it resolved`);
}

/** Like assertRejects for synchronous throws. */
export function assertThrows(fn: () => unknown, includes: string): Error {
  try {
    fn();
  } catch (error) {
    const message = error instanceof Error ? error.message : String(error);
    if (!message.includes(includes)) {
      throw new AssertionError(`expected an error containing ${show(includes)}, got ${show(message)}`);
    }
    return error as Error;
  }
  throw new AssertionError(`expected a throw containing ${show(includes)}, but it returned`);
}
