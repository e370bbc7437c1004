"""WhisperX's batched pipeline as a library, run in its own venv.

Loads the model once (local CTranslate2 folder, WhisperX's bundled pyannote VAD), prints
{"ready": true}, then reads WAV paths on stdin, one per line, and writes {"text": ...} for each.
Usage: python whisperx_client.py MODEL_DIR THREADS BATCH_SIZE
"""

import json
import sys

import whisperx
from faster_whisper import decode_audio


def main() -> None:
    out, sys.stdout = sys.stdout, sys.stderr  # the library's own prints must not mix with replies
    model_dir, threads, batch_size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    model = whisperx.load_model(model_dir, "cpu", compute_type="int8", language="en", threads=threads,
                                local_files_only=True)
    print(json.dumps({"ready": True}), file=out, flush=True)
    for line in sys.stdin:
        audio = decode_audio(line.strip())  # PyAV: whisperx.load_audio needs an ffmpeg binary
        result = model.transcribe(audio, batch_size=batch_size, language="en")
        text = " ".join(segment["text"].strip() for segment in result["segments"])
        print(json.dumps({"text": text}), file=out, flush=True)


if __name__ == "__main__":
    main()
