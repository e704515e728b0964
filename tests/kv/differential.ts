// Differential test (issue 12): the same randomized operation sequence against a subkv
// database and against `denokv serve` (the reference server, SQLite), through the same
// client (Deno.openKv, KV Connect), every result compared. Run by
// tests/tests/kv_differential.rs (`make test`: a fixed seed, a small budget; `make
// fuzz-kv`: a random seed, a bigger budget):
//
//   deno run --unstable-kv --allow-net --allow-env differential.ts
//
// Environment: SUBKV_KV_URL (the subkv database's KV Connect URL), DENOKV_URL (the
// `denokv serve` URL), DENO_KV_ACCESS_TOKEN (one token both accept: the harness starts
// `denokv serve` with the organization's token), SUBKV_DIFF_SEED (an integer below
// 2^32), SUBKV_DIFF_BUDGET (the number of operations), SUBKV_DIFF_TRACE=1 (print every
// operation and both results as it runs).
//
// Operation `i` depends only on the seed and on the results of operations before `i`
// (which were equal on both sides, or the run would have stopped): a seed replays
// exactly, and a smaller budget replays a prefix. Versionstamps differ by design (denokv
// advances its version by a random 1..9 per commit, subkv by 1), so every versionstamp
// a side reports, in a result or in a versionstamped key, is replaced by the index of
// the operation whose commit returned it on that side ("@12"); each side's commit
// versionstamps must strictly increase. Errors compare as "refused" on both sides,
// never by message.
//
// What the generator keeps away from, and why (docs/data-plane.md, "Differential
// testing"): expiry deadlines that could pass during the run (expireIn is at least an
// hour: denokv keeps an expired entry readable until its cleanup deletes it, subkv hides
// it at once); a sum/min/max that could meet a non-KvU64 value anywhere but first in its
// commit (denokv serve keeps the mutations before a failed one; subkv applies none);
// more long keys with big values under one 1000-byte prefix than subkv's 400,000-byte
// item holds (subkv refuses that commit with a 400, denokv stores it).

import { canonical, canonicalKey } from "./canonical.ts";

function env(name: string): string {
  const value = Deno.env.get(name);
  if (value === undefined || value === "") {
    throw new Error(
      `${name} is not set: run this through tests/tests/kv_differential.rs (make test / make fuzz-kv)`,
    );
  }
  return value;
}

const SEED = Number(env("SUBKV_DIFF_SEED"));
const BUDGET = Number(env("SUBKV_DIFF_BUDGET"));
if (!Number.isInteger(SEED) || SEED < 0 || SEED >= 2 ** 32) {
  throw new Error("SUBKV_DIFF_SEED: 0 <= seed < 2^32");
}
if (!Number.isInteger(BUDGET) || BUDGET < 1) throw new Error("SUBKV_DIFF_BUDGET: a positive integer");
const TRACE = Deno.env.get("SUBKV_DIFF_TRACE") === "1";
/** An operation unanswered after this long is a failure (a 5xx is retried forever by the client: a hang). */
const OP_TIMEOUT_MS = 60_000;
/** Every expireIn is at least this: no deadline passes during a run. */
const EXPIRE_MIN_MS = 3_600_000;

// ---------------------------------------------------------------------------------------
// The PRNG: mulberry32, 32-bit state, deterministic across platforms.

