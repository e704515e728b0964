// Deno KV semantics through `Deno.openKv(url)` with the real Deno runtime
// (DESIGN.md, compatibility target 2). tests/tests/kv.rs runs it against a database
// on the local stack; `SUBKV_KV_URL=:memory: deno test --unstable-kv tests/kv/`
// runs it on Deno's own backend, the reference these expectations come from.
// Assertions that hold only for remote databases are guarded by REMOTE.

import { assert, assertEquals, assertRejects } from "./assert.ts";
import { REMOTE, scope, within, withKv } from "./kv_env.ts";

const VERSIONSTAMP = /^[0-9a-f]{20}$/;

function key(prefix: Deno.KvKey, ...parts: Deno.KvKeyPart[]): Deno.KvKey {
  return [...prefix, ...parts];
}

async function listKeys(kv: Deno.Kv, selector: Deno.KvListSelector, options?: Deno.KvListOptions) {
  const keys: Deno.KvKey[] = [];
  for await (const entry of kv.list(selector, options)) keys.push(entry.key);
  return keys;
}

/** The last key part of each key: the tests' keys differ only there. */
const lasts = (keys: Deno.KvKey[]) => keys.map((k) => k[k.length - 1]);

Deno.test("get, set, overwrite and delete", () =>
  withKv(async (kv) => {
    const p = scope("basic");
    const k = key(p, "a");
    assertEquals(await kv.get(k), { key: k, value: null, versionstamp: null });

    const first = await kv.set(k, { name: "Ada" });
    assert(first.ok);
    assert(VERSIONSTAMP.test(first.versionstamp), first.versionstamp);
    assertEquals(await kv.get(k), { key: k, value: { name: "Ada" }, versionstamp: first.versionstamp });

    const second = await kv.set(k, "overwritten");
    assert(second.versionstamp > first.versionstamp, "a later commit has a larger versionstamp");
    assertEquals((await kv.get(k)).value, "overwritten");

    await kv.delete(k);
    assertEquals(await kv.get(k), { key: k, value: null, versionstamp: null });
    await kv.delete(key(p, "never-set")); // deleting a missing key is not an error
  }));

Deno.test("every value type round-trips", () =>
  withKv(async (kv) => {
    const p = scope("values");
    const values: [string, unknown][] = [
      ["string", "héllo wörld ✓"],
      ["empty string", ""],
      ["number", 3.25],
      ["negative zero", -0],
      ["NaN", NaN],
      ["infinity", -Infinity],
      ["bigint", -(2n ** 70n)],
      ["true", true],
      ["false", false],
      ["null", null],
      ["undefined", undefined],
      ["date", new Date("2026-11-24T06:00:00.123Z")],
      ["bytes", new Uint8Array([0, 1, 2, 254, 255])],
      ["empty bytes", new Uint8Array()],
      ["array", [1, "two", [3n], { four: 4 }, null]],
      ["object", { nested: { deep: [true, new Date(0)] }, n: 1.5, s: "x", u: undefined }],
      ["map", new Map<unknown, unknown>([["a", 1], [2, "b"]])],
      ["set", new Set([1, "x"])],
      ["u64 zero", new Deno.KvU64(0n)],
      ["u64 max", new Deno.KvU64(2n ** 64n - 1n)],
    ];
    const op = kv.atomic();
    for (const [name, value] of values) op.set(key(p, name), value);
    const committed = await op.commit();
    assert(committed.ok);

    for (const [name, expected] of values) {
      const entry = await kv.get(key(p, name));
      assertEquals(entry.versionstamp, committed.versionstamp, name);
      const actual = entry.value;
      if (expected instanceof Map || expected instanceof Set) {
        assert(actual instanceof (expected instanceof Map ? Map : Set), `${name} keeps its type`);
        assertEquals([...(actual as Map<unknown, unknown>)], [...expected], name);
      } else if (typeof expected === "number" && Number.isNaN(expected)) {
        assert(Number.isNaN(actual), name);
      } else {
        assertEquals(actual, expected, name);
        if (expected instanceof Deno.KvU64) assert(actual instanceof Deno.KvU64, `${name} stays a KvU64`);
      }
    }
  }));

