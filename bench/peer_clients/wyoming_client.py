"""A Wyoming client, run in wyoming-faster-whisper's own venv with the `wyoming` library.

Reads WAV paths (16 kHz, 16-bit mono) on stdin, one per line; for each opens a connection to
the server, streams the audio as the Home Assistant voice pipeline does (Transcribe,
AudioStart, 1-second AudioChunks, AudioStop) and writes {"text": ...} on stdout.
Usage: python wyoming_client.py PORT
"""

import asyncio
import json
import sys
import wave

from wyoming.asr import Transcribe, Transcript
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.client import AsyncTcpClient


async def transcribe(port: int, path: str) -> str:
    with wave.open(path, "rb") as wav:
        rate, width, channels = wav.getframerate(), wav.getsampwidth(), wav.getnchannels()
        audio = wav.readframes(wav.getnframes())
    async with AsyncTcpClient("127.0.0.1", port) as client:
        await client.write_event(Transcribe(language="en").event())
        await client.write_event(AudioStart(rate=rate, width=width, channels=channels).event())
        step = rate * width * channels
        for start in range(0, len(audio), step):
            chunk = AudioChunk(rate=rate, width=width, channels=channels, audio=audio[start:start + step])
            await client.write_event(chunk.event())
        await client.write_event(AudioStop().event())
        while (event := await client.read_event()) is not None:
            if Transcript.is_type(event.type):
                return Transcript.from_event(event).text
    raise RuntimeError("connection closed before a transcript")


def main() -> None:
    out, sys.stdout = sys.stdout, sys.stderr  # the library's own prints must not mix with replies
    port = int(sys.argv[1])
    for line in sys.stdin:
        text = asyncio.run(transcribe(port, line.strip()))
        print(json.dumps({"text": text}), file=out, flush=True)


if __name__ == "__main__":
    main()
