// The Chorus console: submit, watch and read jobs through the worker's public API only.
// Plain JavaScript, no build step. Every job-derived string goes into the page as text
// (textContent), never as HTML: file names and transcripts are user data.
"use strict";

const KEY = "chorus-api-key"; // the API key lives in this tab's sessionStorage only
const POLL_MS = 2000; // the list, the capacity and (at most PROGRESS_AT_ONCE) running jobs' progress
const PROGRESS_AT_ONCE = 3; // a poll: capacity, list, 3 progresses, and the open job's 3: 4 a second at most
const PAGE = 20;
const LANGUAGES = ["en", "auto", "fr", "de", "es", "it", "pt", "nl", "pl", "sv", "ru", "uk", "cs", "tr", "ar", "hi",
  "ja", "ko", "zh"];
const PALETTE = ["#2457c5", "#c2410c", "#15803d", "#9333ea", "#b91c1c", "#0e7490", "#a16207", "#be185d"];

const $ = (selector) => document.querySelector(selector);
const WORDS_PER_PARAGRAPH = 80; // a long monologue is cut at a sentence end past this many words
const WORDS_PER_FRAME = 1500; // how much of a transcript is added to the page per animation frame
const state = {
  before: null, selected: null, selectedStatus: null, rows: new Map(), timer: null,
  polling: null, pollAgain: false, // one poll at a time; a request for another runs right after
  opened: 0, // the latest openJob: an older one's late answers are dropped
};

class ApiError extends Error {
  constructor(status, detail) { super(`${status}: ${detail}`); this.status = status; this.detail = detail; }
}

// ---- talking to the API --------------------------------------------------------------------

function authHeaders(extra = {}) {
  const key = sessionStorage.getItem(KEY);
  return key ? { ...extra, Authorization: `Bearer ${key}` } : { ...extra };
}

async function request(path, options = {}) {
  const response = await fetch(path, { ...options, headers: authHeaders(options.headers) });
  if (response.status === 401) {
    sessionStorage.removeItem(KEY); // a wrong or expired key: ask again, and stop polling until then
    showAuth(true);
    throw new ApiError(401, "this worker needs its API key");
  }
  if (!response.ok) {
    const body = await response.json().catch(() => null);
    throw new ApiError(response.status, (body && body.detail) || response.statusText);
  }
  return response;
}

const getJson = async (path) => (await request(path)).json();

function needsKey() {
  return document.querySelector('meta[name="chorus-auth"]').content === "required" && !sessionStorage.getItem(KEY);
}

function showAuth(show) {
  const panel = $("#auth");
  const appearing = show && panel.hidden;
  panel.hidden = !show;
  if (appearing) $("#api-key").focus();
}

// ---- elements --------------------------------------------------------------------------------

function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "text") node.textContent = value;
    else if (name === "class") node.className = value;
    else node.setAttribute(name, value === true ? "" : value);
  }
  node.append(...children);
  return node;
}

const seconds = (s) => {
  const whole = Math.floor(s);
  const h = Math.floor(whole / 3600), m = Math.floor((whole % 3600) / 60), sec = whole % 60;
  return (h ? `${h}:${String(m).padStart(2, "0")}` : `${m}`) + `:${String(sec).padStart(2, "0")}`;
};

const speakerColour = (speaker, order) =>
  speaker === "UU" ? "#5b6475" : PALETTE[(order.indexOf(speaker) + PALETTE.length) % PALETTE.length];

// ---- capacity and the job list ------------------------------------------------------------

async function refreshCapacity() {
  const capacity = await getJson("/jobs");
  const used = capacity.max_engines - capacity.unused_engines;
  const queued = (capacity.queued_jobs || []).length;
  const text = `engines in use: ${used} of ${capacity.max_engines} · queued jobs: ${queued}`;
  const box = $('[data-testid="capacity"]');
  if (box.textContent !== text) box.textContent = text; // announced only when it changes
  const engines = $("#engines");
  engines.max = String(capacity.max_engines);
  if (Number(engines.value) > capacity.max_engines) engines.value = String(capacity.max_engines);
}

