// The dose calculator's page. Everything it shows comes from the API's JSON
// (/api/models, /api/dose/report, /api/<question>); it computes nothing of its own
// beyond formatting. Each number shown carries its JSON path and raw value in
// data-key / data-value, so tests can compare the page with the API.
"use strict";

const state = { models: [], model: null, base: {}, lastRequest: null, lastAnswer: null, questions: [] };

const $ = (sel, root = document) => root.querySelector(sel);
const el = (tag, attrs = {}, ...children) => {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined) continue;
    if (k === "class") e.className = v;
    else if (k === "text") e.textContent = v;
    else e.setAttribute(k, v);
  }
  for (const c of children) if (c !== null && c !== undefined) e.append(c);
  return e;
};

// ------------------------------------------------------------------ numbers
function fmt(x, sig = 4) {
  if (x === null || x === undefined || typeof x !== "number" || !isFinite(x)) return "—";
  if (Number.isInteger(x) && Math.abs(x) < 1e6) return String(x);
  return String(Number(x.toPrecision(sig)));
}
function num(x, key, sig = 4, unit = "") {
  const s = el("span", { class: "num", "data-key": key, "data-value": x === null || x === undefined ? "" : String(x),
    text: fmt(x, sig) });
  return unit ? el("span", {}, s, " " + unit) : s;
}

// ------------------------------------------------------------------ models
async function loadModels() {
  const r = await fetch("/api/models");
  const data = await r.json();
  state.models = data.models;
  const sel = $("#model");
  sel.innerHTML = "";
  for (const m of state.models) sel.append(el("option", { value: m.name, text: `${m.name} (${m.drug || ""})` }));
  const vanc = state.models.find((m) => m.name === "vancomycin_goti2018");
  sel.value = (vanc || state.models[0]).name;
  selectModel(sel.value);
  const q = await fetch("/api/questions");
  if (q.ok) state.questions = (await q.json()).questions || [];
  renderQuestions();
}

