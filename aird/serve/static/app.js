// The aird page: plain JS over the same HTTP API that curl and the Python client use.
"use strict";

const $ = (id) => document.getElementById(id);
const keyInput = $("key");
keyInput.value = localStorage.getItem("aird-key") || "";
keyInput.addEventListener("change", () => { localStorage.setItem("aird-key", keyInput.value.trim()); refreshAll(); });

function headers() {
  const key = keyInput.value.trim();
  return key ? { Authorization: "Bearer " + key } : {};
}

async function call(method, path, form) {
  const response = await fetch(path, { method, headers: headers(), body: form });
  let body = null;
  try { body = await response.json(); } catch (e) { /* not JSON */ }
  if (!response.ok) {
    const reason = body && body.error ? body.error.reason : response.statusText;
    throw new Error(`${response.status}: ${reason}`);
  }
  return body;
}

function say(id, text, isError) {
  const el = $(id);
  el.textContent = text;
  el.classList.toggle("error", !!isError);
}

const gallery = () => encodeURIComponent($("gallery").value.trim() || "default");
const camera = () => $("camera").value.trim();
// Bars show cosine similarity from 0.5 (nobody alike) to 1 (the same face): where thresholds live.
const pct = (x) => `${Math.max(0, Math.min(1, (x - 0.5) / 0.5)) * 100}%`;

async function loadHealth() {
  try {
    const h = await call("GET", "/healthz");
    $("model").textContent = `model ${h.model} · streams adapt with ${h.adapt} · ${h.workers} workers · auth ${h.auth}`;
    $("key-row").hidden = h.auth !== "keys";
  } catch (e) {
    $("model").textContent = "server unreachable: " + e.message;
  }
}

async function loadPeople() {
  const list = $("people");
  list.replaceChildren();
  try {
    const r = await call("GET", `/v1/galleries/${gallery()}/people`);
    for (const p of r.people) {
      const li = document.createElement("li");
      li.textContent = p.name;
      const count = document.createElement("span");
      count.className = "count";
      count.textContent = `${p.embeddings} photo${p.embeddings === 1 ? "" : "s"}`;
      const remove = document.createElement("button");
      remove.className = "secondary small";
      remove.textContent = "remove";
      remove.addEventListener("click", () => removePerson(p.name));
      li.append(count, remove);
      list.append(li);
    }
    say("people-status", r.people.length ? `${r.people.length} people` : "nobody enrolled yet");
  } catch (e) {
    say("people-status", e.message.startsWith("404") ? "empty: enrol someone to create it" : e.message, !e.message.startsWith("404"));
  }
}

async function removePerson(name) {
  try {
    await call("DELETE", `/v1/galleries/${gallery()}/people/${encodeURIComponent(name)}`);
    await loadPeople();
  } catch (e) { say("people-status", e.message, true); }
}

async function enrol() {
  const name = $("person").value.trim();
  const files = $("enrol-files").files;
  if (!name || !files.length) { say("enrol-status", "give a name and at least one photo", true); return; }
  const form = new FormData();
  form.append("name", name);
  for (const f of files) form.append("images", f);
  say("enrol-status", "enrolling…");
  try {
    const r = await call("POST", `/v1/galleries/${gallery()}/people`, form);
    const skipped = r.skipped.length ? `; skipped ${r.skipped.map((s) => `${s.source} (${s.reason})`).join(", ")}` : "";
    say("enrol-status", `Enrolled ${r.name}: ${r.added} face${r.added === 1 ? "" : "s"}${skipped}`);
    await loadPeople();
  } catch (e) { say("enrol-status", e.message, true); }
}

