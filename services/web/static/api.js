// The HTTP API of this server (see /docs), with the caller's API key, and errors in words.

const KEY_STORAGE = "qwentts-api-key";

export function apiKey() {
  return localStorage.getItem(KEY_STORAGE) || "";
}

export function setApiKey(key) {
  if (key) localStorage.setItem(KEY_STORAGE, key);
  else localStorage.removeItem(KEY_STORAGE);
}

export class ApiError extends Error {
  constructor(message, code) {
    super(message);
    this.code = code;
  }
}

// Sentences for the reasons a person can act on; anything else shows the server's own message.
const ADVICE = {
  API_KEY_INVALID: "The API key is missing or wrong: set it under \"API key\" at the top.",
  GENERATOR_AT_CAPACITY: "The server is busy. Try again in a moment.",
  REQUEST_TOO_LARGE: "That file is too large: recordings may be at most 10 MB.",
  AUDIO_TOO_LARGE: "That file is too large: recordings may be at most 10 MB.",
  AUDIO_UNDECODABLE: "That file is not audio this server can read (use WAV, FLAC, OGG or MP3).",
};

export function describeError(error) {
  if (error instanceof ApiError) return ADVICE[error.code] || error.message;
  if (error instanceof TypeError) return "The server cannot be reached. Check your connection and try again.";
  return error.message || String(error);
}

// Calls `path`; `json` or `form` is the body. Returns the parsed JSON answer or throws ApiError.
export async function api(path, { method = "GET", json, form } = {}) {
  const headers = {};
  const key = apiKey();
  if (key) headers.Authorization = `Bearer ${key}`;
  let body;
  if (json !== undefined) {
    headers["Content-Type"] = "application/json";
    body = JSON.stringify(json);
  } else if (form !== undefined) {
    body = form;
  }
  const response = await fetch(path, { method, headers, body });
  const answer = await response.json().catch(() => null);
  if (!response.ok) {
    const error = answer && answer.error;
    throw new ApiError(error ? error.message : `The server answered ${response.status}.`, error && error.code);
  }
  return answer;
}
