// The imgsearch page: plain JavaScript over the JSON API (no build step, nothing from other sites).
"use strict";

const PAGE = 40;
const token = new URLSearchParams(location.search).get("token");
const $ = (id) => document.getElementById(id);

let current = null; // {label, fetchPage(offset)} of the search on screen
let shown = 0;
let loading = false;
let exhausted = false;

function withToken(url) {
  return token ? url + (url.includes("?") ? "&" : "?") + "token=" + encodeURIComponent(token) : url;
}

async function api(url, options = {}) {
  const headers = Object.assign({}, options.headers || {});
  if (token) headers["Authorization"] = "Bearer " + token;
  const response = await fetch(url, Object.assign({}, options, { headers }));
  let body = null;
  try { body = await response.json(); } catch (e) { /* not JSON */ }
  if (!response.ok) throw new Error((body && body.error) || response.status + " " + response.statusText);
  return body;
}

function showError(message) {
  $("error").textContent = message || "";
  $("error").hidden = !message;
}

function dayOf(match) {
  const when = match.taken_at != null ? match.taken_at : match.mtime;
  return new Date(when * 1000).toISOString().slice(0, 10);
}

function baseName(path) {
  return path.split("/").pop();
}

// -- the query as the API takes it ------------------------------------------------------------------
function weighted(text) {
  const m = /^([+-]?\d+(?:\.\d+)?):(.+)$/s.exec(text.trim());
  return m ? { weight: parseFloat(m[1]), value: m[2] } : { weight: 1, value: text.trim() };
}

function list(id) {
  return $(id).value.split(",").map((s) => s.trim()).filter(Boolean);
}

function filters() {
  const f = {};
  for (const id of ["under", "glob"]) if ($(id).value.trim()) f[id] = $(id).value.trim();
  if ($("after").value) f.after = new Date($("after").value + "T00:00").getTime() / 1000;
  if ($("before").value) f.before = new Date($("before").value + "T00:00").getTime() / 1000 + 86400;
  for (const id of ["min_width", "min_height"]) if ($(id).value) f[id] = parseInt($(id).value, 10);
  if (list("formats").length) f.formats = list("formats");
  if ($("label").value.trim()) {
    f.labels = [$("label").value.trim()];
    f.label_set = list("label_set");
  }
  return f;
}

function queryBody(terms, offset) {
  const body = { terms, top: PAGE, offset, filters: filters(), sort: $("sort").value };
  if ($("min_score").value !== "") body.min_score = parseFloat($("min_score").value);
  return body;
}

function postQuery(terms) {
  return (offset) => api("/api/query", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(queryBody(terms, offset)),
  });
}

// -- showing results -----------------------------------------------------------------------------------
function tile(match) {
  const li = document.createElement("li");
  const button = document.createElement("button");
  button.type = "button";
  button.className = "thumb";
  button.dataset.id = match.id;
  button.title = [match.path, ...(match.siblings || []).map((p) => `+ ${baseName(p)}`)].join("\n");
  const img = document.createElement("img");
  img.loading = "lazy";
  img.alt = baseName(match.path);
  img.src = withToken(`/api/images/${match.id}/thumbnail?size=256`);
  const caption = document.createElement("span");
  caption.className = "caption";
  caption.innerHTML = "<span></span><span></span>";
  caption.children[0].textContent = match.score.toFixed(3);
  caption.children[1].textContent = dayOf(match);
  button.append(img, caption);
  button.addEventListener("click", () => openViewer(match, button));
  li.append(button);
  return li;
}

async function start(label, fetchPage) {
  current = { label, fetchPage };
  shown = 0;
  exhausted = false;
  $("results").replaceChildren();
  $("heading").textContent = label;
  $("heading").hidden = false;
  await more();
}