class Rng {
  #a: number;
  constructor(seed: number) {
    this.#a = seed >>> 0;
  }
  /** Uniform in [0, 1). */
  next(): number {
    this.#a = (this.#a + 0x6d2b79f5) >>> 0;
    let t = this.#a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
  /** Uniform integer in [0, n). */
  int(n: number): number {
    return Math.floor(this.next() * n);
  }
  /** Uniform integer in [lo, hi]. */
  range(lo: number, hi: number): number {
    return lo + this.int(hi - lo + 1);
  }
  chance(p: number): boolean {
    return this.next() < p;
  }
  pick<T>(items: readonly T[]): T {
    return items[this.int(items.length)];
  }
  /** Picks a branch by weight: `[[weight, value], ...]`. */
  weighted<T>(choices: readonly (readonly [number, T])[]): T {
    let r = this.next() * choices.reduce((sum, [w]) => sum + w, 0);
    for (const [w, value] of choices) {
      if ((r -= w) < 0) return value;
    }
    return choices[choices.length - 1][1];
  }
  /** A u64, often near the edges (0, 2^64 - 1) so sums wrap. */
  u64(): bigint {
    const hi = BigInt(this.int(2 ** 32));
    const lo = BigInt(this.int(2 ** 32));
    return this.weighted<bigint>([
      [3, BigInt(this.int(1000))],
      [1, (hi << 32n) | lo],
      [1, 0xffff_ffff_ffff_ffffn - BigInt(this.int(1000))],
    ]);
  }
}

// ---------------------------------------------------------------------------------------
// The key space: small, so operations collide.

/** Short-key ids, of every key part type (their cross-type order is part of the test). */
const IDS: readonly Deno.KvKeyPart[] = [
  0,
  1,
  2,
  -1.5,
  "x",
  "y",
  "",
  3n,
  -3n,
  true,
  false,
  new Uint8Array([1]),
  new Uint8Array([]),
];
/** Keys that are only ever KvU64 (or absent): sum/min/max on them always succeed. */
const U64_KEYS: readonly Deno.KvKey[] = [0, 1, 2, 3].map((i) => ["n", i]);

/** Encoded size of `["L", s]` for an ASCII `s`: 3 bytes for "L", 2 + s.length for s. */
const longKey = (s: string): Deno.KvKey => ["L", s];
const P = (n: number) => "p".repeat(n);
/**
 * Keys around subkv's 1000-byte storage-key boundary and Deno's 2048-byte limit
 * (encoded sizes in the comments). Those over 1000 bytes share one of two 1000-byte
 * prefixes (`P(996)`, `P(995) + "a"`), so they live in two of subkv's buckets.
 */
const LONG_KEYS: readonly Deno.KvKey[] = [
  longKey(P(993)), // 998
  longKey(P(994)), // 999
  longKey(P(995)), // 1000
  longKey(P(996)), // 1001: the first in bucket P(996)
  longKey(P(996) + "a"), // 1002
  longKey(P(996) + "b".repeat(500)), // 1501
  longKey(P(996) + "c".repeat(1045)), // 2046
  longKey(P(996) + "c".repeat(1047)), // 2048: Deno's limit
  longKey(P(995) + "a"), // 1001: bucket P(995) + "a"
  longKey(P(995) + "a" + "z".repeat(1046)), // 2047
  ["L", P(996), 1], // 1010, a third part
  ["L", P(996), "q"], // 1004
];
/** Long keys whose value may be up to 64 KiB; the others hold at most SMALL_LONG_VALUE bytes. */
const BIG_VALUED_LONG = new Set([3, 5, 8]);
/** Worst case, bucket P(996): 2 × (2 KiB + 64 KiB) + 5 × (2 KiB + 4 KiB) ≈ 165 KB, under subkv's 400,000. */
const SMALL_LONG_VALUE = 4096;
/** 2049 bytes: one over Deno's limit for a written key (reads allow it). */
const TOO_LONG_KEY: Deno.KvKey = longKey(P(996) + "c".repeat(1048));

const SHORT_KEYS: readonly Deno.KvKey[] = [
  ...IDS.map((id) => ["a", id]),
  ...IDS.slice(0, 5).map((id) => ["a", id, "s"]),
  ...IDS.slice(0, 6).map((id) => ["b", id]),
  ["a"],
  ["c"],
];
/** Prefixes of versionstamped keys (their last part is the commit's versionstamp). */
const VS_PREFIXES: readonly Deno.KvKey[] = [["v"], ["v", "w"]];
/** Keys no operation writes. */
const ABSENT_KEYS: readonly Deno.KvKey[] = [["a", 1.5], ["zz"], ["a", 0, "t"], ["L", P(997)], TOO_LONG_KEY];

function isU64Key(key: Deno.KvKey): boolean {
  return key[0] === "n";
}

// ---------------------------------------------------------------------------------------
// Operations: plain data, run the same way on both sides.

type Versionstamp = "current" | "null" | { op: number };
type Check = { key: Deno.KvKey; versionstamp: Versionstamp };
type Mutation =
  | { type: "set"; key: Deno.KvKey; value: unknown; expireIn?: number }
  | { type: "delete"; key: Deno.KvKey }
  | { type: "sum" | "min" | "max"; key: Deno.KvKey; value: bigint }
  | { type: "setVersionstamped"; prefix: Deno.KvKey; value: unknown; expireIn?: number };
type Selector = Deno.KvListSelector;
type ListOptions = { limit?: number; reverse?: boolean; batchSize?: number };

type Op =
  | { kind: "set"; key: Deno.KvKey; value: unknown; expireIn?: number }
  | { kind: "delete"; key: Deno.KvKey }
  | { kind: "get"; key: Deno.KvKey }
  | { kind: "getMany"; keys: Deno.KvKey[] }
  | { kind: "atomic"; checks: Check[]; mutations: Mutation[] }
  | { kind: "list"; selector: Selector; options: ListOptions; pages: number }
  | { kind: "resume"; options: ListOptions }
  | { kind: "tooManyMutations"; n: number }
  | { kind: "tooManyChecks"; n: number }
  | { kind: "tooLarge"; what: "key" | "value" | "commit" };

/** One class per kind, and finer ones for what matters (counted, so the harness can assert coverage). */
function classes(op: Op): string[] {
  const out: string[] = [op.kind];
  if (op.kind === "set" && op.expireIn !== undefined) out.push("expireIn");
  if (op.kind === "atomic") {
    if (op.checks.length) out.push("check");
    for (const c of op.checks) {
      out.push(typeof c.versionstamp === "string" ? `check:${c.versionstamp}` : "check:op");
    }
    for (const m of op.mutations) out.push(`mutation:${m.type}`);
    if (op.mutations.length > 100) out.push("largeCommit");
  }
  if (op.kind === "list") {
    out.push("list:" + Object.keys(op.selector).sort().join("+"));
    if (op.options.reverse) out.push("reverse");
    if (op.options.limit !== undefined) out.push("limit");
    if (op.options.batchSize !== undefined) out.push("batchSize");
    if (op.pages > 1) out.push("cursor");
  }
  const keys = op.kind === "getMany"
    ? op.keys
    : op.kind === "atomic"
    ? op.mutations.map((m) => m.type === "setVersionstamped" ? m.prefix : m.key)
    : "key" in op
    ? [op.key]
    : [];
  if (keys.some((k) => k[0] === "L")) out.push("longKey");
  const values = op.kind === "set"
    ? [op.value]
    : op.kind === "atomic"
    ? op.mutations.map((m) => "value" in m ? m.value : null)
    : [];
  const big = (v: unknown) => (v instanceof Uint8Array || typeof v === "string") && v.length > 60_000;
  if (values.some(big)) out.push("bigValue");
  return out;
}

/** Classes of an atomic operation's outcome: checks that passed or failed, a large commit that committed. */
function outcomes(op: Op, result: unknown, committed: boolean): string[] {
  if (op.kind !== "atomic") return [];
  if (!committed) {
    // Not committed and not refused: { ok: false }, a check failed.
    return (result as { commit: unknown }).commit instanceof Refused ? [] : ["check:failed"];
  }
  const out = [];
  if (op.checks.length) out.push("check:passed");
  if (op.mutations.length > 100) out.push("largeCommit:committed");
  return out;
}

/** What the generator knows: the operations that committed (the same on both sides so far). */
type Context = { committed: number[]; canResume: boolean };

function bytes(n: number, seed: number): Uint8Array {
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i++) out[i] = (seed + i * 131) & 0xff;
  return out;
}

