// The imgsearch page: plain JavaScript over the JSON API (no build step, nothing from other sites).
//
// The search on screen is in the address (?q=...&glob=...&sort=date, ?like=ID, ?image=NAME for an
// upload): every new search is a history entry, so Back and Forward step through them, and opening such
// an address runs its search (an uploaded image is kept in memory only, for Back and Forward).
"use strict";

const PAGE = 40;
const token = new URLSearchParams(location.search).get("token");
const $ = (id) => document.getElementById(id);
// The filter fields, each in the address under its own id (label_set as "labels"); then `sort`.
const FIELDS = ["not", "under", "glob", "after", "before", "min_width", "min_height", "formats", "min_score",
  "label", "label_set"];
const PARAM = { label_set: "labels" };

let current = null; // {label, fetchPage(offset)} of the search on screen
let matches = []; // its results so far, in order: the viewer steps through them
let loading = null; // the page being fetched, a promise
let exhausted = false;
const uploads = new Map(); // history entry key -> the File it searched by
let uploadCount = 0;

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

function textTerms(text) {
  const terms = [Object.assign({ kind: "text" }, weighted(text))];
  for (const not of list("not")) {
    const t = weighted(not);
    terms.push({ kind: "text", value: t.value, weight: -t.weight });
  }
  return terms;
}

function postQuery(terms) {
  return (offset) => api("/api/query", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(queryBody(terms, offset)),
  });
}

// -- the search in the address ---------------------------------------------------------------------------
function formParams() {
  const params = new URLSearchParams();
  for (const id of FIELDS) if ($(id).value.trim()) params.set(PARAM[id] || id, $(id).value.trim());
  if ($("sort").value !== "score") params.set("sort", $("sort").value);
  return params;
}

function fillForm(params) {
  $("q").value = params.get("q") || "";
  for (const id of FIELDS) $(id).value = params.get(PARAM[id] || id) || "";
  $("sort").value = params.get("sort") === "date" ? "date" : "score";
  if (formParams().toString()) $("filters").open = true;
}

function address(params) {
  const all = new URLSearchParams();
  if (token) all.set("token", token);
  for (const [key, value] of params) all.set(key, value);
  const query = all.toString();
  return location.pathname + (query ? "?" + query : "");
}

// A new search: a history entry of its own (unless it is the one on screen), then run it.
function go(params, state = null) {
  const url = address(params);
  if (url !== location.pathname + location.search || state) history.pushState(state, "", url);
  runAddress();
}

// Run the search the address describes (on load, and on Back and Forward).
function runAddress() {
  const params = new URLSearchParams(location.search);
  showError("");
  const like = params.get("like");
  if (like !== null) {
    $("q").value = "";
    if (!/^-?\d+$/.test(like)) return clear("No image has the id " + like + ".");
    return searchLike(like);
  }
  fillForm(params);
  const image = params.get("image");
  if (image !== null) {
    const file = history.state && uploads.get(history.state.upload);
    if (!file) return clear(`The example image ${image} is not kept once the page is left: drop, paste or choose it again.`);
    return searchByImage(file);
  }
  const text = params.get("q");
  if (text && text.trim()) {
    return start(`Results for “${text.trim()}”`, postQuery(textTerms(text)));
  }
  clear("");
}

function clear(message) {
  current = null;
  matches = [];
  $("results").replaceChildren();
  $("heading").hidden = true;
  $("more").hidden = true;
  showError(message);
}

// -- showing results -----------------------------------------------------------------------------------
function tile(match, index) {
  const li = document.createElement("li");
  const button = document.createElement("button");
  button.type = "button";
  button.className = "thumb";
  button.dataset.id = match.id;
  button.dataset.index = index;
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
  button.addEventListener("click", () => openViewer(index));
  li.append(button);
  return li;
}

async function start(label, fetchPage) {
  current = { label, fetchPage };
  matches = [];
  exhausted = false;
  loading = null;
  if ($("viewer").open) $("viewer").close();
  $("results").replaceChildren();
  $("heading").textContent = label;
  $("heading").hidden = false;
  await more();
}

function more() {
  if (!current || exhausted) return Promise.resolve();
  if (!loading) loading = fetchMore(current).finally(() => { loading = null; });
  return loading;
}

async function fetchMore(search) {
  showError("");
  try {
    const { results } = await search.fetchPage(matches.length);
    if (search !== current) return;
    const first = matches.length;
    matches.push(...results);
    $("results").append(...results.map((m, i) => tile(m, first + i)));
    exhausted = results.length < PAGE;
    if (matches.length === 0) showError("No matches.");
  } catch (e) {
    if (search !== current) return;
    showError(e.message);
    exhausted = true;
  } finally {
    if (search === current) $("more").hidden = exhausted;
  }
}

// -- the viewer: the full-size picture; Left and Right step through the results, Escape closes it -------
let viewing = -1; // the index in `matches` of the picture shown

function tileAt(index) {
  return $("results").querySelector(`button[data-index="${index}"]`);
}

