// The job page's layout: its tiles, charts and cards, built once per view.

import { h } from "/ui/dom.js";

function tile(label, value, ...notes) {
  return h("div", { class: "tile" }, h("div", { class: "tile-label" }, label), value, notes);
}

function chartHost(id, title) {
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", title);
  return h(
    "figure",
    { class: "chart", id },
    h("figcaption", {}, title),
    svg,
    h("div", { class: "legend" }),
    h("div", { class: "readout", hidden: true }),
  );
}

const value = (id) => h("div", { class: "tile-value", id });
const note = () => h("div", { class: "tile-note muted" });

/** The page's elements that change; built once per view. */
export function elements() {
  return {
    title: h("h1", { class: "job-title" }),
    status: h("span", { id: "job-status" }),
    specLine: h("p", { class: "muted spec-line" }),
    actions: h("div", { class: "actions" }),
    error: h("p", { class: "error", hidden: true }),
    step: value("stat-step"),
    stepNote: note(),
    stepBar: h("span", { class: "bar" }, h("span", { class: "fill" })),
    loss: value("stat-loss"),
    lossNote: note(),
    evalValue: value("stat-eval"),
    evalNote: note(),
    bytes: value("stat-bytes"),
    ratio: value("stat-ratio"),
    ratioNote: note(),
    workers: value("stat-workers"),
    runtime: value("stat-runtime"),
    lossChart: chartHost("chart-loss", "Loss"),
    accChart: chartHost("chart-accuracy", "Accuracy (evaluations)"),
    picker: h("div", { class: "picker-list" }),
    pickerCount: h("span", { class: "muted" }),
    workersBody: h("div", { id: "workers" }),
    timeline: h("ol", { class: "timeline", id: "timeline" }),
    checkpoints: h("div", { id: "checkpoints" }),
    downloads: h("div", { class: "downloads" }),
    spec: h("pre", { class: "spec", id: "spec" }),
  };
}

export function layout(el, controls) {
  const card = (title, body) => h("section", { class: "card" }, h("h2", {}, title), body);
  return [
    h("a", { class: "back", href: "#/" }, "← All jobs"),
    h(
      "div",
      { class: "job-head" },
      h("div", {}, h("div", { class: "title-row" }, el.title, el.status), el.specLine),
      el.actions,
    ),
    el.error,
    h(
      "div",
      { class: "tiles" },
      tile("Step", el.step, el.stepNote, h("div", { class: "progress tile-note" }, el.stepBar)),
      tile("Loss (minibatch)", el.loss, el.lossNote),
      tile("Evaluation", el.evalValue, el.evalNote),
      tile("Bytes sent", el.bytes),
      tile("Compression", el.ratio, el.ratioNote),
      tile("Workers", el.workers),
      tile("Running for", el.runtime),
    ),
    h(
      "section",
      { class: "card" },
      h("div", { class: "card-head" }, h("h2", {}, "Curves"), controls),
      h("div", { class: "charts" }, el.lossChart, el.accChart),
    ),
    h("div", { class: "grid-2" }, card("Workers", el.workersBody), card("Events", el.timeline)),
    h(
      "div",
      { class: "grid-2" },
      card("Checkpoints", el.checkpoints),
      card("Downloads", el.downloads),
    ),
    h("details", { class: "card spec-card" }, h("summary", {}, h("h2", {}, "Spec")), el.spec),
  ];
}