/** A value for `key`: KvU64 on the u64 keys; elsewhere any type, sometimes near 64 KiB. */
function value(rng: Rng, key: Deno.KvKey | null, op: number): unknown {
  if (key && isU64Key(key)) return new Deno.KvU64(rng.u64());
  const longIndex = key ? LONG_KEYS.indexOf(key) : -1;
  const big = longIndex < 0 || BIG_VALUED_LONG.has(longIndex);
  const choice = rng.weighted<string>([
    [6, "string"],
    [3, "number"],
    [1, "bigint"],
    [1, "boolean"],
    [1, "null"],
    [1, "undefined"],
    [2, "object"],
    [1, "array"],
    [1, "date"],
    [1, "map"],
    [2, "u64"],
    [2, "bytes"],
    [big ? 1 : 0, "max-bytes"],
    [big ? 1 : 0, "big-string"],
  ]);
  switch (choice) {
    case "string":
      return `s${op}-${rng.int(100)}`;
    case "number":
      return rng.pick([0, -0, 1.5, NaN, Infinity, -1e300, op]);
    case "bigint":
      return BigInt(op) * 10n ** 30n * (rng.chance(0.5) ? -1n : 1n);
    case "boolean":
      return rng.chance(0.5);
    case "null":
      return null;
    case "undefined":
      return undefined;
    case "object":
      return { op, nested: { list: [1, "two", 3n], at: new Date(1_700_000_000_000 + op) } };
    case "array":
      return [op, `a${op}`, null, [true]];
    case "date":
      return new Date(1_700_000_000_000 + op * 1000);
    case "map":
      return new Map<unknown, unknown>([["k", op], [1, new Set([op])]]);
    case "u64":
      return new Deno.KvU64(rng.u64());
    case "bytes":
      return bytes(longIndex >= 0 ? rng.range(0, SMALL_LONG_VALUE) : rng.range(0, 2000), op);
    case "max-bytes":
      // Raw bytes are stored as they are: 65536 is Deno's limit exactly.
      return bytes(65536 - rng.int(4), op);
    default:
      // A one-byte string: V8's serialization adds a few bytes, so this stays under 64 KiB.
      return "b".repeat(65_000 + rng.int(500));
  }
}

