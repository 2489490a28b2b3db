// The job page's side panels: workers, events, checkpoints, downloads, and its actions.

import { api, download } from "/ui/api.js";
import { badge, h, toast } from "/ui/dom.js";
import * as fmt from "/ui/format.js";

export function table(columns, rows) {
  return h(
    "table",
    { class: "small-table" },
    h(
      "thead",
      {},
      h(
        "tr",
        {},
        columns.map((c) => h("th", {}, c)),
      ),
    ),
    h(
      "tbody",
      {},
      rows.map((cells) =>
        h(
          "tr",
          {},
          cells.map((c) => h("td", {}, c)),
        ),
      ),
    ),
  );
}

function cell(value) {
  if (typeof value === "number") {
    return Number.isInteger(value) ? fmt.count(value) : fmt.num(value);
  }
  if (value && typeof value === "object") return JSON.stringify(value);
  return value === null || value === undefined ? "–" : String(value);
}

// The columns of the workers table: heading and how a row (`WorkerInfo`) fills it.
const WORKER_COLUMNS = [
  ["Rank", (w) => cell(w.rank)],
  ["State", (w) => w.state],
  ["Node", (w) => (w.node_ip ? `${w.node_ip} (${(w.node_id || "").slice(0, 8)})` : "–")],
  ["PID", (w) => (w.pid === null ? "–" : String(w.pid))],
  ["GPUs", (w) => (w.gpu_ids.length ? w.gpu_ids.join(", ") : "–")],
  ["Last step", (w) => cell(w.last_step)],
];

/**
 * The workers: the live count, then a table of `job.worker_details` (where each worker
 * runs) when the server has them, and each rank's bytes in `last` (the latest step record).
 */
export function workersPanel(job, last) {
  const target = job.target_workers ?? job.spec.workers.count;
  const summary = h("p", { class: "muted" }, `${job.workers ?? 0} live, target ${target}.`);
  const details = Array.isArray(job.worker_details) ? job.worker_details : [];
  const where = details.length
    ? table(
        WORKER_COLUMNS.map(([heading]) => heading),
        details.map((w) => WORKER_COLUMNS.map(([, fill]) => fill(w))),
      )
    : null;
  const sizes = last?.bytes_per_worker || [];
  if (!sizes.length) return [summary, where];
  const sum = sizes.reduce((a, b) => a + b, 0) || 1;
  return [
    summary,
    where,
    table(
      ["Rank", `Bytes sent at step ${fmt.count(last.step)}`, "Share"],
      sizes.map((b, rank) => [String(rank), fmt.bytes(b), fmt.percent(b / sum)]),
    ),
  ];
}

/** One entry of the event timeline. */
export function eventItem(event) {
  return h(
    "li",
    { dataset: { kind: event.kind } },
    h("time", { datetime: event.time, class: "mono muted" }, fmt.clock(event.time)),
    h("span", { class: `kind kind-${event.kind}` }, event.kind),
    event.status ? badge(event.status) : null,
    h("span", { class: "message" }, event.message),
  );
}

export function checkpointsPanel(list, job) {
  if (list.length) {
    return table(
      ["Step", "Size"],
      list.map((c) => [fmt.count(c.step), fmt.bytes(c.nbytes)]),
    );
  }
  const every = job?.spec.checkpoint?.every;
  return h("p", { class: "muted" }, every ? `Every ${every} steps; none yet.` : "None yet.");
}

/** Buttons that fetch the job's files with the token and save them. */
export function downloadButtons(job) {
  const id = job.id;
  const done = job.status === "SUCCEEDED";
  const button = (label, path, filename, enabled) =>
    h(
      "button",
      {
        type: "button",
        disabled: !enabled,
        title: enabled ? "" : "once the job has succeeded",
        on: {
          click: () =>
            download(path, filename).catch((e) => toast(`Download failed: ${e.message}`, "error")),
        },
      },
      label,
    );
  return [
    button("Model (.pt)", `/v1/jobs/${id}/model`, `${id}-model.pt`, done),
    job.spec.objective === "sample"
      ? button("Samples (.pt)", `/v1/jobs/${id}/samples`, `${id}-samples.pt`, done)
      : null,
    button(
      "Metrics (JSON)",
      `/v1/jobs/${id}/metrics?max_points=100000`,
      `${id}-metrics.json`,
      true,
    ),
    button("Log (text)", `/v1/jobs/${id}/logs`, `${id}.log`, true),
    button(
      "Workers' log (text)",
      `/v1/jobs/${id}/logs?source=workers`,
      `${id}-workers.log`,
      true,
    ),
  ];
}

/**
 * Scale (elastic jobs) and cancel (asks first) controls for a job that has not ended;
 * `changed(job)` hears the job the server returns.
 */
export function actions(job, changed) {
  if (fmt.TERMINAL.has(job.status)) return [];
  const parts = [];
  if (fmt.isElastic(job.spec)) parts.push(scaleForm(job, changed));
  const box = h("div", { class: "cancel-box" });
  const ask = () =>
    box.replaceChildren(
      h(
        "button",
        { type: "button", class: "danger", id: "cancel-button", on: { click: confirm } },
        "Cancel job",
      ),
    );
  const confirm = () =>
    box.replaceChildren(
      h("span", { class: "muted" }, "Stop this job? "),
      h(
        "button",
        { type: "button", class: "danger", id: "cancel-confirm", on: { click: cancel } },
        "Yes, cancel",
      ),
      h("button", { type: "button", on: { click: ask } }, "Keep running"),
    );
  const cancel = async () => {
    try {
      changed(await api(`/v1/jobs/${job.id}/cancel`, { method: "POST" }));
      toast("Job cancelled");
    } catch (error) {
      toast(`Cancel failed: ${error.message}`, "error");
      ask();
    }
  };
  ask();
  parts.push(box);
  return parts;
}

function scaleForm(job, changed) {
  const w = job.spec.workers;
  const [lo, hi] = [w.min ?? w.count, w.max ?? w.count];
  const input = h("input", {
    type: "number",
    id: "scale-input",
    min: lo,
    max: hi,
    value: String(job.target_workers ?? w.count),
  });
  const submit = async (event) => {
    event.preventDefault();
    const count = Number(input.value);
    try {
      const body = { workers: { count } };
      changed(await api(`/v1/jobs/${job.id}`, { method: "PATCH", body }));
      toast(`Scaling to ${count} workers`);
    } catch (error) {
      toast(`Scale refused: ${error.message}`, "error");
    }
  };
  return h(
    "form",
    { class: "scale", on: { submit } },
    h("label", { for: "scale-input" }, `Workers (${lo}–${hi})`),
    input,
    h("button", { type: "submit", id: "scale-button" }, "Scale"),
  );
}
