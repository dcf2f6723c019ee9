// The page: presets and saved voices to speak with, cloning, designing, and the caller's catalogue.

import { api, apiKey, describeError, setApiKey } from "./api.js";
import { StreamingSpeech } from "./player.js";
import { Recording } from "./recorder.js";

const MIN_RECORDING_SECONDS = 3;
const $ = (id) => document.getElementById(id);

function showError(error) {
  const banner = $("error");
  banner.textContent = typeof error === "string" ? error : describeError(error);
  banner.hidden = false;
}

function clearError() {
  $("error").hidden = true;
}

// Runs `work` with `button` disabled, showing any failure in words.
async function busy(button, work) {
  clearError();
  button.disabled = true;
  try {
    return await work();
  } catch (error) {
    showError(error);
  } finally {
    button.disabled = false;
  }
}

function option(value, label) {
  const element = document.createElement("option");
  element.value = value;
  element.textContent = label;
  return element;
}

// ----- voices and models -----

let savedVoices = [];

async function loadModels() {
  const models = (await api("/v1/models")).data;
  const languages = new Set(models.flatMap((model) => model.languages).filter((l) => l !== "auto"));
  $("language").replaceChildren(option("", "auto"), ...[...languages].sort().map((l) => option(l, l)));
  return models.flatMap((model) => model.speakers);
}

async function loadVoices() {
  const voices = [];
  let token = "";
  do {
    const page = await api(`/v1/audio/voices?page_size=100&page_token=${encodeURIComponent(token)}`);
    voices.push(...page.data);
    token = page.next_page_token;
  } while (token);
  savedVoices = voices.filter((voice) => !voice.read_only);
  renderCatalogue();
  return voices;
}

function renderVoicePicker(speakers) {
  const picker = $("voice");
  const chosen = picker.value;
  const presets = document.createElement("optgroup");
  presets.label = "Preset speakers";
  presets.append(...[...new Set(speakers)].map((name) => option(name, name)));
  const mine = document.createElement("optgroup");
  mine.label = "My voices";
  mine.append(...savedVoices.map((voice) => option(voice.id, voice.name)));
  picker.replaceChildren(presets, ...(savedVoices.length ? [mine] : []));
  if ([...picker.options].some((o) => o.value === chosen)) picker.value = chosen;
}

let presetSpeakers = [];

async function refresh() {
  await loadVoices();
  renderVoicePicker(presetSpeakers);
}

function renderCatalogue() {
  const list = $("voice-list");
  list.replaceChildren(...savedVoices.map(voiceItem));
  $("voice-list-empty").hidden = savedVoices.length > 0;
}

function voiceItem(voice) {
  const item = document.createElement("li");
  item.dataset.voiceId = voice.id;
  const name = document.createElement("span");
  name.className = "name";
  name.textContent = voice.name;
  const meta = document.createElement("span");
  meta.className = "meta";
  meta.textContent = `${voice.type === "prompt" ? "designed" : "cloned"}${voice.language ? ", " + voice.language : ""}`;
  const use = button("Use", () => {
    $("voice").value = voice.id;
    $("speak").scrollIntoView({ behavior: "smooth" });
  });
  const rename = button("Rename", () => startRename(item, voice));
  const remove = button("Delete", () => busy(remove, async () => {
    if (!confirm(`Delete the voice "${voice.name}"?`)) return;
    await api(`/v1/audio/voices/${encodeURIComponent(voice.id)}`, { method: "DELETE" });
    await refresh();
  }));
  remove.classList.add("delete");
  item.append(name, meta, use, rename, remove);
  return item;
}

function startRename(item, voice) {
  const input = document.createElement("input");
  input.value = voice.name;
  input.maxLength = 100;
  input.setAttribute("aria-label", "new name");
  const save = button("Save", () => busy(save, async () => {
    await api(`/v1/audio/voices/${encodeURIComponent(voice.id)}`,
      { method: "PATCH", json: { name: input.value.trim(), etag: voice.etag } });
    await refresh();
  }));
  const cancel = button("Cancel", renderCatalogue);
  item.replaceChildren(input, save, cancel);
  input.focus();
}

function button(label, onClick) {
  const element = document.createElement("button");
  element.type = "button";
  element.textContent = label;
  element.addEventListener("click", onClick);
  return element;
}

// ----- speaking -----

