// Redis stream entry ids ("<ms>-<seq>") compared as numbers, not as strings.

const key = (id) => String(id).split("-").map(Number);

export function isAfter(a, b) {
  const [am, as = 0] = key(a);
  const [bm, bs = 0] = key(b);
  return am !== bm ? am > bm : as > bs;
}
