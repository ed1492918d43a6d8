"""Uploaded audio files: the header decides what is read, before any decoding (`read_audio_file`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from demos.input_checks import InputRefused

MAX_AUDIO_SECONDS = 60.0  # a spoken digit lasts a second; a minute leaves room for silence around it
MAX_AUDIO_FRAMES = 2_000_000  # frames decoded at the file's own rate (10 s at 192 kHz, 45 s at 44.1 kHz)
MAX_AUDIO_CHANNELS = 32
AUDIO_RATES = (1000, 768_000)  # Hz: what a real recording uses
DECODE_BLOCK_SAMPLES = 1 << 20  # samples (frames x channels) decoded at once, mixed to mono at once


def read_audio_file(path: str | Path) -> tuple[int, np.ndarray, list[str]]:
    """An uploaded audio file -> (sample rate, float32 mono samples, notes). Raises InputRefused.

    The header (soundfile.info) is checked first: its rate, its channel count and how much of it
    the model could use set how many frames are decoded, whatever the file claims to hold. Frames
    are decoded in blocks and mixed to mono block by block, so memory is that of one channel."""
    import soundfile as sf

    from models.audio import RoutineNote

    path = Path(path)
    name = path.name
    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError, TypeError, OSError) as err:
        raise InputRefused(
            f"{name} is not an audio file that can be read (try WAV, FLAC or OGG; MP3 may also work)."
        ) from err
    rate, channels = int(info.samplerate), int(info.channels)
    if not AUDIO_RATES[0] <= rate <= AUDIO_RATES[1]:
        raise InputRefused(
            f"{name} says its sample rate is {rate} Hz; a recording's rate is {AUDIO_RATES[0] // 1000} kHz "
            f"to {AUDIO_RATES[1] // 1000} kHz."
        )
    if not 1 <= channels <= MAX_AUDIO_CHANNELS:
        raise InputRefused(f"{name} has {channels} channels; this app reads recordings of 1 to {MAX_AUDIO_CHANNELS}.")
    frames = max(0, int(info.frames))
    wanted = min(frames, int(MAX_AUDIO_SECONDS * rate), MAX_AUDIO_FRAMES)
    notes: list[str] = []
    if wanted < frames:
        notes.append(
            f"The file lasts {frames / rate / 60:.1f} minutes; only its first {wanted / rate:.0f} s were read "
            "(a spoken digit takes about one)."
        )
    mono = np.empty(wanted, dtype=np.float32)
    filled = 0
    block = np.empty((max(1, min(wanted, DECODE_BLOCK_SAMPLES // channels)), channels), dtype=np.float32)
    try:
        with sf.SoundFile(str(path)) as f:
            while filled < wanted:
                out = block[: min(len(block), wanted - filled)]
                out.fill(np.nan)
                try:
                    n = len(f.read(len(out), dtype="float32", always_2d=True, out=out))
                except (sf.LibsndfileError, RuntimeError):
                    # a file shorter than its header says: soundfile raises after decoding what
                    # there is (seeking past the end), so keep the rows it wrote (NaN marks the rest)
                    finite = np.flatnonzero(np.isfinite(out).any(axis=1))
                    if filled == 0 and finite.size == 0:
                        raise
                    n = int(finite[-1]) + 1 if finite.size else 0
                    wanted = filled + n
                    notes = [note for note in notes if not note.startswith("The file lasts")]  # it does not
                    notes.append(
                        f"{name} ends before its header says; the {(filled + n) / rate:.1f} s it holds were read."
                    )
                if n == 0:
                    break
                mono[filled : filled + n] = out[:n].mean(axis=1) if channels > 1 else out[:n, 0]
                filled += n
    except (sf.LibsndfileError, RuntimeError) as err:
        raise InputRefused(f"{name} is damaged or incomplete and could not be decoded.") from err
    if channels > 1:
        notes.append(RoutineNote(f"Mixed {channels} channels down to mono."))
    return rate, mono[:filled], notes
