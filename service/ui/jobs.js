// The jobs list: status, progress, loss, bytes, compression and age of each job, filtered by
// status, refreshed every few seconds.

import { api } from "/ui/api.js";
import { badge, h } from "/ui/dom.js";
import * as fmt from "/ui/format.js";

const REFRESH_MS = 3000;
const PAGE = 100;

// The last step record of each job, by id, with the job's step when it was read.
const latest = new Map();

/** The job's last step record (null before its first step); re-read when `job.step` moved. */
async function lastRecord(job, signal) {
  const known = latest.get(job.id);
  if (known && known.step === job.step) return known.record;
  let record = null;
  if (job.step > 0) {
    const since = Math.max(0, job.step - 1);
    const page = await api(`/v1/jobs/${job.id}/metrics?since=${since}&max_points=2`, { signal });
    record = page.steps.length ? page.steps[page.steps.length - 1] : null;
  }
  latest.set(job.id, { step: job.step, record });
  return record;
}

function filters(active) {
  const chip = (label, status) =>
    h(
      "a",
      {
        class: "chip" + (status === active ? " active" : ""),
        href: status ? `#/?status=${status}` : "#/",
        dataset: { status: status || "ALL" },
      },
      label,
    );
  return h(
    "nav",
    { class: "chips", "aria-label": "Filter by status" },
    chip("All", null),
    fmt.STATUSES.map((s) => chip(s.charAt(0) + s.slice(1).toLowerCase(), s)),
  );
}

function progress(job) {
  const total = job.total_steps;
  const share = total ? Math.min(1, job.step / total) : 0;
  const bar = h("span", { class: "bar" }, h("span", { class: "fill" }));
  bar.firstChild.style.width = `${(100 * share).toFixed(1)}%`;
  return h(
    "div",
    { class: "progress" },
    bar,
    h("span", { class: "muted" }, `${fmt.count(job.step)} / ${total ? fmt.count(total) : "?"}`),
  );
}

function workers(job) {
  const live = Array.isArray(job.workers) ? job.workers.length : job.workers;
  const target = job.target_workers;
  if (live === null || live === undefined) return target ? `– (→${target})` : "–";
  return target && target !== live ? `${live} → ${target}` : String(live);
}

function row(job, record) {
  const sent = record?.bytes_total ?? (job.result ? job.result.bytes_sent : null);
  const kind = job.spec.compression?.kind || "";
  return h(
    "tr",
    {
      class: "job-row",
      dataset: { jobId: job.id, status: job.status },
      on: {
        click: (event) => {
          if (event.target.closest("a")) return;
          location.hash = `#/jobs/${job.id}`;
        },
      },
    },
    h(
      "td",
      { class: "job-name" },
      h("a", { href: `#/jobs/${job.id}` }, job.name || job.spec.model?.kind || "job"),
      h("div", { class: "mono muted" }, job.id),
    ),
    h("td", {}, badge(job.status)),
    h("td", { class: "col-progress" }, progress(job)),
    h("td", { class: "num", "data-field": "loss" }, fmt.num(record?.loss)),
    h("td", { class: "num", "data-field": "bytes", "data-value": sent ?? null }, fmt.bytes(sent)),
    h(
      "td",
      { class: "num col-wide", title: "dense coordinates per coordinate sent (1 / density)" },
      h("span", { class: "muted" }, `${kind} `),
      fmt.compression(record?.density),
    ),
    h("td", { class: "num col-wide" }, workers(job)),
    h("td", { class: "num" }, fmt.duration(fmt.since(job.created_at))),
  );
}

/** Render the list into `root`; returns {stop} to end its refreshes. */
export function jobsView(root, params) {
  const status = fmt.STATUSES.includes(params.get("status")) ? params.get("status") : null;
  const controller = new AbortController();
  let timer = 0;
  const total = h("span", { class: "muted" });
  const body = h("tbody");
  const empty = h(
    "p",
    { class: "empty", hidden: true },
    status ? `No ${status.toLowerCase()} jobs.` : "No jobs yet. Submit one: ",
    status ? null : h("code", {}, "sparsetrain submit job.yaml"),
  );
  const head = ["Job", "Status", "Progress", "Loss", "Bytes sent", "Compression", "Workers", "Age"];
  const wide = new Set(["Compression", "Workers"]);
  root.replaceChildren(
    h("div", { class: "page-head" }, h("h1", {}, "Jobs "), total),
    filters(status),
    h(
      "div",
      { class: "card table-wrap" },
      h(
        "table",
        { class: "jobs", id: "jobs-table" },
        h(
          "thead",
          {},
          h(
            "tr",
            {},
            head.map((name) =>
              h(
                "th",
                {
                  class: [
                    wide.has(name) ? "col-wide" : "",
                    name === "Progress" ? "col-progress" : "",
                  ].join(" "),
                },
                name,
              ),
            ),
          ),
        ),
        body,
      ),
      empty,
    ),
  );

  async function refresh() {
    try {
      const query = `limit=${PAGE}` + (status ? `&status=${status}` : "");
      const page = await api(`/v1/jobs?${query}`, { signal: controller.signal });
      const records = await Promise.all(
        page.items.map((job) => lastRecord(job, controller.signal).catch(() => null)),
      );
      if (controller.signal.aborted) return;
      body.replaceChildren(...page.items.map((job, i) => row(job, records[i])));
      total.textContent = `${page.total} ${page.total === 1 ? "job" : "jobs"}`;
      empty.hidden = page.items.length > 0;
      root.dataset.loaded = "true";
    } catch {
      if (controller.signal.aborted) return;
    }
    timer = setTimeout(refresh, REFRESH_MS);
  }
  refresh();
  return {
    stop() {
      controller.abort();
      clearTimeout(timer);
    },
  };
}
