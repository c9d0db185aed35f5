// The lllm run explorer: the cost charts (Chart.js, shipped in this folder) and opening folded long dialogs
// that a link points into. Nothing is fetched from elsewhere.
(function () {
  "use strict";
  function bar(id, labels, sets, options) {
    var el = document.getElementById(id);
    if (!el || typeof Chart === "undefined") { return; }
    el.chart = new Chart(el, {
      type: options && options.type || "bar",
      data: { labels: labels, datasets: sets },
      options: Object.assign({ animation: false, responsive: true, maintainAspectRatio: false,
        scales: { y: { beginAtZero: true, position: "left" }, y1: { beginAtZero: true, position: "right", grid: { drawOnChartArea: false } } } }, options && options.extra || {})
    });
    el.dataset.ready = "1";
  }
  function pick(rows, key) { return rows.map(function (r) { return r[key] || 0; }); }
  function tokens(rows) { return rows.map(function (r) { return (r.prompt_tokens || 0) + (r.completion_tokens || 0); }); }
  function draw() {
    var node = document.getElementById("cost-data");
    if (!node) { return; }
    var d = JSON.parse(node.textContent);
    var names = function (rows) { return rows.map(function (r) { return r.name || r.label; }); };
    bar("chart-time", d.time.map(function (r) { return r.label; }), [
      { label: "cost (USD)", data: pick(d.time, "cost"), yAxisID: "y", type: "line", borderColor: "#9b6ac7" },
      { label: "tokens", data: pick(d.time, "tokens"), yAxisID: "y1", backgroundColor: "#c9d6ee" }]);
    bar("chart-model", names(d.model), [
      { label: "cost (USD)", data: pick(d.model, "cost"), yAxisID: "y", backgroundColor: "#9b6ac7" },
      { label: "tokens", data: tokens(d.model), yAxisID: "y1", backgroundColor: "#c9d6ee" }]);
    bar("chart-agent", names(d.agent), [
      { label: "cost (USD)", data: pick(d.agent, "cost"), yAxisID: "y", backgroundColor: "#6a8cc7" },
      { label: "tokens", data: tokens(d.agent), yAxisID: "y1", backgroundColor: "#c9d6ee" }]);
    bar("chart-tag", names(d.tag), [
      { label: "cost (USD)", data: pick(d.tag, "cost"), yAxisID: "y", backgroundColor: "#3a9d5d" },
      { label: "tokens", data: pick(d.tag, "tokens"), yAxisID: "y1", backgroundColor: "#c9d6ee" }]);
    bar("chart-proxy", names(d.proxy), [
      { label: "calls", data: pick(d.proxy, "calls"), yAxisID: "y", backgroundColor: "#c76a8c" },
      { label: "errors", data: pick(d.proxy, "errors"), yAxisID: "y", backgroundColor: "#e8a0a0" }]);
  }
  // a link into a folded long dialog (the tree, the timeline) opens the fold first
  function reveal() {
    var target = location.hash && document.getElementById(decodeURIComponent(location.hash.slice(1)));
    for (var node = target; node; node = node.parentElement) { if (node.tagName === "DETAILS") { node.open = true; } }
    var fold = target && target.querySelector && target.querySelector(":scope > details.long");
    if (fold) { fold.open = true; }
  }
  window.addEventListener("hashchange", reveal);
  function ready() { draw(); reveal(); }
  if (document.readyState === "loading") { document.addEventListener("DOMContentLoaded", ready); } else { ready(); }
})();
