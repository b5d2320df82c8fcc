// A small line chart on a <canvas>: a fixed time window, several series, a y axis from zero
// with round ticks, gaps where a value is unknown (null).

const COLORS = ["#2563eb", "#f59e0b", "#10b981", "#ef4444", "#8b5cf6", "#06b6d4"];

export function color(i) {
  return COLORS[i % COLORS.length];
}

export class LineChart {
  // series: names; opts: {window: seconds shown, max: fixed top of the y axis, format: tick label}
  constructor(canvas, series, opts = {}) {
    this.canvas = canvas;
    this.series = series;
    this.window = opts.window || 120;
    this.fixedMax = opts.max;
    this.format = opts.format || ((v) => String(v));
    this.points = []; // [t (s), [values]]
  }

  push(t, values) {
    this.points.push([t, values]);
    while (this.points.length && this.points[0][0] < t - this.window - 2) this.points.shift();
  }

  draw() {
    const c = this.canvas;
    const dpr = window.devicePixelRatio || 1;
    const w = c.clientWidth;
    const h = c.clientHeight;
    if (!w || !h) return;
    if (c.width !== Math.round(w * dpr) || c.height !== Math.round(h * dpr)) {
      c.width = Math.round(w * dpr);
      c.height = Math.round(h * dpr);
    }
    const g = c.getContext("2d");
    g.setTransform(dpr, 0, 0, dpr, 0, 0);
    g.clearRect(0, 0, w, h);
    const css = getComputedStyle(document.body);
    const muted = css.getPropertyValue("--muted").trim() || "#888";
    const line = css.getPropertyValue("--line").trim() || "#ddd";
    let max = 0;
    for (const [, vs] of this.points) for (const v of vs) if (v !== null && Number.isFinite(v)) max = Math.max(max, v);
    const [top, step] = this.fixedMax !== undefined ? [this.fixedMax, this.fixedMax / 4] : niceScale(max);
    g.font = "11px system-ui, sans-serif";
    const labels = [];
    for (let v = 0; v <= top + step / 2; v += step) labels.push([v, this.format(v)]);
    const left = Math.max(...labels.map(([, s]) => g.measureText(s).width)) + 8;
    const right = w - 4;
    const bottom = h - 16;
    const topY = 6;
    const y = (v) => bottom - ((bottom - topY) * Math.min(v, top)) / top;
    const now = this.points.length ? this.points[this.points.length - 1][0] : 0;
    const x = (t) => left + ((right - left) * (t - (now - this.window))) / this.window;
    g.strokeStyle = line;
    g.fillStyle = muted;
    g.lineWidth = 1;
    g.textAlign = "right";
    g.textBaseline = "middle";
    for (const [v, s] of labels) {
      const yy = Math.round(y(v)) + 0.5;
      g.beginPath();
      g.moveTo(left, yy);
      g.lineTo(right, yy);
      g.stroke();
      g.fillText(s, left - 5, yy);
    }
    g.textBaseline = "alphabetic";
    g.textAlign = "left";
    g.fillText(`-${this.window}s`, left, h - 3);
    g.textAlign = "right";
    g.fillText("now", right, h - 3);
    g.lineWidth = 1.8;
    g.lineJoin = "round";
    this.series.forEach((_, i) => {
      g.strokeStyle = color(i);
      g.beginPath();
      let pen = false;
      for (const [t, vs] of this.points) {
        const v = vs[i];
        if (v === null || v === undefined || !Number.isFinite(v)) {
          pen = false;
          continue;
        }
        if (pen) g.lineTo(x(t), y(v));
        else g.moveTo(x(t), y(v));
        pen = true;
      }
      g.stroke();
    });
  }
}

// A top at or above `max` of the form {1, 2, 2.5, 5} x 10^k over four ticks.
function niceScale(max) {
  if (!(max > 0)) return [1, 0.25];
  const raw = max / 4;
  const mag = Math.pow(10, Math.floor(Math.log10(raw)));
  const step = [1, 2, 2.5, 5, 10].map((f) => f * mag).find((s) => s * 4 >= max);
  return [step * 4, step];
}