Deno.test("every key part type, ordered as Deno orders them", () =>
  withKv(async (kv) => {
    const p = scope("keys");
    // Deno's order: Uint8Array < string < bigint < number < boolean; within a type, by value.
    const ordered: Deno.KvKeyPart[] = [
      new Uint8Array([]),
      new Uint8Array([0]),
      new Uint8Array([0, 0]),
      new Uint8Array([1]),
      "",
      "A",
      "a",
      "a\u0000b",
      "é",
      -(2n ** 64n),
      -1n,
      0n,
      1n,
      2n ** 64n,
      -Infinity,
      -1.5,
      -0,
      0,
      1,
      2 ** 53,
      Infinity,
      false,
      true,
    ];
    const op = kv.atomic();
    // Written in reverse so storage order cannot come from insertion order.
    ordered.toReversed().forEach((part, i) => op.set(key(p, part), i));
    assert((await op.commit()).ok);

    for (const [i, part] of ordered.entries()) {
      const entry = await kv.get(key(p, part));
      assertEquals(entry.value, ordered.length - 1 - i, `get ${Deno.inspect(part)}`);
    }
    assertEquals(lasts(await listKeys(kv, { prefix: p })), ordered);
    assertEquals(lasts(await listKeys(kv, { prefix: p }, { reverse: true })), ordered.toReversed());
    // A prefix matches whole key parts only: ["a"] is not a prefix of ["ab"].
    await kv.set(key(p, "a", "child"), 1);
    await kv.set(key(p, "ab", "child"), 2);
    assertEquals(await listKeys(kv, { prefix: key(p, "a") }), [key(p, "a", "child")]);
  }));

Deno.test("list: prefix, start, end, reverse, limit, cursor paging", () =>
  withKv(async (kv) => {
    const p = scope("list");
    const n = 57;
    const op = kv.atomic();
    for (let i = 0; i < n; i++) op.set(key(p, i), `v${i}`);
    op.set(p, "the prefix key itself"); // not listed under { prefix: p }
    assert((await op.commit()).ok);
    const all = Array.from({ length: n }, (_, i) => i);

    assertEquals(lasts(await listKeys(kv, { prefix: p })), all);
    assertEquals(lasts(await listKeys(kv, { prefix: p }, { reverse: true })), all.toReversed());
    assertEquals(lasts(await listKeys(kv, { prefix: p }, { limit: 7 })), all.slice(0, 7));
    assertEquals(
      lasts(await listKeys(kv, { prefix: p }, { limit: 7, reverse: true })),
      all.slice(-7).toReversed(),
    );
    assertEquals(lasts(await listKeys(kv, { prefix: p, start: key(p, 50) })), all.slice(50));
    assertEquals(lasts(await listKeys(kv, { prefix: p, end: key(p, 5) })), all.slice(0, 5));
    assertEquals(lasts(await listKeys(kv, { start: key(p, 10), end: key(p, 20) })), all.slice(10, 20));
    assertEquals(
      lasts(await listKeys(kv, { start: key(p, 10), end: key(p, 20) }, { reverse: true, limit: 3 })),
      [19, 18, 17],
    );
    await assertRejects(
      () => listKeys(kv, { start: key(p, 20), end: key(p, 10) }),
      "Start key is greater than end key",
    );
    // Small batches: the client pages through the range with cursors.
    assertEquals(lasts(await listKeys(kv, { prefix: p }, { batchSize: 5 })), all);
    assertEquals(lasts(await listKeys(kv, { prefix: p }, { batchSize: 4, reverse: true })), all.toReversed());

    // An explicit cursor resumes where an earlier listing stopped, in both directions.
    for (const reverse of [false, true]) {
      const seen: number[] = [];
      let cursor: string | undefined;
      let pages = 0;
      do {
        const page = kv.list<string>({ prefix: p }, { limit: 10, cursor, reverse });
        for await (const entry of page) {
          seen.push(entry.key[entry.key.length - 1] as number);
          assertEquals(entry.value, `v${String(entry.key[entry.key.length - 1])}`);
        }
        cursor = page.cursor || undefined;
        pages++;
      } while (cursor && pages < 20);
      assertEquals(seen, reverse ? all.toReversed() : all, `paged listing, reverse=${reverse}`);
      assertEquals(pages, Math.ceil(n / 10) + (n % 10 === 0 ? 1 : 0));
    }
  }));

