// Charts of a job's metrics over its steps, drawn with the vendored uPlot (window.uPlot), each with
// the table of its numbers for keyboards and screen readers. A chart grows as points arrive.

import { h, nextId, number } from "./dom.js";

const COLORS = ["#2563eb", "#db2777", "#16a34a", "#ea580c", "#7c3aed", "#0891b2"];

// all: [{key: "train_loss", label: "Training loss", pointsOnly: false}, ...]; a series is drawn
// once it has a value (a job without a validation file shows no validation lines). description:
// what the figure means, in a sentence under its title (optional).
export function metricsChart(title, all, description) {
  const about = description ? h("p", { class: "chart-about", id: nextId("chart-about") }, description) : null;
  const plotBox = h("div", { class: "plot", role: "img", "aria-label": title, "aria-describedby": about && about.id });
  const table = h("table", { class: "data" });
  const figure = h("figure", { class: "chart", dataset: { points: "0" } },
    h("figcaption", {}, title), about, plotBox,
    h("details", {}, h("summary", {}, `${title}: the numbers`), table));
  let plot = null;
  let rows = [];
  let series = [];

  function options(width) {
    return {
      width, height: 240,
      scales: { x: { time: false } },
      axes: [{ label: "step" }, {}],
      legend: { live: true },
      series: [{ label: "step" }, ...series.map((s) => ({
        label: s.label, stroke: COLORS[all.indexOf(s) % COLORS.length], width: 2, spanGaps: true,
        ...(s.pointsOnly ? { paths: () => null, points: { show: true, size: 8, fill: COLORS[all.indexOf(s) % COLORS.length] } } : {}),
      }))],
    };
  }

  function data() {
    return [rows.map((r) => r.step), ...series.map((s) => rows.map((r) => r[s.key] ?? null))];
  }

  function drawTable() {
    table.replaceChildren(
      h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "step"), series.map((s) => h("th", { scope: "col" }, s.label)))),
      h("tbody", {}, rows.map((r) => h("tr", {}, h("td", {}, r.step), series.map((s) => h("td", {}, number(r[s.key])))))));
  }

  const resize = new ResizeObserver(() => {
    if (plot && plotBox.clientWidth) plot.setSize({ width: plotBox.clientWidth, height: 240 });
  });
  resize.observe(plotBox);

  return {
    element: figure,
    // points: every metrics event's data so far, newest first; steps without any of the series are left out.
    update(points) {
      const has = (p, s) => p[s.key] !== undefined && p[s.key] !== null;
      const wanted = points.filter((p) => all.some((s) => has(p, s)));
      // Newest first in, so the last write of a step is its oldest point: reversed, the newest wins
      // (a job that went on after its worker stopped trains some steps again).
      rows = [...new Map([...wanted].reverse().map((p) => [p.step, p])).values()].sort((a, b) => a.step - b.step);
      const present = all.filter((s) => rows.some((r) => has(r, s)));
      figure.dataset.points = String(rows.length);
      if (present.length !== series.length && plot) {  // a series appeared: the plot is made again with it
        plot.destroy();
        plot = null;
      }
      series = present;
      drawTable();
      if (!rows.length || !window.uPlot) return;
      if (!plot) plot = new window.uPlot(options(plotBox.clientWidth || 600), data(), plotBox);
      else plot.setData(data());
    },
    destroy() {
      resize.disconnect();
      if (plot) plot.destroy();
    },
  };
}
