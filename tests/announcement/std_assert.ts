// Stand-in for `jsr:@std/assert/assert` (same signature and behaviour): the test
// machines reach the npm registry but not JSR. See deno.json.
export class AssertionError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "AssertionError";
  }
}

export function assert(expr: unknown, msg = ""): asserts expr {
  if (!expr) {
    throw new AssertionError(msg);
  }
}
