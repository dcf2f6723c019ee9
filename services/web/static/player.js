// Speech that starts playing while it is still being generated: text goes out over the
// WebSocket /v1/audio/speech/stream, 16-bit PCM comes back in chunks, and each chunk is
// scheduled with Web Audio right after the one before it.

import { apiKey } from "./api.js";

const RATE = 24000; // the model's rate: pcm chunks arrive at it
const START_DELAY = 0.1; // seconds of slack before the first chunk, so that it never starts late

export class StreamingSpeech {
  // on: {state(name, words), progress(consumed, received), error(words)}
  constructor(on) {
    this.on = on;
    this.context = null;
    this.socket = null;
  }

  async speak(text, options) {
    this.stop();
    // Created on the click: browsers let audio start only from a user gesture.
    this.context = this.context || new AudioContext();
    await this.context.resume();
    const context = this.context;
    let nextStart = 0;
    let seconds = 0;
    let playing = false;
    let lastSource = null;

    const url = new URL("/v1/audio/speech/stream", location.href);
    url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    const socket = new WebSocket(url);
    socket.binaryType = "arraybuffer";
    this.socket = socket;
    this.on.state("connecting", "Connecting…");

    socket.onopen = () => {
      socket.send(JSON.stringify({ type: "config", response_format: "pcm", api_key: apiKey(), ...options }));
      socket.send(JSON.stringify({ type: "text", text }));
      socket.send(JSON.stringify({ type: "end" }));
      this.on.state("generating", "Generating…");
    };
    socket.onmessage = (event) => {
      if (event.data instanceof ArrayBuffer) {
        const pcm = new Int16Array(event.data);
        if (!pcm.length) return;
        const buffer = context.createBuffer(1, pcm.length, RATE);
        const channel = buffer.getChannelData(0);
        for (let i = 0; i < pcm.length; i++) channel[i] = pcm[i] / 32768;
        const source = context.createBufferSource();
        source.buffer = buffer;
        source.connect(context.destination);
        nextStart = Math.max(nextStart, context.currentTime + START_DELAY);
        source.start(nextStart);
        if (!playing) {
          playing = true;
          const wait = Math.max(0, nextStart - context.currentTime) * 1000;
          setTimeout(() => {
            if (this.socket !== socket) return;
            if (context.state === "running") this.on.state("playing", "Playing…");
            else this.on.error("The browser did not let the audio play: click Speak again.");
          }, wait);
        }
        nextStart += buffer.duration;
        seconds += buffer.duration;
        lastSource = source;
        return;
      }
      const message = JSON.parse(event.data);
      if (message.type === "progress") {
        this.on.progress(message.characters_consumed, message.characters_received);
      } else if (message.type === "done") {
        this.on.progress(1, 1);
        const words = `Done: ${message.usage.audio_seconds.toFixed(1)} s of audio.`;
        if (lastSource) lastSource.onended = () => this.socket === socket && this.on.state("done", words);
        else this.on.state("done", words);
      } else if (message.type === "error") {
        this.on.error(message.error.message);
      }
    };
    socket.onclose = (event) => {
      if (event.code !== 1000 && event.code !== 1008 && event.code !== 1011 && this.socket === socket) {
        this.on.error("The connection to the server was lost.");
      }
    };
  }

  stop() {
    if (this.socket) {
      const socket = this.socket;
      this.socket = null;
      socket.close(); // the server cancels the synthesis, freeing the model for others
    }
    if (this.context) {
      this.context.close();
      this.context = null;
    }
  }
}
