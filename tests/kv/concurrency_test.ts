// Serializable commits under concurrency, through `Deno.openKv(url)` with the real
// Deno runtime: writers move amounts between accounts with checked atomic commits
// while readers sum every account in one read. Every read must see the invariant
// total, no acknowledged commit may be lost, and versionstamps never go backwards.
// Run by tests/tests/kv.rs against the local stack (or with SUBKV_KV_URL=:memory:).

import { assert, assertEquals } from "./assert.ts";
import { closeAll, connections, scope } from "./kv_env.ts";

const ACCOUNTS = 8;
const OPENING_BALANCE = 1000;
const WRITERS = 4;
const TRANSFERS_PER_WRITER = 12;
const TOTAL = ACCOUNTS * OPENING_BALANCE;

type Transfer = { from: number; to: number; amount: number };

Deno.test("concurrent checked transfers keep the total, lose nothing, never go back in time", async () => {
  const p = scope("bank");
  const account = (i: number): Deno.KvKey => [...p, "account", i];
  const accounts = Array.from({ length: ACCOUNTS }, (_, i) => account(i));

  // One connection per writer and reader (separate clients against subkv), and one to set up and check.
  const kvs = await connections(WRITERS + 3);
  const setup = kvs[WRITERS + 2];
  const opening = setup.atomic();
  for (const k of accounts) opening.set(k, OPENING_BALANCE);
  assert((await opening.commit()).ok);

  let writing = true;
  let retries = 0;

  // A writer: read two accounts, commit the move only if neither changed meanwhile.
  const writer = async (w: number) => {
    const kv = kvs[w];
    const stamps: string[] = [];
    for (let n = 0; n < TRANSFERS_PER_WRITER; n++) {
      const from = (w + n) % ACCOUNTS;
      const to = (w * 3 + n * 5 + 1) % ACCOUNTS === from
        ? (from + 1) % ACCOUNTS
        : (w * 3 + n * 5 + 1) % ACCOUNTS;
      const amount = 1 + ((w * 7 + n * 13) % 50);
      for (;;) {
        const [a, b] = await kv.getMany<number[]>([account(from), account(to)]);
        const transfer: Transfer = { from, to, amount };
        const result = await kv.atomic()
          .check(a)
          .check(b)
          .set(account(from), (a.value as number) - amount)
          .set(account(to), (b.value as number) + amount)
          .set([...p, "ledger", w, n], transfer)
          .commit();
        if (result.ok) {
          stamps.push(result.versionstamp);
          break;
        }
        retries++;
      }
    }
    for (let i = 1; i < stamps.length; i++) {
      assert(stamps[i] > stamps[i - 1], `writer ${w}: commit ${i} went back in time`);
    }
    return stamps;
  };

  // A reader: the sum over all accounts in one consistent read, alternately with
  // getMany and list; the newest versionstamp it sees never decreases.
  const reader = async (r: number) => {
    const kv = kvs[WRITERS + r];
    let reads = 0;
    let newest = "";
    do {
      const entries = reads % 2 === 0
        ? await kv.getMany<number[]>(accounts)
        : await Array.fromAsync(kv.list<number>({ prefix: [...p, "account"] }));
      assertEquals(entries.length, ACCOUNTS, `reader ${r}, read ${reads}: accounts`);
      const total = entries.reduce((sum, e) => sum + (e.value as number), 0);
      assertEquals(
        total,
        TOTAL,
        `reader ${r}, read ${reads} (${reads % 2 === 0 ? "getMany" : "list"}): total`,
      );
      const seen = entries.map((e) => e.versionstamp as string).reduce((a, b) => (a > b ? a : b));
      assert(seen >= newest, `reader ${r}, read ${reads}: versionstamp ${seen} after ${newest}`);
      newest = seen;
      reads++;
    } while (writing);
    return reads;
  };

  const readers = [0, 1].map(reader);
  const written = await Promise.all(Array.from({ length: WRITERS }, (_, w) => writer(w))).finally(() => {
    writing = false;
  });
  const reads = await Promise.all(readers);
  assert(reads.every((n) => n >= 2), `every reader read while writers ran: ${reads}`);

  // Every acknowledged commit is there: its ledger entry, and balances that
  // replay the ledger exactly.
  const ledger = await Array.fromAsync(setup.list<Transfer>({ prefix: [...p, "ledger"] }));
  assertEquals(ledger.length, WRITERS * TRANSFERS_PER_WRITER, "ledger entries");
  const acknowledged = new Set(written.flat());
  assertEquals(acknowledged.size, WRITERS * TRANSFERS_PER_WRITER, "distinct commit versionstamps");
  assert(
    ledger.every((e) => acknowledged.has(e.versionstamp)),
    "every ledger entry has its commit's versionstamp",
  );
  const expected = Array(ACCOUNTS).fill(OPENING_BALANCE);
  for (const { value: t } of ledger) {
    expected[t.from] -= t.amount;
    expected[t.to] += t.amount;
  }
  const balances = (await setup.getMany<number[]>(accounts)).map((e) => e.value);
  assertEquals(balances, expected, "balances replay the ledger");
  console.log(
    `${
      WRITERS * TRANSFERS_PER_WRITER
    } transfers, ${retries} retried after a failed check, reads per reader: ${reads}`,
  );
  closeAll(kvs);
});
