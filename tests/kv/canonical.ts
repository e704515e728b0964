// A canonical JSON form of KV keys, values and whole databases, shared by the backup
// scripts (backup_workload.ts, dump.ts) so the Rust harness (tests/src/backup.rs) can
// compare a database with its restored copy as plain JSON. Every value becomes
// {"t": <type>, "v": <payload>}, so types JSON would merge stay apart: bigint vs
// number, Uint8Array vs array, Deno.KvU64, Date, undefined vs null, Map, Set.

/** A value in canonical form: `{t, v}`, JSON-serializable, equal iff the values are. */
export type Canonical = { t: string; v?: unknown };

/** One entry of a dump: the key's parts and the value in canonical form, and the entry's versionstamp. */
export type DumpEntry = { key: Canonical[]; value: Canonical; versionstamp: string };

function hex(bytes: Uint8Array): string {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

/** Numbers as strings: JSON has no NaN, Infinity or -0. */
function number(n: number): string {
  return Object.is(n, -0) ? "-0" : String(n);
}

/** The canonical form of a key part or of a value Deno KV can store. Throws on anything else. */
export function canonical(value: unknown): Canonical {
  switch (typeof value) {
    case "undefined":
      return { t: "undefined" };
    case "boolean":
      return { t: "boolean", v: value };
    case "number":
      return { t: "number", v: number(value) };
    case "bigint":
      return { t: "bigint", v: value.toString() };
    case "string":
      return { t: "string", v: value };
  }
  if (value === null) return { t: "null" };
  if (value instanceof Deno.KvU64) return { t: "u64", v: value.value.toString() };
  if (value instanceof Uint8Array) return { t: "bytes", v: hex(value) };
  if (ArrayBuffer.isView(value)) {
    const bytes = new Uint8Array(value.buffer, value.byteOffset, value.byteLength);
    return { t: value.constructor.name, v: hex(bytes) };
  }
  if (value instanceof Date) return { t: "date", v: number(value.getTime()) };
  if (value instanceof RegExp) return { t: "regexp", v: String(value) };
  if (Array.isArray(value)) return { t: "array", v: Array.from(value, canonical) };
  if (value instanceof Map) {
    return { t: "map", v: Array.from(value, ([k, v]) => [canonical(k), canonical(v)]) };
  }
  if (value instanceof Set) return { t: "set", v: Array.from(value, canonical) };
  if (typeof value === "object" && Object.getPrototypeOf(value) === Object.prototype) {
    return { t: "object", v: Object.entries(value).map(([k, v]) => [k, canonical(v)]) };
  }
  throw new Error(`no canonical form for ${Deno.inspect(value)}`);
}

export function canonicalKey(key: Deno.KvKey): Canonical[] {
  return key.map(canonical);
}

/** Every entry of the database, in key order, in canonical form. */
export async function dump(kv: Deno.Kv): Promise<DumpEntry[]> {
  const entries: DumpEntry[] = [];
  for await (const entry of kv.list({ prefix: [] }, { consistency: "strong" })) {
    entries.push({
      key: canonicalKey(entry.key),
      value: canonical(entry.value),
      versionstamp: entry.versionstamp,
    });
  }
  return entries;
}
