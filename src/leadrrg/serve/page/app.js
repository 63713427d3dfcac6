// leadrrg web page: upload one study (or click an example), show the report with its evidence, try what-ifs.
// Also renders a saved result embedded by `leadrrg explain` (window.LEADRRG_EMBEDDED = {result, images}).
"use strict";

const $ = (id) => document.getElementById(id);
let maxViews = 2;
let chosen = [];
// result: what is shown; baseline: the model's own result for the chosen images (no what-if);
// whatIf: expert name -> p the decoder reads instead; example: the example study clicked, if any.
const state = { result: null, baseline: null, whatIf: {}, example: null, embedded: false, request: 0 };
// A word's expert evidence counts as focused when its top share is this far from an even split (0..1)
const DIFFUSE = 0.15;

function plural(count, word) {
  return `${count} ${word}${count === 1 ? "" : "s"}`;
}

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
    const placeholder = (text) => el("div", { class: "placeholder" }, text);
    if (source.url) {
      const image = el("img", { src: source.url, alt: source.name });
      image.addEventListener("error", () => image.replaceWith(placeholder("no preview in the browser")));
      figure.append(image);
    } else {
      figure.append(placeholder("DICOM: no preview in the browser"));
    }
    figure.append(el("figcaption", {}, source.name));
    views.append(figure);
  }
}

function isImageFile(file) {
  return /^image\/(png|jpeg)$/.test(file.type) || /\.(png|jpe?g)$/i.test(file.name) || isDicomName(file.name);
}

function choose(files, example) {
  // Every chosen view is used or the choice is refused: the model reads at most maxViews (model.max_views).
  const list = Array.from(files);
  const bad = list.filter((file) => !isImageFile(file));
  Object.assign(state, { example: example || null, whatIf: {}, baseline: null });
  chosen = [];
  if (bad.length) {
    setStatus(`${bad.map((f) => f.name).join(", ")}: not a PNG, JPEG or DICOM file; nothing was sent`, true);
  } else if (list.length > maxViews) {
    setStatus(`${list.length} images chosen, but this model reads at most ${plural(maxViews, "view")} per study ` +
      `(model.max_views), so none is used: choose at most ${maxViews}, frontal first`, true);
  } else {
    chosen = list;
    setStatus(chosen.length ? `${plural(chosen.length, "image")} ready, all used` : "", false);
  }
  $("submit").disabled = chosen.length === 0;
  showViews(chosen.map((f) => ({ name: f.name, url: isDicomName(f.name) ? null : URL.createObjectURL(f) })));
}

function shade(value, max) {
  const strength = max > 0 ? Math.min(1, value / max) : 0;
  return `rgba(224, 123, 0, ${(0.08 + 0.8 * strength).toFixed(3)})`;
}

