"""Audio-tab latency for a 1 s clip with the shipped model on this machine's CPU (target: p95
<= 100 ms): the model's forward pass with and without attention maps, and the tab's whole
function `demos.audio.classify_audio` on a 1 s 16-bit mono WAV recorded at 48 kHz, as a browser
microphone makes it (read, resample, trim, normalise, forward with maps, rollout, log-mel).

    python -m bench.audio                      # 2 threads, 200 calls each
    python -m bench.audio --threads 1 --repeats 500

Prints a table, then one JSON line.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import soundfile as sf
import torch

from bench.common import tab_latency
from demos.audio import classify_audio
from demos.common import checkpoint_dir, get_model
from demos.example_sounds import formant_voice
from models.audio import prepare_waveform

MIC_RATE = 48000


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=2, help="torch intra-op threads (a Space has 2 cores)")
    p.add_argument("--repeats", type=int, default=200)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    model, _ = get_model("audio")

    # one second of sound, no silence to trim, so the model hears the full second
    voice = formant_voice([(300, 1500, 2500), (750, 1200, 2500), (400, 2000, 2600)], 1.0, MIC_RATE)
    clip = Path(tempfile.mkdtemp(prefix="bench-audio-")) / "one_second_48k.wav"
    sf.write(clip, voice, MIC_RATE, subtype="PCM_16")
    waveform = prepare_waveform(voice, MIC_RATE, model.config)[0][None]

    return tab_latency(
        "audio",
        model,
        waveform,
        ("classify_audio(1 s WAV, 48 kHz), end to end", lambda: classify_audio(str(clip))),
        target_p95_ms=100,
        threads=args.threads,
        repeats=args.repeats,
        title=f"Audio tab latency for a 1 s clip, {args.threads} threads, {args.repeats} calls each",
        clip_s=waveform.size(-1) / model.config.sample_rate,
        tokens=int(model.config.n_tokens(model.config.n_frames(waveform.size(-1)))),
        checkpoint=str(checkpoint_dir("audio")),
    )


if __name__ == "__main__":
    main()