const speech = new StreamingSpeech({
  state(name, words) {
    const line = $("playback-state");
    line.dataset.state = name;
    line.textContent = words;
    if (name === "done") $("stop-button").disabled = true;
  },
  progress(consumed, received) {
    $("text-progress").value = received ? consumed / received : 0;
  },
  error(words) {
    this.state("error", "Stopped.");
    $("stop-button").disabled = true;
    showError(words);
  },
});

$("speak-button").addEventListener("click", async () => {
  clearError();
  const text = $("text").value;
  if (!text.trim()) return showError("Type something to speak first.");
  const voice = $("voice").value;
  const options = { voice, language: $("language").value };
  const instruct = $("instruct").value.trim();
  if (instruct) options.instructions = instruct;
  $("text-progress").value = 0;
  $("stop-button").disabled = false;
  try {
    await speech.speak(text, options);
  } catch (error) {
    speech.on.error(describeError(error));
  }
});

$("stop-button").addEventListener("click", () => {
  speech.stop();
  speech.on.state("idle", "Stopped.");
  $("stop-button").disabled = true;
});

// ----- cloning -----

let recording = null;
let recorded = null;

$("record-button").addEventListener("click", async () => {
  clearError();
  if (recording) {
    const seconds = recording.seconds;
    recorded = await recording.stop();
    recording = null;
    $("record-button").textContent = "Record";
    if (seconds < MIN_RECORDING_SECONDS) {
      recorded = null;
      return showError(`The recording lasts ${seconds.toFixed(1)} s; record at least ${MIN_RECORDING_SECONDS} s.`);
    }
    $("clone-file").value = "";
    $("record-state").textContent = `Recorded ${seconds.toFixed(1)} s: it will be used when you save.`;
    return;
  }
  try {
    recording = await Recording.start((seconds) => {
      $("record-state").textContent = `Recording… ${seconds.toFixed(1)} s (at least ${MIN_RECORDING_SECONDS} s)`;
    });
    recorded = null;
    $("record-button").textContent = "Stop recording";
  } catch (error) {
    showError("The microphone is not available: allow it in the browser, or upload a file instead.");
  }
});

$("clone-file").addEventListener("change", () => {
  recorded = null;
  $("record-state").textContent = "";
});

$("clone-button").addEventListener("click", () => busy($("clone-button"), async () => {
  const audio = $("clone-file").files[0] || recorded;
  if (!audio) return showError("Choose a recording file, or record one.");
  const name = $("clone-name").value.trim();
  if (!name) return showError("Give the voice a name.");
  if (!$("clone-consent").checked) return showError("Confirm that you may clone this voice.");
  const form = new FormData();
  form.append("audio_sample", audio);
  form.append("name", name);
  form.append("transcript", $("clone-transcript").value.trim());
  form.append("consent", "The person saving it confirmed in the Web UI that they are the speaker or have the speaker's permission.");
  const voice = await api("/v1/audio/voices", { method: "POST", form });
  await refresh();
  $("voice").value = voice.id;
  $("record-state").textContent = `Saved "${voice.name}".` + (voice.warnings.length ? ` Note: ${voice.warnings.join("; ")}.` : "");
}));

// ----- designing -----

let previewId = "";

$("design-button").addEventListener("click", () => busy($("design-button"), async () => {
  const description = $("design-description").value.trim();
  if (!description) return showError("Describe the voice first.");
  const preview = await api("/v1/audio/voices/design", {
    method: "POST", json: { prompt: description, script_hint: $("design-text").value },
  });
  previewId = preview.preview_id;
  const player = $("design-audio");
  player.src = `data:audio/wav;base64,${preview.audio}`;
  player.hidden = false;
  $("design-save").disabled = false;
  player.play().catch(() => {}); // a browser may want another click; the controls are there
}));

$("design-save").addEventListener("click", () => busy($("design-save"), async () => {
  const name = $("design-name").value.trim();
  if (!previewId) return showError("Preview the voice first: a saved voice is the one you heard.");
  if (!name) return showError("Give the voice a name.");
  const voice = await api("/v1/audio/voices", {
    method: "POST", json: { type: "preview", preview_id: previewId, name, description: $("design-description").value.trim() },
  });
  previewId = "";
  await refresh();
  $("voice").value = voice.id;
}));

// ----- start -----

$("api-key").value = apiKey();
$("api-key").addEventListener("change", async () => {
  setApiKey($("api-key").value.trim());
  await start();
});

async function start() {
  clearError();
  try {
    presetSpeakers = await loadModels();
    await refresh();
  } catch (error) {
    showError(error);
  }
}

start();
