// Streams text to the gateway's StreamingSynthesize as it "arrives" and reports what came back.
//
//   node bidi.mjs [host:port]        (default: $QWENTTS_ADDRESS, else 127.0.0.1:50051)
//
// Sends the config (the first preset speaker of the first CustomVoice model in ListModels, greedy,
// at most ~2 s of 16-bit PCM), then the text in three pieces ~100 ms apart, then half-closes.
// Before the last piece it waits (up to 30 s) for the first audio, so that audio arriving while
// text is still to come shows in first_audio_before_last_text without depending on timing.
// Prints one JSON line:
//   {chunks, bytes, sequences_in_order, first_audio_before_last_text, finish_reason, usage}
// and exits non-zero on any error, or if the stream ends without a summary.
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';

import grpc from '@grpc/grpc-js';
import protoLoader from '@grpc/proto-loader';

const PROTOS = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../protos');
const PIECES = ['Hello there, this is ', 'a streaming test ', 'from Node.'];
const PAUSE_MS = 100;
const FIRST_AUDIO_WAIT_MS = 30_000;
const DEADLINE_MS = 120_000;

const definition = protoLoader.loadSync(path.join(PROTOS, 'qwentts/v1/tts.proto'), {
  keepCase: true,
  longs: Number,
  enums: String,
  defaults: true,
  oneofs: true,
  includeDirs: [PROTOS],
});
const { TextToSpeechService } = grpc.loadPackageDefinition(definition).qwentts.v1;
const address = process.argv[2] ?? process.env.QWENTTS_ADDRESS ?? '127.0.0.1:50051';
const client = new TextToSpeechService(address, grpc.credentials.createInsecure(), {
  'grpc.max_receive_message_length': 16 * 1024 * 1024, // the servers' limit
});

const deadline = () => new Date(Date.now() + DEADLINE_MS);

async function pickSpeaker() {
  const { models } = await new Promise((resolve, reject) => {
    client.ListModels({}, { deadline: deadline() }, (error, reply) => (error ? reject(error) : resolve(reply)));
  });
  const model = models.find((m) => m.kind === 'MODEL_KIND_CUSTOM_VOICE' && m.speakers.length > 0);
  if (!model) throw new Error(`no CustomVoice model with preset speakers at ${address}`);
  return { model: model.name, speaker: model.speakers[0].name };
}

async function main() {
  const { model, speaker } = await pickSpeaker();
  const result = {
    chunks: 0,
    bytes: 0,
    sequences_in_order: true,
    first_audio_before_last_text: false,
    finish_reason: null,
    usage: null,
  };
  let lastTextSent = false;
  let callDone = false;
  let onFirstAudio;
  const firstAudio = new Promise((resolve) => { onFirstAudio = resolve; });

  const call = client.StreamingSynthesize({ deadline: deadline() });
  // 'error' comes before 'end' when the call fails, so a failure rejects.
  const finished = new Promise((resolve, reject) => {
    call.on('data', (reply) => {
      if (reply.response === 'audio') {
        if (result.chunks === 0) {
          result.first_audio_before_last_text = !lastTextSent;
          onFirstAudio();
        }
        result.sequences_in_order &&= reply.audio.sequence === result.chunks;
        result.chunks += 1;
        result.bytes += reply.audio.audio.length;
      } else if (reply.response === 'summary') {
        result.finish_reason = reply.summary.finish_reason;
        result.usage = reply.summary.usage;
      }
    });
    call.on('error', reject);
    call.on('end', resolve);
  }).finally(() => { callDone = true; });

  call.write({
    config: {
      voice: { preset_speaker: speaker },
      model,
      sampling: { do_sample: false },
      predictor_sampling: { do_sample: false },
      max_audio_seconds: 2,
      output_format: { encoding: 'AUDIO_ENCODING_PCM16' },
    },
  });
  for (const [i, text] of PIECES.entries()) {
    await sleep(PAUSE_MS);
    const last = i === PIECES.length - 1;
    if (last) {
      await Promise.race([firstAudio, finished.catch(() => {}), sleep(FIRST_AUDIO_WAIT_MS, null, { ref: false })]);
    }
    if (callDone) break; // the server finished early (e.g. max_audio_seconds reached)
    lastTextSent = last;
    call.write({ input: { text } });
  }
  call.end();
  await finished;
  if (result.finish_reason === null) throw new Error('the stream ended without a summary');
  console.log(JSON.stringify(result));
}

try {
  await main();
} catch (error) {
  const code = error.code === undefined ? '' : `${grpc.status[error.code] ?? error.code}: `;
  console.error(`error: ${code}${error.details ?? error.message}`);
  process.exitCode = 1;
} finally {
  client.close();
}
