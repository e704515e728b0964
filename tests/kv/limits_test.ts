// Commits that are legal for Deno KV but that DynamoDB cannot store as they are
// (issue 12, item 1), through `Deno.openKv(url)` with the real Deno runtime. A remote
// database refuses them with a 4xx naming the limit, before anything is written, and
// keeps working; a 5xx would never surface: Deno's client retries it forever. On
// Deno's own backend (SUBKV_KV_URL=:memory:) the same commits succeed.

import { assert, assertEquals, assertRejects } from "./assert.ts";
import { REMOTE, scope, within, withKv } from "./kv_env.ts";

const VALUE = new Uint8Array(62 * 1024).fill(7);
/** How long a refusal may take: a hang (retries of a 5xx) fails the test instead. */
const ANSWER_MS = 60_000;

/** A key of about 1150 encoded bytes whose first 1000 bytes are the same for every `i`. */
const long = (
  p: Deno.KvKey,
  i: number,
): Deno.KvKey => [...p, "long", "x".repeat(1080) + String(i).padStart(4, "0")];

async function count(kv: Deno.Kv, prefix: Deno.KvKey): Promise<number> {
  let n = 0;
  for await (const _ of kv.list({ prefix })) n++;
  return n;
}

Deno.test("a commit whose long keys outgrow their storage item is refused, and the database keeps working", () =>
  withKv(async (kv) => {
    const p = scope("too-large");
    const before = await kv.set([...p, "before"], 1);
    // 150 short keys and 7 long keys sharing their first 1000 bytes, 62 KiB values:
    // under Deno's 1000 mutations and 800 KiB, but one storage item of ~450 KB.
    const op = kv.atomic();
    for (let i = 0; i < 150; i++) op.set([...p, "short", i], i);
    for (let i = 0; i < 7; i++) op.set(long(p, i), VALUE);
    const commit = within(ANSWER_MS, "a large commit over the item limit is answered", op.commit());
    if (!REMOTE) {
      assert((await commit).ok);
      return;
    }
    await assertRejects(() => commit, "the limit is 400000 bytes");
    // All or nothing: nothing of it was written.
    assertEquals(await count(kv, [...p, "short"]), 0);
    assertEquals(await count(kv, [...p, "long"]), 0);

    // The same long keys in a small commit.
    const small = kv.atomic();
    for (let i = 0; i < 7; i++) small.set(long(p, i), VALUE);
    await assertRejects(
      () => within(ANSWER_MS, "a small commit over the item limit is answered", small.commit()),
      "share their first 1000 bytes",
    );

    // The database keeps working: reads, writes, and six such keys, which fit.
    assertEquals((await kv.get([...p, "before"])).versionstamp, before.versionstamp);
    const after = await within(ANSWER_MS, "a set after the refusals", kv.set([...p, "after"], 2));
    assert(after.ok && after.versionstamp > before.versionstamp);
    const six = kv.atomic();
    for (let i = 0; i < 6; i++) six.set(long(p, i), VALUE);
    assert((await within(ANSWER_MS, "six long keys", six.commit())).ok);
    assertEquals(await count(kv, [...p, "long"]), 6);
    const entry = await kv.get<Uint8Array>(long(p, 5));
    assertEquals(entry.value?.length, VALUE.length);
    // One more entry under the same prefix is refused: the item's content counts.
    await assertRejects(
      () => within(ANSWER_MS, "a seventh long key", kv.set(long(p, 6), VALUE)),
      "the limit is 400000 bytes",
    );
    assertEquals(await count(kv, [...p, "long"]), 6);
  }));
