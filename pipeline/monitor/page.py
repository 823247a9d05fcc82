"""The monitor's live page: the flow map with every stage's numbers, refreshing itself from ``/api/state``.

One self-contained HTML document (no external scripts or fonts: it must work
on a cluster without internet). It fetches ``api/state`` every 2 s and draws,
per stage in flow order: its state, members (client id, host, partitions),
lag in records and seconds, time to drain, p50/p99 of the hop into it, error
rate and dead letters over the last minute, and the monitor's scaling advice;
under them small line charts of the last 15 minutes (``history`` in the
state: arrival and answer rate, oldest waiting record, p99, errors per
second, members), drawn as inline SVG by the few lines of ``chart()`` below;
then end-to-end latency now and over time, what 1,000 answers of each task
cost over the last minute (CPU and model seconds, chat's tokens in and out,
cache hits), and the latest dead letters.
"""

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>pipeline monitor</title>
<style>
  body { font-family: system-ui, sans-serif; margin: 1.5em; background: #fafafa; color: #222; }
  h1 { font-size: 1.3em; margin: 0 0 .2em; }
  #meta { color: #666; font-size: .85em; margin-bottom: 1em; }
  #flow { display: flex; align-items: stretch; gap: .4em; flex-wrap: wrap; }
  .arrow { align-self: center; color: #888; font-size: .8em; text-align: center; min-width: 5em; }
  .stage { border: 2px solid #bbb; border-radius: 8px; padding: .6em .8em; background: #fff; min-width: 12em; }
  .stage h2 { font-size: 1.05em; margin: 0 0 .3em; display: flex; justify-content: space-between; gap: .5em; }
  .state { font-size: .75em; padding: .1em .5em; border-radius: 1em; color: #fff; background: #888; }
  .ok .state { background: #2a8c3c; } .ok { border-color: #2a8c3c; }
  .lagging .state { background: #d08a00; } .lagging { border-color: #d08a00; }
  .stalled .state { background: #c0392b; } .stalled { border-color: #c0392b; }
  .idle .state { background: #777; }
  table.kv { font-size: .85em; border-collapse: collapse; }
  table.kv td { padding: 0 .5em 0 0; } table.kv td:last-child { text-align: right; font-variant-numeric: tabular-nums; }
  .members { font-size: .75em; color: #444; margin-top: .4em; }
  .advice { font-size: .75em; color: #555; margin-top: .3em; font-style: italic; }
  .charts { margin-top: .4em; display: grid; grid-template-columns: 1fr 1fr; gap: .2em .6em; }
  .chart { font-size: .7em; color: #555; }
  .chart .ct { display: flex; justify-content: space-between; gap: .4em; }
  .chart svg { display: block; background: #f3f3f3; border-radius: 2px; }
  #e2e-chart .chart { font-size: .8em; width: 32em; }
  table.dead { border-collapse: collapse; font-size: .85em; margin-top: .5em; }
  table.dead th, table.dead td { border-bottom: 1px solid #ddd; padding: .2em .6em; text-align: left; }
</style>
</head>
<body>
<h1>pipeline monitor</h1>
<div id="meta">loading ...</div>
<div id="flow"></div>
<h2 style="font-size:1.05em">end to end (last minute): <span id="e2e">-</span></h2>
<div id="e2e-chart"></div>
<h2 style="font-size:1.05em">cost per 1,000 answers (last minute)</h2>
<table class="dead"><thead><tr><th>task</th><th>answers</th><th>CPU s</th><th>model s</th><th>tokens in</th>
<th>tokens out</th><th>cache hits</th></tr></thead>
<tbody id="cost"><tr><td colspan="7">no answers yet</td></tr></tbody></table>
<h2 style="font-size:1.05em">latest dead letters</h2>
<table class="dead"><thead><tr><th>stage</th><th>code</th><th>key</th><th>source</th><th>reason</th></tr></thead>
<tbody id="dead"><tr><td colspan="5">none</td></tr></tbody></table>
<script>
function fmt(v, unit) {
  if (v === null || v === undefined) return "-";
  if (unit === "s") return v >= 600 ? (v / 60).toFixed(0) + " min" : v.toFixed(1) + " s";
  if (unit === "ms") return v >= 1000 ? (v / 1000).toFixed(2) + " s" : v.toFixed(0) + " ms";
  if (unit === "/s") return (v >= 100 ? v.toFixed(0) : v.toFixed(1)) + "/s";
  if (unit === "%") return (100 * v).toFixed(1) + " %";
  return String(v);
}
function esc(text) {
  return String(text).replace(/[&<>"]/g, c => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;"}[c]));
}
const COLORS = ["#1f6fb2", "#d08a00"];
// A small live line chart of the last span_s seconds as inline SVG: the x axis ends at the state's time,
// so an idle chart slides left; y runs from 0 to just above the largest value shown.
function chart(stage, name, title, history, lines, unit, width, height) {
  const at = history.at, end = history.now, begin = end - history.span_s;
  let max = 0;
  lines.forEach(line => line.values.forEach((v, i) => { if (v !== null && at[i] >= begin && v > max) max = v; }));
  const top = max > 0 ? max * 1.15 : 1;
  const drawn = lines.map((line, k) => {
    const points = [];
    line.values.forEach((v, i) => {
      if (v === null || at[i] < begin) return;
      const x = (at[i] - begin) / history.span_s * width, y = height - 1 - v / top * (height - 2);
      points.push(x.toFixed(1) + "," + y.toFixed(1));
    });
    if (points.length === 1) points.unshift((parseFloat(points[0]) - 2).toFixed(1) + "," + points[0].split(",")[1]);
    return '<polyline data-line="' + line.name + '" fill="none" stroke="' + COLORS[k] +
      '" stroke-width="1.4" points="' + points.join(" ") + '"/>';
  });
  const now = lines.map(line => fmt(line.values.length ? line.values[line.values.length - 1] : null, unit)).join(" / ");
  return '<div class="chart"><div class="ct"><span>' + title + '</span><span>' + now + '</span></div>' +
    '<svg class="spark" data-stage="' + esc(stage) + '" data-series="' + name + '" data-max="' + max + '" width="' +
    width + '" height="' + height + '" viewBox="0 0 ' + width + ' ' + height + '">' + drawn.join("") + '</svg></div>';
}
function stageCharts(name, history) {
  const h = history.stages[name];
  if (!h) return "";
  const c = (series, title, lines, unit) => chart(name, series, title, history, lines, unit, 96, 26);
  return '<div class="charts">' +
    c("rate", "in / out per s", [{name: "arrival", values: h.arrival}, {name: "consume", values: h.consume}], "/s") +
    c("lag_s", "oldest waiting", [{name: "lag_s", values: h.lag_s}], "s") +
    c("p99_ms", "p99", [{name: "p99_ms", values: h.p99_ms}], "ms") +
    c("errors", "errors per s", [{name: "errors", values: h.errors}], "/s") +
    c("members", "members", [{name: "members", values: h.members}]) + '</div>';
}
function drain(s) {
  if (s.lag === 0) return "0 s";
  if (s.drain_s === null || s.drain_s === undefined) return s.lag === null ? "-" : "never";
  return fmt(s.drain_s, "s");
}
function stageBox(s, history) {
  const members = s.members.map(m => esc(m.client_id) + " on " + esc(m.host) + " [" + m.partitions.join(",") + "]");
  const advice = s.advice ? "advice: " + s.advice.members + " member(s) (" + esc(s.advice.reason) + ")" : "";
  return '<div class="stage ' + esc(s.state) + '" data-stage="' + esc(s.name) + '">' +
    '<h2><span>' + esc(s.name) + '</span><span class="state">' + esc(s.state) + '</span></h2>' +
    '<table class="kv">' +
    '<tr><td>members</td><td class="n-members">' + s.members.length + '</td></tr>' +
    '<tr><td>lag</td><td class="n-lag">' + fmt(s.lag) + '</td></tr>' +
    '<tr><td>oldest waiting</td><td>' + fmt(s.lag_s, "s") + '</td></tr>' +
    '<tr><td>time to drain</td><td class="n-drain">' + drain(s) + '</td></tr>' +
    '<tr><td>in / out per s</td><td>' + fmt(s.arrival_rate) + ' / ' + fmt(s.consume_rate) + '</td></tr>' +
    '<tr><td>p50 / p99</td><td class="n-latency">' + fmt(s.p50_ms, "ms") + ' / ' + fmt(s.p99_ms, "ms") + '</td></tr>' +
    '<tr><td>errors (1 min)</td><td class="n-errors">' + fmt(s.error_rate, "%") + '</td></tr>' +
    '<tr><td>dead letters (1 min)</td><td>' + s.dead_letters_1m + '</td></tr>' +
    '</table><div class="members">' + (members.join("<br>") || "no members") + '</div>' +
    '<div class="advice">' + advice + '</div>' + stageCharts(s.name, history) + '</div>';
}
async function refresh() {
  try {
    const response = await fetch("api/state", {cache: "no-store"});
    const data = await response.json();
    const parts = [], history = {...data.history, now: data.at};
    data.stages.forEach((s, i) => {
      if (i > 0) parts.push('<div class="arrow">' + esc(s.source) + '<br>&#10230;</div>');
      parts.push(stageBox(s, history));
    });
    const e2e = history.end_to_end;
    document.getElementById("e2e-chart").innerHTML = chart("end_to_end", "latency", "p50 / p99, last 15 min", history,
      [{name: "p50_ms", values: e2e.p50_ms}, {name: "p99_ms", values: e2e.p99_ms}], "ms", 360, 60);
    document.getElementById("flow").innerHTML = parts.join("");
    document.getElementById("e2e").textContent =
      "p50 " + fmt(data.end_to_end.p50_ms, "ms") + ", p99 " + fmt(data.end_to_end.p99_ms, "ms");
    const cost = Object.entries(data.cost_per_1k).map(([task, c]) => '<tr data-task="' + esc(task) + '"><td>' +
      [task, c.answers, c.cpu_s.toFixed(2), c.model_s.toFixed(2), c.tokens_in.toFixed(0), c.tokens_out.toFixed(0),
       c.cache_hits.toFixed(0)].map(esc).join("</td><td>") + "</td></tr>");
    document.getElementById("cost").innerHTML = cost.join("") || '<tr><td colspan="7">no answers yet</td></tr>';
    const dead = data.latest_dead.map(d => "<tr><td>" + [d.stage, d.code, d.key, d.source, d.reason].map(esc)
      .join("</td><td>") + "</td></tr>");
    document.getElementById("dead").innerHTML = dead.join("") || '<tr><td colspan="5">none</td></tr>';
    const lagAt = data.lag_read_at ? new Date(data.lag_read_at * 1000).toLocaleTimeString() : "not yet";
    document.getElementById("meta").textContent = "updated " + new Date(data.at * 1000).toLocaleTimeString() +
      "; groups read " + lagAt + "; " + data.reports + " telemetry reports seen";
  } catch (error) {
    document.getElementById("meta").textContent = "cannot reach the monitor: " + error;
  }
}
refresh();
setInterval(refresh, 2000);
</script>
</body>
</html>
"""
