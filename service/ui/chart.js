// A small SVG line chart: axes with "nice" ticks, grid, labelled axes, an HTML legend and a
// hover read-out. No dependencies; everything it draws is built with DOM calls (no markup
// strings), so labels that come from job data are never parsed as HTML.

const SVG_NS = "http://www.w3.org/2000/svg";
const MARGIN = { top: 12, right: 16, bottom: 44, left: 64 };

function svgEl(tag, attrs = {}) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, String(value));
  return node;
}

// Ticks at 1, 2 or 5 times a power of ten, about `count` of them, covering [lo, hi].
export function niceTicks(lo, hi, count = 6) {
  if (!(hi > lo)) return [lo];
  const raw = (hi - lo) / Math.max(1, count);
  const power = Math.pow(10, Math.floor(Math.log10(raw)));
  const step = [1, 2, 5, 10].map((m) => m * power).find((s) => s >= raw) || 10 * power;
  const ticks = [];
  for (let t = Math.ceil(lo / step) * step; t <= hi + step * 1e-9; t += step) {
    ticks.push(Math.abs(t) < step * 1e-9 ? 0 : t);
  }
  return ticks;
}

function logTicks(lo, hi) {
  const ticks = [];
  for (let e = Math.floor(Math.log10(lo)); e <= Math.ceil(Math.log10(hi)); e++) {
    for (const m of [1, 2, 5]) {
      const t = m * Math.pow(10, e);
      if (t >= lo * 0.999 && t <= hi * 1.001) ticks.push(t);
    }
  }
  return ticks.length >= 2 ? ticks : [lo, hi];
}

function extent(values) {
  let lo = Infinity;
  let hi = -Infinity;
  for (const v of values) {
    if (v < lo) lo = v;
    if (v > hi) hi = v;
  }
  return [lo, hi];
}

// The point of `points` (sorted by x) whose x is nearest to `x`.
function nearest(points, x) {
  let lo = 0;
  let hi = points.length - 1;
  while (hi - lo > 1) {
    const mid = (lo + hi) >> 1;
    if (points[mid][0] < x) lo = mid;
    else hi = mid;
  }
  return Math.abs(points[lo][0] - x) <= Math.abs(points[hi][0] - x) ? points[lo] : points[hi];
}

/**
 * Draw `options.series` into `host` (a .chart element holding an <svg>, a legend and a
 * read-out), replacing what was there. Each series is {label, color, dashed, markers,
 * opacity, width, points: [[x, y], ...] sorted by x}. Non-finite points (and, with logY,
 * y <= 0) are left out. Sets host.dataset.points to the first series' drawn point count.
 */
