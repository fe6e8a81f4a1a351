// A small line chart of a goal's measurements against its target (inline SVG).

const SVG = "http://www.w3.org/2000/svg";

function node(tag, attrs) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  return el;
}

/** points: [{time: ms, value: number}] ascending; target: {low, high} (either may be null). */
export function goalChart(points, target, { label, unit = "" }) {
  const width = 260;
  const height = 80;
  const pad = { left: 8, right: 44, top: 8, bottom: 8 };
  const values = points.map((p) => p.value);
  for (const bound of [target?.low, target?.high]) if (bound != null) values.push(bound);
  let min = Math.min(...values);
  let max = Math.max(...values);
  if (min === max) {
    min -= 1;
    max += 1;
  }
  const span = max - min;
  min -= span * 0.1;
  max += span * 0.1;
  const t0 = points[0]?.time ?? 0;
  const t1 = points.at(-1)?.time ?? 1;
  const x = (t) => pad.left + (points.length > 1 ? ((t - t0) / (t1 - t0 || 1)) * (width - pad.left - pad.right) : (width - pad.right) / 2);
  const y = (v) => pad.top + (1 - (v - min) / (max - min)) * (height - pad.top - pad.bottom);

  const described = points.map((p) => `${p.value} ${unit} on ${new Date(p.time).toISOString().slice(0, 10)}`);
  const targetText = target
    ? [target.low != null ? `at least ${target.low}` : null, target.high != null ? `below ${target.high}` : null]
        .filter(Boolean)
        .join(" and ")
    : "none";
  const svg = node("svg", {
    viewBox: `0 0 ${width} ${height}`,
    width,
    height,
    role: "img",
    class: "chart",
    "aria-label": `${label}: ${described.join(", ") || "no measurements yet"}; target ${targetText} ${unit}`,
  });
  for (const bound of [target?.low, target?.high]) {
    if (bound == null) continue;
    svg.append(node("line", { x1: pad.left, x2: width - pad.right, y1: y(bound), y2: y(bound), class: "target" }));
    const text = node("text", { x: width - pad.right + 4, y: y(bound) + 4, class: "target-label" });
    text.textContent = `${bound}`;
    svg.append(text);
  }
  if (points.length > 1) {
    svg.append(
      node("polyline", { points: points.map((p) => `${x(p.time)},${y(p.value)}`).join(" "), class: "series" }),
    );
  }
  for (const p of points) svg.append(node("circle", { cx: x(p.time), cy: y(p.value), r: 3, class: "point" }));
  return svg;
}
