"""The Image tab's example pictures: a plane, a ship, a car, a frog and a transparent truck,
drawn here with PIL so the tab needs no network and ships no dataset images.

`draw_examples(folder)` writes them as PNGs (the same bytes on every run: the frog's leaf litter
comes from a seeded generator); `example_paths()` draws them once per process into a temporary
folder for the tab's gr.Examples.
"""

from __future__ import annotations

import tempfile
from functools import cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter


def _sky(draw: ImageDraw.ImageDraw, size: int, top: tuple, bottom: tuple, until: int) -> None:
    """Fill rows 0..until with a vertical gradient from colour `top` to colour `bottom`."""
    for y in range(until):
        t = y / max(until - 1, 1)
        draw.line([(0, y), (size, y)], fill=tuple(int(a + (b - a) * t) for a, b in zip(top, bottom, strict=True)))


def draw_examples(folder: Path, size: int = 128) -> list[Path]:
    """Draw a plane, a ship, a car, a frog and a transparent truck; return their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    s = size / 128  # the shapes are drawn on a 128 grid

    def p(*xy: float) -> list[tuple[float, float]]:
        return [(xy[i] * s, xy[i + 1] * s) for i in range(0, len(xy), 2)]

    pictures: dict[str, Image.Image] = {}
    plane = Image.new("RGB", (size, size))
    d = ImageDraw.Draw(plane)
    _sky(d, size, (70, 130, 200), (190, 215, 240), size)
    d.ellipse(p(20, 56, 108, 70), fill=(235, 235, 240))  # fuselage
    d.polygon(p(55, 62, 75, 62, 60, 30, 52, 30), fill=(200, 200, 210))  # wings
    d.polygon(p(55, 64, 75, 64, 60, 98, 52, 98), fill=(200, 200, 210))
    d.polygon(p(22, 62, 32, 62, 24, 44, 18, 44), fill=(200, 200, 210))  # tail
    pictures["plane_in_sky.png"] = plane

    ship = Image.new("RGB", (size, size))
    d = ImageDraw.Draw(ship)
    _sky(d, size, (150, 190, 225), (215, 230, 240), int(70 * s))
    d.rectangle(p(0, 70, 128, 128), fill=(30, 80, 130))  # sea
    d.polygon(p(18, 62, 112, 62, 100, 80, 28, 80), fill=(60, 60, 70))  # hull
    d.rectangle(p(45, 44, 85, 62), fill=(235, 235, 235))  # superstructure
    d.rectangle(p(60, 32, 68, 44), fill=(180, 50, 40))  # funnel
    pictures["ship_at_sea.png"] = ship

    # a car filling the frame in front of a pale wall, tinted windows, a shaded lower body and
    # hubcaps (on a green field with pale windows, a side view read as an airplane; flat red with
    # black wheels, as a ship)
    car = Image.new("RGB", (size, size), (210, 210, 215))
    d = ImageDraw.Draw(car)

    def c(*xy: float) -> list[tuple[float, float]]:  # the car drawn 1.1 times larger around (64, 70)
        return p(*[(v - 64) * 1.1 + 64 if i % 2 == 0 else (v - 70) * 1.1 + 70 for i, v in enumerate(xy)])

    d.rectangle(p(0, 85, 128, 128), fill=(90, 90, 95))  # road
    d.rounded_rectangle(c(14, 58, 114, 88), radius=9 * s, fill=(200, 30, 35))  # body
    d.polygon(c(36, 58, 46, 40, 82, 40, 94, 58), fill=(200, 30, 35))  # cabin
    d.rounded_rectangle(c(14, 76, 114, 88), radius=6 * s, fill=(140, 21, 24))  # shade below the waist
    d.line(c(16, 66, 112, 66), fill=(255, 69, 75), width=max(1, int(2 * s)))  # highlight along the side
    d.polygon(c(42, 58, 50, 44, 64, 44, 64, 58), fill=(40, 50, 60))  # windows
    d.polygon(c(68, 58, 68, 44, 80, 44, 88, 58), fill=(40, 50, 60))
    d.ellipse(c(16, 64, 24, 72), fill=(250, 240, 180))  # headlight
    for x in (34, 94):
        d.ellipse(c(x - 11, 77, x + 11, 99), fill=(20, 20, 20))
        d.ellipse(c(x - 5, 83, x + 5, 93), fill=(170, 170, 175))  # hubcap
    pictures["red_car.png"] = car

    # a frog seen from close by, filling the frame on leaf litter, olive-brown, as CIFAR's frogs
    # are (a small bright-green one on bare ground was called a bird; a large grass-green one was
    # named right but its features sat far from the training photos', so the tab said to take care)
    ground = (110, 85, 55)
    frog = Image.new("RGB", (size, size), ground)
    d = ImageDraw.Draw(frog)
    rng = np.random.default_rng(3)
    for _ in range(60):
        x, y = rng.integers(0, 128, 2)
        r = int(rng.integers(3, 9))
        leaf = tuple(int(v) for v in np.add(ground, rng.integers(-30, 30, 3)))
        d.ellipse(p(x - r, y - r / 2, x + r, y + r / 2), fill=leaf)
    skin, dark = (130, 120, 60), (70, 60, 30)
    d.ellipse(p(14, 40, 114, 112), fill=skin)  # body
    d.ellipse(p(4, 84, 44, 118), fill=dark)  # hind legs
    d.ellipse(p(84, 84, 124, 118), fill=dark)
    for x in (40, 88):
        d.ellipse(p(x - 14, 26, x + 14, 54), fill=skin)  # eye bumps
        d.ellipse(p(x - 8, 32, x + 8, 48), fill=(200, 160, 40))
        d.ellipse(p(x - 4, 35, x + 4, 45), fill=(10, 10, 10))
    d.arc(p(34, 60, 94, 84), 10, 170, fill=(40, 60, 25), width=max(1, int(3 * s)))  # mouth
    for _ in range(25):
        x, y, r = int(rng.integers(24, 104)), int(rng.integers(56, 104)), int(rng.integers(2, 5))
        d.ellipse(p(x - r, y - r, x + r, y + r), fill=dark)  # spots
    pictures["frog_on_leaves.png"] = frog.filter(ImageFilter.GaussianBlur(0.8 * s))

    # transparent background on purpose (the tab fills it with white); the road under it and a
    # long box make it a truck (without them the model saw an airplane against the white); the box
    # is grey, as box trucks often are: a flat saturated red one was named truck but read as unlike
    # any photo by the tab's "unsure" check (its early features are far from CIFAR-10's)
    truck = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    d = ImageDraw.Draw(truck)
    d.rectangle(p(0, 88, 128, 128), fill=(95, 95, 100, 255))  # road
    d.rectangle(p(4, 30, 84, 92), fill=(170, 170, 175, 255))  # cargo box
    d.polygon(p(86, 46, 108, 46, 124, 66, 124, 92, 86, 92), fill=(40, 90, 170, 255))  # cab
    d.polygon(p(92, 50, 106, 50, 118, 66, 92, 66), fill=(170, 210, 230, 255))  # windscreen
    d.rectangle(p(4, 88, 124, 96), fill=(40, 40, 40, 255))  # chassis
    for x in (22, 44, 104):
        d.ellipse(p(x - 11, 84, x + 11, 106), fill=(20, 20, 20, 255))
        d.ellipse(p(x - 4, 91, x + 4, 99), fill=(150, 150, 150, 255))
    pictures["truck_transparent.png"] = truck

    paths = []
    for name, picture in pictures.items():
        picture.save(folder / name)
        paths.append(folder / name)
    return paths


@cache
def example_paths() -> list[str]:
    """The drawn examples' paths, drawn once per process into a fresh temporary folder."""
    return [str(path) for path in draw_examples(Path(tempfile.mkdtemp(prefix="playground-vision-")))]
