"""The live view's page: the MJPEG stream beside the run's figures, polled from stats.json.

The script also watches the stream itself (it samples the picture five times a second
into a tiny canvas) and records what it saw in <body data-*>: frames seen, stats updates and
frames-out counts, so a headless browser can check from the DOM that the page is alive.
"""
from __future__ import annotations

PAGE_HTML = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>unet-trt-edge live</title>
<style>
  body { margin: 0; font: 14px/1.4 system-ui, sans-serif; background: #15181c; color: #e6e6e6; }
  header { padding: 8px 16px; background: #20252b; display: flex; gap: 16px; align-items: baseline; flex-wrap: wrap; }
  header h1 { font-size: 16px; margin: 0; }
  header span { color: #9aa4ae; }
  main { display: flex; gap: 16px; padding: 16px; flex-wrap: wrap; align-items: flex-start; }
  figure { margin: 0; flex: 1 1 480px; max-width: 960px; }
  #stream { width: 100%; max-height: calc(100vh - 110px); object-fit: contain; object-position: left top;
            display: block; min-height: 120px; }
  figcaption { color: #9aa4ae; margin-top: 4px; display: flex; gap: 12px; }
  figcaption a { color: #8cc4ff; }
  table { border-collapse: collapse; min-width: 260px; }
  th { text-align: left; color: #9aa4ae; font-weight: normal; padding: 2px 12px 2px 0; }
  td { text-align: right; font-variant-numeric: tabular-nums; padding: 2px 0 2px 12px; }
  tr.big td { font-size: 22px; font-weight: 600; }
  h2 { font-size: 13px; color: #9aa4ae; margin: 14px 0 4px; font-weight: normal; text-transform: uppercase; }
  .ended { color: #ffb35c; }
</style>
</head>
<body data-stats-updates="0" data-frames-seen="0">
<header><h1>unet-trt-edge &middot; live</h1><span id="model">&ndash;</span><span id="source"></span></header>
<main>
  <figure>
    <img id="stream" src="stream.mjpg" alt="live overlay">
    <figcaption><span id="stream-status">waiting for frames</span>
      <a href="snapshot.jpg" target="_blank">snapshot</a><a href="stats.json" target="_blank">stats.json</a></figcaption>
  </figure>
  <section>
    <table>
      <tr class="big"><th>FPS</th><td id="fps">&ndash;</td></tr>
      <tr><th>latency p50 / p99</th><td id="latency">&ndash;</td></tr>
      <tr><th>frames in / out</th><td id="frames">&ndash;</td></tr>
      <tr><th>dropped</th><td id="dropped">&ndash;</td></tr>
      <tr id="iou-row" hidden><th>IoU frame / run</th><td id="iou">&ndash;</td></tr>
      <tr><th>viewers</th><td id="viewers">&ndash;</td></tr>
    </table>
    <h2>stage times, ms (p50 / p99)</h2>
    <table id="stages"></table>
  </section>
</main>
<script>
"use strict";
const $ = (id) => document.getElementById(id);
const fixed = (v, digits) => (v === null || v === undefined) ? "\\u2013" : Number(v).toFixed(digits);
const body = document.body;
let updates = 0, firstOut = null, ended = false;

function showStats(s) {
  updates += 1;
  if (firstOut === null) { firstOut = s.frames_out; body.dataset.framesOutFirst = firstOut; }
  body.dataset.statsUpdates = updates;
  body.dataset.framesOutLast = s.frames_out;
  $("model").textContent = s.model || [s.backend, s.precision].filter(Boolean).join(" ");
  $("source").textContent = s.source || "";
  $("fps").textContent = fixed(s.fps, 1);
  const lat = s.latency_ms || {};
  $("latency").textContent = fixed(lat.p50, 1) + " / " + fixed(lat.p99, 1) + " ms";
  $("frames").textContent = (s.frames_in ?? "\\u2013") + " / " + (s.frames_out ?? "\\u2013");
  $("dropped").textContent = s.dropped ?? "\\u2013";
  $("viewers").textContent = s.stream ? s.stream.viewers : "\\u2013";
  $("iou-row").hidden = (s.iou === null || s.iou === undefined);
  $("iou").textContent = fixed(s.frame_iou, 3) + " / " + fixed(s.iou, 3);
  const stages = Object.assign({}, s.stages_ms || {}, s.device_ms || {});
  $("stages").innerHTML = Object.entries(stages).map(([name, p]) =>
    "<tr><th>" + name + "</th><td>" + fixed(p.p50, 2) + " / " + fixed(p.p99, 2) + "</td></tr>").join("");
  if (s.running === false) { endRun("run ended"); }
}

function endRun(why) {
  ended = true;
  $("stream-status").textContent = why;
  $("stream-status").className = "ended";
}

async function poll() {
  try {
    const response = await fetch("stats.json", {cache: "no-store"});
    showStats(await response.json());
  } catch (err) {
    endRun("run ended (the server is gone)");
  }
  if (!ended) { setTimeout(poll, 500); }
}

// Watch the picture itself: a changed thumbnail means a new frame reached this browser.
const canvas = document.createElement("canvas");
canvas.width = 32; canvas.height = 24;
const context = canvas.getContext("2d", {willReadFrequently: true});
let seen = 0, lastSignature = null, lastChange = Date.now();
function watchStream() {
  const img = $("stream");
  if (ended || !img.complete || img.naturalWidth === 0) { return; }
  context.drawImage(img, 0, 0, canvas.width, canvas.height);
  const data = context.getImageData(0, 0, canvas.width, canvas.height).data;
  let signature = 0;
  for (let i = 0; i < data.length; i += 4) { signature = (signature * 31 + data[i] + 3 * data[i + 1] + 7 * data[i + 2]) >>> 0; }
  if (signature !== lastSignature) { seen += 1; lastSignature = signature; lastChange = Date.now(); }
  body.dataset.framesSeen = seen;
  const still = (Date.now() - lastChange) / 1000;
  $("stream-status").textContent = still > 3 ? "no new frame for " + still.toFixed(0) + " s"
    : "live, " + img.naturalWidth + "\\u00d7" + img.naturalHeight;
}
$("stream").addEventListener("error", () => { if (!ended) { setTimeout(() => { $("stream").src = "stream.mjpg?" + Date.now(); }, 2000); } });
setInterval(watchStream, 200);
poll();
</script>
</body>
</html>
"""
