// leadrrg web page, its tools: what-if menus, the reference of an example study, copy and download, the example
// studies. Loaded before app.js, whose helpers ($, el, state, submit, choose, ...) these call. Nothing from the
// network but this service.
"use strict";

function whatIfMenu(name) {
  // present / absent / the model's own p: the report is written again with the chosen p
  const own = state.baseline ? state.baseline.expert_probs[name] : state.result.expert_probs[name];
  const menu = el("select", { class: "what-if", "aria-label": `what-if for ${name}`, "data-expert": name });
  const options = [["", `model p ${own.toFixed(2)}`], ["1", "what if present (p = 1)"], ["0", "what if absent (p = 0)"]];
  for (const [value, label] of options) menu.append(el("option", { value }, label));
  menu.value = name in state.whatIf ? String(state.whatIf[name]) : "";
  menu.addEventListener("change", () => {
    if (menu.value === "") delete state.whatIf[name];
    else state.whatIf[name] = Number(menu.value);
    submit();
  });
  return menu;
}

function renderWhatIf(result) {
  const note = $("what-if-note");
  const baseline = $("baseline");
  const names = Object.keys(result.what_if || {});
  note.hidden = baseline.hidden = names.length === 0;
  note.textContent = baseline.textContent = "";
  if (!names.length) return;
  const said = names.map((n) => `${n} ${result.what_if[n] >= 0.5 ? "present" : "absent"} (p = ${result.what_if[n]})`);
  note.append(el("b", {}, "What-if: "), `${said.join(", ")}. The report was written again with these p; ` +
    "the other experts keep the model's own. ");
  const reset = el("button", { type: "button", id: "what-if-reset" }, "Back to the model's p");
  reset.addEventListener("click", () => { state.whatIf = {}; submit(); });
  note.append(reset);
  if (state.baseline) {
    baseline.append(el("h3", {}, "Without the what-if, the model wrote"), el("p", {}, reportText(state.baseline)));
  }
}

function renderReference() {
  const box = $("reference");
  const example = state.example;
  box.hidden = !example;
  box.textContent = "";
  if (!example) return;
  box.append(el("h3", {}, `Reference (SynthCXR ${example.study}): what the image shows`));
  box.append(el("p", {}, `Findings: ${example.truth.join("; ")}.`), el("p", {}, example.reference));
}

function reportName(suffix) {
  const base = chosen.length ? chosen[0].name.replace(/\.[^.]+$/, "") : "report";
  return `${base}${Object.keys(state.whatIf).length ? "_what-if" : ""}.${suffix}`;
}

function download(name, text, type) {
  const url = URL.createObjectURL(new Blob([text], { type }));
  const link = el("a", { href: url, download: name });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}

async function copyReport() {
  const text = reportText(state.result);
  try {
    await navigator.clipboard.writeText(text);
  } catch (err) {  // no clipboard API (an offline file in some browsers): the selection way
    const area = el("textarea", { "aria-hidden": "true" });
    area.value = text;
    document.body.append(area);
    area.select();
    document.execCommand("copy");
    area.remove();
  }
  setStatus("report copied", false);
}

async function runExample(item) {
  setStatus(`loading the example ${item.file}...`, false);
  const response = await fetch(`examples/${item.file}`);
  if (!response.ok) return setStatus(`error ${response.status}: example ${item.file}`, true);
  choose([new File([await response.blob()], item.file, { type: "image/png" })], item);
  return submit();
}

function loadExamples() {
  fetch("examples/index.json").then((r) => r.json()).then((index) => {
    const list = $("example-list");
    for (const item of index.examples) {
      const button = el("button", { type: "button", class: "example", "data-file": item.file,
        title: `${item.study}: ${item.truth.join("; ")}` });
      button.append(el("img", { src: `examples/${item.file}`, alt: "" }), el("span", {}, item.title));
      button.addEventListener("click", () => runExample(item));
      list.append(button);
    }
    $("examples").hidden = !index.examples.length;
  }).catch(() => {});
}
