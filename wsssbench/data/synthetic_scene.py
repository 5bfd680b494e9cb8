"""Scenes of the synthetic confounded benchmark: classes, their contexts, and one image's rendering.

Every foreground class has a shape, a texture and a hue of its own, and a *context* of one of three
kinds, one per failure mode the CONTA paper names (Zhang et al., NeurIPS 2020, Sec. 1 and Fig. 2):

* ``partner`` (object ambiguity, person–horse): the context is an instance of a partner class placed
  touching the object;
* ``floor`` (incomplete background, sofa–floor): the context is a textured background band touching the
  object from below; its pixels are background (0) in the mask;
* ``part`` (incomplete foreground, car window–wheel): the object has a small discriminative part (two
  "wheels") and a "window" that reflects whatever lies behind it; the context is a textured background
  plate behind the object, which the window then shows.

Confounding ``p`` ties a context to its class: for each class, with probability ``p`` the context is
present exactly when the class is; otherwise it is present with the base rate ``b`` (the class's own
frequency), independently of the class. So ``P(ctx | class) = p + (1 - p) b`` and
``P(ctx | no class) = (1 - p) b``: ``p = 0`` is independence, ``p = 1`` is "always together, never apart".

Rendering is pure numpy + OpenCV (no anti-aliasing), driven only by the ``rng`` it is given, so the same
seed gives the same pixels.
"""
from __future__ import annotations

import colorsys
from dataclasses import dataclass

import cv2
import numpy as np

SHAPES = ("disc", "square", "triangle", "cross", "diamond", "ring", "hexagon", "star")
TEXTURES = ("hstripes", "checker", "dots", "vstripes", "dstripes", "grid", "rings", "zigzag")
ROLES = ("partner", "floor", "part")


@dataclass(frozen=True)
class ClassSpec:
    index: int              # class index in the mask (1-based; 0 is background)
    name: str
    shape: str
    texture: str
    hue: float
    role: str               # one of ROLES
    partner: int            # class index of the partner (role "partner"), else 0
    context_texture: str
    context_hue: float

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def make_classes(k: int) -> list[ClassSpec]:
    """``k`` foreground classes; (shape, texture) pairs are distinct for k <= 64, hues always differ."""
    if k < 2:
        raise ValueError("the synthetic benchmark needs at least 2 foreground classes (partners)")
    out = []
    for i in range(k):
        s, q = i % len(SHAPES), i // len(SHAPES)
        shape, texture = SHAPES[s], TEXTURES[(s + 3 * q) % len(TEXTURES)]
        name = f"{shape}-{texture}" + (f"-{i // 64}" if k > 64 else "")
        hue = (i * 0.618033988749895) % 1.0          # golden-ratio hues: far apart for any k
        role = ROLES[i % len(ROLES)]
        out.append(ClassSpec(index=i + 1, name=name, shape=shape, texture=texture, hue=round(hue, 6), role=role,
                             partner=(i + 1) % k + 1 if role == "partner" else 0,
                             context_texture=TEXTURES[(5 * i + 2) % len(TEXTURES)],
                             context_hue=round((hue + 0.5) % 1.0, 6)))
    return out


def _rgb(h: float, s: float, v: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(h % 1.0, min(max(s, 0), 1), min(max(v, 0), 1)), dtype=np.float32) * 255