function writableKey(rng: Rng): Deno.KvKey {
  return rng.weighted<() => Deno.KvKey>([
    [6, () => rng.pick(SHORT_KEYS)],
    [2, () => rng.pick(U64_KEYS)],
    [3, () => rng.pick(LONG_KEYS)],
  ])();
}

function readableKey(rng: Rng): Deno.KvKey {
  return rng.chance(0.1) ? rng.pick(ABSENT_KEYS) : writableKey(rng);
}

function expireIn(rng: Rng): number | undefined {
  return rng.chance(0.15) ? EXPIRE_MIN_MS + rng.int(EXPIRE_MIN_MS) : undefined;
}

function versionstampFor(rng: Rng, ctx: Context): Versionstamp {
  return rng.weighted<() => Versionstamp>([
    [5, () => "current"],
    [2, () => "null"],
    [ctx.committed.length ? 3 : 0, () => ({ op: rng.pick(ctx.committed) })],
  ])();
}

function mutation(rng: Rng, op: number, first: boolean): Mutation {
  return rng.weighted<() => Mutation>([
    [5, () => {
      const key = writableKey(rng);
      return { type: "set", key, value: value(rng, key, op), expireIn: expireIn(rng) };
    }],
    [2, () => ({ type: "delete", key: writableKey(rng) })],
    [
      3,
      () => ({ type: rng.pick(["sum", "min", "max"] as const), key: rng.pick(U64_KEYS), value: rng.u64() }),
    ],
    // On a key that may hold any value: only first in its commit (see the header).
    [
      first ? 1 : 0,
      () => ({ type: rng.pick(["sum", "min", "max"] as const), key: writableKey(rng), value: rng.u64() }),
    ],
    [
      1,
      () => ({
        type: "setVersionstamped",
        prefix: rng.pick(VS_PREFIXES),
        value: value(rng, null, op),
        expireIn: expireIn(rng),
      }),
    ],
  ])();
}

function selector(rng: Rng): Selector {
  const prefixes: Deno.KvKey[] = [[], ["a"], ["b"], ["a", rng.pick(IDS)], ["L"], ["v"], ["v", "w"], ["n"], [
    "zz",
  ]];
  const anyKey = () => rng.chance(0.8) ? readableKey(rng) : rng.pick(prefixes);
  return rng.weighted<() => Selector>([
    [4, () => ({ prefix: rng.pick(prefixes) })],
    [3, () => {
      const [a, b] = [anyKey(), anyKey()];
      return { start: a, end: b };
    }],
    [2, () => {
      const prefix = rng.pick(prefixes);
      return { prefix, start: rng.chance(0.9) ? [...prefix, rng.pick(IDS)] : anyKey() };
    }],
    [2, () => {
      const prefix = rng.pick(prefixes);
      return { prefix, end: rng.chance(0.9) ? [...prefix, rng.pick(IDS)] : anyKey() };
    }],
  ])();
}

function listOptions(rng: Rng, paging: boolean): ListOptions {
  const options: ListOptions = {};
  if (paging || rng.chance(0.5)) options.limit = rng.pick([1, 2, 3, 5, 10, 50]);
  if (rng.chance(0.4)) options.reverse = true;
  if (rng.chance(0.4)) options.batchSize = rng.pick([1, 2, 3, 10, 100, 1000]);
  return options;
}