Deno.test("list: more entries than one read returns (1000)", () =>
  withKv(async (kv) => {
    const p = scope("list-long");
    const n = 1234;
    for (let start = 0; start < n; start += 500) {
      const op = kv.atomic();
      for (let i = start; i < Math.min(n, start + 500); i++) op.set(key(p, i), i);
      assert((await op.commit()).ok);
    }
    const values: number[] = [];
    for await (const entry of kv.list<number>({ prefix: p })) values.push(entry.value);
    assertEquals(values, Array.from({ length: n }, (_, i) => i));
  }));

Deno.test("getMany: order kept, missing keys null, one consistent read", () =>
  withKv(async (kv) => {
    const p = scope("many");
    const keys = Array.from({ length: 10 }, (_, i) => key(p, i));
    const committed = await kv.atomic().set(keys[1], "one").set(keys[7], "seven").set(keys[3], 3n).commit();
    assert(committed.ok);
    const entries = await kv.getMany(keys.toReversed());
    assertEquals(entries.map((e) => e.key), keys.toReversed());
    assertEquals(entries.map((e) => e.value), [null, null, "seven", null, null, null, 3n, null, "one", null]);
    for (const e of entries) assertEquals(e.versionstamp, e.value === null ? null : committed.versionstamp);
    assertEquals(await kv.getMany([]), []);
    // Deno's limit: at most 10 ranges per read.
    await assertRejects(() => kv.getMany([...keys, key(p, 10)]), "Too many ranges");
  }));

Deno.test("atomic checks: versionstamps, does-not-exist, all or nothing", () =>
  withKv(async (kv) => {
    const p = scope("checks");
    const [a, b, c] = [key(p, "a"), key(p, "b"), key(p, "c")];

    // versionstamp null: "must not exist".
    const created = await kv.atomic().check({ key: a, versionstamp: null }).set(a, 1).commit();
    assert(created.ok);
    const again = await kv.atomic().check({ key: a, versionstamp: null }).set(a, 2).commit();
    assertEquals(again, { ok: false });
    assertEquals((await kv.get(a)).value, 1);

    // The current versionstamp passes; a stale one fails and nothing of that commit applies.
    const current = await kv.get(a);
    const updated = await kv.atomic().check(current).set(a, 10).set(b, "b").commit();
    assert(updated.ok);
    const stale = await kv.atomic().check(current).set(a, 99).set(c, "c").delete(b).commit();
    assertEquals(stale, { ok: false });
    assertEquals((await kv.getMany([a, b, c])).map((e) => e.value), [10, "b", null]);

    // Several checks: one failing fails the commit.
    const fresh = await kv.getMany([a, b]);
    const mixed = await kv.atomic().check(fresh[0]).check(fresh[1]).check({
      key: c,
      versionstamp: fresh[0].versionstamp,
    })
      .set(c, "x").commit();
    assertEquals(mixed, { ok: false });
    const passing = await kv.atomic().check(fresh[0]).check(fresh[1]).check({ key: c, versionstamp: null })
      .set(c, "x").delete(a).commit();
    assert(passing.ok);
    assertEquals((await kv.getMany([a, b, c])).map((e) => e.value), [null, "b", "x"]);

    // Two writers race on one check: exactly one wins.
    const base = await kv.get(b);
    const results = await Promise.all(
      [1, 2, 3, 4].map((i) => kv.atomic().check(base).set(b, `writer ${i}`).commit()),
    );
    assertEquals(results.filter((r) => r.ok).length, 1, "exactly one racing commit succeeds");
  }));

