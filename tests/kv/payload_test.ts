// Reads whose answers are large (issue 12, item 4), through `Deno.openKv(url)` with the
// real Deno runtime. Deno's `list` asks for 100 entries per read by default and takes a
// shorter batch as the end of the list, so a server that answered fewer entries would
// silently truncate the user's list: every entry must come back, with its value. A read
// past the largest answer subkv gives is refused with a 4xx naming the limit, which Deno
// surfaces as an error (a 5xx would never surface: Deno's client retries it forever). On
// Deno's own backend (SUBKV_KV_URL=:memory:) every read is answered.

import { assert, assertEquals, assertRejects } from "./assert.ts";
import { REMOTE, scope, within, withKv } from "./kv_env.ts";

/** Deno's largest value: 64 KiB. */
const VALUE_BYTES = 65536;
/** Entries per commit: 12 values of 64 KiB stay under Deno's 800 KiB per commit. */
const PER_COMMIT = 12;
/** How long one read or commit may take: a hang (retries of a 5xx) fails the test instead. */
const ANSWER_MS = 60_000;
/** The largest answer subkv gives to one read, in bytes of protobuf (19 MiB). */
const MAX_READ_RESPONSE_BYTES = 19 * 1024 * 1024;

/** The value of entry `i`: 64 KiB that differ from every other entry's. */
function value(i: number): Uint8Array {
  const v = new Uint8Array(VALUE_BYTES);
  for (let j = 0; j < v.length; j++) v[j] = (i * 131 + j * 7 + (j >> 8)) & 0xff;
  return v;
}

/** Writes entries `from..to` under `p`, keys `[...p, i]`. */
async function fill(kv: Deno.Kv, p: Deno.KvKey, from: number, to: number): Promise<void> {
  for (let i = from; i < to; i += PER_COMMIT) {
    const op = kv.atomic();
    for (let j = i; j < Math.min(i + PER_COMMIT, to); j++) op.set([...p, j], value(j));
    const res = await within(ANSWER_MS, `commit of entries ${i}..`, op.commit());
    assert(res.ok);
  }
}

/** Every entry under `p` as `list` returns it with `options`, each checked against its value. */
async function listAll(kv: Deno.Kv, p: Deno.KvKey, options: Deno.KvListOptions = {}): Promise<number> {
  const iter = kv.list<Uint8Array>({ prefix: p }, options);
  let n = 0;
  while (true) {
    const next = await within(ANSWER_MS, `list entry ${n}`, iter.next());
    if (next.done) break;
    const entry = next.value;
    assertEquals(entry.key, [...p, n], "entries come back in key order, none skipped");
    assertEquals(entry.value.length, VALUE_BYTES);
    assertEquals(entry.value, value(n), `entry ${n}'s value`);
    n++;
  }
  return n;
}

Deno.test("100 entries of 64 KiB list whole with the default batch, and a read past the largest answer is refused", () =>
  withKv(async (kv) => {
    const p = scope("payload");
    await fill(kv, p, 0, 100);
    // Deno's default batch of 100: one read whose answer is about 6.6 MB, over
    // Lambda's 6 MB buffered response.
    assertEquals(await listAll(kv, p), 100);
    // In reverse, and ten of them with getMany.
    const reversed = await within(
      ANSWER_MS,
      "a reverse list",
      Array.fromAsync(kv.list({ prefix: p }, { reverse: true })),
    );
    assertEquals(reversed.map((e) => e.key[p.length]), Array.from({ length: 100 }, (_, i) => 99 - i));
    const keys = Array.from({ length: 10 }, (_, i) => [...p, i * 10]);
    const many = await within(ANSWER_MS, "a getMany", kv.getMany<Uint8Array[]>(keys));
    many.forEach((e, i) => assertEquals(e.value, value(i * 10)));

    // 310 entries of 64 KiB (about 20.3 MB): one read of all of them is past the
    // largest answer; one of 300 (about 19.7 MB) is not.
    await fill(kv, p, 100, 310);
    const pastLimit = kv.list({ prefix: p }, { batchSize: 310 }).next();
    if (!REMOTE) {
      assert(!(await pastLimit).done);
    } else {
      await assertRejects(
        () => within(ANSWER_MS, "a read past the largest answer is answered", pastLimit),
        `the limit is ${MAX_READ_RESPONSE_BYTES} bytes`,
      );
    }
    assertEquals(await listAll(kv, p, { batchSize: 300 }), 310);
    // And with the default batch, every entry.
    assertEquals(await listAll(kv, p), 310);
  }));