function generate(rng: Rng, op: number, ctx: Context): Op {
  return rng.weighted<() => Op>([
    [10, () => {
      const key = writableKey(rng);
      return { kind: "set", key, value: value(rng, key, op), expireIn: expireIn(rng) };
    }],
    [4, () => ({ kind: "delete", key: writableKey(rng) })],
    [6, () => ({ kind: "get", key: readableKey(rng) })],
    [3, () => ({ kind: "getMany", keys: Array.from({ length: rng.range(1, 10) }, () => readableKey(rng)) })],
    [12, () => {
      const checks = Array.from({ length: rng.weighted([[3, 0], [4, 1], [2, 2], [1, 3]]) }, () => ({
        key: readableKey(rng),
        versionstamp: versionstampFor(rng, ctx),
      }));
      // Mostly a few mutations; sometimes over 100 (a large commit in subkv).
      const n = rng.weighted([[1, 0], [12, rng.range(1, 4)], [2, rng.range(5, 20)], [
        1,
        rng.range(101, 140),
      ]]);
      const mutations = Array.from({ length: n }, (_, i) => mutation(rng, op, i === 0));
      return { kind: "atomic", checks, mutations };
    }],
    [8, () => {
      const pages = rng.chance(0.3) ? rng.range(2, 4) : 1;
      return { kind: "list", selector: selector(rng), options: listOptions(rng, pages > 1), pages };
    }],
    [ctx.canResume ? 2 : 0, () => ({ kind: "resume", options: listOptions(rng, true) })],
    [1, () => ({ kind: "tooManyMutations", n: 1001 })],
    [1, () => ({ kind: "tooManyChecks", n: 11 })],
    [1, () => ({ kind: "tooLarge", what: rng.pick(["key", "value", "commit"] as const) })],
  ])();
}

// ---------------------------------------------------------------------------------------
// Running an operation on one side, and its result in comparable form.

type Side = {
  name: string;
  kv: Deno.Kv;
  /** Versionstamp → the operation whose commit returned it. */
  stamps: Map<string, number>;
  last: string;
  /** The operation of the last commit. */
  lastOp: number;
  /** The last list's selector and cursor, for "resume". */
  cursor?: { selector: Selector; cursor: string };
  /** Messages of refusals, for the report. */
  errors: string[];
};

class Refused {
  constructor(readonly message: string) {}
}

/** What is wrong on one side whatever the other does (a versionstamp that does not increase), or in this script. */
class Violation extends Error {}

async function attempt<T>(side: Side, body: () => Promise<T>): Promise<T | Refused> {
  try {
    return await body();
  } catch (error) {
    if (error instanceof Violation) throw error;
    const message = error instanceof Error ? `${error.name}: ${error.message}` : String(error);
    side.errors.push(message);
    return new Refused(message);
  }
}

function entry(e: Deno.KvEntryMaybe<unknown>) {
  return { key: canonicalKey(e.key), value: canonical(e.value), versionstamp: e.versionstamp };
}

async function resolve(side: Side, check: Check): Promise<{ key: Deno.KvKey; versionstamp: string | null }> {
  const v = check.versionstamp;
  if (v === "null") return { key: check.key, versionstamp: null };
  if (v === "current") return { key: check.key, versionstamp: (await side.kv.get(check.key)).versionstamp };
  const stamp = [...side.stamps].find(([, op]) => op === v.op)?.[0];
  if (!stamp) throw new Violation(`${side.name}: no versionstamp for operation ${v.op}`);
  return { key: check.key, versionstamp: stamp };
}

async function list(side: Side, selector: Selector, options: ListOptions, pages: number, cursor?: string) {
  const out = [];
  for (let page = 0; page < pages; page++) {
    const iter = side.kv.list(selector, { ...options, cursor, consistency: "strong" });
    const entries = [];
    for await (const e of iter) entries.push(entry(e));
    out.push(entries);
    if (!entries.length) break;
    cursor = iter.cursor;
    side.cursor = { selector, cursor };
  }
  return out;
}

function commitResult(side: Side, op: number, result: Deno.KvCommitResult | Deno.KvCommitError) {
  if (!result.ok) return { ok: false };
  if (side.stamps.has(result.versionstamp)) {
    throw new Violation(`${side.name}: versionstamp ${result.versionstamp} returned twice`);
  }
  if (result.versionstamp <= side.last) {
    throw new Violation(
      `${side.name}: versionstamp ${result.versionstamp} after ${side.last}: not increasing`,
    );
  }
  side.stamps.set(result.versionstamp, op);
  side.last = result.versionstamp;
  side.lastOp = op;
  return { ok: true, versionstamp: result.versionstamp };
}

