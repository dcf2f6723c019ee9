// A microphone recording as a WAV file (16-bit mono), the format every server-side decoder reads;
// browsers' own recorders make WebM or MP4, which the server does not take.

export class Recording {
  static async start(onSeconds) {
    const stream = await navigator.mediaDevices.getUserMedia({ audio: { channelCount: 1 } });
    return new Recording(stream, onSeconds);
  }

  constructor(stream, onSeconds) {
    this.stream = stream;
    this.context = new AudioContext();
    this.chunks = [];
    this.length = 0;
    const source = this.context.createMediaStreamSource(stream);
    // ScriptProcessor is old but everywhere; a recording needs no low latency.
    this.processor = this.context.createScriptProcessor(4096, 1, 1);
    this.processor.onaudioprocess = (event) => {
      const samples = new Float32Array(event.inputBuffer.getChannelData(0));
      this.chunks.push(samples);
      this.length += samples.length;
      onSeconds(this.length / this.context.sampleRate);
    };
    source.connect(this.processor);
    this.processor.connect(this.context.destination);
  }

  get seconds() {
    return this.length / this.context.sampleRate;
  }

  // Stops the microphone; returns the WAV file.
  async stop() {
    this.processor.disconnect();
    this.stream.getTracks().forEach((track) => track.stop());
    const rate = this.context.sampleRate;
    await this.context.close();
    return new File([wav(this.chunks, this.length, rate)], "recording.wav", { type: "audio/wav" });
  }
}

function wav(chunks, length, rate) {
  const view = new DataView(new ArrayBuffer(44 + length * 2));
  const text = (offset, value) => [...value].forEach((c, i) => view.setUint8(offset + i, c.charCodeAt(0)));
  text(0, "RIFF");
  view.setUint32(4, 36 + length * 2, true);
  text(8, "WAVE");
  text(12, "fmt ");
  view.setUint32(16, 16, true); // the fmt chunk's size
  view.setUint16(20, 1, true); // PCM
  view.setUint16(22, 1, true); // mono
  view.setUint32(24, rate, true);
  view.setUint32(28, rate * 2, true); // bytes per second
  view.setUint16(32, 2, true); // bytes per sample
  view.setUint16(34, 16, true); // bits per sample
  text(36, "data");
  view.setUint32(40, length * 2, true);
  let offset = 44;
  for (const chunk of chunks) {
    for (const sample of chunk) {
      view.setInt16(offset, Math.max(-1, Math.min(1, sample)) * 32767, true);
      offset += 2;
    }
  }
  return view.buffer;
}
