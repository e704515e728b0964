// Prints every entry of a KV database in canonical form (canonical.ts), as one JSON
// line: [{key, value, versionstamp}, ...] in key order.
//
//   deno run --unstable-kv --allow-net --allow-env dump.ts <url>
//
// <url> is anything Deno.openKv accepts: a `denokv serve` at http://127.0.0.1:<port>
// or a subkv database's KV Connect URL, the token in DENO_KV_ACCESS_TOKEN. The backup
// tests (tests/src/backup.rs) run it on restored copies and compare with what
// backup_workload.ts printed.

import { dump } from "./canonical.ts";

const url = Deno.args[0];
if (!url) throw new Error("usage: dump.ts <kv url> (token in DENO_KV_ACCESS_TOKEN)");
const kv = await Deno.openKv(url);
try {
  console.log(JSON.stringify(await dump(kv)));
} finally {
  kv.close();
}