function barRow(label, value, kind, threshold, note, floor) {
  const row = el("div", { class: "bar-row" });
  const name = el("span", { class: "bar-label" }, label);
  if (note) name.append(el("small", { class: "attr" }, note));
  row.append(name);
  const track = el("div", { class: "bar-track" });
  const fill = el("div", { class: "bar-fill" + (kind ? " " + kind : "") });
  fill.style.width = `${Math.max(0, Math.min(1, value)) * 100}%`;
  track.append(fill);
  if (typeof threshold === "number" && typeof floor === "number" && floor < threshold) {
    // the uncertainty band: p between its floor and the threshold is read as "uncertain", and the report hedges
    const band = el("div", { class: "bar-band", title: `uncertainty band ${floor.toFixed(2)}\u2013${threshold.toFixed(2)}: hedged` });
    band.style.left = `${Math.max(0, floor) * 100}%`;
    band.style.width = `${Math.max(0, Math.min(1, threshold) - Math.max(0, floor)) * 100}%`;
    track.append(band);
    row.dataset.floor = String(floor);
  }
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

function focusOf(token, count) {
  // how far the top expert's share stands above an even split 1/K: 0 (even) .. 1 (one expert holds it all)
  if (!token.experts || !token.experts.length || count < 2) return 0;
  const even = 1 / count;
  return Math.max(0, Math.min(1, (token.experts[0][1] - even) / (1 - even)));
}

function showToken(token, index, evidence) {
  const detail = $("token-detail");
  detail.hidden = false;
  detail.textContent = "";
  document.querySelectorAll(".tok.selected").forEach((n) => n.classList.remove("selected"));
  const span = document.querySelector(`.tok[data-index="${index}"]`);
  if (span) span.classList.add("selected");
  const count = evidence.experts.length;
  const focus = focusOf(token, count);
  detail.append(el("h3", {}, `"${token.text.trim()}"  (token ${index + 1}), mean gate ${token.gate.toFixed(3)}`));
  const even = count ? (1 / count).toFixed(3) : "n/a";
  detail.append(el("p", { class: "legend" }, focus < DIFFUSE
    ? `No dominant expert: the shares are near an even split (1/${count} = ${even}), so this word's evidence ` +
      "says nothing about which finding it used."
    : `Expert focus ${focus.toFixed(2)} (top share against an even split of ${even}); shading = gate \u00d7 ` +
      `focus = ${(token.gate * focus).toFixed(3)}.`));
  const experts = el("div", { class: "token-experts" });
  experts.append(el("h4", {}, "Top experts (share of the injected context)"));
  for (const [name, weight] of token.experts) experts.append(barRow(name, weight));
  const gates = el("div", { class: "token-gates" });
  gates.append(el("h4", {}, "Gate per layer"));
  token.gates.forEach((g, layer) => gates.append(barRow(`layer ${layer}`, g, "gate")));
  detail.append(experts, gates);
}

function tokenSpan(token, index, evidence, maxScore) {
  const text = token.display !== undefined ? token.display : token.text;
  const focus = focusOf(token, evidence.experts.length);
  const score = token.gate * focus;
  const span = el("span", {
    class: "tok" + (focus < DIFFUSE ? " diffuse" : ""),
    "data-index": String(index),
    "data-gate": String(token.gate),
    "data-focus": focus.toFixed(3),
  }, text);
  if (focus >= DIFFUSE) span.style.background = shade(score, maxScore);
  span.title = `gate ${token.gate.toFixed(3)}, expert focus ${focus.toFixed(2)}` +
    (focus < DIFFUSE ? " (no dominant expert)" : "");
  if (text.trim()) {
    span.tabIndex = 0;
    span.setAttribute("role", "button");
    span.setAttribute("aria-label", `${text.trim()}: gate ${token.gate.toFixed(2)}, focus ${focus.toFixed(2)}`);
  }
  const open = () => showToken(token, index, evidence);
  span.addEventListener("click", open);
  span.addEventListener("keydown", (event) => {
    if (event.key === "Enter" || event.key === " ") { event.preventDefault(); open(); }
  });
  return span;
}

function render(result) {
  state.result = result;
  $("result").hidden = false;
  $("token-detail").hidden = true;
  const report = $("report");
  report.textContent = "";
  const evidence = result.evidence;
  const tokens = evidence && evidence.layers ? evidence.tokens : null;
  if (tokens) {
    const count = evidence.experts.length;
    const maxScore = Math.max(1e-9, ...tokens.map((t) => t.gate * focusOf(t, count)));
    $("focus-max").textContent = maxScore.toFixed(3);
    tokens.forEach((token, index) => report.append(tokenSpan(token, index, evidence, maxScore)));
  } else {
    report.textContent = reportText(result);
    $("focus-max").textContent = "n/a (no layer-wise evidence)";
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
  renderWhatIf(result);
  renderReference();
}

function reportText(result) {
  return result.report_display || result.report || "";
}

const CONTRADICTION_WORDS = {
  omitted: "above its threshold or in its uncertainty band, not stated in the report",
  overstated: "in its uncertainty band, stated in the report without a hedge",
  unsupported: "stated in the report, not above its threshold",
  side: "stated in the report on another side than its expert reads",
  severity: "stated in the report at another severity than its expert reads",
  conflicting: "stated in one sentence of the report and denied in another",
};

function renderExperts(result) {
  const experts = $("experts");
  experts.textContent = "";
  const thresholds = result.thresholds || {};
  const floors = result.hedge_floors || {};
  const flagged = {};
  for (const item of result.contradictions || []) flagged[item.expert] = item.kind;
  const attributes = result.expert_attributes || {};
  const probs = Object.entries(result.expert_probs || {}).sort((a, b) => b[1] - a[1]);
  for (const [name, p] of probs) {
    const threshold = thresholds[name];
    const attribute = attributes[name] || {};
    const note = [attribute.side, attribute.severity].filter(Boolean).join(", ");
    const row = barRow(name, p, null, threshold, note, floors[name]);
    row.classList.add("expert-bar");
    if (note) row.dataset.attributes = note;
    if (!state.embedded) row.append(whatIfMenu(name));
    if (name in state.whatIf) row.classList.add("overridden");
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
    const text = `${item.expert} (p ${item.p.toFixed(3)}, threshold ${item.threshold.toFixed(2)}: ${CONTRADICTION_WORDS[item.kind]}${item.stated_value ? `, stated ${item.stated_value}, expert reads ${item.expert_value}` : ""})`;
    summary.append(el("span", { class: "contradiction", "data-expert": item.expert }, text + (i < items.length - 1 ? "; " : ".")));
  });
}

function renderHeatmap(tokens, evidence) {
  const heatmap = $("heatmap");
  heatmap.textContent = "";
  if (!tokens || !tokens.length) {
    heatmap.append(el("p", {}, "no gates: this model does not inject layer-wise"));
    $("gate-max").textContent = "n/a";
    return;
  }
  let max = 1e-9;
  for (const t of tokens) for (const g of t.gates) max = Math.max(max, g);
  $("gate-max").textContent = max.toFixed(3);
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
  const whatIf = Object.keys(state.whatIf).length ? { ...state.whatIf } : null;
  if (whatIf) form.append("expert_probs", JSON.stringify(whatIf));
  const request = ++state.request;
  $("submit").disabled = true;
  document.body.dataset.state = "busy";
  setStatus(whatIf ? "writing the report with the what-if..." : "writing the report...", false);
  const started = performance.now();
  try {
    const response = await fetch("v1/reports", { method: "POST", body: form });
    const body = await response.json().catch(() => ({ error: `HTTP ${response.status}` }));
    if (request !== state.request) return;  // a later request replaced this one
    if (!response.ok) {
      setStatus(`error ${response.status}: ${body.error || "unknown"}`, true);
      document.body.dataset.state = "error";
      return;
    }
    if (!whatIf) state.baseline = body;
    render(body);
    if (body.previews) showViews(chosen.map((file, i) => ({ name: file.name, url: body.previews[i] })));
    const seconds = ((performance.now() - started) / 1000).toFixed(2);
    setStatus(`done in ${seconds} s; ${plural(body.views, "view")} read, all that were chosen`, false);
    document.body.dataset.state = "done";
  } catch (err) {
    setStatus(`the server could not be reached (${err})`, true);
  } finally {
    $("submit").disabled = chosen.length === 0;
  }
}

function setUp() {
  $("copy").addEventListener("click", copyReport);
  $("download-text").addEventListener("click", () => download(reportName("txt"), reportText(state.result) + "\n",
    "text/plain"));
  $("download-json").addEventListener("click", () => download(reportName("json"),
    JSON.stringify(state.result, null, 2) + "\n", "application/json"));
  const embedded = window.LEADRRG_EMBEDDED;
  if (embedded) {
    state.embedded = true;
    $("what-if-help").textContent = "What-if toggles need the live service (leadrrg serve).";
    $("upload").hidden = true;
    if (embedded.name) $("model-name").textContent = embedded.name;
    showViews(embedded.images || []);
    render(embedded.result);
    document.body.dataset.state = "done";
    return;
  }
  fetch("v1/model").then((r) => r.json()).then((info) => {
    maxViews = info.max_views || maxViews;
    $("max-views").textContent = plural(maxViews, "view");
    $("model-name").textContent = `${info.run} (${info.fusion}, ${info.experts.length} experts)`;
  }).catch(() => {});
  loadExamples();
  $("file").addEventListener("change", (event) => choose(event.target.files));
  $("submit").addEventListener("click", submit);
  const drop = $("drop");
  drop.addEventListener("keydown", (event) => {
    if (event.key === "Enter" || event.key === " ") { event.preventDefault(); $("file").click(); }
  });
  drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    choose(event.dataTransfer.files);
  });
}

setUp();
