// Opens a KV database, tries a read and a write, and prints how each ended, as
// one JSON line: {"open": {"ok": true} | {"error": <message>}, "get": {"ok":
// <value>} | {"error": <message>}, "set": ...} (get and set only if it opened)
// (tests/tests/tokens.rs: what a limited token may do, as Deno reports it).
//
//   deno run --unstable-kv --allow-net --allow-env try_ops.ts <url>

const url = Deno.args[0];
if (!url) throw new Error("usage: try_ops.ts <kv url> (token in DENO_KV_ACCESS_TOKEN)");
async function outcome(op: () => Promise<unknown>): Promise<{ ok: unknown } | { error: string }> {
  try {
    return { ok: await op() };
  } catch (err) {
    return { error: err instanceof Error ? err.message : String(err) };
  }
}

let kv: Deno.Kv;
try {
  kv = await Deno.openKv(url);
} catch (err) {
  console.log(JSON.stringify({ open: { error: err instanceof Error ? err.message : String(err) } }));
  Deno.exit(0);
}
try {
  const get = await outcome(async () => (await kv.get(["seen"])).value ?? null);
  const set = await outcome(async () => (await kv.set(["written"], "by try_ops")).ok);
  console.log(JSON.stringify({ open: { ok: true }, get, set }));
} finally {
  kv.close();
}
