// Reads the Prometheus text exposition format of /metrics: samples by metric name, sums over
// label filters, histograms, and quantiles of histogram differences (as PromQL's
// histogram_quantile: linear within the bucket).

// name -> [{labels: {k: v}, value}]
export function parse(text) {
  const out = new Map();
  for (const line of text.split("\n")) {
    if (!line || line[0] === "#") continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)/.exec(line);
    if (!m) continue;
    const labels = {};
    if (m[3]) {
      for (const l of m[3].matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]] = l[2];
    }
    const value = m[4] === "+Inf" ? Infinity : Number(m[4]);
    if (!out.has(m[1])) out.set(m[1], []);
    out.get(m[1]).push({ labels, value });
  }
  return out;
}

// The sum of `name`'s samples whose labels match `filter` (null when there is none).
export function value(metrics, name, filter = {}) {
  const s = (metrics.get(name) || []).filter((x) => Object.entries(filter).every(([k, v]) => x.labels[k] === v));
  return s.length ? s.reduce((a, x) => a + x.value, 0) : null;
}

// Samples of `name` grouped by one label: {labelValue: value}.
export function byLabel(metrics, name, label) {
  const out = {};
  for (const x of metrics.get(name) || []) {
    const k = x.labels[label];
    if (k !== undefined) out[k] = (out[k] || 0) + x.value;
  }
  return out;
}

// {buckets: [[le, cumulative count]...] sorted, count, sum} or null.
export function histogram(metrics, name) {
  const b = metrics.get(name + "_bucket");
  if (!b) return null;
  const buckets = b
    .map((x) => [x.labels.le === "+Inf" ? Infinity : Number(x.labels.le), x.value])
    .sort((p, q) => p[0] - q[0]);
  return { buckets, count: value(metrics, name + "_count") || 0, sum: value(metrics, name + "_sum") || 0 };
}

// What was observed between two readings of one histogram.
export function delta(now, before) {
  if (!now) return null;
  if (!before) return now;
  return {
    buckets: now.buckets.map(([le, c], i) => [le, c - (before.buckets[i] ? before.buckets[i][1] : 0)]),
    count: now.count - before.count,
    sum: now.sum - before.sum,
  };
}

// The q-quantile (0..1) of a histogram, null when it holds no observations.
export function quantile(q, h) {
  if (!h || h.count <= 0) return null;
  const rank = q * h.count;
  let prevLe = 0;
  let prevCount = 0;
  for (const [le, c] of h.buckets) {
    if (c >= rank) {
      if (le === Infinity) return prevLe;
      const inBucket = c - prevCount;
      return inBucket > 0 ? prevLe + ((le - prevLe) * (rank - prevCount)) / inBucket : le;
    }
    prevLe = le;
    prevCount = c;
  }
  return prevLe;
}