Deno.test("sum, min and max on Deno.KvU64, with wrap-around and type errors", () =>
  withKv(async (kv) => {
    const p = scope("u64");
    const [s, lo, hi, text] = [key(p, "sum"), key(p, "min"), key(p, "max"), key(p, "text")];
    const MAX = 2n ** 64n - 1n;
    const u = (n: bigint) => new Deno.KvU64(n);
    const value = async (k: Deno.KvKey) => ((await kv.get<Deno.KvU64>(k)).value as Deno.KvU64).value;

    // On a missing key each writes its operand.
    assert((await kv.atomic().sum(s, 5n).min(lo, 50n).max(hi, 50n).commit()).ok);
    assertEquals([await value(s), await value(lo), await value(hi)], [5n, 50n, 50n]);
    assert((await kv.atomic().sum(s, 10n).min(lo, 70n).max(hi, 70n).commit()).ok);
    assertEquals([await value(s), await value(lo), await value(hi)], [15n, 50n, 70n]);
    assert((await kv.atomic().min(lo, 3n).max(hi, 3n).commit()).ok);
    assertEquals([await value(lo), await value(hi)], [3n, 70n]);
    // Several sums on one key in one commit accumulate.
    assert((await kv.atomic().sum(s, 1n).sum(s, 2n).commit()).ok);
    assertEquals(await value(s), 18n);
    // sum wraps around 2^64.
    await kv.set(s, u(MAX - 1n));
    assert((await kv.atomic().sum(s, 3n).commit()).ok);
    assertEquals(await value(s), 1n);
    const wrapped = await kv.get(s);
    assert(wrapped.value instanceof Deno.KvU64);

    // On a value that is not a KvU64: Deno's errors, and nothing of the commit applies.
    await kv.set(text, "not a number");
    await assertRejects(
      () => kv.atomic().set(key(p, "untouched"), 1).sum(text, 1n).commit(),
      "Failed to perform 'sum' mutation on a non-U64 value in the database",
    );
    await assertRejects(
      () => kv.atomic().min(text, 1n).commit(),
      "Failed to perform 'min' mutation on a non-U64 value",
    );
    await assertRejects(
      () => kv.atomic().max(text, 1n).commit(),
      "Failed to perform 'max' mutation on a non-U64 value",
    );
    // All or nothing: the commit's set did not apply either. (Deno's own SQLite backend
    // applies it, so this is asserted on remote databases only.)
    if (REMOTE) assertEquals((await kv.get(key(p, "untouched"))).value, null);
    assertEquals((await kv.get(text)).value, "not a number");
  }));

Deno.test("versionstamps strictly increase and are shared within a commit", () =>
  withKv(async (kv) => {
    const p = scope("versionstamps");
    const stamps: string[] = [];
    for (let i = 0; i < 20; i++) {
      const r = await kv.set(key(p, i % 3), i);
      assert(r.ok && VERSIONSTAMP.test(r.versionstamp));
      stamps.push(r.versionstamp);
    }
    for (let i = 1; i < stamps.length; i++) {
      assert(stamps[i] > stamps[i - 1], `versionstamp ${i} (${stamps[i]}) > ${stamps[i - 1]}`);
    }
    const commit = await kv.atomic().set(key(p, "x"), 1).set(key(p, "y"), 2).sum(key(p, "z"), 1n).commit();
    assert(commit.ok && commit.versionstamp > stamps[stamps.length - 1]);
    const entries = await kv.getMany([key(p, "x"), key(p, "y"), key(p, "z")]);
    assertEquals(entries.map((e) => e.versionstamp), [
      commit.versionstamp,
      commit.versionstamp,
      commit.versionstamp,
    ]);
    // A commit whose check fails does not consume a versionstamp visible to readers.
    const later = await kv.set(key(p, "after"), 1);
    assert(later.versionstamp > commit.versionstamp);
  }));

