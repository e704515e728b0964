// Where the KV suites connect: SUBKV_KV_URL is a subkv database's KV Connect URL
// (http://…/databases/<id>/connect, token in DENO_KV_ACCESS_TOKEN), set by the
// Rust harness tests/tests/kv.rs. `SUBKV_KV_URL=:memory:` runs the same suite on
// Deno's own in-memory SQLite backend, the reference the suite is checked against.

const url = Deno.env.get("SUBKV_KV_URL");
if (!url) {
  throw new Error(
    "SUBKV_KV_URL is not set: run the KV suites through `make test` (tests/tests/kv.rs), " +
      "or with SUBKV_KV_URL=:memory: to check the suite against Deno's own backend",
  );
}

export const KV_URL: string = url;
/** True against subkv; false on Deno's in-process reference backend. */
export const REMOTE = url !== ":memory:";

/** A key prefix no other test (or earlier run) uses: every test works under its own. */
export function scope(name: string): Deno.KvKey {
  return ["t", name, crypto.randomUUID()];
}

export function openKv(): Promise<Deno.Kv> {
  return Deno.openKv(KV_URL);
}

/**
 * `n` connections to one database: separate clients against subkv; on the
 * reference backend one connection shared `n` times (each `:memory:` open is a
 * database of its own). `closeAll` closes them.
 */
export async function connections(n: number): Promise<Deno.Kv[]> {
  if (!REMOTE) return Array(n).fill(await openKv());
  return await Promise.all(Array.from({ length: n }, openKv));
}

export function closeAll(kvs: Deno.Kv[]): void {
  for (const kv of new Set(kvs)) kv.close();
}

/** Runs `body` with a fresh connection and closes it afterwards. */
export async function withKv<T>(body: (kv: Deno.Kv) => Promise<T>): Promise<T> {
  const kv = await openKv();
  try {
    return await body(kv);
  } finally {
    kv.close();
  }
}

/** Rejects with `what` if `promise` has not settled within `ms`: a guard against hangs, never a wait. */
export function within<T>(ms: number, what: string, promise: Promise<T>): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const guard = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
  });
  return Promise.race([promise, guard]).finally(() => clearTimeout(timer));
}
