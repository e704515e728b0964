// A Deno session that outlives its database (issue 15, tests/tests/lifecycle.rs):
// opens the database, writes, says "ready", waits for a line on stdin (the test
// deletes the database meanwhile), then tries a write and a read on the same
// session and prints how each ended, as one JSON line:
// {"set": "ok" | <error message>, "get": "ok" | <error message>}.
//
//   deno run --unstable-kv --allow-net --allow-env deleted_session.ts <url>
//
// Nothing is read before the deletion, so no instance of the read function has
// the database's head cached when the read comes.

const url = Deno.args[0];
if (!url) throw new Error("usage: deleted_session.ts <kv url> (token in DENO_KV_ACCESS_TOKEN)");
const kv = await Deno.openKv(url);

async function outcome(op: () => Promise<unknown>): Promise<string> {
  try {
    await op();
    return "ok";
  } catch (err) {
    return err instanceof Error ? err.message : String(err);
  }
}

try {
  for (let i = 0; i < 10; i++) await kv.set(["before", i], `value ${i}`);
  console.log("ready");
  const reader = Deno.stdin.readable.getReader();
  await reader.read();
  const set = await outcome(() => kv.set(["after"], "written after the deletion"));
  const get = await outcome(() => kv.get(["before", 0]));
  console.log(JSON.stringify({ set, get }));
} finally {
  kv.close();
}