Deno.test("expireIn: readable until its deadline, never before", () =>
  withKv(async (kv) => {
    const p = scope("expiry");
    const [k, kept] = [key(p, "k"), key(p, "kept")];
    const expireIn = 1500;
    const started = Date.now();
    assert((await kv.atomic().set(k, "short-lived", { expireIn }).set(kept, "kept").commit()).ok);
    const read = (await kv.get(k)).value;
    // A reply before the deadline was read before it (a loaded machine may be later).
    if (Date.now() - started < expireIn) assertEquals(read, "short-lived");
    if (!REMOTE) return; // Deno's own backend may keep expired keys readable for a while.

    // Poll until the key is gone: it must not vanish before its deadline, and must by shortly after.
    for (;;) {
      const [entry] = await kv.getMany([k]);
      const now = Date.now();
      if (entry.value === null) {
        assert(now - started >= expireIn, `expired after ${now - started} ms, before its ${expireIn} ms`);
        break;
      }
      assert(now - started < expireIn + 5000, "still readable 5 s after its deadline");
    }
    assertEquals(lasts(await listKeys(kv, { prefix: p })), ["kept"]);
    // An expired key can be written again.
    assert((await kv.atomic().check({ key: k, versionstamp: null }).set(k, "again").commit()).ok);
  }));

Deno.test("watch: current values first, then every change", () =>
  withKv(async (kv) => {
    const p = scope("watch");
    const [a, b] = [key(p, "a"), key(p, "b")];
    await kv.set(a, "a0");
    const stream = kv.watch([a, b]);
    const reader = stream.getReader();
    const next = async (until: (entries: Deno.KvEntryMaybe<unknown>[]) => boolean) => {
      for (;;) {
        const { value, done } = await within(20_000, "a watch update", reader.read());
        assert(!done, "the watch stream ended");
        if (until(value)) return value;
      }
    };
    try {
      const initial = await next(() => true);
      assertEquals(initial.map((e) => e.value), ["a0", null]);

      const setB = await kv.set(b, "b1");
      const afterB = await next((e) => e[1].value !== null);
      assertEquals(afterB.map((e) => e.value), ["a0", "b1"]);
      assertEquals(afterB[1].versionstamp, setB.versionstamp);

      await kv.atomic().set(a, "a2").delete(b).commit();
      const afterBoth = await next((e) => e[0].value === "a2");
      assertEquals(afterBoth.map((e) => e.value), ["a2", null]);
      assertEquals(afterBoth[1].versionstamp, null);
    } finally {
      await reader.cancel();
    }
  }));

