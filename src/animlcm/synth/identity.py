"""A synthetic dancer's look: body proportions, skin, hair, clothes (colours and textures).

Lengths are in *body units*: a standing dancer is about 1.0 tall from the ankles to the top of the head. The
renderer converts them to pixels with the frame's scale, so a look is independent of the frame size.
Colours are RGB floats in [0, 1].
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass, field

import numpy as np

from animlcm.synth.seeds import generator

RGB = tuple[float, float, float]

TEXTURE_KINDS = ("solid", "stripes", "dots", "gradient", "checker")
HAIR_STYLES = ("short", "long", "bun", "bob", "bald")
SLEEVES = ("none", "short", "long")
LOWER = ("pants", "shorts", "skirt")

# Realistic skin tones (light to dark); each identity jitters one of them.
_SKIN = (
    (0.98, 0.84, 0.72),
    (0.93, 0.76, 0.62),
    (0.84, 0.64, 0.48),
    (0.70, 0.50, 0.35),
    (0.55, 0.37, 0.25),
    (0.40, 0.27, 0.18),
)
_HAIR = (
    (0.08, 0.06, 0.05),
    (0.25, 0.15, 0.08),
    (0.45, 0.28, 0.12),
    (0.85, 0.70, 0.40),
    (0.60, 0.22, 0.08),
    (0.75, 0.75, 0.78),
    (0.20, 0.35, 0.85),
    (0.90, 0.35, 0.60),
)
_HAIR_P = (0.25, 0.2, 0.15, 0.12, 0.1, 0.06, 0.06, 0.06)
_EYES = ((0.25, 0.15, 0.08), (0.15, 0.35, 0.60), (0.20, 0.45, 0.25), (0.10, 0.08, 0.06))


@dataclass(frozen=True)
class Texture:
    """A pattern in part-local coordinates (u along the part, v across it), so it moves with the limb."""

    kind: str = "solid"
    c1: RGB = (0.5, 0.5, 0.5)
    c2: RGB = (0.5, 0.5, 0.5)
    period: float = 0.05  # body units
    angle: float = 0.0  # radians, pattern orientation relative to the part's axis


@dataclass(frozen=True)
class Proportions:
    """Segment lengths and radii in body units (defaults: an average dancer)."""

    head_r: float = 0.088
    neck_len: float = 0.03  # neck keypoint to the bottom of the head
    torso_len: float = 0.30  # neck keypoint to mid-hip
    shoulder_w: float = 0.11  # half width
    hip_w: float = 0.07  # half width
    upper_arm: float = 0.16
    forearm: float = 0.145
    hand: float = 0.05
    thigh: float = 0.23
    shin: float = 0.22
    foot: float = 0.065
    arm_r: float = 0.034
    leg_r: float = 0.05
    waist: float = 0.62  # where the trousers start, as a fraction of the torso from the neck


@dataclass(frozen=True)
class Identity:
    index: int
    body: Proportions = field(default_factory=Proportions)
    skin: RGB = _SKIN[1]
    hair: RGB = _HAIR[0]
    hair_style: str = "short"
    eyes: RGB = _EYES[0]
    lips: RGB = (0.70, 0.30, 0.30)
    shirt: Texture = Texture()
    sleeve_left: Texture = Texture()
    sleeve_right: Texture = Texture()
    sleeves: str = "short"
    cuff: Texture = Texture()  # forearm of long sleeves
    lower: str = "pants"
    pants: Texture = Texture()
    shins: Texture = Texture()  # lower leg when it is clothed (trousers, or boots under shorts/skirt)
    boots: bool = False
    shoes: RGB = (0.1, 0.1, 0.1)
    gloves: RGB | None = None
    belt: RGB | None = None


def _hsv(h: float, s: float, v: float) -> RGB:
    r, g, b = colorsys.hsv_to_rgb(h % 1.0, float(np.clip(s, 0, 1)), float(np.clip(v, 0, 1)))
    return (r, g, b)


def _cloth_colour(rng: np.random.Generator, avoid_hue: float | None = None) -> RGB:
    hue = rng.uniform()
    if avoid_hue is not None and abs((hue - avoid_hue + 0.5) % 1.0 - 0.5) < 0.12:
        hue += 0.33  # two garments of nearly one hue would blur the limb boundary
    if rng.uniform() < 0.15:  # greys, black and white exist in wardrobes too
        return _hsv(hue, 0.05, rng.choice([0.12, 0.5, 0.92]))
    return _hsv(hue, rng.uniform(0.45, 0.95), rng.uniform(0.35, 0.95))


def _texture(
    rng: np.random.Generator, base: RGB | None = None, kinds: tuple[str, ...] = TEXTURE_KINDS
) -> Texture:
    c1 = base if base is not None else _cloth_colour(rng)
    kind = str(rng.choice(kinds))
    # the second colour contrasts in value so the pattern survives video compression at 128 px
    h, s, v = colorsys.rgb_to_hsv(*c1)
    c2 = _hsv(h + rng.uniform(-0.5, 0.5), rng.uniform(0.2, 0.9), v - 0.45 if v > 0.55 else v + 0.45)
    period = {
        "stripes": rng.uniform(0.035, 0.07),
        "dots": rng.uniform(0.04, 0.07),
        "gradient": rng.uniform(0.08, 0.2),
        "checker": rng.uniform(0.04, 0.07),
    }.get(kind, 0.05)
    angle = float(rng.choice([0.0, np.pi / 2, np.pi / 4, -np.pi / 4]))
    return Texture(kind=kind, c1=c1, c2=c2, period=float(period), angle=angle)


def _jitter(rng: np.random.Generator, colour: RGB, amount: float) -> RGB:
    c = np.clip(np.asarray(colour) * rng.uniform(1 - amount, 1 + amount) + rng.normal(0, amount / 3, 3), 0, 1)
    return (float(c[0]), float(c[1]), float(c[2]))


def sample_proportions(rng: np.random.Generator) -> Proportions:
    base = Proportions()
    build = rng.uniform(0.85, 1.2)  # slim .. broad
    limbs = rng.uniform(0.92, 1.08)  # short .. long limbs

    def j(x: float, s: float = 0.06) -> float:
        return float(x * rng.uniform(1 - s, 1 + s))

    return Proportions(
        head_r=j(base.head_r, 0.1),
        neck_len=j(base.neck_len, 0.25),
        torso_len=j(base.torso_len),
        shoulder_w=j(base.shoulder_w * build),
        hip_w=j(base.hip_w * build),
        upper_arm=j(base.upper_arm * limbs),
        forearm=j(base.forearm * limbs),
        hand=j(base.hand),
        thigh=j(base.thigh * limbs),
        shin=j(base.shin * limbs),
        foot=j(base.foot),
        arm_r=j(base.arm_r * build, 0.1),
        leg_r=j(base.leg_r * build, 0.1),
        waist=j(base.waist, 0.05),
    )


def sample_identity(rng: np.random.Generator, index: int = 0) -> Identity:
    """Draw one dancer's look; the number and order of draws is fixed so looks are reproducible."""
    body = sample_proportions(rng)
    skin = _jitter(rng, _SKIN[int(rng.integers(len(_SKIN)))], 0.06)
    hair = _jitter(rng, _HAIR[int(rng.choice(len(_HAIR), p=_HAIR_P))], 0.08)
    hair_style = str(rng.choice(HAIR_STYLES, p=(0.3, 0.25, 0.15, 0.22, 0.08)))
    eyes = _EYES[int(rng.integers(len(_EYES)))]
    lips = _jitter(rng, (0.75, 0.32, 0.35), 0.12)

    shirt = _texture(rng)
    sleeves = str(rng.choice(SLEEVES, p=(0.2, 0.45, 0.35)))
    # sleeves: same as the shirt, a contrasting solid, or (rarely) different per side (a two-tone jersey)
    r = rng.uniform()
    if r < 0.45:
        sleeve_right = shirt
    else:
        sleeve_right = _texture(rng, kinds=("solid", "stripes", "gradient"))
    sleeve_left = sleeve_right if rng.uniform() < 0.7 else _texture(rng, kinds=("solid", "stripes"))
    cuff = sleeve_right if rng.uniform() < 0.6 else _texture(rng, kinds=("solid", "stripes", "dots"))

    lower = str(rng.choice(LOWER, p=(0.5, 0.25, 0.25)))
    pants = _texture(rng, base=_cloth_colour(rng, avoid_hue=colorsys.rgb_to_hsv(*shirt.c1)[0]))
    boots = lower != "pants" and rng.uniform() < 0.35
    if lower == "pants":
        shins = pants if rng.uniform() < 0.7 else _texture(rng, kinds=("solid", "stripes"))
    else:
        shins = _texture(rng, kinds=("solid", "stripes"))
    shoes = _cloth_colour(rng) if rng.uniform() < 0.6 else _hsv(0, 0, rng.choice([0.08, 0.95]))
    gloves = _cloth_colour(rng) if rng.uniform() < 0.2 else None
    belt = (
        _hsv(rng.uniform(), 0.5, rng.uniform(0.1, 0.5)) if lower != "skirt" and rng.uniform() < 0.4 else None
    )
    return Identity(
        index=index,
        body=body,
        skin=skin,
        hair=hair,
        hair_style=hair_style,
        eyes=eyes,
        lips=lips,
        shirt=shirt,
        sleeve_left=sleeve_left,
        sleeve_right=sleeve_right,
        sleeves=sleeves,
        cuff=cuff,
        lower=lower,
        pants=pants,
        shins=shins,
        boots=bool(boots),
        shoes=shoes,
        gloves=gloves,
        belt=belt,
    )


def identity_for(seed: int, index: int, split: str = "train") -> Identity:
    """The look of identity ``index`` of a set: a function of (seed, split, index) only."""
    return sample_identity(generator(seed, split, "identity", index), index=index)