async function refreshJobs() {
  const query = new URLSearchParams({ limit: String(PAGE) });
  if (state.before) query.set("created_before", state.before);
  const { jobs } = await getJson(`/v2/jobs?${query}`);
  const body = $("#jobs");
  const seen = new Set();
  jobs.forEach((job, index) => {
    seen.add(job.id);
    let row = state.rows.get(job.id);
    if (!row) {
      row = jobRow(job);
      state.rows.set(job.id, row);
    }
    updateRow(row, job);
    if (body.children[index] !== row) body.insertBefore(row, body.children[index] || null);
  });
  for (const [id, row] of state.rows) {
    if (!seen.has(id)) { row.remove(); state.rows.delete(id); }
  }
  $("#older").disabled = jobs.length < PAGE;
  $("#older").dataset.before = jobs.length ? jobs[jobs.length - 1].created_at : "";
  $("#newer").disabled = !state.before;
  const running = jobs.filter((job) => job.status === "running").slice(0, PROGRESS_AT_ONCE);
  await Promise.all(running.map((job) => refreshProgress(job.id)));
  const selected = jobs.find((job) => job.id === state.selected);
  // The open job: again when its status changed, and while it runs (its tasks and log move).
  if (selected && (selected.status !== state.selectedStatus || selected.status === "running")) {
    await openJob(selected.id);
  }
}

function jobRow(job) {
  const open = el("button", { type: "button", class: "open", text: job.data_name || "(fetched audio)" });
  open.addEventListener("click", () => openJob(job.id).catch(showError));
  const remove = el("button", { type: "button", class: "danger", "data-testid": "delete-job",
    "aria-label": `Delete ${job.data_name || job.id}`, text: "Delete" });
  remove.addEventListener("click", () => deleteJob(job.id));
  return el("tr", { "data-testid": "job-row", "data-job-id": job.id },
    el("td", { class: "name" }, open, el("div", { class: "error errors" })),
    el("td", {}, el("time", { datetime: job.created_at, text: new Date(job.created_at).toLocaleString() })),
    el("td", { class: "state" }, el("span", { "data-testid": "job-status" })),
    el("td", {}, remove));
}

function updateRow(row, job) {
  row.dataset.status = job.status;
  row.classList.toggle("selected", job.id === state.selected);
  if (job.id === state.selected) row.setAttribute("aria-current", "true");
  else row.removeAttribute("aria-current");
  const status = row.querySelector('[data-testid="job-status"]');
  status.textContent = job.status;
  status.className = `status-${job.status}`;
  const cell = row.querySelector("td.state");
  let progress = cell.querySelector('[data-testid="job-progress"]');
  if (job.status === "running" && !progress) {
    progress = el("progress", { "data-testid": "job-progress", max: "1", value: "0",
      "aria-label": `progress of ${job.data_name || job.id}` });
    cell.append(" ", progress);
  } else if (job.status !== "running" && progress) {
    progress.remove();
  }
  row.querySelector(".errors").textContent = (job.errors || []).map((e) => e.message).join("\n");
}

async function refreshProgress(jobId) {
  const row = state.rows.get(jobId);
  const progress = row && row.querySelector('[data-testid="job-progress"]');
  if (!progress) return;
  const body = await getJson(`/v2/jobs/${encodeURIComponent(jobId)}/progress`);
  progress.value = body.progress;
  progress.title = `${body.step}: ${Math.round(body.progress * 100)} %`;
  progress.textContent = `${Math.round(body.progress * 100)} %`;
}

async function deleteJob(jobId) {
  try {
    await request(`/v2/jobs/${encodeURIComponent(jobId)}?force=true`, { method: "DELETE" });
    if (state.selected === jobId) { state.selected = null; $("#job-panel").hidden = true; }
  } catch (error) {
    showError(error);
  }
  await poll();
}

// ---- submitting ------------------------------------------------------------------------------

function showError(error) {
  const box = $("#submit-error");
  box.textContent = error ? (error.detail ? `${error.status}: ${error.detail}` : String(error)) : "";
  box.hidden = !error;
}

async function submit(event) {
  event.preventDefault();
  const file = $("#upload-file").files[0];
  if (!file) return;
  const transcription = { language: $("#language").value, operating_point: $("#operating-point").value };
  if ($("#diarization").value !== "none") transcription.diarization = $("#diarization").value;
  const form = new FormData();
  form.append("config", JSON.stringify({ type: "transcription", transcription_config: transcription }));
  form.append("data_file", file, file.name);
  const processing = { parallel_engines: Number($("#engines").value) || 1 };
  if ($("#user-id").value.trim()) processing.user_id = $("#user-id").value.trim();
  const button = $('[data-testid="submit-job"]');
  button.disabled = true;
  try {
    const response = await request("/v2/jobs", {
      method: "POST", body: form, headers: { "X-SM-Processing-Data": JSON.stringify(processing) },
    });
    const created = await response.json();
    showError(null);
    state.before = null;
    state.selected = created.id;
    state.selectedStatus = null; // the poll opens it
    await poll();
  } catch (error) {
    showError(error);
  } finally {
    button.disabled = false;
  }
}

// ---- one job ------------------------------------------------------------------------------