async function run(side: Side, index: number, op: Op): Promise<unknown> {
  const kv = side.kv;
  switch (op.kind) {
    case "set":
      return await attempt(side, async () => commitResult(side, index, await kv.set(op.key, op.value, op)));
    case "delete":
      return await attempt(side, async () => {
        await kv.delete(op.key);
        return "deleted";
      });
    case "get":
      return await attempt(side, async () => entry(await kv.get(op.key)));
    case "getMany":
      return await attempt(side, async () => (await kv.getMany(op.keys)).map(entry));
    case "atomic": {
      const checks: (Deno.AtomicCheck | Refused)[] = [];
      for (const check of op.checks) checks.push(await attempt(side, () => resolve(side, check)));
      return {
        checked: checks.map((c) => c instanceof Refused ? c : c.versionstamp),
        commit: await attempt(side, async () => {
          const atomic = kv.atomic();
          for (const c of checks) if (!(c instanceof Refused)) atomic.check(c);
          for (const m of op.mutations) {
            if (m.type === "set") atomic.set(m.key, m.value, m);
            else if (m.type === "delete") atomic.delete(m.key);
            else if (m.type === "setVersionstamped") {
              atomic.set([...m.prefix, kv.commitVersionstamp()], m.value, m);
            } else atomic[m.type](m.key, m.value);
          }
          return commitResult(side, index, await atomic.commit());
        }),
      };
    }
    case "list":
      return await attempt(side, () => list(side, op.selector, op.options, op.pages));
    case "resume": {
      const saved = side.cursor;
      if (!saved) throw new Violation(`${side.name}: resume without a cursor`);
      return await attempt(side, () => list(side, saved.selector, op.options, 2, saved.cursor));
    }
    case "tooManyMutations":
      return await attempt(side, async () => {
        const atomic = kv.atomic();
        for (let i = 0; i < op.n; i++) atomic.set(["m", i], i);
        return commitResult(side, index, await atomic.commit());
      });
    case "tooManyChecks":
      // Refused by the server (both have a limit of 10), not by the client.
      return await attempt(side, async () => {
        const atomic = kv.atomic();
        for (let i = 0; i < op.n; i++) atomic.check({ key: ["chk", i], versionstamp: null });
        return commitResult(side, index, await atomic.set(["chk"], index).commit());
      });
    case "tooLarge":
      return await attempt(side, async () => {
        if (op.what === "key") return commitResult(side, index, await kv.set(TOO_LONG_KEY, 1));
        if (op.what === "value") {
          return commitResult(side, index, await kv.set(["a", "x"], bytes(65537, index)));
        }
        // 13 values of 64 KiB: 832 KiB, over the 800 KiB a commit may carry.
        const atomic = kv.atomic();
        for (let i = 0; i < 13; i++) atomic.set(["big", i], bytes(65536, i));
        return commitResult(side, index, await atomic.commit());
      });
  }
}

/** The result as JSON with every versionstamp replaced by its operation (`@12`; unknown: `@?<hex>`). */
function normalize(side: Side, result: unknown): string {
  const stamp = (s: string) => {
    const op = side.stamps.get(s);
    return op === undefined ? `@?${s}` : `@${op}`;
  };
  return JSON.stringify(result, (_, v) => {
    if (v instanceof Refused) return "refused";
    if (typeof v === "string" && /^[0-9a-f]{20}$/.test(v)) return stamp(v);
    return v;
  });
}

/** A long string shown exactly but short: its runs, `"p"×996 + "c"×1045`. */
class Runs {
  constructor(readonly s: string) {}
  [Symbol.for("Deno.customInspect")](): string {
    const runs = this.s.match(/(.)\1*/gs) ?? [];
    return runs.map((r) => r.length > 3 ? `${JSON.stringify(r[0])}×${r.length}` : JSON.stringify(r)).join(
      " + ",
    );
  }
}

/** Bytes shown by length and a few of them (they are generated from the operation's index). */
class Bytes {
  constructor(readonly b: Uint8Array) {}
  [Symbol.for("Deno.customInspect")](): string {
    return `Uint8Array(${this.b.length}) [${this.b.subarray(0, 4).join(", ")}${
      this.b.length > 4 ? ", …" : ""
    }]`;
  }
}

