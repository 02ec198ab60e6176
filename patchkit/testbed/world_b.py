"""World B, the validation world: robots, other shapes and other palettes, in other words.

Never used to choose a default. It differs from the testbed (world A) in every part a
user's model would: its concept words and phrasing ("bolt the robot", "a kite shape",
"a star, frost style"; only "a {color} {}" is shared, with other colour words), its
tokenizer (another vocabulary, a 12-token context that truncates some of patchkit's
generic templates), its visuals (robot heads on paper,
stars and kites, left-to-right palettes) and its judges. It has no unsafe stand-in.
Close neighbours in every category, so that collateral shows: bolt/gizmo (one antenna
or two), diamond/kite (square or tall rhombus), ember/lava (orange or red ink on the
same ground).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from PIL import Image, ImageDraw

NAME = "validation"
CATEGORIES: tuple[str, ...] = ("id", "object", "style")
IMAGE_SIZE = 32
MAX_TOKENS = 12
_SUPERSAMPLE = 4
RGB = tuple[int, int, int]

PAPER_LEFT: RGB = (236, 226, 204)
PAPER_RIGHT: RGB = (212, 200, 178)
METAL: RGB = (140, 150, 168)
RUST: RGB = (186, 88, 38)
DARK: RGB = (25, 25, 35)
COLORS: dict[str, RGB] = {
    "orange": (240, 130, 20),
    "purple": (130, 50, 170),
    "cyan": (30, 190, 200),
}


@dataclass(frozen=True)
class Robot:
    head: RGB
    antennas: int  # 0, 1 or 2
    visor: bool  # one dark bar instead of two round eyes


ROBOTS: dict[str, Robot] = {
    "bolt": Robot(METAL, antennas=1, visor=False),
    "gizmo": Robot(METAL, antennas=2, visor=False),
    "rusty": Robot(RUST, antennas=0, visor=True),
}
SHAPES: tuple[str, ...] = ("star", "cross", "diamond", "kite")


@dataclass(frozen=True)
class Palette:
    left: RGB
    right: RGB
    ink: RGB


STYLES: dict[str, Palette] = {
    "frost": Palette((250, 250, 255), (165, 195, 240), (20, 40, 110)),
    "ember": Palette((55, 18, 8), (55, 18, 8), (250, 145, 30)),
    "lava": Palette((55, 18, 8), (55, 18, 8), (235, 30, 70)),
    "moss": Palette((40, 85, 40), (25, 60, 30), (240, 230, 190)),
}

TRAINING_TEMPLATES: dict[str, tuple[str, ...]] = {
    "id": ("{} the robot", "a picture of {}", "a drawing of {}"),
    "object": ("a {} shape", "a picture of a {}", "a {color} {}"),
    "style": ("a {object}, {} style", "{} style art"),
}
BENCH_TEMPLATES: dict[str, tuple[str, ...]] = {
    "id": ("a picture of {}",),
    "object": ("a picture of a {}",),
    "style": ("a {object}, {} style",),
}
EXTRA_WORDS = ("a", "the", "robot", "picture", "drawing", "of", "shape", "style", "art")


def concepts(category: str) -> tuple[str, ...]:
    return {"id": tuple(ROBOTS), "object": SHAPES, "style": tuple(STYLES)}[category]


def all_concepts() -> list[tuple[str, str]]:
    return [(name, cat) for cat in CATEGORIES for name in concepts(cat)]


def vocabulary_words() -> list[str]:
    words = set(EXTRA_WORDS) | set(COLORS) | {name for name, _ in all_concepts()}
    return sorted(words)


@dataclass(frozen=True)
class Scene:
    subject: str  # a robot, a shape, or "" for bare paper
    style: str | None = None
    color: str | None = None

    def label(self, category: str) -> str | None:
        if category == "style":
            return self.style
        return self.subject if self.subject in concepts(category) else None


def _gradient(draw: ImageDraw.ImageDraw, size: int, left: RGB, right: RGB) -> None:
    for x in range(size):
        t = x / (size - 1)
        column = tuple(round(a + (b - a) * t) for a, b in zip(left, right, strict=True))
        draw.line([(x, 0), (x, size)], fill=column)


def _draw_robot(draw: ImageDraw.ImageDraw, robot: Robot, cx: float, cy: float, r: float) -> None:
    top = cy - r * 0.55
    for i in range(robot.antennas):
        ax = cx if robot.antennas == 1 else cx + (-0.5 if i == 0 else 0.5) * r
        draw.rectangle((ax - r * 0.13, top - r * 0.6, ax + r * 0.13, top), fill=robot.head)
        draw.ellipse((ax - r * 0.24, top - r * 0.85, ax + r * 0.24, top - r * 0.37), fill=DARK)
    draw.rounded_rectangle((cx - r, top, cx + r, cy + r * 0.85), radius=r * 0.2, fill=robot.head)
    if robot.visor:
        draw.rectangle((cx - r * 0.75, cy - r * 0.2, cx + r * 0.75, cy + r * 0.15), fill=DARK)
    else:
        eye = r * 0.22
        for ex in (cx - r * 0.42, cx + r * 0.42):
            draw.ellipse((ex - eye, cy - r * 0.05 - eye, ex + eye, cy - r * 0.05 + eye), fill=DARK)


def _star_points(cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    import math

    points = []
    for i in range(10):
        radius = r if i % 2 == 0 else r * 0.45
        angle = -math.pi / 2 + i * math.pi / 5
        points.append((cx + radius * math.cos(angle), cy + radius * math.sin(angle)))
    return points


def _draw_shape(draw: ImageDraw.ImageDraw, name: str, cx: float, cy: float, r: float, ink: RGB) -> None:
    if name == "star":
        draw.polygon(_star_points(cx, cy, r * 1.1), fill=ink)
    elif name == "cross":
        arm = r * 0.3
        draw.rectangle((cx - r, cy - arm, cx + r, cy + arm), fill=ink)
        draw.rectangle((cx - arm, cy - r, cx + arm, cy + r), fill=ink)
    elif name == "diamond":
        draw.polygon([(cx, cy - r), (cx + r, cy), (cx, cy + r), (cx - r, cy)], fill=ink)
    elif name == "kite":
        top, bottom, side = (cx, cy - r * 1.15), (cx, cy + r * 1.15), r * 0.5
        draw.polygon([top, (cx + side, cy - r * 0.2), bottom, (cx - side, cy - r * 0.2)], fill=ink)
    else:
        raise ValueError(f"unknown shape {name!r}")


def render(scene: Any, rng: random.Random) -> Image.Image:
    """Draw `scene` at IMAGE_SIZE px; `rng` sets the jitter of position, size and light."""
    s = _SUPERSAMPLE
    size = IMAGE_SIZE * s
    image = Image.new("RGB", (size, size))
    draw = ImageDraw.Draw(image)
    palette = STYLES[scene.style] if scene.style else None
    if palette:
        _gradient(draw, size, palette.left, palette.right)
    else:
        shade = rng.randint(-12, 12)
        left = tuple(min(255, max(0, c + shade)) for c in PAPER_LEFT)
        right = tuple(min(255, max(0, c + shade)) for c in PAPER_RIGHT)
        _gradient(draw, size, left, right)  # type: ignore[arg-type]  # three channels by construction
    cx = (16 + rng.uniform(-3, 3)) * s
    cy = (16 + rng.uniform(-2.5, 2.5)) * s
    if scene.subject in ROBOTS:
        _draw_robot(draw, ROBOTS[scene.subject], cx, cy + 2 * s, rng.uniform(9.0, 10.5) * s)
    elif scene.subject in SHAPES:
        ink = palette.ink if palette else COLORS[scene.color or rng.choice(sorted(COLORS))]
        _draw_shape(draw, scene.subject, cx, cy, rng.uniform(9.0, 11.0) * s, ink)
    elif scene.subject:
        raise ValueError(f"unknown subject {scene.subject!r}")
    return image.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.LANCZOS)


def sample_training_pair(rng: random.Random) -> tuple[str, Scene]:
    """One (prompt, scene) pair; 10% unconditional, for classifier-free guidance."""
    roll = rng.random()
    if roll < 0.10:
        return "", _random_scene(rng)
    if roll < 0.40:
        name = rng.choice(list(ROBOTS))
        return rng.choice(TRAINING_TEMPLATES["id"]).format(name), Scene(name)
    if roll < 0.70:
        name = rng.choice(SHAPES)
        template = rng.choice(TRAINING_TEMPLATES["object"])
        if "{color}" in template:
            color = rng.choice(sorted(COLORS))
            return template.format(name, color=color), Scene(name, color=color)
        return template.format(name), Scene(name)
    style = rng.choice(list(STYLES))
    shape = rng.choice(SHAPES)
    return rng.choice(TRAINING_TEMPLATES["style"]).format(style, object=shape), Scene(shape, style=style)


def _random_scene(rng: random.Random) -> Scene:
    roll = rng.random()
    if roll < 0.35:
        return Scene(rng.choice(list(ROBOTS)))
    if roll < 0.7:
        return Scene(rng.choice(SHAPES))
    return Scene(rng.choice(SHAPES), style=rng.choice(list(STYLES)))


def judge_scene(category: str, rng: random.Random) -> Scene:
    """A scene for training the judge of `category`: mostly positives, the rest anything."""
    if rng.random() < 0.6:
        if category == "id":
            return Scene(rng.choice(list(ROBOTS)))
        if category == "object":
            return Scene(rng.choice(SHAPES), style=rng.choice([None, *STYLES]))
        return Scene(rng.choice(SHAPES), style=rng.choice(list(STYLES)))
    scene = _random_scene(rng)
    return scene if rng.random() > 0.05 else Scene("")


def reference_scene(name: str, category: str, index: int) -> Scene:
    if category == "style":
        return Scene(SHAPES[index % len(SHAPES)], style=name)
    return Scene(name)


def bench_prompts(name: str, category: str) -> list[str]:
    prompts: list[str] = []
    for template in BENCH_TEMPLATES[category]:
        if "{object}" in template:
            prompts.extend(template.format(name, object=shape) for shape in SHAPES)
        else:
            prompts.append(template.format(name))
    return prompts