async function more() {
  if (!current || loading || exhausted) return;
  loading = true;
  const search = current;
  showError("");
  try {
    const { results } = await search.fetchPage(shown);
    if (search !== current) return;
    $("results").append(...results.map(tile));
    shown += results.length;
    exhausted = results.length < PAGE;
    if (shown === 0) showError("No matches.");
  } catch (e) {
    showError(e.message);
    exhausted = true;
  } finally {
    loading = false;
    $("more").hidden = exhausted;
  }
}

// -- the viewer ----------------------------------------------------------------------------------------
let viewing = null;
let opener = null;

function openViewer(match, from) {
  viewing = match;
  opener = from;
  $("viewer-img").src = withToken(`/api/images/${match.id}/thumbnail?size=1024`);
  $("viewer-img").alt = baseName(match.path);
  $("viewer-title").textContent = match.path;
  const pair = (match.siblings || []).map(baseName).join(", ");
  $("viewer-meta").textContent =
    `${match.width}×${match.height} ${match.format}, ${dayOf(match)}, score ${match.score.toFixed(4)}` +
    (pair ? `; the same photo as ${pair}` : "");
  $("original").href = withToken(`/api/images/${match.id}/file`);
  $("viewer").showModal();
  $("like").focus();
}

function moreLikeThis() {
  const match = viewing;
  $("viewer").close();
  start(`Like ${baseName(match.path)}`, (offset) =>
    api(`/api/similar/${match.id}?top=${PAGE}&offset=${offset}`));
}

// -- search by example image -----------------------------------------------------------------------------
function searchByImage(file) {
  if (!file) return;
  start(`Like the image ${file.name || "pasted"}`, (offset) => {
    const form = new FormData();
    form.append("file", file, file.name || "pasted.png");
    form.append("top", PAGE);
    form.append("offset", offset);
    const { filters, sort, min_score } = queryBody([], offset); // the filters apply to examples too
    form.append("query", JSON.stringify({ filters, sort, min_score }));
    return api("/api/search/image", { method: "POST", body: form });
  });
}

function imageIn(items) {
  for (const item of items || []) {
    if (item.kind === "file" && item.type.startsWith("image/")) return item.getAsFile();
  }
  return null;
}

// -- wiring --------------------------------------------------------------------------------------------
document.addEventListener("DOMContentLoaded", () => {
  $("search").addEventListener("submit", (event) => {
    event.preventDefault();
    const text = $("q").value.trim();
    if (!text) return;
    const terms = [Object.assign({ kind: "text" }, weighted(text))];
    for (const not of list("not")) {
      const t = weighted(not);
      terms.push({ kind: "text", value: t.value, weight: -t.weight });
    }
    start(`Results for “${text}”`, postQuery(terms));
  });
  $("file").addEventListener("change", () => {
    searchByImage($("file").files[0]);
    $("file").value = "";
  });
  $("more").addEventListener("click", more);
  $("like").addEventListener("click", moreLikeThis);
  $("viewer").addEventListener("close", () => { if (opener && opener.isConnected) opener.focus(); });
  document.addEventListener("paste", (event) => {
    const file = imageIn(event.clipboardData && event.clipboardData.items);
    if (file) { event.preventDefault(); searchByImage(file); }
  });
  let depth = 0;
  document.addEventListener("dragenter", (e) => { e.preventDefault(); depth++; $("drop").hidden = false; });
  document.addEventListener("dragleave", () => { if (--depth <= 0) { depth = 0; $("drop").hidden = true; } });
  document.addEventListener("dragover", (e) => e.preventDefault());
  document.addEventListener("drop", (event) => {
    event.preventDefault();
    depth = 0;
    $("drop").hidden = true;
    const file = event.dataTransfer && event.dataTransfer.files[0];
    if (file && file.type.startsWith("image/")) searchByImage(file);
  });
  new IntersectionObserver((entries) => {
    if (entries.some((e) => e.isIntersecting)) more();
  }, { rootMargin: "600px" }).observe($("sentinel"));
  api("/api/status").then((s) => {
    $("status").textContent = `${s.images} images indexed with ${s.model}`;
  }).catch((e) => { $("status").textContent = e.message; });
});