/** The operation, one line, long strings and byte arrays shortened without losing what they are. */
function describe(op: Op): string {
  const shorten = (v: unknown): unknown => {
    if (typeof v === "string" && v.length > 40) return new Runs(v);
    if (v instanceof Uint8Array && v.length > 8) return new Bytes(v);
    if (Array.isArray(v)) return v.map(shorten);
    if (v && typeof v === "object" && Object.getPrototypeOf(v) === Object.prototype) {
      return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, shorten(x)]));
    }
    return v;
  };
  return Deno.inspect(shorten(op), { depth: 8, colors: false, compact: true, breakLength: Infinity });
}

function within<T>(ms: number, what: string, promise: Promise<T>): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const guard = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no answer after ${ms} ms: ${what}`)), ms);
  });
  return Promise.race([promise, guard]).finally(() => clearTimeout(timer));
}

// ---------------------------------------------------------------------------------------

const replay = `make fuzz-kv SEED=${SEED} BUDGET=`;
const sides: Side[] = [
  {
    name: "subkv",
    kv: await Deno.openKv(env("SUBKV_KV_URL")),
    stamps: new Map(),
    last: "",
    lastOp: -1,
    errors: [],
  },
  {
    name: "denokv",
    kv: await Deno.openKv(env("DENOKV_URL")),
    stamps: new Map(),
    last: "",
    lastOp: -1,
    errors: [],
  },
];
const rng = new Rng(SEED);
const ctx: Context = { committed: [], canResume: false };
const counts: Record<string, number> = {};
const recent: string[] = [];
const started = Date.now();

function fail(index: number, op: string, detail: string, what = "DIFFERENCE"): never {
  console.log(`${what} at operation ${index} of seed ${SEED} (budget ${BUDGET})`);
  console.log(`operation ${index}: ${op}`);
  console.log(detail);
  console.log(`the operations before it, newest last:\n${recent.join("\n")}`);
  console.log(`replay: ${replay}${Math.min(index + 1, BUDGET)}`);
  Deno.exit(1);
}

async function compare(index: number, what: string, body: (side: Side) => Promise<unknown>) {
  const errorsBefore = sides.map((s) => s.errors.length);
  let results: unknown[];
  const answered = sides.map(() => false);
  try {
    const all = Promise.all(sides.map((side, i) => body(side).finally(() => answered[i] = true)));
    results = await within(OP_TIMEOUT_MS, what, all);
  } catch (error) {
    const waiting = sides.filter((_, i) => !answered[i]).map((s) => s.name);
    fail(
      index,
      what,
      `${error}${
        waiting.length
          ? `
no answer from: ${waiting.join(", ")}`
          : ""
      }`,
      "FAILURE",
    );
  }
  const [a, b] = sides.map((side, i) => normalize(side, results[i]));
  const messages = sides.map((s, i) =>
    s.errors.slice(errorsBefore[i]).map((m) => `\n  refused: ${m}`).join("")
  );
  if (TRACE) console.log(`#${index} ${what}\n  ${a.slice(0, 300)}`);
  if (a !== b) {
    fail(index, what, `subkv:  ${a}${messages[0]}\ndenokv: ${b}${messages[1]}`);
  }
  return results[0];
}

for (let i = 0; i < BUDGET; i++) {
  const op = generate(rng, i, ctx);
  const what = describe(op);
  const result = await compare(i, what, (side) => run(side, i, op));
  const committed = sides[0].lastOp === i;
  for (const c of [...classes(op), ...outcomes(op, result, committed)]) counts[c] = (counts[c] ?? 0) + 1;
  if (committed) ctx.committed.push(i);
  if (op.kind === "list" || op.kind === "resume") ctx.canResume = sides.every((s) => s.cursor !== undefined);
  recent.push(`${i}: ${what.length > 400 ? what.slice(0, 400) + "…" : what}`);
  if (recent.length > 12) recent.shift();
}

// Last, the whole database, both sides.
await compare(BUDGET, "the whole database (list, prefix [])", (side) => list(side, { prefix: [] }, {}, 1));
for (const side of sides) side.kv.close();
const ms = Date.now() - started;
console.log(
  `differential: seed ${SEED}, ${BUDGET} operations, ${ctx.committed.length} commits, equal on both sides in ${ms} ms`,
);
console.log(`classes: ${JSON.stringify(Object.fromEntries(Object.entries(counts).sort()))}`);
