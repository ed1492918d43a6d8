"""The Audio tab's example recordings, synthesised here so the tab ships no dataset recordings:
robot voices from a crude formant synthesiser, a tone between silences and a burst of noise.

`synthesise_examples(folder)` writes them in several formats and rates (the same bytes on every
run: the noise comes from a seeded generator); `examples()` writes them once per process into a
temporary folder for the tab's gr.Examples. bench/audio.py uses `formant_voice` for its test clip.
"""

from __future__ import annotations

import tempfile
from functools import cache
from pathlib import Path

import numpy as np


def formant_voice(tracks: list[tuple[float, float, float]], seconds: float, rate: int, f0: float = 120.0) -> np.ndarray:
    """A crude vowel synthesiser (source-filter model): a glottal pulse train through three
    resonators whose frequencies glide through `tracks` [(F1, F2, F3), ...] evenly in time."""
    n = int(seconds * rate)
    t = np.arange(n) / rate
    pitch = f0 * (1 + 0.05 * np.sin(2 * np.pi * 3 * t)) * np.linspace(1.1, 0.9, n)  # a falling, wobbly pitch
    phase = np.cumsum(pitch / rate) % 1.0
    source = np.diff(phase, prepend=phase[0]) < 0  # one pulse per glottal cycle
    points = np.linspace(0, n - 1, len(tracks))
    out = source.astype(np.float64)
    for k in range(3):
        freq = np.interp(np.arange(n), points, [f[k] for f in tracks])
        r = np.exp(-np.pi * (60 + 20 * k) / rate)  # bandwidths of 60, 80, 100 Hz
        a1, a2 = -2 * r * np.cos(2 * np.pi * freq / rate), r * r
        y, y1, y2 = np.zeros(n), 0.0, 0.0
        for i in range(n):  # a two-pole resonator with moving coefficients
            y[i] = out[i] - a1[i] * y1 - a2 * y2
            y1, y2 = y[i], y1
        out = y
    envelope = np.minimum(1.0, np.minimum(t, seconds - t) / 0.04)  # 40 ms fade in and out
    out = out * envelope
    return (0.5 * out / np.abs(out).max()).astype(np.float32)


def synthesise_examples(folder: Path) -> list[tuple[Path, str]]:
    """Write a few short recordings (robot voices, a tone, noise) in several formats; return
    (path, label) pairs."""
    import soundfile as sf

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    examples = []

    def write(name: str, rate: int, data: np.ndarray, subtype: str, label: str) -> None:
        sf.write(folder / name, data, rate, subtype=subtype)
        examples.append((folder / name, label))

    nine = formant_voice([(300, 1500, 2500), (750, 1200, 2500), (700, 1400, 2500), (400, 2000, 2600)], 0.6, 16000)
    write("robot_nine_16k.wav", 16000, nine, "PCM_16", "robot 'nine' (formant synth, 16 kHz)")
    oh = formant_voice([(450, 850, 2400), (500, 900, 2400), (320, 800, 2300)], 0.5, 44100, f0=160)
    stereo = np.stack([oh, 0.7 * oh], axis=1)
    write("robot_oh_stereo_44k.wav", 44100, stereo, "PCM_24", "robot 'oh' (stereo, 24-bit, 44.1 kHz)")
    t = np.arange(int(0.5 * 48000)) / 48000
    tone = np.concatenate([np.zeros(48000), 0.3 * np.sin(2 * np.pi * 440 * t), np.zeros(48000)]).astype(np.float32)
    write("tone_with_silence_48k.wav", 48000, tone, "FLOAT", "440 Hz tone between 1 s silences (float, 48 kHz)")
    noise = (0.2 * rng.standard_normal(8000)).astype(np.float32)
    write("noise_burst.flac", 8000, noise, "PCM_16", "white noise (FLAC)")
    return examples


@cache
def examples() -> list[tuple[str, str]]:
    """(path, label) of each synthesised example, written once per process into a fresh temporary folder."""
    folder = Path(tempfile.mkdtemp(prefix="playground-audio-"))
    return [(str(path), label) for path, label in synthesise_examples(folder)]
