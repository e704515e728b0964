// Sequential `kv.set` latency through a KV Connect server, from the real Deno client.
//
//   SUBKV_KV_URL=http://127.0.0.1:9000/databases/<id>/connect \
//   DENO_KV_ACCESS_TOKEN=<token> deno run --unstable-kv --allow-env --allow-net \
//     shared/benches/kv_set_latency.ts
//
// Opens the database (the metadata exchange happens here, untimed), does
// SUBKV_LATENCY_WARMUP sets (default 20) untimed, then SUBKV_LATENCY_SETS sets
// (default 200), one at a time, each timed from the call to its resolved promise.
// Every set writes its own key (["latency", <run>, i]) with a small object value.
// Prints one markdown table row (label from SUBKV_LATENCY_LABEL) and a JSON line.

const url = Deno.env.get("SUBKV_KV_URL");
if (!url) {
  console.error("SUBKV_KV_URL must be the database's KV Connect URL");
  Deno.exit(2);
}
const warmup = Number(Deno.env.get("SUBKV_LATENCY_WARMUP") ?? "20");
const sets = Number(Deno.env.get("SUBKV_LATENCY_SETS") ?? "200");
const label = Deno.env.get("SUBKV_LATENCY_LABEL") ?? url;

const kv = await Deno.openKv(url);
const run = crypto.randomUUID();
const value = (i: number) => ({ i, name: `entry ${i}`, at: Date.now(), tags: ["a", "b", "c"] });

for (let i = 0; i < warmup; i++) {
  const r = await kv.set(["latency", run, "warmup", i], value(i));
  if (!r.ok) throw new Error("warm-up set failed");
}
const times: number[] = [];
for (let i = 0; i < sets; i++) {
  const started = performance.now();
  const r = await kv.set(["latency", run, i], value(i));
  times.push(performance.now() - started);
  if (!r.ok) throw new Error(`set ${i} failed`);
}
kv.close();

times.sort((a, b) => a - b);
const pct = (p: number) => times[Math.min(times.length - 1, Math.ceil((p / 100) * times.length) - 1)];
const mean = times.reduce((a, b) => a + b, 0) / times.length;
const ms = (x: number) => `${x.toFixed(2)} ms`;
console.log("| server | sets | min | p50 | p90 | p99 | max | mean |");
console.log("|---|---|---|---|---|---|---|---|");
console.log(
  `| ${label} | ${sets} | ${ms(times[0])} | ${ms(pct(50))} | ${ms(pct(90))} | ${ms(pct(99))} | ${
    ms(times[times.length - 1])
  } | ${ms(mean)} |`,
);
console.log(JSON.stringify({
  label,
  sets,
  warmup,
  min: times[0],
  p50: pct(50),
  p90: pct(90),
  p99: pct(99),
  max: times[times.length - 1],
  mean,
}));