function openViewer(index) {
  const match = matches[index];
  if (!match) return;
  viewing = index;
  $("viewer-img").src = withToken(`/api/images/${match.id}/thumbnail?size=1024`);
  $("viewer-img").alt = baseName(match.path);
  $("viewer-title").textContent = match.path;
  const pair = (match.siblings || []).map(baseName).join(", ");
  $("viewer-meta").textContent =
    `${match.width}×${match.height} ${match.format}, ${dayOf(match)}, score ${match.score.toFixed(4)}` +
    (pair ? `; the same photo as ${pair}` : "") + ` (${index + 1} of ${matches.length}${exhausted ? "" : "+"})`;
  $("original").href = withToken(`/api/images/${match.id}/file`);
  $("prev").disabled = index === 0;
  $("next").disabled = index === matches.length - 1 && exhausted;
  if (!$("viewer").open) {
    $("viewer").showModal();
    $("like").focus();
  }
}

async function step(delta) {
  const wanted = viewing + delta;
  if (wanted < 0) return;
  if (wanted >= matches.length) await more(); // the next page, as scrolling would load it
  if (wanted < matches.length && $("viewer").open) openViewer(wanted);
}

function moreLikeThis() {
  const match = matches[viewing];
  $("viewer").close();
  go(new URLSearchParams({ like: String(match.id) }));
}

async function searchLike(id) {
  let name = `image ${id}`;
  try {
    name = baseName((await api(`/api/images/${id}`)).path);
  } catch (e) {
    return clear(e.message);
  }
  start(`Like ${name}`, (offset) => api(`/api/similar/${id}?top=${PAGE}&offset=${offset}`));
}

// -- search by example image -----------------------------------------------------------------------------
function uploaded(file) {
  if (!file) return;
  const key = `upload-${++uploadCount}`;
  uploads.set(key, file);
  const params = formParams();
  params.set("image", file.name || "pasted");
  go(params, { upload: key });
}

function searchByImage(file) {
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

// -- what is indexed, and how far this server's own indexing got ------------------------------------------
async function showStatus() {
  try {
    const s = await api("/api/status");
    $("status").textContent = s.model ? `${s.images} images indexed with ${s.model}` : "nothing indexed yet";
  } catch (e) {
    $("status").textContent = e.message;
  }
}

function describeProgress(p) {
  const where = p.folders.length === 1 ? p.folders[0] : `${p.folders.length} folders`;
  switch (p.state) {
    case "starting": return `starting to index ${where}`;
    case "indexing": return `indexing ${where}: ${p.phase || ""}` + (p.total ? ` ${p.done} / ${p.total}` : "");
    case "watching": return `up to date, watching ${where}`;
    case "failed": return `indexing stopped: ${p.error}`;
    default: return "indexing stopped";
  }
}

async function pollProgress() {
  let p;
  try {
    p = await api("/api/progress");
  } catch (e) {
    setTimeout(pollProgress, 5000);
    return;
  }
  if (p.state === "off") return; // this server only reads: nothing to follow
  $("progress").hidden = false;
  $("progress").textContent = describeProgress(p);
  $("progress").classList.toggle("failed", p.state === "failed");
  showStatus(); // the count, as it grows
  if (p.state === "failed" || p.state === "stopped") return;
  setTimeout(pollProgress, p.state === "watching" ? 3000 : 1000);
}

// -- wiring --------------------------------------------------------------------------------------------
document.addEventListener("DOMContentLoaded", () => {
  $("search").addEventListener("submit", (event) => {
    event.preventDefault();
    const text = $("q").value.trim();
    if (!text) return;
    const params = formParams();
    params.set("q", text);
    go(params);
  });
  $("file").addEventListener("change", () => {
    uploaded($("file").files[0]);
    $("file").value = "";
  });
  $("more").addEventListener("click", more);
  $("like").addEventListener("click", moreLikeThis);
  $("prev").addEventListener("click", () => step(-1));
  $("next").addEventListener("click", () => step(1));
  document.addEventListener("keydown", (event) => { // the page's: a disabled button may have had the focus
    if ($("viewer").open && (event.key === "ArrowLeft" || event.key === "ArrowRight")) {
      event.preventDefault();
      step(event.key === "ArrowRight" ? 1 : -1);
    }
  });
  $("viewer").addEventListener("close", () => {
    const opener = tileAt(viewing);
    if (opener) { opener.focus(); opener.scrollIntoView({ block: "nearest" }); }
  });
  window.addEventListener("popstate", runAddress);
  document.addEventListener("paste", (event) => {
    const file = imageIn(event.clipboardData && event.clipboardData.items);
    if (file) { event.preventDefault(); uploaded(file); }
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
    if (file && file.type.startsWith("image/")) uploaded(file);
  });
  new IntersectionObserver((entries) => {
    if (entries.some((e) => e.isIntersecting)) more();
  }, { rootMargin: "600px" }).observe($("sentinel"));
  showStatus();
  pollProgress();
  runAddress();
});