export function drawChart(host, options) {
  const { xLabel, yLabel, logY = false, xFormat = String, yFormat = String } = options;
  const series = options.series.map((s) => ({
    ...s,
    points: s.points.filter(
      ([x, y]) => Number.isFinite(x) && Number.isFinite(y) && (!logY || y > 0),
    ),
  }));
  const svg = host.querySelector("svg");
  const width = Math.max(280, Math.floor(host.clientWidth || 600));
  const height = options.height || 260;
  svg.replaceChildren();
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.setAttribute("width", String(width));
  svg.setAttribute("height", String(height));
  host.dataset.points = String(series.length ? series[0].points.length : 0);

  const all = series.flatMap((s) => s.points);
  const plotW = width - MARGIN.left - MARGIN.right;
  const plotH = height - MARGIN.top - MARGIN.bottom;
  drawLegend(host, series);
  if (all.length === 0) {
    const empty = svgEl("text", {
      x: width / 2,
      y: height / 2,
      "text-anchor": "middle",
      class: "chart-empty",
    });
    empty.textContent = options.emptyText || "No data yet";
    svg.append(empty);
    return;
  }
  let [x0, x1] = extent(all.map((p) => p[0]));
  let [y0, y1] = extent(all.map((p) => p[1]));
  if (x1 === x0) x1 = x0 + 1;
  if (y1 === y0) {
    y0 = logY ? y0 / 2 : y0 - 0.5;
    y1 = logY ? y1 * 2 : y1 + 0.5;
  }
  const xTicks = niceTicks(x0, x1, Math.max(4, Math.floor(plotW / 75)));
  const yTicks = logY ? logTicks(y0, y1) : niceTicks(y0, y1, Math.max(3, Math.floor(plotH / 32)));
  if (!logY) {
    y0 = Math.min(y0, yTicks[0]);
    y1 = Math.max(y1, yTicks[yTicks.length - 1]);
  }
  const ly = (v) => (logY ? Math.log10(v) : v);
  const sx = (v) => MARGIN.left + ((v - x0) / (x1 - x0)) * plotW;
  const sy = (v) => MARGIN.top + plotH - ((ly(v) - ly(y0)) / (ly(y1) - ly(y0))) * plotH;

  const axes = svgEl("g", { class: "axes" });
  for (const t of xTicks) {
    const x = sx(t);
    axes.append(
      svgEl("line", { x1: x, x2: x, y1: MARGIN.top, y2: MARGIN.top + plotH, class: "grid" }),
    );
    const label = svgEl("text", { x, y: MARGIN.top + plotH + 16, "text-anchor": "middle" });
    label.textContent = xFormat(t);
    axes.append(label);
  }
  for (const t of yTicks) {
    const y = sy(t);
    axes.append(
      svgEl("line", { x1: MARGIN.left, x2: MARGIN.left + plotW, y1: y, y2: y, class: "grid" }),
    );
    const label = svgEl("text", { x: MARGIN.left - 6, y: y + 4, "text-anchor": "end" });
    label.textContent = yFormat(t);
    axes.append(label);
  }
  axes.append(
    svgEl("rect", { x: MARGIN.left, y: MARGIN.top, width: plotW, height: plotH, class: "frame" }),
  );
  const xTitle = svgEl("text", {
    x: MARGIN.left + plotW / 2,
    y: height - 6,
    "text-anchor": "middle",
    class: "axis-title",
  });
  xTitle.textContent = xLabel;
  const yTitle = svgEl("text", {
    x: 0,
    y: 0,
    transform: `translate(14 ${MARGIN.top + plotH / 2}) rotate(-90)`,
    "text-anchor": "middle",
    class: "axis-title",
  });
  yTitle.textContent = yLabel + (logY ? " (log)" : "");
  axes.append(xTitle, yTitle);
  svg.append(axes);

  const clipId = `clip-${host.id || "chart"}`;
  const clip = svgEl("clipPath", { id: clipId });
  clip.append(svgEl("rect", { x: MARGIN.left, y: MARGIN.top, width: plotW, height: plotH }));
  svg.append(clip);
  // Dashed (baseline) and faint series first, so the job's own lines stay on top.
  const order = (s) => (s.opacity !== undefined && s.opacity < 1 ? 0 : s.dashed ? 1 : 2);
  for (const s of [...series].sort((a, b) => order(a) - order(b))) {
    if (!s.points.length) continue;
    const group = svgEl("g", { "clip-path": `url(#${clipId})`, class: "series" });
    group.dataset.label = s.label;
    const d = s.points
      .map(([x, y], i) => `${i ? "L" : "M"}${sx(x).toFixed(1)} ${sy(y).toFixed(1)}`)
      .join("");
    group.append(
      svgEl("path", {
        d,
        fill: "none",
        stroke: s.color,
        "stroke-opacity": s.opacity ?? 1,
        "stroke-width": s.width ?? (s.dashed ? 1.6 : 2),
        "stroke-dasharray": s.dashed ? "6 4" : "none",
        "stroke-linejoin": "round",
      }),
    );
    if (s.markers && s.points.length <= 80) {
      for (const [x, y] of s.points) {
        group.append(svgEl("circle", { cx: sx(x), cy: sy(y), r: 3, fill: s.color }));
      }
    }
    svg.append(group);
  }
  attachHover(host, svg, series, { sx, plotH, plotW, x0, x1, xFormat, yFormat, xLabel });
}

function drawLegend(host, series) {
  const legend = host.querySelector(".legend");
  legend.replaceChildren(
    ...series.map((s) => {
      const item = document.createElement("span");
      item.className =
        "legend-item" + (s.dashed ? " dashed" : "") + (s.opacity < 1 ? " faint" : "");
      const swatch = document.createElement("span");
      swatch.className = "swatch";
      swatch.style.borderColor = s.color; // CSSOM, which the page's CSP allows
      item.append(swatch, document.createTextNode(s.label));
      return item;
    }),
  );
}

function attachHover(host, svg, series, geo) {
  const readout = host.querySelector(".readout");
  const cursor = svgEl("line", {
    y1: MARGIN.top,
    y2: MARGIN.top + geo.plotH,
    class: "cursor",
    visibility: "hidden",
  });
  svg.append(cursor);
  svg.onmouseleave = () => {
    cursor.setAttribute("visibility", "hidden");
    readout.hidden = true;
  };
  svg.onmousemove = (event) => {
    const box = svg.getBoundingClientRect();
    const px = ((event.clientX - box.left) / box.width) * Number(svg.getAttribute("width"));
    const x = geo.x0 + ((px - MARGIN.left) / geo.plotW) * (geo.x1 - geo.x0);
    const rows = series.filter((s) => s.points.length).map((s) => ({ s, p: nearest(s.points, x) }));
    if (!rows.length) return;
    const at = rows[0].p[0];
    cursor.setAttribute("x1", geo.sx(at));
    cursor.setAttribute("x2", geo.sx(at));
    cursor.setAttribute("visibility", "visible");
    const title = document.createElement("div");
    title.className = "readout-title";
    title.textContent = `${geo.xLabel} ${geo.xFormat(at)}`;
    readout.replaceChildren(
      title,
      ...rows.map(({ s, p }) => {
        const line = document.createElement("div");
        const swatch = document.createElement("span");
        swatch.className = "swatch";
        swatch.style.borderColor = s.color;
        line.append(swatch, document.createTextNode(`${s.label}: ${geo.yFormat(p[1])}`));
        return line;
      }),
    );
    readout.hidden = false;
  };
}