async function openJob(jobId) {
  const opened = ++state.opened;
  const current = () => opened === state.opened; // a later openJob supersedes this one
  state.selected = jobId;
  for (const [id, row] of state.rows) row.classList.toggle("selected", id === jobId);
  const { job } = await getJson(`/v2/jobs/${encodeURIComponent(jobId)}`);
  if (!current()) return;
  const reopened = state.selectedStatus === job.status && $("#job-title").dataset.jobId === job.id;
  state.selectedStatus = job.status;
  $("#job-panel").hidden = false;
  $("#job-title").textContent = job.data_name || job.id;
  $("#job-title").dataset.jobId = job.id;
  $("#job-summary").textContent = `${job.status} · ${job.duration} s of audio · id ${job.id}`
    + (job.errors.length ? ` · ${job.errors.map((e) => e.message).join("; ")}` : "");
  for (const format of ["json", "txt", "srt"]) {
    const link = $(`[data-testid="download-${format}"]`);
    link.href = `/v2/jobs/${encodeURIComponent(job.id)}/transcript?format=${format === "json" ? "json-v2" : format}`;
    link.setAttribute("download", `${job.id}.${format === "json" ? "json" : format}`);
    link.hidden = job.status !== "done";
  }
  const [progress, log] = await Promise.all([
    getJson(`/v2/jobs/${encodeURIComponent(job.id)}/progress`).catch(() => null),
    request(`/v2/jobs/${encodeURIComponent(job.id)}/log`).then((r) => r.text()).catch(() => ""),
  ]);
  if (!current()) return;
  $("#log").textContent = log;
  renderSegments(progress ? progress.tasks : []);
  if (reopened) return; // the same job in the same state: its transcript is on the page already
  if (job.status === "done") {
    const transcript = await getJson(`/v2/jobs/${encodeURIComponent(job.id)}/transcript?format=json-v2`);
    if (current()) renderTranscript(transcript, job.duration);
  } else {
    renderTranscript(null, 0);
  }
}

function renderSegments(tasks) {
  const box = $("#segments");
  box.replaceChildren();
  if (!tasks.length) return;
  const rows = tasks.map((task) => el("tr", {},
    el("td", { text: task.name }),
    el("td", { text: task.start !== undefined ? `${seconds(task.start)}–${seconds(task.end)}` : "whole file" }),
    el("td", { text: task.cut_before ? `${task.cut_before} / ${task.cut_after}` : "" }),
    el("td", { text: task.engine !== undefined ? `engine ${task.engine}` : task.state }),
    el("td", { text: task.attempts > 1 ? `${task.attempts} attempts` : task.state })));
  box.append(el("h3", { text: "Tasks and engines" }), el("table", { class: "tasks" },
    el("thead", {}, el("tr", {}, ...["task", "span", "cuts", "engine", "state"].map((h) => el("th", { scope: "col", text: h })))),
    el("tbody", {}, ...rows)));
}

// Who a result belongs to on the page: its channel (channel diarization) or its speaker.
const voiceOf = (result) => result.channel || result.alternatives[0].speaker || "UU";

// Paragraphs at speaker changes, long pauses, and sentence ends past WORDS_PER_PARAGRAPH words.
function paragraphs(results) {
  const out = [];
  let current = null;
  let lastEnd = 0;
  for (const result of results) {
    if (result.type === "word") {
      const voice = voiceOf(result);
      if (!current || current.speaker !== voice || result.start_time - lastEnd > 2.5
          || (current.words >= WORDS_PER_PARAGRAPH && current.ended)) {
        current = { speaker: voice, start: result.start_time, items: [], words: 0, ended: false };
        out.push(current);
      }
      current.words += 1;
      current.ended = false;
      lastEnd = result.end_time;
    } else if (current && result.is_eos) {
      current.ended = true;
    }
    if (current) current.items.push(result);
  }
  return out;
}

function renderTranscript(transcript, duration) {
  const box = $("#transcript");
  const timeline = $("#timeline");
  const languages = $("#languages");
  box.replaceChildren();
  timeline.replaceChildren();
  languages.replaceChildren();
  const render = ++renderTranscript.generation;
  if (!transcript) {
    box.append(el("p", { text: "The transcript is there once the job is done." }));
    return;
  }
  const lid = transcript.metadata.language_identification;
  if (lid) {
    const found = lid.results.map((r) => `${r.alternatives.map((a) => `${a.language} ${a.confidence}`).join(", ")}`
      + ` (${seconds(r.start_time)}–${seconds(r.end_time)})`).join("; ");
    languages.append(el("h3", { text: "Language identification" }),
      el("p", { text: (found || "no result") + (lid.error ? ` · ${lid.error}: ${lid.message || ""}` : "") }));
  }
  const parts = paragraphs(transcript.results);
  const speakers = [...new Set(parts.map((p) => p.speaker))];
  renderTimeline(timeline, parts, speakers, duration || transcript.job.duration || 1);
  // A long transcript is added a few paragraphs per frame, so the page stays responsive.
  let next = 0;
  const batch = () => {
    if (render !== renderTranscript.generation) return;
    const fragment = document.createDocumentFragment();
    let words = 0;
    while (next < parts.length && words < WORDS_PER_FRAME) {
      fragment.append(paragraph(parts[next], speakers));
      words += parts[next].words;
      next += 1;
    }
    box.append(fragment);
    if (next < parts.length) requestAnimationFrame(batch);
  };
  if (!parts.length) box.append(el("p", { text: "No speech was found." }));
  batch();
}
renderTranscript.generation = 0;

