// Opens watches on one key until one is refused, and prints how many opened
// and the refusal, as one JSON line: {"opened": N, "refused": <message> | null}.
// It opens at most <max> + 1; all are closed before it exits
// (tests/tests/quotas.rs: an organization's limits.watches, as Deno reports it).
//
//   deno run --unstable-kv --allow-net --allow-env watch_limit.ts <url> <max>

const [url, maxText] = Deno.args;
const max = Number(maxText);
if (!url || !Number.isInteger(max)) {
  throw new Error("usage: watch_limit.ts <kv url> <max> (token in DENO_KV_ACCESS_TOKEN)");
}
const kv = await Deno.openKv(url);
const key = ["watched"];
await kv.set(key, 1);
const readers: ReadableStreamDefaultReader<Deno.KvEntryMaybe<unknown>[]>[] = [];
let refused: string | null = null;
try {
  while (readers.length <= max) {
    const reader = kv.watch([key]).getReader();
    try {
      // The first message: the watch is open and holds its lease.
      await reader.read();
      readers.push(reader);
    } catch (err) {
      refused = err instanceof Error ? err.message : String(err);
      break;
    }
  }
  console.log(JSON.stringify({ opened: readers.length, refused }));
} finally {
  for (const reader of readers) await reader.cancel();
  kv.close();
}