function unitOf(text) {
  // "kg (total body weight)" -> "kg"; "1 = male, 0 = female" is a coding, not a unit.
  if (!text || /=/.test(text)) return "";
  return String(text).split(/[\s(]/)[0];
}

function selectModel(name) {
  const m = state.models.find((x) => x.name === name);
  state.model = m;
  if ($("#averaging")) renderAverage();
  const info = $("#model-info");
  info.innerHTML = "";
  if (!m) return;
  info.append(el("p", { class: "citation", text: m.citation || "" }));
  if (m.doi) info.append(el("p", { class: "doi", text: "doi:" + m.doi }));
  if (m.population) info.append(el("p", { class: "population" }, el("b", { text: "Population: " }), m.population));
  if (m.structure) info.append(el("p", { text: m.structure }));
  const u = m.units || {};
  info.append(el("p", { class: "units", text: "Units: " + Object.entries(u).map(([k, v]) => `${k} ${v}`).join("; ") }));
  const t = el("table", { class: "ranges" }, el("tr", {}, el("th", { text: "covariate" }), el("th", { text: "unit" }),
    el("th", { text: "validated range" })));
  const ranges = Object.assign({}, m.covariate_ranges || {}, m.derived_covariate_ranges || {});
  const names = [...(m.covariates || [])];
  for (const k of Object.keys(ranges)) if (!names.includes(k)) names.push(k);
  for (const k of names) {
    const r = ranges[k];
    t.append(el("tr", { "data-covariate": k }, el("td", { text: k }), el("td", { text: (m.covariate_units || {})[k] || "" }),
      el("td", { text: r ? `${r[0]} to ${r[1]}` : "not stated" })));
  }
  info.append(t);
  const dl = $("#target-list");
  dl.innerHTML = "";
  const targets = m.targets || {};
  for (const [kind, spec] of Object.entries(targets)) {
    if (spec && spec.range) dl.append(el("option", { value: `${kind}=${spec.range[0]}:${spec.range[1]}` }));
  }
  const first = Object.entries(targets).find(([, s]) => s && s.range);
  $("#target").placeholder = first ? `${first[0]}=${first[1].range[0]}:${first[1].range[1]} (the model's)` : "e.g. trough=10:20";
  if (m.targets && Object.keys(m.targets).length)
    info.append(el("p", { class: "targets", text: "Targets: " + Object.entries(m.targets).map(([k, s]) =>
      `${k} ${s.range ? s.range.join("–") : ""} ${s.unit || ""}`).join("; ") }));
  // Covariate rows for this model, keeping values already entered under the same name.
  const old = readCovariateRows();
  const body = $("#covariates tbody");
  body.innerHTML = "";
  for (const k of m.covariates || []) {
    const rows = old.filter((r) => r.name === k);
    if (rows.length) rows.forEach((r) => addCovariateRow(k, r));
    else addCovariateRow(k, { unit: unitOf((m.covariate_units || {})[k]) });
  }
}

// ------------------------------------------------------------------ patient form
function input(name, value, attrs = {}) {
  return el("input", Object.assign({ name, value: value === undefined || value === null ? "" : String(value) }, attrs));
}
function removeButton(row) {
  const b = el("button", { type: "button", class: "remove", title: "remove this row", text: "×" });
  b.addEventListener("click", () => row.remove());
  return b;
}
function whenOf(obj) {
  if (!obj) return "";
  if (obj.datetime !== undefined) return obj.datetime;
  if (obj.time !== undefined) return obj.time;
  return "";
}
function setWhen(obj, text) {
  delete obj.datetime; delete obj.time;
  const s = String(text).trim();
  if (s === "") return;
  if (/^-?\d+(\.\d+)?$/.test(s)) obj.time = Number(s); else obj.datetime = s;
}
function value(text) {
  const s = String(text).trim();
  if (s === "") return undefined;
  const n = Number(s);
  return isFinite(n) && /^[-+0-9.eE]+$/.test(s) ? n : s;   // "male" stays a label; "1e9" a number
}

function addCovariateRow(name, r = {}) {
  const row = el("tr", { "data-name": name });
  const add = el("button", { type: "button", title: "another value at another time", text: "+" });
  add.addEventListener("click", () => {
    const next = addCovariateRow(name, { unit: $("[name=unit]", row).value });
    row.after(next);
  });
  row.append(el("td", { class: "name", text: name }), el("td", {}, input("when", r.when, { placeholder: "(always)" })),
    el("td", {}, input("value", r.value, { "data-covariate": name })), el("td", {}, input("unit", r.unit, { size: 7 })),
    el("td", {}, add, removeButton(row)));
  $("#covariates tbody").append(row);
  return row;
}
function readCovariateRows() {
  return [...document.querySelectorAll("#covariates tbody tr")].map((tr) => ({
    name: tr.dataset.name, when: $("[name=when]", tr).value, value: $("[name=value]", tr).value,
    unit: $("[name=unit]", tr).value }));
}

const DOSE_COLS = [["when", 16], ["amount", 7], ["unit", 5], ["route", 0], ["duration", 5], ["interval", 5], ["count", 4]];
function addDoseRow(d = {}) {
  const row = el("tr");
  row._base = Object.assign({}, d);
  for (const [c, size] of DOSE_COLS) {
    if (c === "route") {
      const s = el("select", { name: "route" }, el("option", { value: "iv", text: "iv" }), el("option", { value: "oral", text: "oral" }));
      s.value = d.route || "iv";
      row.append(el("td", {}, s));
    } else row.append(el("td", {}, input(c, c === "when" ? whenOf(d) : d[c], { size })));
  }
  row.append(el("td", {}, removeButton(row)));
  $("#doses tbody").append(row);
  return row;
}
const LEVEL_COLS = [["when", 16], ["value", 7], ["unit", 6], ["lloq", 5]];
function addLevelRow(l = {}) {
  const row = el("tr");
  row._base = Object.assign({}, l);
  for (const [c, size] of LEVEL_COLS) row.append(el("td", {}, input(c, c === "when" ? whenOf(l) : l[c], { size })));
  row.append(el("td", {}, removeButton(row)));
  $("#levels tbody").append(row);
  return row;
}

function formToPatient() {
  const p = Object.assign({}, state.base);
  p.id = $("#patient-id").value.trim() || "patient";
  const cov = {};
  const groups = {};
  for (const r of readCovariateRows()) (groups[r.name] = groups[r.name] || []).push(r);
  for (const [name, rows] of Object.entries(groups)) {
    const filled = rows.filter((r) => r.value.trim() !== "");
    if (!filled.length) continue;          // missing: the server names it with its unit
    const unit = filled[0].unit.trim();
    if (filled.length === 1 && filled[0].when.trim() === "") {
      const v = value(filled[0].value);
      cov[name] = unit ? { value: v, unit } : v;
    } else {
      const values = filled.map((r) => { const o = { value: value(r.value) }; setWhen(o, r.when); return o; });
      cov[name] = unit ? { unit, values } : { values };
    }
  }
  p.covariates = cov;
  p.doses = [...document.querySelectorAll("#doses tbody tr")].map((tr) => {
    const d = Object.assign({}, tr._base);
    for (const [c] of DOSE_COLS) {
      const v = $(`[name=${c}]`, tr).value;
      if (c === "when") setWhen(d, v);
      else if (v.trim() === "") delete d[c];
      else d[c] = c === "unit" || c === "route" ? v.trim() : value(v);
    }
    return d;
  });
  p.levels = [...document.querySelectorAll("#levels tbody tr")].map((tr) => {
    const l = Object.assign({}, tr._base);
    for (const [c] of LEVEL_COLS) {
      const v = $(`[name=${c}]`, tr).value;
      if (c === "when") setWhen(l, v);
      else if (v.trim() === "") delete l[c];
      else l[c] = c === "unit" ? v.trim() : value(v);
    }
    return l;
  });
  return p;
}

function patientToForm(p) {
  if (!p || typeof p !== "object" || Array.isArray(p)) throw new Error("the patient JSON must be an object");
  const { id, covariates, doses, levels, ...rest } = p;
  state.base = rest;
  $("#patient-id").value = id || "patient";
  $("#covariates tbody").innerHTML = "";
  const names = [...((state.model && state.model.covariates) || [])];
  for (const k of Object.keys(covariates || {})) if (!names.includes(k)) names.push(k);
  for (const k of names) {
    const c = (covariates || {})[k];
    if (c === undefined) addCovariateRow(k, { unit: unitOf(((state.model || {}).covariate_units || {})[k]) });
    else if (c !== null && typeof c === "object" && Array.isArray(c.values))
      c.values.forEach((v) => addCovariateRow(k, { when: whenOf(v), value: v.value, unit: c.unit || "" }));
    else if (c !== null && typeof c === "object") addCovariateRow(k, { value: c.value, unit: c.unit || "" });
    else addCovariateRow(k, { value: c });
  }
  $("#doses tbody").innerHTML = "";
  (doses || []).forEach((d) => addDoseRow(d));
  $("#levels tbody").innerHTML = "";
  (levels || []).forEach((l) => addLevelRow(l));
}

// ------------------------------------------------------------------ request
function listOrRaw(text) {
  const items = text.split(",").map((s) => s.trim()).filter((s) => s !== "");
  return items.map((s) => (isFinite(Number(s)) ? Number(s) : s));   // a typo reaches the server, which names it
}
function buildRequest() {
  const req = { model: $("#model").value, patient: formToPatient(), curve: true };
  const target = $("#target").value.trim();
  if (target) req.target = target;
  for (const k of ["interval", "infusion"]) {
    const v = $(`#opt-${k}`).value.trim();
    if (v) req[k] = listOrRaw(v);
  }
  for (const k of ["dose_unit", "dose_min", "dose_max", "max_daily_dose", "max_rate", "start", "threshold", "samples"]) {
    const e = $(`#opt-${k}`);
    const v = e.value.trim();
    if (v === "") {
      if (e.validity && e.validity.badInput) req[k] = "not a number";
      continue;
    }
    req[k] = isFinite(Number(v)) ? Number(v) : v;
  }
  const route = $("#opt-route").value;
  if (route) req.route = route;
  if ($("#opt-loading").checked) req.loading = true;
  for (const e of document.querySelectorAll("#question-extra [data-field]")) {
    const v = e.value.trim();
    if (v !== "") req[e.dataset.field] = isFinite(Number(v)) ? Number(v) : v;
  }
  return req;
}

// An input named by a warning (patient.levels[1], doses[0].datetime, covariates.WT):
// its row in the form is marked, the message as its tooltip.
function markInput(field, text) {
  const f = String(field || "").replace(/^patient\./, "");
  let target = null;
  const m = /^(doses|levels)\[(\d+)\]/.exec(f);
  if (m) target = document.querySelectorAll(`#${m[1]} tbody tr`)[Number(m[2])];
  else if (f.startsWith("covariates.")) target = document.querySelector(`#covariates tr[data-name="${f.split(".")[1]}"]`);
  else if (f) target = document.querySelector(`#options-box [data-field="${f.split("[")[0]}"]`);
  if (target) { target.classList.add("field-warning"); target.title = text; }
}

function clearError() {
  $("#error").hidden = true;
  for (const e of document.querySelectorAll(".field-error")) e.classList.remove("field-error");
}
function showError(field, message) {
  const box = $("#error");
  box.innerHTML = "";
  box.append(el("b", { text: field ? `${field}: ` : "Error: " }), message);
  box.dataset.field = field || "";
  box.hidden = false;
  // Mark what the field names: an option, or a row of the patient's tables.
  if (!field) return;
  const m = /^patient\.(doses|levels)\[(\d+)\]/.exec(field);
  let target = null;
  if (m) target = document.querySelectorAll(`#${m[1]} tbody tr`)[Number(m[2])];
  else if (field.startsWith("patient.covariates.")) {
    const name = field.split(".")[2];
    target = document.querySelector(`#covariates tr[data-name="${name}"]`);
  } else target = document.querySelector(`[data-field="${field.split("[")[0]}"]`);
  if (target) target.classList.add("field-error");
}

async function post(path, body) {
  let r;
  try {
    r = await fetch(path, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
  } catch (e) {
    return { error: { field: null, message: "the server cannot be reached: " + e } };
  }
  let data;
  try { data = await r.json(); } catch (e) { data = { error: { field: null, message: `HTTP ${r.status}` } }; }
  if (!r.ok && !data.error) data = { error: { field: null, message: `HTTP ${r.status}` } };
  return data;
}

async function recommend() {
  clearError();
  let req;
  try { req = buildRequest(); } catch (e) { showError("patient", String(e.message || e)); return; }
  $("#busy").hidden = false;
  $("#recommend").disabled = true;
  const data = await post("/api/dose/report", req);
  $("#busy").hidden = true;
  $("#recommend").disabled = false;
  if (data.error) {
    // No answer on the page that is not the answer to what the form now says.
    $("#answer").hidden = true; $("#empty").hidden = false; $("#print").disabled = true;
    showError(data.error.field, data.error.message);
    return;
  }
  state.lastRequest = req;
  state.lastAnswer = data.answer;
  render(data, req);
}

// ------------------------------------------------------------------ rendering
function warningText(w) {
  if (typeof w === "string") return w;
  if (w && typeof w === "object") {
    const field = w.field || w.concerns || "", message = w.message || w.text || "";
    if (!message) return field || JSON.stringify(w);
    return field && !message.startsWith(field) ? `${field}: ${message}` : message;
  }
  return String(w);
}
function warningList(items, cls = "") {
  const ul = el("ul", { class: "warnings-list " + cls });
  for (const w of items) ul.append(el("li", { class: "warning", text: "⚠ " + warningText(w) }));
  return items.length ? ul : null;
}

function kv(rows) {
  const t = el("table", { class: "kv" });
  for (const [label, node] of rows) t.append(el("tr", {}, el("th", { text: label }), el("td", {}, node)));
  return t;
}

function render(data, req) {
  const a = data.answer, m = a.map, r = a.recommendation, u = r.units || {};
  $("#empty").hidden = true;
  $("#answer").hidden = false;
  $("#print").disabled = false;
  const aucUnit = u.auc || "", concUnit = u.conc || "", doseUnit = u.dose || "";
  const targetUnit = (r.target.kind || "").startsWith("auc") ? aucUnit : (r.target.kind === "ft_mic" ? "%" : concUnit);

  // Print header: who, which model, when.
  const model = state.model || {};
  $("#print-head").innerHTML = "";
  $("#print-head").append(el("h2", { text: `Dose recommendation: patient ${m.patient}` }),
    el("p", { text: `Model ${m.model}: ${model.citation || ""}` }),
    el("p", { text: `Printed ${new Date().toISOString().slice(0, 16).replace("T", " ")} UTC by pkmix. ` +
      "A decision aid: check against the clinical picture." }));

  // Warnings. The answer's list (`warnings`: code, message, field, level) goes next to
  // what each concerns: a level's beside that level, a covariate's and the fit's beside
  // the estimates, the target's and the limits' beside the recommendation; the inputs
  // they name are marked in the form. The MAP's and the recommendation's own lists are
  // shown where they belong, each message once.
  for (const e of document.querySelectorAll(".field-warning")) { e.classList.remove("field-warning"); e.removeAttribute("title"); }
  const general = [], byLevel = {}, recExtra = [], mapExtra = [];
  const seen = new Set();
  for (const w of a.warnings || []) {
    const text = warningText(w);
    seen.add(typeof w === "object" && w ? (w.message || text) : text);
    const field = (w && typeof w === "object" && (w.field || w.concerns)) || "";
    const lvIndex = w && typeof w === "object" && Number.isInteger(w.level) ? w.level
      : ((/^levels\[(\d+)\]/.exec(field) || [])[1] !== undefined ? Number(/^levels\[(\d+)\]/.exec(field)[1]) : null);
    markInput(field, text);
    if (lvIndex !== null) (byLevel[lvIndex] = byLevel[lvIndex] || []).push(w);
    else if (/^(target|dose_|max_|limits|interval|infusion|route|start|threshold)/.test(field)) recExtra.push(w);
    else if (/^(covariates|levels)/.test(field)) mapExtra.push(w);
    else general.push(w);
  }
  const mapW = (m.warnings || []).filter((w) => !seen.has(w));
  mapW.forEach((w) => seen.add(w));
  const recW = (r.warnings || []).filter((w) => !seen.has(w));
  const wg = $("#warnings-general"); wg.innerHTML = "";
  const gl = warningList(general, "general"); if (gl) wg.append(gl);

  // Recommendation.
  const rec = r.recommendation, box = $("#recommendation");
  box.innerHTML = "";
  if (!r.reachable) box.append(el("p", { class: "alert not-reachable", text: "Target not reachable within the limits: " + r.message }));
  box.append(el("p", { class: "regimen-text", "data-key": "recommendation.recommendation.text", text: rec.text }));
  const rows = [
    ["Dose", num(rec.dose, "recommendation.recommendation.dose", 6, doseUnit)],
    ["Every", num(rec.interval, "recommendation.recommendation.interval", 4, "h")],
    ["Infusion", rec.route === "oral" ? el("span", { text: "oral" }) : num(rec.infusion_duration, "recommendation.recommendation.infusion_duration", 4, "h")],
    ["Start at", num(rec.start_time, "recommendation.recommendation.start_time", 5, "h")],
  ];
  if (rec.loading_dose) rows.push(["Loading dose", el("span", {}, num(rec.loading_dose, "recommendation.recommendation.loading_dose", 6, doseUnit),
    " over ", num(rec.loading_infusion_duration, "recommendation.recommendation.loading_infusion_duration", 4, "h"))]);
  if (r.loading) rows.push(["Loading", el("span", { text: r.loading.message || "" })]);
  rows.push(["Target", el("span", { text: `${r.target.kind} ${r.target.low ?? ""}${r.target.high !== undefined ? "–" + r.target.high : ""} ${targetUnit}` })]);
  rows.push(["Probability of target attainment", num(r.probability_of_target_attainment, "recommendation.probability_of_target_attainment", 3)]);
  rows.push(["Predicted trough", num(r.predicted.trough, "recommendation.predicted.trough", 3, concUnit)]);
  rows.push(["Predicted peak", num(r.predicted.peak, "recommendation.predicted.peak", 3, concUnit)]);
  rows.push(["Predicted AUC24", num(r.predicted.auc24, "recommendation.predicted.auc24", 4, aucUnit)]);
  rows.push(["Predicted target metric", num(r.predicted.target, "recommendation.predicted.target", 4, targetUnit)]);
  // The unrounded dose only where it is itself within the limits: a number above a
  // stated maximum is never shown as a dose (an unreachable target is said in words).
  const lim = a.limits || r.limits || {};
  const within = (d, tau) => typeof d === "number" && (lim.dose_max == null || d <= lim.dose_max)
    && (lim.max_daily_dose == null || d * 24 / tau <= lim.max_daily_dose);
  if (r.reachable && within(r.dose_unrounded, rec.interval))
    rows.push(["Unrounded dose", el("span", {}, num(r.dose_unrounded, "recommendation.dose_unrounded", 5, doseUnit), " gives ",
      num(r.exposure_unrounded, "recommendation.exposure_unrounded", 4, targetUnit))]);
  if (r.next_dose) rows.push(["Level below threshold", el("span", { text: r.next_dose.status === "found"
    ? `${fmt(r.next_dose.threshold)} ${concUnit} at ${fmt(r.next_dose.time)} h${r.next_dose.datetime ? " (" + r.next_dose.datetime + ")" : ""}`
    : `${fmt(r.next_dose.threshold)} ${concUnit}: ${r.next_dose.status}` })]);
  rows.push(["Posterior", el("span", { text: `${(r.posterior || {}).method || ""}, ${fmt((r.posterior || {}).n)} draws` })]);
  box.append(kv(rows));
  if (r.message && r.reachable) box.append(el("p", { class: "note", text: "Note: " + r.message }));
  const limits = a.limits || r.limits;
  if (limits && typeof limits === "object" && Object.keys(limits).length) {
    box.append(el("div", { class: "limits" }, el("h3", { text: "Hard limits respected" }), tree(limits, "limits")));
  }
  const wr = $("#warnings-recommendation"); wr.innerHTML = "";
  const rl = warningList(recW.concat(recExtra), "recommendation"); if (rl) wr.append(rl);

  // Plot.
  $("#plot").innerHTML = data.svg;

  // Current regimen.
  const cur = $("#current"); cur.innerHTML = "";
  const c = r.current_regimen;
  if (c) cur.append(kv([
    ["Regimen", el("span", { text: c.regimen })],
    ["Trough (steady state)", num(c.trough, "recommendation.current_regimen.trough", 3, concUnit)],
    ["Peak (steady state)", num(c.peak, "recommendation.current_regimen.peak", 3, concUnit)],
    ["AUC24 (steady state)", num(c.auc24, "recommendation.current_regimen.auc24", 4, aucUnit)],
    ["Probability of target attainment", num(c.pta, "recommendation.current_regimen.pta", 3)],
  ]));
  else cur.append(el("p", { class: "hint", text: "No repeated regimen in the history." }));

  // MAP.
  const mp = $("#map"); mp.innerHTML = "";
  const t = el("table", { class: "grid" }, el("tr", {}, ...["parameter", "typical", "individual", "SE", "95% CI"].map((h) => el("th", { text: h }))));
  for (const [k, p] of Object.entries(m.parameters)) {
    t.append(el("tr", { "data-parameter": k }, el("td", { text: k }), el("td", {}, num(p.typical, `map.parameters.${k}.typical`)),
      el("td", {}, num(p.individual, `map.parameters.${k}.individual`)), el("td", {}, num(p.se, `map.parameters.${k}.se`, 3)),
      el("td", {}, num(p.ci95[0], `map.parameters.${k}.ci95.0`), " to ", num(p.ci95[1], `map.parameters.${k}.ci95.1`))));
  }
  mp.append(t);
  const names = m.eta_covariance.names, cov = m.eta_covariance.matrix;
  const te = el("table", { class: "grid" }, el("tr", {}, ...["eta", "value", "posterior SD"].map((h) => el("th", { text: h }))));
  names.forEach((n, i) => te.append(el("tr", {}, el("td", { text: n }), el("td", {}, num(m.eta[n], `map.eta.${n}`)),
    el("td", {}, num(cov[i][i] >= 0 ? Math.sqrt(cov[i][i]) : null, `map.eta_sd.${n}`, 3)))));
  mp.append(te);
  mp.append(el("p", { class: "hint", text: `objective ${fmt(m.objective)}; ${m.converged ? "converged" : "NOT converged"} in ${m.iterations} iterations; covariate rule ${m.covariate_rule}` }));
  const wm = $("#warnings-map"); wm.innerHTML = "";
  const ml = warningList(mapExtra.concat(mapW), "map"); if (ml) wm.append(ml);

  // Levels and their fit, with any warning about a level beside it.
  const ob = $("#observations"); ob.innerHTML = "";
  const to = el("table", { class: "grid" }, el("tr", {}, ...["#", "time (h)", "level", "IPRED", "PRED", "IWRES", ""].map((h) => el("th", { text: h }))));
  (m.observations || []).forEach((o, i) => {
    const w = byLevel[i] || [];
    to.append(el("tr", { "data-level": i, class: w.length ? "flagged" : "" }, el("td", { text: String(i + 1) }),
      el("td", {}, num(o.TIME, `map.observations.${i}.TIME`)),
      el("td", {}, o.BLQ ? el("span", { text: `< ${fmt(o.LLOQ)} (BLQ)` }) : num(o.DV, `map.observations.${i}.DV`, 4, concUnit)),
      el("td", {}, num(o.IPRED, `map.observations.${i}.IPRED`)), el("td", {}, num(o.PRED, `map.observations.${i}.PRED`)),
      el("td", {}, num(o.IWRES, `map.observations.${i}.IWRES`, 3)),
      el("td", { class: "level-warnings" }, warningList(w, "level"))));
  });
  ob.append(m.observations && m.observations.length ? to : el("p", { class: "hint", text: "No levels: a priori estimates." }));


  // Alternatives.
  const al = $("#alternatives"); al.innerHTML = "";
  const cols = ["interval", "dose", "infusion", "target_metric", "trough", "peak", "auc24", "pta", "in_range", "feasible", "note"];
  const ta = el("table", { class: "grid" }, el("tr", {}, ...cols.map((h) => el("th", { text: h }))));
  (r.alternatives || []).forEach((row, i) => ta.append(el("tr", {}, ...cols.map((k) => el("td", {},
    typeof row[k] === "number" ? num(row[k], `recommendation.alternatives.${i}.${k}`) : el("span", { text: String(row[k] ?? "") }))))));
  al.append(ta);
  $("#footer").textContent = `pkmix: MAP ${fmt(a.timing.map_s, 3)} s, recommendation ${fmt(a.timing.recommendation_s, 3)} s.`;
}

// The further questions the server offers (GET /api/questions): a small form each, with
// the target, route and limits taken from the Question panel where the question has
// them; the answer is shown as its JSON says, table by table, with its warnings.
const SHARED = { target: "#target", route: "#opt-route", dose_unit: "#opt-dose_unit", dose_min: "#opt-dose_min",
  dose_max: "#opt-dose_max", max_daily_dose: "#opt-max_daily_dose", max_rate: "#opt-max_rate" };
const numOrRaw = (v) => (isFinite(Number(v)) ? Number(v) : v);

function questionRequest(q) {
  const req = { model: $("#model").value, patient: formToPatient() };
  for (const f of q.fields) {
    if (SHARED[f.name]) {
      const v = $(SHARED[f.name]).value.trim();
      if (v) req[f.name] = f.kind === "text" || f.kind === "route" ? v : numOrRaw(v);
      continue;
    }
    const e = document.getElementById(`q-${q.name}-${f.name}`);
    if (!e) continue;
    if (f.kind === "bool") { req[f.name] = e.checked; continue; }
    const v = e.value.trim();
    if (v === "") continue;
    if (f.kind === "number") req[f.name] = numOrRaw(v);
    else if (f.kind === "numbers") req[f.name] = listOrRaw(v);
    else if (f.kind === "windows") req[f.name] = v.split(",").map((w) => w.trim()).filter(Boolean);
    else if (f.kind === "etas") req[f.name] = v === "map" || v === "prior" ? v : listOrRaw(v);
    else req[f.name] = v;
  }
  return req;
}

// A question's own inputs (its fields from GET /api/questions, the dosing service's one
// list), ids q-<question>-<field>; the shared ones come from the Question panel.
function questionInputs(q) {
  const inputs = el("div", { class: "question-inputs no-print" });
  for (const f of q.fields) {
    if (SHARED[f.name]) continue;
    const id = `q-${q.name}-${f.name}`;
    const shownDefault = f.default === null || f.default === undefined || Array.isArray(f.default) ? "" : String(f.default);
    const field = f.kind === "bool" ? el("input", { type: "checkbox", id, "data-field": f.name })
      : f.kind === "route" ? el("select", { id, "data-field": f.name }, el("option", { value: "", text: "as given" }),
        el("option", { value: "iv", text: "iv" }), el("option", { value: "oral", text: "oral" }))
      : el("input", { type: "text", id, "data-field": f.name, size: 10, placeholder: f.required ? "required" : shownDefault });
    if (f.kind === "bool") field.checked = f.default !== false;
    inputs.append(el("label", { title: f.help }, `${f.name} `, field));
  }
  return inputs;
}

// The library models of the chosen model's drug (METADATA drug): more than one can be
// compared and averaged (POST /api/average).
function drugModels() {
  const m = state.model;
  if (!m || !m.drug) return [];
  return state.models.filter((x) => x.drug === m.drug).map((x) => x.name);
}

function renderAverage() {
  const box = $("#averaging");
  box.innerHTML = "";
  const q = state.questions.find((x) => x.name === "average");
  const names = drugModels();
  if (!q || names.length < 2) return;
  const out = el("div", { class: "question-answer", id: "answer-average" });
  const inputs = questionInputs(q);
  const b = el("button", { type: "button", id: "ask-average", text: "Compare and average" });
  b.addEventListener("click", async () => {
    clearError();
    let req;
    try { req = questionRequest(q); } catch (e) { showError("patient", String(e.message || e)); return; }
    req.model = names;
    b.disabled = true;
    const data = await post("/api/average", req);
    b.disabled = false;
    out.innerHTML = "";
    if (data.error) { showError(data.error.field, data.error.message); return; }
    renderAverageAnswer(out, data);
  });
  inputs.append(b);
  box.append(el("div", { class: "card", id: "average-card" },
    el("h2", { text: `Compare/average the models for ${state.model.drug}` }),
    el("p", { class: "hint", text: `${names.join(", ")}: each model's MAP fit and recommendation, weighted by how well ` +
      "it fits this patient's levels, and the recommendation of the averaged model. Target, route and dose limits " +
      "come from the Question panel." }),
    inputs, out));
}

function renderAverageAnswer(out, data) {
  const a = data.average, u = a.units || {};
  out.append(el("h3", { text: `Averaged recommendation (${a.scheme} weights)` }));
  const wl = warningList(data.warnings || [], "question");
  if (wl) out.append(wl);
  if (a.recommendation)
    out.append(el("p", { class: "regimen-text", "data-key": "average.recommendation.text", text: a.recommendation.text }));
  else out.append(el("p", { class: "warning", text: "no regimen" }));
  if (a.message) out.append(el("p", { text: a.message }));
  const rows = [["probability of target attainment", num(a.probability_of_target_attainment, "average.probability_of_target_attainment", 3)]];
  for (const [k, v] of Object.entries(a.predicted || {})) {
    const unit = k.startsWith("auc") ? u.auc : k === "target" ? "" : u.conc;
    rows.push([`predicted ${k}`, num(v, `average.predicted.${k}`, 4, unitOf(unit))]);
  }
  if (a.recommendation) rows.push(["regimen", tree(a.recommendation, "average.recommendation")]);
  out.append(kv(rows));
  out.append(el("h3", { text: "Weights" }));
  out.append(tree(a.weights, "average.weights"));
  out.append(el("h3", { text: "The models side by side (weight, MAP fit, own recommendation)" }));
  out.append(sideBySide(a.side_by_side || [], "average.side_by_side"));
  if (data.audit_id !== undefined && data.audit_id !== null)
    out.append(el("p", { class: "hint", text: `audit record ${data.audit_id}` }));
}

// One column per model, one row per item of the side-by-side rows: as narrow as the
// number of models, however many parameters the models have.
function sideBySide(rows, key) {
  const cols = [...new Set(rows.flatMap((r) => Object.keys(r)))].filter((c) => c !== "model");
  const t = el("table", { class: "grid side-by-side" },
    el("tr", {}, el("th", { text: "" }), ...rows.map((r) => el("th", { text: String(r.model) }))));
  for (const c of cols)
    t.append(el("tr", {}, el("th", { text: c.replace(/_/g, " ") }), ...rows.map((r, i) => el("td", {}, leaf(r[c], `${key}.${i}.${c}`)))));
  return t;
}

function renderQuestions() {
  renderAverage();
  const box = $("#questions");
  box.innerHTML = "";
  // Averaging has its own panel (renderAverage): it asks across the drug's models.
  const asked = state.questions.filter((q) => q.name !== "average");
  if (!asked.length) return;
  const card = el("div", { class: "card", id: "questions-card" }, el("h2", { text: "More questions" }),
    el("p", { class: "hint no-print", text: "Each uses the patient above; target, route and dose limits come from the Question panel." }));
  for (const q of asked) {
    const out = el("div", { class: "question-answer", id: `answer-${q.name}` });
    const inputs = questionInputs(q);
    const b = el("button", { type: "button", id: `ask-${q.name}`, text: "Ask" });
    b.addEventListener("click", async () => {
      clearError();
      let req;
      try { req = questionRequest(q); } catch (e) { showError("patient", String(e.message || e)); return; }
      b.disabled = true;
      const data = await post(`/api/${q.name}`, req);
      b.disabled = false;
      out.innerHTML = "";
      if (data.error) { showError(data.error.field, data.error.message); return; }
      const answer = data[q.name];
      out.append(el("h3", { text: `${q.title}: answer` }));
      const wl = warningList(data.warnings || [], "question");
      if (wl) out.append(wl);
      out.append(tree(answer, q.name));
      if (data.audit_id !== undefined && data.audit_id !== null)
        out.append(el("p", { class: "hint", text: `audit record ${data.audit_id}` }));
    });
    inputs.append(b);
    card.append(el("div", { class: "question", "data-question": q.name }, el("h3", { text: q.title }),
      el("p", { class: "hint", text: q.summary }), inputs, out));
  }
  box.append(card);
}
function tree(x, key) {
  if (Array.isArray(x)) {
    if (x.length && x.every((r) => r && typeof r === "object" && !Array.isArray(r))) {
      const cols = [...new Set(x.flatMap((r) => Object.keys(r)))];
      const t = el("table", { class: "grid" }, el("tr", {}, ...cols.map((c) => el("th", { text: c }))));
      x.forEach((r, i) => t.append(el("tr", {}, ...cols.map((c) => el("td", {}, leaf(r[c], `${key}.${i}.${c}`))))));
      return t;
    }
    return el("span", {}, ...x.map((v, i) => el("span", {}, i ? ", " : "", leaf(v, `${key}.${i}`))));
  }
  if (x && typeof x === "object") {
    const rows = Object.entries(x).map(([k, v]) => {
      const node = k === "warnings" && Array.isArray(v) ? (warningList(v, "question") || el("span", { text: "none" })) : tree(v, `${key}.${k}`);
      return [k, node];
    });
    return kv(rows);
  }
  return leaf(x, key);
}
function leaf(v, key) {
  if (v && typeof v === "object") return tree(v, key);
  if (typeof v === "number" || v === null) return num(v, key);
  return el("span", { text: String(v) });
}

// ------------------------------------------------------------------ wiring
function wire() {
  $("#model").addEventListener("change", (e) => selectModel(e.target.value));
  $("#add-dose").addEventListener("click", () => addDoseRow({ unit: ((state.model || {}).units || {}).dose || "mg", route: "iv" }));
  $("#add-level").addEventListener("click", () => addLevelRow({ unit: unitOf(((state.model || {}).units || {}).concentration) }));
  $("#recommend").addEventListener("click", recommend);
  $("#print").addEventListener("click", () => window.print());
  $("#form-to-json").addEventListener("click", () => { $("#patient-json").value = JSON.stringify(formToPatient(), null, 2); });
  $("#json-to-form").addEventListener("click", () => {
    clearError();
    try { patientToForm(JSON.parse($("#patient-json").value)); }
    catch (e) { showError("patient", "not a patient JSON: " + (e.message || e)); }
  });
  $("#patient-file").addEventListener("change", async (e) => {
    const f = e.target.files[0];
    if (!f) return;
    $("#patient-json").value = await f.text();
    $("#json-to-form").click();
  });
}

wire();
loadModels().catch((e) => showError(null, "cannot load the model library: " + e));