function renderResults(results) {
  const box = $("results");
  box.replaceChildren();
  for (const r of results) {
    const card = document.createElement("div");
    card.className = `face status-${r.status}`;
    const title = document.createElement("h3");
    const badge = document.createElement("span");
    badge.className = "badge";
    badge.textContent = r.status.replace("_", " ");
    title.append(badge, r.status === "match" ? `${r.name} (${r.score.toFixed(3)})` : r.status === "unknown" ? "nobody reaches the threshold" : "no face");
    const probe = document.createElement("div");
    probe.className = "probe";
    const p = r.probe;
    probe.textContent = p.found
      ? `${p.source}: ${p.face_px} px face, ${p.route.toUpperCase()} route${p.stream ? `, camera ${p.stream} (${p.adapt})` : ""}`
      : p.message;
    card.append(title, probe);
    for (const c of r.candidates) {
      const row = document.createElement("div");
      row.className = "cand" + (c.accepted ? " accepted" : "");
      const name = document.createElement("span");
      name.textContent = c.name;
      const bar = document.createElement("div");
      bar.className = "bar";
      bar.title = `threshold ${c.threshold.toFixed(3)} (${c.mode})`;
      const fill = document.createElement("span");
      fill.style.width = pct(c.score);
      const mark = document.createElement("i");
      mark.style.left = pct(c.threshold);
      bar.append(fill, mark);
      const score = document.createElement("span");
      score.textContent = c.score.toFixed(3);
      row.append(name, bar, score);
      card.append(row);
    }
    box.append(card);
  }
}

async function identify() {
  const file = $("probe").files[0];
  if (!file) { say("identify-status", "choose or drop a probe image first", true); return; }
  const form = new FormData();
  form.append("probes", file);
  form.append("cropped", $("cropped").checked ? "true" : "false");
  form.append("top_k", $("topk").value || "5");
  if (camera()) form.append("stream", camera());
  say("identify-status", "searching…");
  try {
    const r = await call("POST", `/v1/galleries/${gallery()}/identify`, form);
    renderResults(r.results);
    const found = r.results.filter((x) => x.status === "match").map((x) => x.name);
    say("identify-status", found.length ? `Match: ${found.join(", ")}` : `${r.results.length} face(s), no match`);
    if (r.stream) renderCamera(r.stream);
  } catch (e) { say("identify-status", e.message, true); }
}

function renderCamera(s) {
  $("camera-name").textContent = s.stream;
  const rows = [
    ["adapter", s.adapt],
    ["faces seen", s.faces],
    ["batches", s.batches],
    ["statistics moved", `${s.shift.toFixed(3)} σ`],
    ["last face", s.updated ? new Date(s.updated * 1000).toLocaleString() : "never"],
  ];
  $("camera-state").replaceChildren(...rows.flatMap(([k, v]) => {
    const dt = document.createElement("dt");
    dt.textContent = k;
    const dd = document.createElement("dd");
    dd.textContent = v;
    return [dt, dd];
  }));
}

async function loadCamera() {
  if (!camera()) { $("camera-state").replaceChildren(); $("camera-name").textContent = "(no camera named)"; return; }
  try { renderCamera(await call("GET", `/v1/streams/${encodeURIComponent(camera())}`)); } catch (e) { $("camera-name").textContent = e.message; }
}

async function resetCamera() {
  if (!camera()) return;
  try { renderCamera(await call("DELETE", `/v1/streams/${encodeURIComponent(camera())}`)); } catch (e) { $("camera-name").textContent = e.message; }
}

function showPreview(file) {
  if (!file) return;
  const img = $("preview");
  img.src = URL.createObjectURL(file);
  img.hidden = false;
  $("drop-text").textContent = file.name;
}

const drop = $("drop");
drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => {
  e.preventDefault();
  drop.classList.remove("over");
  if (e.dataTransfer.files.length) {
    $("probe").files = e.dataTransfer.files;
    showPreview(e.dataTransfer.files[0]);
  }
});
$("probe").addEventListener("change", () => showPreview($("probe").files[0]));
$("enrol").addEventListener("click", enrol);
$("identify").addEventListener("click", identify);
$("camera-reset").addEventListener("click", resetCamera);
$("gallery").addEventListener("change", loadPeople);
$("camera").addEventListener("change", loadCamera);

async function refreshAll() { await loadHealth(); await Promise.all([loadPeople(), loadCamera()]); }
refreshAll();