function paragraph(part, speakers) {
  const colour = speakerColour(part.speaker, speakers);
  const p = el("p", {}, el("time", { text: seconds(part.start) }),
    el("span", { class: "who", style: `color: ${colour}`, text: part.speaker === "UU" ? "" : part.speaker }));
  for (const result of part.items) {
    const content = result.alternatives[0].content;
    if (result.type === "word") {
      p.append(" ", el("span", { class: "w", "data-speaker": result.alternatives[0].speaker || "UU",
        style: `color: ${colour}`, title: `${seconds(result.start_time)}`, text: content }));
    } else {
      p.append(result.attaches_to === "next" ? ` ${content}` : content);
    }
  }
  return p;
}

function renderTimeline(box, parts, speakers, duration) {
  const turns = new Map(speakers.map((s) => [s, []]));
  for (const part of parts) {
    const words = part.items.filter((r) => r.type === "word");
    const last = turns.get(part.speaker).at(-1);
    const start = words[0].start_time, end = words.at(-1).end_time;
    if (last && start - last.end < 1.0) last.end = end;
    else turns.get(part.speaker).push({ start, end });
  }
  for (const speaker of speakers) {
    const colour = speakerColour(speaker, speakers);
    const row = el("div", { class: "row", role: "img",
      "aria-label": `${speaker}: ${turns.get(speaker).length} turns` },
      el("span", { class: "label", text: speaker }));
    for (const turn of turns.get(speaker)) {
      row.append(el("span", { class: "turn", title: `${seconds(turn.start)}–${seconds(turn.end)}`,
        style: `left: ${(100 * turn.start) / duration}%; width: ${Math.max(0.2, (100 * (turn.end - turn.start)) / duration)}%;`
          + ` background: ${colour}` }));
    }
    box.append(row);
  }
}

// Downloads are real links to the API's transcript URLs; with a key they are fetched with it.
async function download(event) {
  if (!sessionStorage.getItem(KEY)) return;
  event.preventDefault();
  const link = event.currentTarget;
  try {
    const blob = await (await request(link.href)).blob();
    const url = URL.createObjectURL(blob);
    const temporary = el("a", { href: url, download: link.getAttribute("download") });
    document.body.append(temporary);
    temporary.click();
    temporary.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
  } catch (error) {
    showError(error);
  }
}

// ---- the loop ---------------------------------------------------------------------------------

// One poll at a time: a poll asked for while one runs (after a submit or a delete) runs right
// after it, so an older answer never lands last.
async function poll() {
  if (state.polling) {
    state.pollAgain = true;
    return state.polling;
  }
  clearTimeout(state.timer);
  state.polling = (async () => {
    try {
      if (!needsKey()) await Promise.all([refreshCapacity(), refreshJobs()]);
    } catch (error) {
      if (error.status !== 401) console.warn("console poll:", error.message);
    }
  })();
  await state.polling;
  state.polling = null;
  if (state.pollAgain) {
    state.pollAgain = false;
    return poll();
  }
  state.timer = setTimeout(poll, document.hidden ? POLL_MS * 5 : POLL_MS);
}

function start() {
  const language = $("#language");
  for (const code of LANGUAGES) language.append(el("option", { value: code, text: code }));
  $("#submit-form").addEventListener("submit", submit);
  $("#auth-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const key = $("#api-key").value.trim();
    if (!key) return;
    sessionStorage.setItem(KEY, key);
    $("#api-key").value = "";
    showAuth(false);
    poll();
  });
  // Older: the jobs created before the oldest one shown (the API's created_before).
  $("#older").addEventListener("click", () => { state.before = $("#older").dataset.before || null; poll(); });
  $("#newer").addEventListener("click", () => { state.before = null; poll(); });
  for (const link of document.querySelectorAll(".downloads a")) link.addEventListener("click", download);
  const drop = $("#drop");
  drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    if (event.dataTransfer.files.length) $("#upload-file").files = event.dataTransfer.files;
  });
  showAuth(needsKey());
  poll();
}

start();