Deno.test("limits: Deno's key, value, mutation and read limits", () =>
  withKv(async (kv) => {
    const p = scope("limits");
    const tag = crypto.getRandomValues(new Uint8Array(16)).map((x) => x | 1); // no 0x00: no escaping
    // A key of one Uint8Array part of n bytes encodes to n + 2 bytes.
    const bytesKey = (n: number) => {
      const b = new Uint8Array(n).fill(0x61);
      b.set(tag);
      return [b];
    };
    const largest = bytesKey(2046); // exactly 2048 bytes
    assert((await kv.set(largest, "largest key")).ok);
    assertEquals((await kv.get(largest)).value, "largest key");
    await assertRejects(() => kv.set(bytesKey(2047), 1), "Key too large for write");
    await kv.delete(largest);

    // Values: 65536 bytes (a Uint8Array is stored as raw bytes, without V8 framing).
    const big = new Uint8Array(65536).fill(7);
    assert((await kv.set(key(p, "big"), big)).ok);
    assertEquals((await kv.get(key(p, "big"))).value, big);
    await assertRejects(() => kv.set(key(p, "too big"), new Uint8Array(65537)), "Value too large");

    // 1000 mutations in one commit apply together; 1001 are refused.
    const many = kv.atomic();
    for (let i = 0; i < 1000; i++) many.set(key(p, "m", i), i);
    const committed = await many.commit();
    assert(committed.ok);
    const listed: Deno.KvEntry<number>[] = [];
    for await (const e of kv.list<number>({ prefix: key(p, "m") })) listed.push(e);
    assertEquals(listed.map((e) => e.value), Array.from({ length: 1000 }, (_, i) => i));
    assert(listed.every((e) => e.versionstamp === committed.versionstamp), "one versionstamp for all 1000");
    const tooMany = kv.atomic();
    for (let i = 0; i < 1001; i++) tooMany.set(key(p, "n", i), i);
    await assertRejects(() => tooMany.commit(), "Too many mutations");

    // 800 KiB of keys and values per commit.
    const chunk = new Uint8Array(60_000);
    const fits = kv.atomic();
    for (let i = 0; i < 13; i++) fits.set(key(p, "size", i), chunk); // ~780 KB
    assert((await fits.commit()).ok);
    const over = kv.atomic();
    for (let i = 0; i < 14; i++) over.set(key(p, "over", i), chunk); // ~840 KB
    await assertRejects(() => over.commit(), "Total mutation size too large");
    assertEquals(await listKeys(kv, { prefix: key(p, "over") }), []);

    // Checks: 10 per commit is the server limit (denokv's), which remote databases apply.
    const tenChecks = kv.atomic();
    for (let i = 0; i < 10; i++) tenChecks.check({ key: key(p, "absent", i), versionstamp: null });
    assert((await tenChecks.set(key(p, "checked"), 1).commit()).ok);
    if (REMOTE) {
      const eleven = kv.atomic();
      for (let i = 0; i < 11; i++) eleven.check({ key: key(p, "absent", i), versionstamp: null });
      await assertRejects(() => eleven.set(key(p, "checked"), 2).commit(), "");
      assertEquals((await kv.get(key(p, "checked"))).value, 1);
    }
  }));

Deno.test("long keys keep their order, past any storage key size", () =>
  withKv(async (kv) => {
    const p = scope("long-keys");
    // Keys up to Deno's 2048 bytes that share their first 1500 bytes and differ after.
    const common = "x".repeat(1500);
    const suffixes = ["", "a", "aa", "ab", "b", "b".repeat(400), "c"];
    const op = kv.atomic();
    for (const [i, s] of suffixes.toReversed().entries()) op.set(key(p, common + s), i);
    op.set(key(p, "w"), "short, before");
    op.set(key(p, "y"), "short, after");
    assert((await op.commit()).ok);

    const expected = ["w", ...suffixes.map((s) => common + s), "y"];
    assertEquals(lasts(await listKeys(kv, { prefix: p })), expected);
    assertEquals(lasts(await listKeys(kv, { prefix: p }, { reverse: true })), expected.toReversed());
    assertEquals(lasts(await listKeys(kv, { prefix: p }, { batchSize: 2 })), expected);
    assertEquals(
      lasts(await listKeys(kv, { start: key(p, common + "aa"), end: key(p, common + "b") })),
      [common + "aa", common + "ab"],
    );
    // Point operations on them.
    const k = key(p, common + "ab");
    const entry = await kv.get(k);
    assertEquals(entry.value, suffixes.length - 1 - suffixes.indexOf("ab"));
    assert((await kv.atomic().check(entry).set(k, "updated").commit()).ok);
    assertEquals((await kv.atomic().check(entry).set(k, "stale").commit()).ok, false);
    await kv.delete(key(p, common + "a"));
    assertEquals(
      lasts(await listKeys(kv, { prefix: p })),
      expected.filter((x) => x !== common + "a"),
    );
    assertEquals((await kv.get(k)).value, "updated");
  }));

Deno.test("enqueue is refused by remote databases", async () => {
  if (!REMOTE) return; // Deno's own backend has queues.
  await withKv(async (kv) => {
    await assertRejects(() => kv.enqueue({ job: 1 }), "");
    const p = scope("enqueue");
    await assertRejects(() => kv.atomic().set(key(p, "a"), 1).enqueue("job").commit(), "");
    assertEquals((await kv.get(key(p, "a"))).value, null, "a commit with an enqueue applies nothing");
  });
});
