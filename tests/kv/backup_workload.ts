// A deterministic workload for the backup tests (tests/tests/backup.rs): commit `i` is
// always the same mutations, so the harness can run commits [from, to) now and the
// rest later (e.g. before and after enabling a backup):
//
//   deno run --unstable-kv --allow-net --allow-env backup_workload.ts <from> <to>
//
// against SUBKV_KV_URL (token in DENO_KV_ACCESS_TOKEN, see kv_env.ts). It must be the
// database's only writer: after each commit it lists the whole database and prints
// one JSON line
//
//   {"commit": i, "versionstamp": "<20 hex>", "recoveryPoint": bool, "state": [...]}
//
// where `state` is the dump of the database at that versionstamp (canonical.ts) and
// `recoveryPoint` is false for a commit without mutations (checks only), which
// leaves nothing in a backup and so is no point `denokv pitr` can check out.
//
// The mutations cover every value type (strings, numbers incl. NaN/-0/Infinity,
// bigint, booleans, null, undefined, Uint8Array, Date, KvU64, nested objects, arrays,
// Map, Set), every key part type, deletes, sum/min/max, multi-mutation commits, keys
// over 1000 encoded bytes (stored in subkv's long-key buckets), a key whose value
// encoding changes, and a key with a (far) expiry. (Not setSuffixVersionstampedKey:
// Deno's API has no way to send it.)

import { dump } from "./canonical.ts";
import { KV_URL } from "./kv_env.ts";

const [from, to] = Deno.args.map(Number);
if (!Number.isInteger(from) || !Number.isInteger(to) || from < 0 || to < from) {
  throw new Error("usage: backup_workload.ts <from> <to> (commits from..to-1)");
}

/** A key part long enough that keys with it encode to more than 1000 bytes. */
const LONG = "long-key-".padEnd(1200, "x");
const BASE_MS = 1_700_000_000_000;

function bytes(n: number, seed: number): Uint8Array {
  return Uint8Array.from({ length: n }, (_, j) => (seed * 31 + j * 7) & 0xff);
}

/** The mutations of commit `i`, added to `op`; false if it has none (a check-only commit). */
async function mutations(kv: Deno.Kv, op: Deno.AtomicOperation, i: number): Promise<boolean> {
  switch (i % 12) {
    case 0:
      op.set(["v", "string", i], `string ${i} ✓`);
      op.set(["v", "number", i], i + 0.25);
      op.set(["v", "special-numbers"], [NaN, -0, Infinity, -Infinity, Number.MAX_SAFE_INTEGER + i]);
      return true;
    case 1:
      op.set(["v", "bigint"], (BigInt(i) + 3n) ** 25n * (i % 2 ? -1n : 1n));
      op.set(["v", "boolean", i % 3], i % 2 === 0);
      op.set(["kp", 1.5, i], "float key part");
      op.set(["kp", BigInt(i) - 10n, true], "bigint and boolean key parts");
      op.set(["kp", false, new Uint8Array([0, i, 0xff])], "boolean and bytes key parts");
      return true;
    case 2:
      op.sum(["u64", "sum"], BigInt(i) * 1_000_000_007n);
      op.min(["u64", "min"], 10_000n - BigInt(i));
      op.max(["u64", "max"], BigInt(i) * 7n);
      op.set(["u64", "set", i], 0xffff_ffff_ffff_fff0n + BigInt(i % 16));
      return true;
    case 3:
      op.set(["v", "bytes", i], bytes(i * 3, i));
      op.set(["v", "empty-bytes"], new Uint8Array());
      op.set(["v", "null"], null);
      op.set(["v", "undefined"], undefined);
      return true;
    case 4:
      op.set(["v", "date"], new Date(BASE_MS + i * 1000));
      op.set(["v", "nested", i], {
        n: i,
        s: "nested",
        big: BigInt(i) << 70n,
        list: [1, "two", null, undefined, { deep: [true, new Date(BASE_MS - i)] }],
        map: new Map<unknown, unknown>([["k", i], [2, new Uint8Array([i])]]),
        set: new Set([i, "i"]),
        u64: new Deno.KvU64(BigInt(i)),
        bytes: bytes(5, i),
        i16: Int16Array.from([-1, i]),
        re: /ab+c/gi,
      });
      return true;
    case 5:
      op.delete(["v", "string", i - 5]);
      op.delete(["v", "nested", i - 13]); // one from the previous round, if any
      op.delete(["never", "written", i]);
      op.sum(["u64", "sum"], 1n);
      return true;
    case 6:
      op.set(["long", LONG, i % 3], `long ${i}`);
      op.set(["long", LONG, "b", i % 2], bytes(40, i));
      return true;
    case 7:
      op.delete(["long", LONG, (i + 1) % 3]);
      op.set([LONG, i], "a long first key part");
      return true;
    case 8:
      for (let j = 0; j < 6; j++) op.set(["batch", i, j], { i, j });
      for (let j = 0; j < 3; j++) op.delete(["batch", i - 12, j]);
      op.max(["u64", "max"], BigInt(i));
      return true;
    case 9:
      // One key whose value encoding changes (V8, little-endian u64, bytes) from round to round.
      op.set(["v", "morph"], [`morph ${i}`, new Deno.KvU64(BigInt(i)), bytes(4, i)][Math.floor(i / 12) % 3]);
      op.set(["v", "string", i], "".padEnd(3000, `${i}`));
      return true;
    case 10: {
      // Checks only: commits, gets a versionstamp, changes nothing.
      const date = await kv.get(["v", "date"]);
      op.check(date);
      return false;
    }
    default:
      op.set(["exp", i], "expires in an hour", { expireIn: 3_600_000 });
      op.set(["v", "string", i], `string ${i}`);
      op.delete(["v", "bytes", i - 8]);
      op.min(["u64", "min"], BigInt(i));
      return true;
  }
}

const kv = await Deno.openKv(KV_URL);
try {
  for (let i = from; i < to; i++) {
    const op = kv.atomic();
    const recoveryPoint = await mutations(kv, op, i);
    const result = await op.commit();
    if (!result.ok) throw new Error(`commit ${i} failed its checks`);
    const state = await dump(kv);
    console.log(JSON.stringify({ commit: i, versionstamp: result.versionstamp, recoveryPoint, state }));
  }
} finally {
  kv.close();
}
