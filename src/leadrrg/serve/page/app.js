// leadrrg web page: upload one study, show the report with its evidence. Plain JS, nothing from the network.
// Also renders a saved result embedded by `leadrrg explain` (window.LEADRRG_EMBEDDED = {result, images}).
"use strict";

const $ = (id) => document.getElementById(id);
let maxViews = 2;
let chosen = [];

function el(tag, attrs, text) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, value);
  if (text !== undefined) node.textContent = text;
  return node;
}

function setStatus(text, isError) {
  $("status").textContent = text;
  $("status").className = isError ? "error" : "";
}

function isDicomName(name) {
  return /\.(dcm|dicom|dic)$/i.test(name) || !/\.[a-z0-9]+$/i.test(name);
}

function showViews(sources) {
  // sources: [{name, url|null}]
  const views = $("views");
  views.textContent = "";
  for (const source of sources) {
    const figure = el("figure");
    if (source.url) {
      figure.append(el("img", { src: source.url, alt: source.name }));
    } else {
      figure.append(el("div", { class: "placeholder" }, "DICOM: no preview in the browser"));
    }
    figure.append(el("figcaption", {}, source.name));
    views.append(figure);
  }
}

function choose(files) {
  chosen = Array.from(files).slice(0, maxViews);
  if (files.length > maxViews) setStatus(`this model reads at most ${maxViews} view(s); using the first`, true);
  else setStatus(chosen.length ? `${chosen.length} image(s) ready` : "", false);
  $("submit").disabled = chosen.length === 0;
  showViews(chosen.map((f) => ({ name: f.name, url: isDicomName(f.name) ? null : URL.createObjectURL(f) })));
}

function shade(value, max) {
  const strength = max > 0 ? Math.min(1, value / max) : 0;
  return `rgba(224, 123, 0, ${(0.08 + 0.8 * strength).toFixed(3)})`;
}

function barRow(label, value, kind, threshold) {
  const row = el("div", { class: "bar-row" });
  row.append(el("span", { class: "bar-label" }, label));
  const track = el("div", { class: "bar-track" });
  const fill = el("div", { class: "bar-fill" + (kind ? " " + kind : "") });
  fill.style.width = `${Math.max(0, Math.min(1, value)) * 100}%`;
  track.append(fill);
  if (typeof threshold === "number") {
    // the expert's threshold: the decoder reads p above this mark as "present"
    const mark = el("div", { class: "bar-mark", title: `threshold ${threshold.toFixed(2)}` });
    mark.style.left = `${Math.max(0, Math.min(1, threshold)) * 100}%`;
    track.append(mark);
    row.dataset.threshold = String(threshold);
  }
  row.append(track, el("span", { class: "bar-value" }, value.toFixed(3)));
  return row;
}

function showToken(token, index, evidence) {
  const detail = $("token-detail");
  detail.hidden = false;
  detail.textContent = "";
  document.querySelectorAll(".tok.selected").forEach((n) => n.classList.remove("selected"));
  const span = document.querySelector(`.tok[data-index="${index}"]`);
  if (span) span.classList.add("selected");
  detail.append(el("h3", {}, `"${token.text.trim()}"  (token ${index + 1}), mean gate ${token.gate.toFixed(3)}`));
  const experts = el("div", { class: "token-experts" });
  experts.append(el("h4", {}, "Top experts (share of the injected context)"));
  for (const [name, weight] of token.experts) experts.append(barRow(name, weight));
  const gates = el("div", { class: "token-gates" });
  gates.append(el("h4", {}, "Gate per layer"));
  token.gates.forEach((g, layer) => gates.append(barRow(`layer ${layer}`, g, "gate")));
  detail.append(experts, gates);
}

function render(result) {
  $("result").hidden = false;
  const report = $("report");
  report.textContent = "";
  const evidence = result.evidence;
  const tokens = evidence && evidence.layers ? evidence.tokens : null;
  if (tokens) {
    const maxGate = Math.max(1e-9, ...tokens.map((t) => t.gate));
    $("gate-max").textContent = maxGate.toFixed(3);
    tokens.forEach((token, index) => {
      const span = el("span", { class: "tok", "data-index": String(index), "data-gate": String(token.gate) }, token.text);
      span.style.background = shade(token.gate, maxGate);
      span.title = `gate ${token.gate.toFixed(3)}`;
      span.addEventListener("click", () => showToken(token, index, evidence));
      report.append(span);
    });
  } else {
    report.textContent = result.report;
    $("gate-max").textContent = "n/a (no layer-wise evidence)";
  }
  const findings = $("findings");
  findings.textContent = "";
  const words = { 1: "present", 0: "absent", "-1": "uncertain" };
  for (const [name, value] of Object.entries(result.findings || {})) {
    if (value !== null) findings.append(el("li", {}, `${name}: ${words[value]}`));
  }
  if (!findings.children.length) findings.append(el("li", {}, "none stated"));
  renderExperts(result);
  renderHeatmap(tokens, evidence);
}

