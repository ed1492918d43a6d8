"""bench/audio_listening.py: its passes are the tab's own when they should be, a tempo pass is the
training's time stretch, and the two ways of combining passes differ where they should."""

from __future__ import annotations

import numpy as np
import torch

from bench import audio_listening as listening
from models.audio import LISTENING_SPEEDS, AudioConfig, AudioTransformer
from training.audio import time_stretch

TINY = AudioConfig(d_model=32, n_layers=2, n_heads=2, d_ff=64, stem="conv", stem_channels=4)


def clips() -> list[torch.Tensor]:
    return [torch.sin(torch.arange(n) * f) * 0.1 for n, f in ((6000, 0.3), (4000, 0.7), (7000, 0.2))]


def test_the_tabs_set_reproduces_what_the_tab_answers():
    torch.manual_seed(0)
    model = AudioTransformer(TINY).eval()
    heard = listening.listen(model, clips(), listening.SETS["three speeds (the tab)"], batch_size=2)
    answer = np.stack([heard[(s, 1.0)] for s in LISTENING_SPEEDS]).mean(0)
    with torch.no_grad():
        np.testing.assert_allclose(answer, model.probabilities(clips()).numpy(), rtol=0, atol=1e-5)


def test_a_tempo_pass_is_the_trainings_time_stretch_of_one_clip():
    torch.manual_seed(0)
    model = AudioTransformer(TINY).eval()
    clip = clips()[0]
    heard = listening.listen(model, [clip], [(1.0, 0.9), (1.0, 1.1)])
    with torch.no_grad():
        spec, frames = model.spectrogram(clip[None])
        for tempo in (0.9, 1.1):
            room = torch.nn.functional.pad(spec, (0, 40))  # a slowed clip needs more frames
            stretched, n = time_stretch(room, frames, 0.0, 10_000, tempo=torch.tensor([tempo]))
            assert abs(int(n) - round(int(frames) / tempo)) <= 1
            alone = model.classify(stretched[..., : int(n)], n).logits.softmax(-1).numpy()
            np.testing.assert_allclose(heard[(1.0, tempo)], alone, rtol=0, atol=1e-5)
    assert not np.allclose(heard[(1.0, 0.9)], heard[(1.0, 1.1)], atol=1e-4)


def test_the_geometric_mean_lets_a_pass_rule_a_class_out():
    # pass 1 is sure of class 0; pass 2 all but rules class 0 out and splits between 1 and 2
    probs = np.array([[[0.95, 0.05, 0.0]], [[1e-4, 0.5, 0.4999]]])
    assert listening.combine(probs, "probabilities")[0] == 0  # means 0.475, 0.275, 0.25
    assert listening.combine(probs, "log-probabilities")[0] == 1  # class 2 has a zero, class 0 a 1e-4
    agree = np.array([[[0.2, 0.8]], [[0.4, 0.6]]])
    assert [listening.combine(agree, m)[0] for m in listening.MEANS] == [1, 1]
