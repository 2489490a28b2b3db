// One job: live loss and evaluation curves (against steps or bytes sent, dense baselines
// overlaid on request), its events, workers, checkpoints, downloads and spec, with buttons
// to scale and cancel it. Updates arrive through the job's SSE stream.

import { api, follow } from "/ui/api.js";
import { drawChart } from "/ui/chart.js";
import { badge, fill, h, toast } from "/ui/dom.js";
import * as fmt from "/ui/format.js";
import { elements, layout } from "/ui/layout.js";
import * as panels from "/ui/panels.js";
import { curves, MAX_POINTS, Series } from "/ui/series.js";

const JOB_REFRESH_MS = 1500; // at most one job read per this while metrics stream in
const BASELINE_REFRESH_MS = 5000;
const MAX_EVENTS = 500;

/** Render job `id` into `root`; returns {stop} to close its stream and timers. */
export function jobView(root, id) {
  const controller = new AbortController();
  const { signal } = controller;
  const run = new Series();
  const baselines = new Map(); // job id -> {job, series}
  const view = { byBytes: false, logY: false };
  const el = elements();
  let job = null;
  let drawPending = false;
  let lastJobRefresh = 0;
  let refreshTimer = 0;
  let actionsFor = null;

  // ---- curves

  function axisButton(byBytes, label) {
    const select = (event) => {
      view.byBytes = byBytes;
      for (const b of event.target.parentNode.children) {
        b.classList.toggle("active", b === event.target);
      }
      scheduleDraw();
    };
    return h(
      "button",
      {
        type: "button",
        class: "seg" + (byBytes ? "" : " active"),
        dataset: { axis: byBytes ? "bytes" : "step" },
        on: { click: select },
      },
      label,
    );
  }

  const logToggle = (event) => {
    view.logY = event.target.checked;
    scheduleDraw();
  };
  const controls = h(
    "div",
    { class: "controls" },
    h(
      "span",
      { class: "segmented", role: "group", "aria-label": "x axis" },
      axisButton(false, "Steps"),
      axisButton(true, "Bytes sent"),
    ),
    h(
      "label",
      { class: "check" },
      h("input", { type: "checkbox", id: "log-y", on: { change: logToggle } }),
      " log loss",
    ),
    h(
      "details",
      { class: "picker", id: "baseline-picker" },
      h("summary", {}, "Dense baselines ", el.pickerCount),
      el.picker,
    ),
  );

  function scheduleDraw() {
    if (drawPending) return;
    drawPending = true;
    requestAnimationFrame(() => {
      drawPending = false;
      if (!signal.aborted) draw();
    });
  }

  function draw() {
    const c = curves(run, baselines, view.byBytes);
    const axes = { xLabel: c.xLabel, xFormat: c.xFormat };
    drawChart(el.lossChart, {
      ...axes,
      series: c.loss,
      yLabel: "loss",
      logY: view.logY,
      yFormat: fmt.num,
      emptyText: "Waiting for the first step…",
    });
    el.accChart.hidden = !c.accuracy.some((s) => s.points.length);
    if (!el.accChart.hidden) {
      drawChart(el.accChart, {
        ...axes,
        series: c.accuracy,
        yLabel: "accuracy",
        yFormat: fmt.percent,
      });
    }
  }

  // ---- the job's own numbers

  function renderStats() {
    const last = run.last;
    const total = job.total_steps;
    // The stream's records run ahead of the job row, which the monitor updates in passes.
    const done = Math.max(job.step, last ? last.step + 1 : 0);
    el.step.textContent = fmt.count(done);
    el.step.dataset.step = String(done);
    el.stepNote.textContent = total ? `of ${fmt.count(total)} · ${fmt.percent(done / total)}` : "";
    const share = total ? Math.min(1, done / total) : 0;
    el.stepBar.firstChild.style.width = `${(100 * share).toFixed(1)}%`;

    el.loss.textContent = fmt.num(last?.loss);
    el.loss.dataset.step = last ? String(last.step) : "";
    el.lossNote.textContent = last ? `at step ${fmt.count(last.step)}` : "no step yet";

    const ev = run.evals[run.evals.length - 1];
    const test = ev && Number.isFinite(ev.test_accuracy);
    const accuracy = ev && (test ? ev.test_accuracy : ev.train_accuracy);
    el.evalValue.textContent = ev ? fmt.percent(accuracy) : "–";
    el.evalNote.textContent = ev
      ? `${test ? "test" : "train"} accuracy at step ${fmt.count(ev.step)}, ` +
        `loss ${fmt.num(ev.train_loss)}`
      : job.spec.eval?.every
        ? `every ${job.spec.eval.every} steps`
        : "no evaluations";

    el.bytes.textContent = fmt.bytes(last ? last.cum : job.result?.bytes_sent);
    el.bytes.dataset.bytes = last ? String(last.cum) : "";
    el.bytes.dataset.step = last ? String(last.step) : "";
    el.bytes.title = last ? `${fmt.count(last.cum)} bytes through step ${last.step}` : "";

    const kind = job.spec.compression.kind;
    el.ratio.textContent = fmt.compression(last?.density);
    el.ratioNote.textContent = last ? `${kind}, density ${fmt.num(last.density)}` : kind;

    const live = Array.isArray(job.workers) ? job.workers.length : job.workers;
    const target = job.target_workers ?? job.spec.workers.count;
    const pending = target !== live && !fmt.TERMINAL.has(job.status);
    el.workers.textContent = `${live ?? "–"}${pending ? ` → ${target}` : ""}`;
    el.workers.dataset.live = String(live ?? "");
    el.workers.dataset.target = String(target);
    renderRuntime();
    fill(el.workersBody, panels.workersPanel(job, last));
  }

  function renderRuntime() {
    const end = job.finished_at ? Date.parse(job.finished_at) : Date.now();
    const started = job.started_at ? Date.parse(job.started_at) : NaN;
    el.runtime.textContent = fmt.duration((end - started) / 1000);
  }

  function renderHeader() {
    document.title = `${job.name || job.id} · sparsetrain`;
    el.title.textContent = job.name || `Job ${job.id}`;
    el.status.replaceChildren(badge(job.status));
    el.status.dataset.status = job.status;
    const age = fmt.duration(fmt.since(job.created_at));
    fill(
      el.specLine,
      h("span", { class: "mono" }, job.id),
      ` · ${fmt.specLine(job.spec)} · created ${age} ago`,
    );
    el.error.hidden = !job.error;
    el.error.textContent = job.error ? `Error: ${job.error}` : "";
    el.spec.textContent = JSON.stringify(job.spec, null, 2);
    if (actionsFor !== job.status) {
      actionsFor = job.status; // rebuilt on a status change only: keeps a half-typed value
      fill(el.actions, panels.actions(job, changed));
    }
    fill(el.downloads, panels.downloadButtons(job));
  }

  function changed(fresh) {
    job = fresh;
    renderHeader();
    renderStats();
  }

  async function loadCheckpoints() {
    try {
      const list = await api(`/v1/jobs/${id}/checkpoints`, { signal });
      fill(el.checkpoints, panels.checkpointsPanel(list, job));
    } catch {
      // read again on the next checkpoint event
    }
  }

  // ---- live updates

  async function refreshJob() {
    lastJobRefresh = Date.now();
    try {
      changed(await api(`/v1/jobs/${id}`, { signal }));
    } catch {
      // the stream goes on; the next event reads the job again
    }
  }

  function refreshSoon() {
    if (refreshTimer) return;
    const wait = Math.max(0, lastJobRefresh + JOB_REFRESH_MS - Date.now());
    refreshTimer = setTimeout(() => {
      refreshTimer = 0;
      if (!signal.aborted) refreshJob();
    }, wait);
  }

  function onEvent(message) {
    let data;
    try {
      data = JSON.parse(message.data);
    } catch {
      return;
    }
    if (message.event === "metrics") {
      run.add(data);
      renderStats();
      scheduleDraw();
      refreshSoon();
    } else if (message.event === "end") {
      refreshJob();
      loadCheckpoints();
    } else {
      el.timeline.prepend(panels.eventItem(data));
      while (el.timeline.children.length > MAX_EVENTS) el.timeline.lastChild.remove();
      if (data.kind === "checkpoint") loadCheckpoints();
      refreshSoon();
    }
  }

  function setConnection(state) {
    const indicator = document.getElementById("connection");
    const words = { live: "● live", reconnecting: "● reconnecting" };
    indicator.textContent = words[state] || "";
    indicator.className = `connection ${state}`;
  }

  // ---- dense baselines

  async function loadBaseline(bid) {
    const page = await api(`/v1/jobs/${bid}/metrics?max_points=${MAX_POINTS}`, { signal });
    const other = await api(`/v1/jobs/${bid}`, { signal });
    if (!baselines.has(bid)) return; // unticked meanwhile
    const series = new Series();
    series.add(page);
    baselines.set(bid, { job: other, series });
    scheduleDraw();
  }

  function candidate(other) {
    const toggle = (event) => {
      if (event.target.checked) {
        baselines.set(other.id, { job: other, series: new Series() });
        loadBaseline(other.id).catch((error) => toast(error.message, "error"));
      } else {
        baselines.delete(other.id);
        scheduleDraw();
      }
    };
    return h(
      "label",
      { class: "check", dataset: { jobId: other.id } },
      h("input", { type: "checkbox", checked: baselines.has(other.id), on: { change: toggle } }),
      ` ${other.name || other.id} `,
      badge(other.status),
      h("span", { class: "muted" }, ` ${fmt.specLine(other.spec)}`),
    );
  }

  async function loadCandidates() {
    try {
      const page = await api("/v1/jobs?limit=100", { signal });
      const dense = page.items.filter((j) => j.id !== id && j.spec.compression?.kind === "none");
      el.pickerCount.textContent = `(${dense.length})`;
      fill(
        el.picker,
        dense.length
          ? dense.map(candidate)
          : h("p", { class: "muted" }, "No other job without compression to compare with."),
      );
    } catch {
      // the picker stays empty
    }
  }

  const ticker = setInterval(() => {
    for (const [bid, base] of baselines) {
      if (!fmt.TERMINAL.has(base.job.status)) loadBaseline(bid).catch(() => {});
    }
    if (job) renderRuntime();
  }, BASELINE_REFRESH_MS);
  const resize = new ResizeObserver(() => scheduleDraw());

  (async () => {
    try {
      job = await api(`/v1/jobs/${id}`, { signal });
    } catch (error) {
      if (signal.aborted) return;
      const text = error.status === 404 ? `No job ${id}.` : error.message;
      root.replaceChildren(
        h("a", { class: "back", href: "#/" }, "← All jobs"),
        h("p", { class: "error" }, text),
      );
      return;
    }
    root.replaceChildren(...layout(el, controls));
    resize.observe(el.lossChart);
    changed(job);
    draw();
    root.dataset.loaded = "true";
    loadCheckpoints();
    loadCandidates();
    await follow(`/v1/jobs/${id}/events`, { onEvent, onState: setConnection, signal });
  })();

  return {
    stop() {
      controller.abort();
      resize.disconnect();
      clearInterval(ticker);
      clearTimeout(refreshTimer);
      setConnection("");
    },
  };
}