const CONTRADICTION_WORDS = {
  omitted: "above its threshold, not stated in the report",
  unsupported: "stated in the report, not above its threshold",
};

function renderExperts(result) {
  const experts = $("experts");
  experts.textContent = "";
  const thresholds = result.thresholds || {};
  const flagged = {};
  for (const item of result.contradictions || []) flagged[item.expert] = item.kind;
  const probs = Object.entries(result.expert_probs || {}).sort((a, b) => b[1] - a[1]);
  for (const [name, p] of probs) {
    const threshold = thresholds[name];
    const row = barRow(name, p, null, threshold);
    row.classList.add("expert-bar");
    row.title = `${name}: p ${p.toFixed(3)}` + (typeof threshold === "number" ? `, threshold ${threshold.toFixed(2)}` : "");
    if (flagged[name]) {
      row.classList.add("contradicted");
      row.dataset.contradiction = flagged[name];
      row.title += ` \u2014 the report contradicts this expert: ${CONTRADICTION_WORDS[flagged[name]]}`;
    }
    experts.append(row);
  }
  if (!probs.length) experts.append(el("p", {}, "this model has no experts"));
  const summary = $("contradictions");
  summary.textContent = "";
  const items = result.contradictions || [];
  if (!probs.length) return;
  if (!items.length) {
    summary.textContent = "The report agrees with every expert.";
    summary.className = "agrees";
    return;
  }
  summary.className = "disagrees";
  summary.append(el("span", {}, `The report contradicts ${items.length} expert(s): `));
  items.forEach((item, i) => {
    const text = `${item.expert} (p ${item.p.toFixed(3)}, threshold ${item.threshold.toFixed(2)}: ${CONTRADICTION_WORDS[item.kind]})`;
    summary.append(el("span", { class: "contradiction", "data-expert": item.expert }, text + (i < items.length - 1 ? "; " : ".")));
  });
}

function renderHeatmap(tokens, evidence) {
  const heatmap = $("heatmap");
  heatmap.textContent = "";
  if (!tokens || !tokens.length) {
    heatmap.append(el("p", {}, "no gates: this model does not inject layer-wise"));
    return;
  }
  let max = 1e-9;
  for (const t of tokens) for (const g of t.gates) max = Math.max(max, g);
  const table = el("table", { id: "heatmap-table" });
  const head = el("tr");
  head.append(el("th", {}, "token \\ layer"));
  for (let layer = 0; layer < evidence.layers; layer++) head.append(el("th", {}, String(layer)));
  table.append(head);
  tokens.forEach((token, index) => {
    const row = el("tr");
    const label = el("th", {}, token.text.trim() || "\u2423");
    label.addEventListener("click", () => showToken(token, index, evidence));
    row.append(label);
    token.gates.forEach((g, layer) => {
      const cell = el("td", { class: "cell", title: `"${token.text.trim()}" layer ${layer}: gate ${g.toFixed(3)}` });
      cell.style.background = shade(g, max);
      row.append(cell);
    });
    table.append(row);
  });
  heatmap.append(table);
}

async function submit() {
  if (!chosen.length) return;
  const form = new FormData();
  for (const file of chosen) form.append("images", file, file.name);
  form.append("evidence", "true");
  const dicom = chosen.some((file) => isDicomName(file.name));
  if (dicom) form.append("preview", "true");
  $("submit").disabled = true;
  setStatus("writing the report...", false);
  const started = performance.now();
  try {
    const response = await fetch("v1/reports", { method: "POST", body: form });
    const body = await response.json().catch(() => ({ error: `HTTP ${response.status}` }));
    if (!response.ok) {
      setStatus(`error ${response.status}: ${body.error || "unknown"}`, true);
      return;
    }
    render(body);
    if (body.previews) showViews(chosen.map((file, i) => ({ name: file.name, url: body.previews[i] })));
    setStatus(`done in ${((performance.now() - started) / 1000).toFixed(2)} s`, false);
    document.body.dataset.state = "done";
  } catch (err) {
    setStatus(`the server could not be reached (${err})`, true);
  } finally {
    $("submit").disabled = chosen.length === 0;
  }
}

function setUp() {
  const embedded = window.LEADRRG_EMBEDDED;
  if (embedded) {
    $("upload").hidden = true;
    if (embedded.name) $("model-name").textContent = embedded.name;
    showViews(embedded.images || []);
    render(embedded.result);
    document.body.dataset.state = "done";
    return;
  }
  fetch("v1/model").then((r) => r.json()).then((info) => {
    maxViews = info.max_views || maxViews;
    $("max-views").textContent = String(maxViews);
    $("model-name").textContent = `${info.run} (${info.fusion}, ${info.experts.length} experts)`;
  }).catch(() => {});
  $("file").addEventListener("change", (event) => choose(event.target.files));
  $("submit").addEventListener("click", submit);
  const drop = $("drop");
  drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    choose(event.dataTransfer.files);
  });
}

setUp();
