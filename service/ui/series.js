// A run's metric records as the page keeps them, and the curves drawn from them.

import * as fmt from "/ui/format.js";

export const MAX_POINTS = 4000; // step records kept per run; older ones are thinned
const COLORS = { loss: "#2563eb", train: "#f59e0b", test: "#10b981" };
const BASELINE_COLORS = ["#7c3aed", "#6b7280", "#db2777", "#0891b2"];

/** A run's records: step records with their running byte totals (`cum`), and evaluations. */
export class Series {
  constructor() {
    this.steps = [];
    this.evals = [];
  }

  /** Append what a metrics page holds beyond what is here (pages may repeat on reconnect). */
  add(page) {
    const lastStep = this.steps.length ? this.steps[this.steps.length - 1].step : -1;
    let running = this.steps.length ? this.steps[this.steps.length - 1].cum : 0;
    for (const record of page.steps) {
      if (record.step <= lastStep) continue;
      running = record.bytes_total ?? running + record.bytes_sent;
      this.steps.push({ ...record, cum: running });
    }
    const lastEval = this.evals.length ? this.evals[this.evals.length - 1].step : -1;
    this.evals.push(...page.evals.filter((e) => e.step > lastEval));
    if (this.steps.length > MAX_POINTS) {
      const last = this.steps[this.steps.length - 1];
      this.steps = this.steps.filter((_, i) => i % 2 === 0);
      if (this.steps[this.steps.length - 1] !== last) this.steps.push(last);
    }
  }

  get last() {
    return this.steps.length ? this.steps[this.steps.length - 1] : null;
  }

  /** Bytes sent before the evaluation at `step` (through step record step - 1). */
  bytesAt(step) {
    let found = 0;
    for (const record of this.steps) {
      if (record.step >= step) break;
      found = record.cum;
    }
    return found;
  }
}

/**
 * `points` with each y replaced by the mean of the ys around it (a centred window of about
 * 1/40 of the points): the trend of a noisy minibatch loss.
 */
export function smooth(points) {
  const half = Math.floor(points.length / 80);
  if (half < 1) return points;
  const prefix = [0];
  for (const [, y] of points) prefix.push(prefix[prefix.length - 1] + y);
  return points.map(([x], i) => {
    const lo = Math.max(0, i - half);
    const hi = Math.min(points.length, i + half + 1);
    return [x, (prefix[hi] - prefix[lo]) / (hi - lo)];
  });
}

const has = (evals, key) => evals.some((e) => Number.isFinite(e[key]));

/**
 * The loss and accuracy curves of `run` and of each of `baselines` (a Map of job id to
 * {job, series}), against steps or (`byBytes`) bytes sent. Pure.
 */
export function curves(run, baselines, byBytes) {
  const x = (s, record) => (byBytes ? record.cum : record.step);
  const evalX = (s, e) => (byBytes ? s.bytesAt(e.step) : e.step);
  const evalCurve = (s, key) => s.evals.map((e) => [evalX(s, e), e[key]]);
  const raw = run.steps.map((r) => [x(run, r), r.loss]);
  const loss = [
    { label: "minibatch loss", color: COLORS.loss, opacity: 0.3, width: 1, points: raw },
    { label: "minibatch loss (moving average)", color: COLORS.loss, points: smooth(raw) },
    {
      label: "train loss (eval)",
      color: COLORS.train,
      markers: true,
      points: evalCurve(run, "train_loss"),
    },
  ];
  const accuracy = [
    {
      label: "train accuracy",
      color: COLORS.train,
      markers: true,
      points: evalCurve(run, "train_accuracy"),
    },
  ];
  if (has(run.evals, "test_loss")) {
    loss.push({
      label: "test loss (eval)",
      color: COLORS.test,
      markers: true,
      points: evalCurve(run, "test_loss"),
    });
  }
  if (has(run.evals, "test_accuracy")) {
    accuracy.push({
      label: "test accuracy",
      color: COLORS.test,
      markers: true,
      points: evalCurve(run, "test_accuracy"),
    });
  }
  let index = 0;
  for (const [id, base] of baselines) {
    const color = BASELINE_COLORS[index++ % BASELINE_COLORS.length];
    const name = `${base.job.name || id.slice(0, 8)} (dense)`;
    const s = base.series;
    loss.push({
      label: `${name} minibatch loss, moving average`,
      color,
      dashed: true,
      points: smooth(s.steps.map((r) => [x(s, r), r.loss])),
    });
    const key = has(s.evals, "test_accuracy") ? "test_accuracy" : "train_accuracy";
    accuracy.push({
      label: `${name} ${key.replace("_", " ")}`,
      color,
      dashed: true,
      markers: true,
      points: evalCurve(s, key),
    });
  }
  return {
    loss,
    accuracy,
    xLabel: byBytes ? "bytes sent (all workers)" : "step",
    xFormat: byBytes ? fmt.bytesTick : fmt.tick,
  };
}