def _texture(kind: str, ys: np.ndarray, xs: np.ndarray, c1: np.ndarray, c2: np.ndarray, period: int,
             centre: tuple[float, float]) -> np.ndarray:
    """Colours (N, 3) of the pixels at (ys, xs) for a two-colour pattern of the given period."""
    half = max(period // 2, 1)
    if kind == "hstripes":
        t = (ys // half) % 2
    elif kind == "vstripes":
        t = (xs // half) % 2
    elif kind == "dstripes":
        t = ((xs + ys) // half) % 2
    elif kind == "checker":
        t = (ys // half + xs // half) % 2
    elif kind == "dots":
        dy, dx = ys % period - period / 2, xs % period - period / 2
        t = (dy * dy + dx * dx) < (period / 3) ** 2
    elif kind == "grid":
        t = (ys % period < max(period // 4, 1)) | (xs % period < max(period // 4, 1))
    elif kind == "rings":
        t = (np.hypot(ys - centre[0], xs - centre[1]) // half) % 2
    elif kind == "zigzag":
        t = ((ys + np.abs(xs % period - period / 2)) // half) % 2
    else:
        raise ValueError(f"unknown texture {kind!r}")
    t = np.asarray(t, dtype=bool)[:, None]
    return np.where(t, c1, c2)


def _shape_mask(shape: str, h: int, w: int, cy: float, cx: float, r: float, angle: float) -> np.ndarray:
    m = np.zeros((h, w), np.uint8)
    centre = (int(round(cx)), int(round(cy)))
    if shape in ("disc", "ring"):
        cv2.circle(m, centre, max(int(round(r)), 1), 1, thickness=-1, lineType=cv2.LINE_8)
        if shape == "ring":
            cv2.circle(m, centre, max(int(round(0.45 * r)), 1), 0, thickness=-1, lineType=cv2.LINE_8)
        return m.astype(bool)
    if shape == "square":
        pts = [(1, 1), (-1, 1), (-1, -1), (1, -1)]
        pts = [(x * 0.8, y * 0.8) for x, y in pts]
    elif shape == "triangle":
        pts = [(np.cos(a), np.sin(a)) for a in np.deg2rad([-90, 30, 150])]
    elif shape == "diamond":
        pts = [(0, -1), (0.65, 0), (0, 1), (-0.65, 0)]
    elif shape == "hexagon":
        pts = [(np.cos(a), np.sin(a)) for a in np.deg2rad(np.arange(0, 360, 60))]
    elif shape == "star":
        pts = [((1.0 if j % 2 == 0 else 0.45) * np.cos(a), (1.0 if j % 2 == 0 else 0.45) * np.sin(a))
               for j, a in enumerate(np.deg2rad(np.arange(-90, 270, 36)))]
    elif shape == "cross":
        a, b = 1.0, 0.35
        pts = [(-b, -a), (b, -a), (b, -b), (a, -b), (a, b), (b, b), (b, a), (-b, a), (-b, b), (-a, b), (-a, -b), (-b, -b)]
    else:
        raise ValueError(f"unknown shape {shape!r}")
    ca, sa = np.cos(angle), np.sin(angle)
    poly = np.array([[cx + r * (x * ca - y * sa), cy + r * (x * sa + y * ca)] for x, y in pts])
    cv2.fillPoly(m, [np.round(poly).astype(np.int32)], 1, lineType=cv2.LINE_8)
    return m.astype(bool)


@dataclass
class Scene:
    image: np.ndarray        # (H, W, 3) uint8
    mask: np.ndarray         # (H, W) uint8 class index, 0 = background
    context: np.ndarray      # (H, W) uint8, c > 0 = on the context of class c
    primaries: list[int]     # classes placed as objects of the image (before occlusion)
    contexts: list[int]      # classes whose context was placed
    boxes: dict[int, tuple[int, int, int, int]]  # class -> (x0, y0, x1, y1) inclusive box of its visible pixels
    instances: list[tuple[int, np.ndarray]]      # (class, visible pixels) per drawn object, back to front


class _Canvas:
    def __init__(self, h: int, w: int, rng: np.random.Generator, period: int):
        self.h, self.w, self.rng, self.period = h, w, rng, period
        self.image = self._background()
        self.mask = np.zeros((h, w), np.uint8)
        self.context = np.zeros((h, w), np.uint8)

    def _background(self) -> np.ndarray:
        rng = self.rng
        c1 = _rgb(rng.random(), rng.uniform(0.1, 0.3), rng.uniform(0.35, 0.75))
        c2 = _rgb(rng.random(), rng.uniform(0.1, 0.3), rng.uniform(0.35, 0.75))
        alpha = rng.random((3, 3, 1)).astype(np.float32)
        # A smooth blend of two dull colours (blending before the linear resize is the same as after).
        return cv2.resize(c1 * (1 - alpha) + c2 * alpha, (self.w, self.h), interpolation=cv2.INTER_LINEAR)

    def paint(self, region: np.ndarray, kind: str, c1: np.ndarray, c2: np.ndarray, centre) -> None:
        ys, xs = np.nonzero(region)
        self.image[ys, xs] = _texture(kind, ys, xs, c1, c2, self.period, centre)

    def finish(self) -> np.ndarray:
        image = np.rint(self.image).astype(np.int16)
        image += self.rng.integers(-6, 7, self.image.shape, dtype=np.int16)     # sensor-like pixel noise
        return np.clip(image, 0, 255).astype(np.uint8)


def _place(rng, h: int, w: int, r: float, taken: list[tuple[float, float, float]]) -> tuple[float, float]:
    """A centre for an object of radius r, the best of a few draws by distance to the objects placed."""
    best, best_d = None, -np.inf
    for _ in range(8):
        cy = rng.uniform(min(r, h / 2), max(h - r, h / 2))
        cx = rng.uniform(min(r, w / 2), max(w - r, w / 2))
        d = min((np.hypot(cy - y, cx - x) - r - rr for y, x, rr in taken), default=np.inf)
        if d > best_d:
            best, best_d = (cy, cx), d
        if d >= 0:
            break
    return best


def render(classes: list[ClassSpec], rng: np.random.Generator, h: int, w: int, primaries: list[int],
           confounding: float, base_rate: float, scale: tuple[float, float]) -> Scene:
    """One image with the given primary objects; contexts drawn per the confounding rule above."""
    side = min(h, w)
    period = max(4, int(round(side / 10)))
    canvas = _Canvas(h, w, rng, period)

    contexts = []
    for spec in classes:                        # fixed order and draw count: determinism
        u, v = rng.random(), rng.random()
        if u < confounding:                     # tied to the class: placed exactly when the class is
            if spec.index in primaries:
                contexts.append(spec.index)
        elif v < base_rate:
            contexts.append(spec.index)

    # Geometry: every primary and every context that travels alone gets a centre and a radius.
    taken: list[tuple[float, float, float]] = []
    objects: dict[int, tuple[float, float, float, float]] = {}       # class -> (cy, cx, r, angle)
    for c in primaries:
        r = side * rng.uniform(*scale)
        cy, cx = _place(rng, h, w, r, taken)
        taken.append((cy, cx, r))
        objects[c] = (cy, cx, r, rng.uniform(0, 2 * np.pi))
    lone: dict[int, tuple[float, float, float, float]] = {}
    for c in contexts:
        if c not in objects:
            r = side * rng.uniform(*scale)
            cy, cx = _place(rng, h, w, r, taken)
            taken.append((cy, cx, r))
            lone[c] = (cy, cx, r, rng.uniform(0, 2 * np.pi))

    def anchor(c):
        return objects[c] if c in objects else lone[c]

    # 1. Background contexts (floor bands, plates behind part-objects).
    yy, xx = np.ogrid[:h, :w]
    for c in contexts:
        spec = classes[c - 1]
        if spec.role == "partner":
            continue
        cy, cx, r, _ = anchor(c)
        if spec.role == "floor":            # a band under the object, its top hidden behind the object
            region = (yy >= cy + 0.6 * r) & (yy <= cy + 1.8 * r) & (np.abs(xx - cx) <= 1.5 * r)
        else:                               # a plate behind the object, larger than it
            region = (np.abs(yy - cy) <= 1.45 * r) & (np.abs(xx - cx) <= 1.45 * r)
        c1 = _rgb(spec.context_hue, 0.45, 0.8)
        c2 = _rgb(spec.context_hue + 0.08, 0.35, 0.4)
        canvas.paint(region, spec.context_texture, c1, c2, (cy, cx))
        canvas.context[region] = c

    # 2. Partner instances: touching the anchor, drawn before (behind) the primaries.
    drawn: list[tuple[int, np.ndarray]] = []        # (class, pixels) of every object, in drawing order
    for c in contexts:
        spec = classes[c - 1]
        if spec.role != "partner":
            continue
        cy, cx, r, _ = anchor(c)
        pr = r * rng.uniform(0.8, 1.1)
        a = rng.uniform(0, 2 * np.pi)
        py, px = cy + 0.85 * (r + pr) * np.sin(a), cx + 0.85 * (r + pr) * np.cos(a)
        region = _draw_object(canvas, classes[spec.partner - 1], py, px, pr, rng.uniform(0, 2 * np.pi), rng)
        canvas.context[region] = c
        drawn.append((spec.partner, region))

    # 3. The primaries, in order (a later one may occlude an earlier one).
    for c in primaries:
        cy, cx, r, angle = objects[c]
        region = _draw_object(canvas, classes[c - 1], cy, cx, r, angle, rng)
        canvas.context[region] = 0
        drawn.append((c, region))

    boxes = {}
    for c in np.unique(canvas.mask):
        if c:
            ys, xs = np.nonzero(canvas.mask == c)
            boxes[int(c)] = (int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max()))
    return Scene(image=canvas.finish(), mask=canvas.mask, context=canvas.context, primaries=list(primaries),
                 contexts=contexts, boxes=boxes, instances=_visible(drawn))


def _visible(drawn: list[tuple[int, np.ndarray]]) -> list[tuple[int, np.ndarray]]:
    """Each drawn object's pixels less those of the objects drawn after it; fully hidden ones dropped.

    The parts are disjoint and the parts of class c together are exactly the mask's pixels of c."""
    out, covered = [], None
    for c, region in reversed(drawn):
        part = region if covered is None else region & ~covered
        covered = region if covered is None else covered | region
        if part.any():
            out.append((c, part))
    return out[::-1]


def _draw_object(canvas: _Canvas, spec: ClassSpec, cy: float, cx: float, r: float, angle: float,
                 rng: np.random.Generator) -> np.ndarray:
    """Paint one object of ``spec`` and label it in the mask; returns its pixels."""
    h, w = canvas.h, canvas.w
    jitter = rng.uniform(-0.03, 0.03)
    c1 = _rgb(spec.hue + jitter, 0.8, rng.uniform(0.8, 1.0))
    c2 = _rgb(spec.hue + jitter, 0.7, rng.uniform(0.25, 0.4))
    body = _shape_mask(spec.shape, h, w, cy, cx, r, angle)
    if spec.role != "part":
        canvas.paint(body, spec.texture, c1, c2, (cy, cx))
        canvas.mask[body] = spec.index
        return body
    # The window reflects what lies behind it (background or the context plate): tinted, not repainted.
    yy, xx = np.ogrid[:h, :w]
    window = body & (yy < cy - 0.1 * r)
    canvas.paint(body & ~window, spec.texture, c1, c2, (cy, cx))
    canvas.image[window] = 0.75 * canvas.image[window] + 0.25 * c1
    wheels = np.zeros((h, w), bool)
    for dx in (-0.5, 0.5):
        wy, wx, wr = cy + 0.65 * r, cx + dx * r, max(0.28 * r, 1.5)
        wheels |= (yy - wy) ** 2 + (xx - wx) ** 2 <= wr * wr
    canvas.image[wheels] = _rgb(spec.hue, 1.0, 1.0)
    hub = np.zeros((h, w), bool)
    for dx in (-0.5, 0.5):
        hub |= (yy - (cy + 0.65 * r)) ** 2 + (xx - (cx + dx * r)) ** 2 <= max(0.1 * r, 0.8) ** 2
    canvas.image[hub] = 20.0
    region = body | wheels
    canvas.mask[region] = spec.index
    return region
