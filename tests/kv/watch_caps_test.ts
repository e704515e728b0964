// Watches are capped per database (issue 12, item 8). The local stack allows
// 8 open watches per database (SUBKV_WATCH_MAX_PER_DATABASE); the 9th is refused
// with a 429 naming the limit, which Deno raises to the caller. A watch whose
// client goes away gives its place back within seconds.

import { assert } from "./assert.ts";
import { KV_URL, openKv, scope, within } from "./kv_env.ts";

const CAP = Number(Deno.env.get("SUBKV_WATCH_CAP") ?? "8");

Deno.test("watch: a database holds at most its cap of open watches", async () => {
  assert(KV_URL !== ":memory:", "a subkv limit: run against the local stack");
  const kv = await openKv();
  const k = [...scope("watch-cap"), "k"];
  await kv.set(k, 1);
  const readers: ReadableStreamDefaultReader<Deno.KvEntryMaybe<unknown>[]>[] = [];
  try {
    for (let i = 0; i < CAP; i++) {
      const reader = kv.watch([k]).getReader();
      // The first message: the watch is open (and holds its place).
      await within(20_000, `watch ${i + 1} opening`, reader.read());
      readers.push(reader);
    }
    const over = kv.watch([k]).getReader();
    const refused = await within(20_000, "the watch over the cap", over.read()).then(
      () => null,
      (err) => err as Error,
    );
    assert(refused !== null, `watch ${CAP + 1} was opened`);
    const message = String(refused);
    assert(message.includes("too many open watches on this database"), message);
    assert(message.includes(`the limit is ${CAP} per database`), message);

    // One client goes away: its watch ends and its place is free again.
    await readers.pop()!.cancel();
    let opened = false;
    for (let attempt = 0; attempt < 40 && !opened; attempt++) {
      const again = kv.watch([k]).getReader();
      opened = await within(20_000, "a watch after one closed", again.read()).then(
        () => true,
        () => false,
      );
      if (opened) readers.push(again);
      else await new Promise((r) => setTimeout(r, 500));
    }
    assert(opened, "no place came free after a watch was closed");
  } finally {
    for (const reader of readers) await reader.cancel();
    kv.close();
  }
});
