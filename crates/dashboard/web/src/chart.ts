// A line chart of one resource over time: what is onboarded, and what is allocated or
// committed, as SVG (no chart library).

import { svg } from "./dom";

export interface Series {
  label: string;
  cls: string;
  points: [number, number][]; // [unix ms, value]
}

const W = 480;
const H = 140;
const PAD = { l: 48, r: 8, t: 8, b: 20 };

export function lineChart(title: string, series: Series[], fmt: (v: number) => string): SVGElement {
  const xs = series.flatMap((s) => s.points.map((p) => p[0]));
  const ys = series.flatMap((s) => s.points.map((p) => p[1]));
  const x0 = Math.min(...xs, Date.now() - 60_000);
  const x1 = Math.max(...xs, x0 + 1);
  const y1 = Math.max(...ys, 1) * 1.1;
  const x = (t: number) => PAD.l + ((t - x0) / (x1 - x0)) * (W - PAD.l - PAD.r);
  const y = (v: number) => H - PAD.b - (v / y1) * (H - PAD.t - PAD.b);
  const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, class: "chart", role: "img", "aria-label": title });
  root.append(svg("line", { x1: PAD.l, y1: H - PAD.b, x2: W - PAD.r, y2: H - PAD.b, class: "axis" }));
  for (const v of [0, y1 / 2, y1]) {
    root.append(svg("text", { x: PAD.l - 4, y: y(v) + 4, class: "tick", "text-anchor": "end" }, fmt(v)));
  }
  const span = Math.round((x1 - x0) / 60_000);
  root.append(svg("text", { x: PAD.l, y: H - 4, class: "tick" }, span > 0 ? `last ${span} min` : "last minute"));
  for (const s of series) {
    if (s.points.length === 0) continue;
    const d = s.points.map((p) => `${x(p[0]).toFixed(1)},${y(p[1]).toFixed(1)}`).join(" ");
    root.append(svg("polyline", { points: d, class: `line ${s.cls}` }));
    const last = s.points[s.points.length - 1];
    root.append(svg("circle", { cx: x(last[0]), cy: y(last[1]), r: 2.5, class: `dot ${s.cls}` }));
  }
  return root;
}
