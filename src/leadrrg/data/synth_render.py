"""SynthCXR renderer: a frontal (PA) chest radiograph drawn from a `Findings`, in vectorised numpy.

Geometry lives in a canonical frame: X from -1 (image left, the patient's RIGHT) to 1, Y from -1 (top)
to 1. A random pose (scale, rotation, shift) maps the pixel grid into that frame, so every shape below is
written once, as an implicit function of (X, Y) arrays. Thin structures (vessels, devices, Kerley lines,
air bronchograms) are drawn as polylines with Pillow, through the same pose, and blurred.

The image is built as a density map D (bright = dense): body soft tissue, minus lung air, plus heart,
mediastinum, bones, vessels and the findings' opacities; then an exposure curve and noise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

if TYPE_CHECKING:
    from leadrrg.data.synth import Findings

SEVERITY_INDEX = {"mild": 0, "moderate": 1, "large": 2}


def _ramp(d: np.ndarray, width: float) -> np.ndarray:
    """Soft step: 0 for d <= -width/2, 1 for d >= width/2, linear between (an anti-aliased edge)."""
    return np.clip(0.5 + d / width, 0.0, 1.0)


def _side_sign(side: str) -> float:
    """Canonical X sign of a patient side: the patient's right is on the image's left."""
    return -1.0 if side == "right" else 1.0


def _sides(side: str) -> tuple[float, ...]:
    return (-1.0, 1.0) if side == "bilateral" else (_side_sign(side),)


@dataclass
class Anatomy:
    """One patient's geometry, pose and exposure (all in canonical units)."""

    scale: float
    rotation: float
    shift_x: float
    shift_y: float
    half_width: float  # W: lateral lung boundary at the costophrenic angles
    y_apex: float
    y_dome_right: float
    y_dome_left: float
    y_cp: float  # costophrenic angles
    ctr: float  # cardiothoracic ratio
    mediastinum: float  # upper mediastinum half-width
    soft_tissue: float  # 0 thin .. 1 large patient
    breasts: bool
    gamma: float
    contrast: float
    brightness: float
    noise: float


def sample_anatomy(rng: np.random.Generator) -> Anatomy:
    y_dome_right = rng.uniform(0.38, 0.48)
    return Anatomy(
        scale=rng.uniform(0.86, 1.0),
        rotation=rng.uniform(-0.05, 0.05),
        shift_x=rng.uniform(-0.04, 0.04),
        shift_y=rng.uniform(-0.03, 0.05),
        half_width=rng.uniform(0.74, 0.84),
        y_apex=rng.uniform(-0.80, -0.70),
        y_dome_right=y_dome_right,
        y_dome_left=y_dome_right + rng.uniform(0.02, 0.08),
        y_cp=y_dome_right + rng.uniform(0.17, 0.24),
        ctr=rng.uniform(0.43, 0.49),
        mediastinum=rng.uniform(0.10, 0.125),
        soft_tissue=rng.uniform(0.0, 1.0),
        breasts=bool(rng.random() < 0.4),
        gamma=rng.uniform(0.85, 1.2),
        contrast=rng.uniform(0.9, 1.1),
        brightness=rng.uniform(-0.04, 0.04),
        noise=rng.uniform(0.008, 0.025),
    )


class _Canvas:
    """The pixel grid in canonical coordinates, and polyline drawing through the same pose."""

    def __init__(self, size: int, anatomy: Anatomy) -> None:
        self.size = size
        self.anatomy = anatomy
        self.px = 2.0 / size  # one pixel in canonical units (before scale)
        coords = (np.arange(size, dtype=np.float32) + 0.5) * (2.0 / size) - 1.0
        x, y = np.meshgrid(coords, coords)  # (S, S) image coordinates in [-1, 1]
        cos, sin = math.cos(anatomy.rotation), math.sin(anatomy.rotation)
        xs, ys = x - anatomy.shift_x, y - anatomy.shift_y
        self.X = ((cos * xs + sin * ys) / anatomy.scale).astype(np.float32)
        self.Y = ((-sin * xs + cos * ys) / anatomy.scale).astype(np.float32)
        self.edge = 1.5 * self.px / anatomy.scale  # anti-aliasing width of implicit shapes

    def to_pixels(self, points: np.ndarray) -> list[tuple[float, float]]:
        """Canonical (N, 2) points -> pixel coordinates for Pillow."""
        a = self.anatomy
        cos, sin = math.cos(a.rotation), math.sin(a.rotation)
        cx, cy = points[:, 0] * a.scale, points[:, 1] * a.scale
        x = cos * cx - sin * cy + a.shift_x
        y = sin * cx + cos * cy + a.shift_y
        return list(zip(((x + 1) * self.size / 2).tolist(), ((y + 1) * self.size / 2).tolist()))

    def layer(self) -> tuple[Image.Image, ImageDraw.ImageDraw]:
        image = Image.new("L", (self.size, self.size), 0)
        return image, ImageDraw.Draw(image)

    def width(self, canonical: float) -> int:
        return max(1, round(canonical * self.anatomy.scale * self.size / 2))

    def finish(self, image: Image.Image, blur: float) -> np.ndarray:
        if blur > 0:
            image = image.filter(ImageFilter.GaussianBlur(blur * self.size / 128))
        return np.asarray(image, dtype=np.float32) / 255.0


def smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """A smooth random field (size, size) with about `cells` blobs across, zero mean, unit-ish scale."""
    low = rng.standard_normal((cells, cells)).astype(np.float32)
    return np.asarray(Image.fromarray(low, "F").resize((size, size), Image.BICUBIC), dtype=np.float32)


# --------------------------------------------------------------------------------------------------
# Anatomy


class _Thorax:
    """Implicit anatomy of one patient on one canvas; findings modify it before `compose`."""

    def __init__(self, canvas: _Canvas, anatomy: Anatomy, rng: np.random.Generator) -> None:
        self.c, self.a, self.rng = canvas, anatomy, rng
        X, a = canvas.X, anatomy
        self.ax = np.abs(X)
        self.left = X > 0  # patient's left
        self.y_dome = np.where(self.left, a.y_dome_left, a.y_dome_right).astype(np.float32)
        # Geometry that findings may change before compose().
        self.heart_half_width = a.ctr * a.half_width
        self.mediastinum_widening = 0.0
        self.dome_raise = {-1.0: 0.0, 1.0: 0.0}
        self.density = np.zeros_like(X)  # finding opacities added over the lungs (0..1)
        self.lucency = np.zeros_like(X)  # extra air (pneumothorax)
        self.no_markings = np.zeros_like(X)  # where vessels are absent
        self.vessel_blur = 0.0
        self.metal = np.zeros_like(X)  # devices, drawn on top
        self.pleura = np.zeros_like(X)  # pleural-based density (effusion, thickening), not limited to lung
        self.fractures: list[tuple[float, int, float, float]] = []  # (side, rib, lateral position, step)
        self._dome_cache: tuple | None = None
        self._lateral: np.ndarray | None = None

    # -- shapes ------------------------------------------------------------------------------------
    def dome(self) -> np.ndarray:
        """Y of the diaphragm below each column (per side), with medial and lateral slopes."""
        key = (self.dome_raise[-1.0], self.dome_raise[1.0])
        if self._dome_cache is None or self._dome_cache[0] != key:
            self._dome_cache = (key, self._dome())
        return self._dome_cache[1]

    def _dome(self) -> np.ndarray:
        a = self.a
        raise_ = np.where(self.left, self.dome_raise[1.0], self.dome_raise[-1.0])
        y_top = self.y_dome - raise_
        xd = 0.40 * a.half_width
        k_lat = (a.y_cp - y_top) / (a.half_width - xd) ** 2
        return y_top + np.where(self.ax > xd, k_lat, 0.9) * (self.ax - xd) ** 2

    def lateral(self) -> np.ndarray:
        """Half-width of the lung fields at each row."""
        if self._lateral is None:
            a = self.a
            t = np.clip((self.c.Y - a.y_apex) / (a.y_cp - a.y_apex), 0.0, 1.0)
            self._lateral = a.half_width * (0.45 + 0.55 * np.sqrt(t))
        return self._lateral

    def lung_shape(self, shrink: float | np.ndarray = 0.0) -> np.ndarray:
        """Both lung fields (ignoring the mediastinum), optionally shrunk from the chest wall."""
        a, Y, e = self.a, self.c.Y, self.c.edge
        apex = a.y_apex + shrink + 1.6 * (self.ax - 0.36 * a.half_width) ** 2
        m = _ramp(self.lateral() - shrink - self.ax, e) * _ramp(Y - apex, e)
        return m * _ramp(self.dome() - Y, e) * _ramp(self.ax - 0.05, e)

    def heart(self) -> np.ndarray:
        """Cardiac silhouette: an ellipse, shifted to the patient's left, whose lower part hides below the
        diaphragm; broader towards the apex."""
        a, X, Y = self.a, self.c.X, self.c.Y
        hx = self.heart_half_width
        hy = 0.23 + 0.15 * (hx - 0.33)
        yh = a.y_dome_left - 0.12
        xh = 0.28 * hx
        widen = 1.0 + 0.12 * np.clip((Y - yh) / hy, -1.0, 0.0)
        r = ((X - xh) / (hx * widen)) ** 2 + ((Y - yh) / hy) ** 2
        return _ramp(1.0 - r, 5 * self.c.edge)

    def mediastinum(self) -> np.ndarray:
        a, X, Y, e = self.a, self.c.X, self.c.Y, self.c.edge
        w = self.mediastinum_widening
        band = np.clip((0.15 - Y) / 0.1, 0, 1) * np.clip((Y + 0.75) / 0.12, 0, 1)
        half = a.mediastinum + w * band
        upper = _ramp(half - np.abs(X - 0.01 - 0.2 * w * band), 4 * e) * (a.y_dome_left + 0.05 > Y)
        knob_r = 0.06 + 0.4 * w
        knob = _ramp(knob_r - np.hypot(X - 0.09 - 0.6 * w, (Y + 0.34) / 1.4), 4 * e)
        return np.maximum(upper, knob)

    # -- bones -------------------------------------------------------------------------------------
    def ribs(self) -> np.ndarray:
        """Posterior ribs (rising from the spine, then arching down the lateral wall), fainter anterior
        ribs (running down and medially), and fractures (a cortical gap and a displaced fragment)."""
        a, Y = self.a, self.c.Y
        s = np.clip((self.ax - 0.06) / a.half_width, 0.0, None)
        y0, step, grow = a.y_apex - 0.04, 0.105, 0.003
        v = Y - (0.85 * s**2 - 0.22 * s)
        for side, rib, pos, shift in self.fractures:  # displaced lateral fragment of one rib
            k_here = self._rib_index(v, y0, step, grow)
            on = (np.sign(self.c.X) == side) & (np.floor(k_here) == rib) & (self.ax > pos)
            v = v - shift * on
        k = self._rib_index(v, y0, step, grow)
        frac = k - np.floor(k)
        w, edge = 0.36, 0.06
        depth = np.minimum(frac, w - frac)
        inside = np.clip(depth / edge, 0.0, 1.0)
        cortex = np.clip(1.0 - np.abs(depth - 0.5 * edge) / edge, 0.0, 1.0)
        band = (0.55 * inside + 0.45 * cortex) * (k >= 0) * (k < 10.2)
        for side, rib, pos, _shift in self.fractures:  # cortical gap at the break
            gap = _ramp(0.03 - np.abs(self.ax - pos), self.c.edge) * (np.abs(k - rib - w / 2) < 0.6)
            band = band * (1 - gap * (np.sign(self.c.X) == side))
        wall = _ramp(self.lateral() + 0.07 - self.ax, 4 * self.c.edge) * _ramp(self.ax - 0.07, self.c.edge)
        ka = (Y - 0.30 * (1.0 - s) - (a.y_apex - 0.12)) / 0.15
        fa = ka - np.floor(ka)
        anterior = (
            np.clip(np.minimum(fa, 0.3 - fa) / 0.08, 0, 1)
            * (ka >= 0)
            * (ka < 6)
            * np.clip((s - 0.3) / 0.3, 0, 1)
        )
        return (band + 0.35 * anterior) * wall

    @staticmethod
    def _rib_index(v: np.ndarray, y0: float, step: float, grow: float) -> np.ndarray:
        d = np.clip(v - y0, -0.05, None)
        return (-step + np.sqrt(step * step + 4 * grow * np.clip(d, 0, None))) / (2 * grow) - (d < 0)

    def clavicles(self) -> np.ndarray:
        a, Y = self.a, self.c.Y
        s = np.clip((self.ax - 0.07) / 0.62, 0.0, 1.0)
        yc = a.y_apex + 0.09 - 0.16 * s + 0.07 * s**2
        thick = 0.026 + 0.012 * (1 - s)
        return _ramp(thick - np.abs(Y - yc), 2 * self.c.edge) * _ramp(0.72 - self.ax, 0.08) * (self.ax > 0.06)

    def spine(self) -> np.ndarray:
        Y = self.c.Y
        column = _ramp(0.075 - np.abs(self.c.X), 2 * self.c.edge)
        vertebra = 0.75 + 0.25 * np.clip(np.abs(np.sin(np.pi * (Y + 0.02) / 0.115)) * 3 - 1.5, 0, 1)
        return column * vertebra

    # -- vessels -------------------------------------------------------------------------------------
    def vessels(self) -> np.ndarray:
        """Branching vascular trees from both hila: every generation of branches is computed at once
        (arrays over branches), then drawn as tapering, fading polylines."""
        rng, c = self.rng, self.c
        roots = np.array([-115, -150, 175, 145, 115, 95], dtype=np.float64)
        angles = np.radians(np.concatenate([roots, 180 - roots])) + rng.normal(0, 0.15, 12)
        sides = np.repeat([-1.0, 1.0], 6)
        starts = np.stack([0.19 * sides, -0.10 + 0.03 * sides], axis=1)
        length, width = np.full(12, 0.20), 0.022
        segments, levels, widths = [], [], []
        for depth in range(4, 0, -1):
            ends = starts + length[:, None] * np.stack([np.cos(angles), np.sin(angles)], axis=1)
            mids = (starts + ends) / 2 + rng.normal(0, 0.012, starts.shape)
            segments.append(np.stack([starts, mids, ends], axis=1))  # (n, 3, 2)
            levels.append(np.full(len(starts), int(40 + 50 * depth)))
            widths.append(np.full(len(starts), c.width(width)))
            n = len(starts)
            turns = np.concatenate([-rng.uniform(0.25, 0.55, n), rng.uniform(0.25, 0.55, n)])
            angles = np.concatenate([angles, angles]) + turns
            length = np.concatenate([length, length]) * rng.uniform(0.62, 0.78, 2 * n)
            starts = np.concatenate([ends, ends])
            width *= 0.72
        points = np.concatenate([seg.reshape(-1, 2) for seg in segments])
        pixels = c.to_pixels(points)
        image, draw = c.layer()
        for i, (level, w) in enumerate(zip(np.concatenate(levels).tolist(), np.concatenate(widths).tolist())):
            draw.line(pixels[3 * i : 3 * i + 3], fill=level, width=w)
        return c.finish(image, 0.8)

    # -- composition -------------------------------------------------------------------------------
    def compose(self) -> np.ndarray:
        a, c, X, Y = self.a, self.c, self.c.X, self.c.Y
        e = c.edge
        # Body outline: torso, shoulders, neck; humeral heads in the upper corners.
        torso_half = a.half_width + 0.14 + 0.10 * a.soft_tissue
        shoulders = torso_half + 0.6 * np.clip((-0.45 - Y) / 0.45, 0, 1) ** 0.7
        top = (
            -0.98 + 0.22 * np.clip((self.ax - 0.22) / 0.3, 0, 1) - 0.1 * np.clip((self.ax - 0.6) / 0.4, 0, 1)
        )
        body = _ramp(shoulders - self.ax, 4 * e) * _ramp(Y - top, 6 * e)
        humerus = _ramp(0.16 - np.hypot(self.ax - (a.half_width + 0.22), Y + 0.66), 3 * e)
        dome = self.dome()
        abdomen = _ramp(Y - dome, 2 * e) * _ramp(torso_half - 0.04 - self.ax, 8 * e)
        bubble = _ramp(0.07 - np.hypot((X - 0.33) / 1.7, Y - (a.y_dome_left + 0.10)), 4 * e) * self.left
        lung = self.lung_shape()
        heart, med = self.heart(), self.mediastinum()
        dense = np.maximum(np.maximum(heart, med), abdomen)  # full-thickness soft tissue
        air = lung * (1 - np.maximum(heart, med))
        vessels = self.vessels() * (1 - self.no_markings)
        if self.vessel_blur > 0:
            blurred = np.asarray(
                Image.fromarray((vessels * 255).astype(np.uint8)).filter(
                    ImageFilter.GaussianBlur(self.vessel_blur * c.size / 128)
                ),
                dtype=np.float32,
            )
            vessels = 0.4 * vessels + 1.4 * blurred / 255.0
        hila = np.exp(-((self.ax - 0.2) ** 2 / 0.05**2 + (Y + 0.1 - 0.03 * np.sign(X)) ** 2 / 0.07**2) / 2)
        trachea = _ramp(0.03 - np.abs(X - 0.005), 2 * e) * _ramp(-0.26 - Y, 0.06)
        texture = smooth_noise(self.rng, c.size, 24)
        # Lung density rises towards the bases (soft tissue in front) and the hila.
        base = np.clip((Y - a.y_apex) / (a.y_cp - a.y_apex), 0, 1)
        soft = 0.48 + 0.10 * a.soft_tissue
        D = soft * body + 0.06 * humerus * body + 0.14 * dense * body - 0.14 * bubble * abdomen
        D = D - (0.36 - 0.08 * base - 0.015 * texture) * air
        if a.breasts:
            D = D + 0.08 * _ramp(0.30 - np.hypot((self.ax - 0.52) / 1.3, Y - (a.y_cp - 0.12)), 0.25) * lung
        D = D + 0.14 * hila * lung + 0.30 * vessels * air
        D = D - 0.10 * self.lucency * lung
        opacity = np.clip(self.density + self.pleura, 0, 1)
        D = D + 0.50 * opacity * lung * (1 - 0.6 * np.maximum(heart, med))
        bones = (
            0.14 * self.ribs() * (1 - 0.7 * dense)
            + 0.20 * self.clavicles()
            + self.spine() * (0.10 - 0.06 * dense)
        )
        D = D + bones * body - 0.16 * trachea
        return np.maximum(D, 0.92 * self.metal)


# --------------------------------------------------------------------------------------------------
# Findings


def _zone_center(thorax: _Thorax, side: float, zone: str) -> tuple[float, float]:
    a = thorax.a
    y = {"upper": -0.45, "middle": -0.02, "lower": 0.25}[zone]
    y = y if zone != "lower" else (a.y_dome_left if side > 0 else a.y_dome_right) - 0.14
    x = side * a.half_width * (0.58 if zone != "middle" else 0.48)
    return x, y


def _blob(thorax: _Thorax, x: float, y: float, rx: float, ry: float) -> np.ndarray:
    X, Y = thorax.c.X, thorax.c.Y
    return np.exp(-(((X - x) / rx) ** 2 + ((Y - y) / ry) ** 2))


def _same_side(thorax: _Thorax, side: float) -> np.ndarray:
    return _ramp(side * thorax.c.X - 0.02, 0.04)


def _lung_opacity(t: _Thorax, f, rng) -> None:
    """Ill-defined hazy (ground-glass) opacity, soft-edged."""
    sev = SEVERITY_INDEX[f.severity]
    noise = smooth_noise(rng, t.c.size, 6)
    for side in _sides(f.side):
        x, y = _zone_center(t, side, f.zone)
        r = 0.16 + 0.06 * sev
        t.density += (
            (0.35 + 0.12 * sev) * _blob(t, x, y, r * 1.2, r) * (0.8 + 0.25 * noise) * _same_side(t, side)
        )


def _lung_lesion(t: _Thorax, f, rng) -> None:
    """A well-circumscribed nodule (mild, moderate) or a lobulated mass (large)."""
    sev = SEVERITY_INDEX[f.severity]
    side = _side_sign(f.side) if f.side != "bilateral" else rng.choice([-1.0, 1.0])
    x, y = _zone_center(t, side, f.zone)
    x += rng.uniform(-0.08, 0.08)
    y += rng.uniform(-0.06, 0.06)
    radius = (0.05, 0.07, 0.12)[sev]
    X, Y = t.c.X, t.c.Y
    theta = np.arctan2(Y - y, X - x)
    lobulation = 1 + (0.06 + 0.06 * (sev == 2)) * np.cos(3 * theta + rng.uniform(0, 6.3))
    r = np.hypot(X - x, Y - y) / lobulation
    t.density += (0.85 + 0.1 * sev) * _ramp(radius - r, 3 * t.c.edge)


def _edema(t: _Thorax, f, rng) -> None:
    """Bilateral perihilar (bat-wing) haze, indistinct vessels, Kerley B lines at the lateral bases."""
    sev = SEVERITY_INDEX[f.severity]
    for side in (-1.0, 1.0):
        t.density += (0.30 + 0.14 * sev) * _blob(t, 0.28 * side, -0.02, 0.30 + 0.05 * sev, 0.34 + 0.04 * sev)
    t.density += (0.1 + 0.05 * sev) * smooth_noise(rng, t.c.size, 10).clip(0, None) * 0.5
    t.vessel_blur = 1.2 + 0.5 * sev
    image, draw = t.c.layer()
    for side in (-1.0, 1.0):
        y_cp = t.a.y_cp - 0.06
        for i in range(2 + sev):
            y = y_cp - 0.05 - 0.045 * i + rng.normal(0, 0.008)
            x0 = side * (t.a.half_width * (0.96 - 0.025 * i))
            line = np.array([[x0, y], [x0 - side * rng.uniform(0.06, 0.10), y]], dtype=np.float32)
            draw.line(t.c.to_pixels(line), fill=255, width=1)
    t.density += (0.35 + 0.1 * sev) * t.c.finish(image, 0.5)


def _lobe_mask(t: _Thorax, side: float, zone: str, extent: float) -> np.ndarray:
    """A lobe-shaped region: upper (sharp lower border at the fissure), middle (right: between the
    minor fissure and the base, medial) or lower (from the base up to an oblique border)."""
    X, Y, e = t.c.X, t.c.Y, t.c.edge
    lateral = side * X
    if zone == "upper":
        border = -0.08 - 0.3 * (1 - extent) + 0.12 * (lateral - 0.4) ** 2
        m = _ramp(border - Y, 3 * e) * _ramp(Y - (border - 0.3 - 0.4 * extent), 0.3)
        m = m * _ramp(lateral - 0.18, 0.12)
    elif zone == "middle":
        top = -0.02 + 0.05 * (1 - extent)
        m = _ramp(Y - top, 2 * e) * _ramp(top + 0.22 + 0.12 * extent - Y, 0.15)
        m = m * _ramp(0.45 + 0.2 * extent - lateral, 0.2)
    else:
        y_base = (t.a.y_dome_left if side > 0 else t.a.y_dome_right) + 0.1
        top = y_base - 0.25 - 0.3 * extent + 0.25 * (lateral - 0.3)  # oblique: higher medially
        m = _ramp(Y - top, 0.06)
    return m * _same_side(t, side)


def _consolidation(t: _Thorax, f, rng) -> None:
    """Dense homogeneous lobar opacity with a sharp fissural border and air bronchograms."""
    sev = SEVERITY_INDEX[f.severity]
    extent = (0.35, 0.65, 1.0)[sev]
    noise = smooth_noise(rng, t.c.size, 12)
    for side in _sides(f.side):
        mask = _lobe_mask(t, side, f.zone, extent)
        t.density += (0.8 + 0.15 * noise) * mask
        if sev >= 1:  # air bronchograms: short dark branching tubes inside the opacity
            image, draw = t.c.layer()
            x, y = _zone_center(t, side, f.zone)
            for _ in range(3):
                start = np.array([x - side * 0.12, y + rng.normal(0, 0.05)], dtype=np.float32)
                angle = math.atan2(rng.normal(0, 0.3), side)
                end = start + 0.16 * np.array([math.cos(angle), math.sin(angle)], dtype=np.float32)
                draw.line(t.c.to_pixels(np.stack([start, end])), fill=255, width=1)
            t.density -= 0.45 * t.c.finish(image, 0.4) * mask


def _pneumonia(t: _Thorax, f, rng) -> None:
    """Patchy, multifocal airspace opacities clustered in one zone (lobar when large)."""
    sev = SEVERITY_INDEX[f.severity]
    noise = smooth_noise(rng, t.c.size, 14)
    for side in _sides(f.side):
        x, y = _zone_center(t, side, f.zone)
        cluster = np.zeros_like(t.c.X)
        for _ in range(3 + 2 * sev):
            bx, by = x + rng.normal(0, 0.08 + 0.03 * sev), y + rng.normal(0, 0.06 + 0.02 * sev)
            cluster += _blob(t, bx, by, rng.uniform(0.05, 0.09), rng.uniform(0.04, 0.08))
        patchy = np.clip(cluster, 0, 1) * np.clip(0.6 + 0.6 * noise, 0, 1)
        t.density += (0.7 + 0.1 * sev) * patchy * _same_side(t, side)


def _atelectasis(t: _Thorax, f, rng) -> None:
    """Plate-like (discoid) basal bands; large: lobar collapse with an elevated hemidiaphragm."""
    sev = SEVERITY_INDEX[f.severity]
    X, Y = t.c.X, t.c.Y
    for side in _sides(f.side):
        y_dome = t.a.y_dome_left if side > 0 else t.a.y_dome_right
        if sev == 2:
            t.dome_raise[side] = 0.08
            wedge = _ramp(Y - (y_dome - 0.28 + 0.5 * (side * X - 0.15)), 0.04) * _same_side(t, side)
            t.density += 0.9 * wedge * _ramp(0.5 - side * X, 0.1)
            continue
        t.dome_raise[side] = 0.03 * sev
        for i in range(1 + sev):
            cx = side * t.a.half_width * rng.uniform(0.45, 0.62)
            cy = y_dome - 0.08 - 0.07 * i + rng.normal(0, 0.01)
            tilt = rng.uniform(-0.15, 0.15)
            along = (X - cx) * math.cos(tilt) + (Y - cy) * math.sin(tilt)
            across = -(X - cx) * math.sin(tilt) + (Y - cy) * math.cos(tilt)
            length, thick = rng.uniform(0.14, 0.22), 0.018 + 0.008 * sev
            band = _ramp(thick - np.abs(across), 2 * t.c.edge) * _ramp(length - np.abs(along), 0.06)
            t.density += 0.95 * band


def _pneumothorax(t: _Thorax, f, rng) -> None:
    """A lucent rim without lung markings between the chest wall and a visible visceral pleural line."""
    sev = SEVERITY_INDEX[f.severity]
    depth = (0.07, 0.14, 0.26)[sev]
    Y = t.c.Y
    for side in _sides(f.side):
        # Small ones are apical; larger ones run down the lateral wall too.
        reach = (-0.25, 0.2, 0.7)[sev]
        rim = depth * np.clip((reach - Y) / (reach - t.a.y_apex + 1e-3), 0.15, 1.0)
        full = t.lung_shape()
        collapsed = t.lung_shape(shrink=rim)
        region = np.clip(full - collapsed, 0, 1) * _same_side(t, side)
        t.lucency += 1.0 * region
        t.no_markings = np.maximum(t.no_markings, region)
        line = np.clip(collapsed - t.lung_shape(shrink=rim + 0.022), 0, 1) * _same_side(t, side)
        t.density += 0.55 * line * (1 - region)
        t.density += 0.08 * sev * collapsed * _same_side(t, side)


def _pleural_effusion(t: _Thorax, f, rng) -> None:
    """Dependent fluid: a meniscus rising laterally, blunting the costophrenic angle; size sets the level."""
    sev = SEVERITY_INDEX[f.severity]
    X, Y = t.c.X, t.c.Y
    hemithorax = _ramp(t.lateral() + 0.02 - t.ax, 2 * t.c.edge) * _ramp(t.ax - 0.03, 0.02)
    for side in _sides(f.side):
        lateral = np.clip(side * X / t.a.half_width, 0, 1)
        y_dome = t.a.y_dome_left if side > 0 else t.a.y_dome_right
        level = (y_dome - 0.02, y_dome - 0.16, y_dome - 0.50)[sev] - rng.uniform(0, 0.04)
        top = level + (0.30, 0.24, 0.22)[sev] * (1 - lateral) ** 1.5
        fluid = _ramp(Y - top, 0.06) * hemithorax * _same_side(t, side)
        t.pleura += fluid


def _pleural_other(t: _Thorax, f, rng) -> None:
    """Pleural thickening: a smooth band along the lateral chest wall (or an apical cap)."""
    sev = SEVERITY_INDEX[f.severity]
    Y = t.c.Y
    thick = (0.035, 0.045, 0.06)[sev]
    for side in _sides(f.side):
        inner = t.lateral() - t.ax
        band = _ramp(thick - inner, 2 * t.c.edge) * _ramp(inner + 0.01, 2 * t.c.edge)
        extent = _ramp(0.5 - np.abs(Y - (-0.15 if f.zone != "upper" else -0.5)), 0.2)
        cap = t.lung_shape() - t.lung_shape(shrink=thick)
        region = np.clip(band * extent + (cap * (Y < -0.4) if f.zone == "upper" else 0), 0, 1)
        t.pleura += 0.8 * region * _same_side(t, side)


def _fracture(t: _Thorax, f, rng) -> None:
    """Rib fracture(s): a cortical gap with a displaced lateral fragment (one rib, or several if large)."""
    sev = SEVERITY_INDEX[f.severity]
    side = _side_sign(f.side) if f.side != "bilateral" else float(rng.choice([-1.0, 1.0]))
    rib = int(rng.integers(3, 7))
    pos = t.a.half_width * rng.uniform(0.55, 0.75)
    for i in range(1 if sev < 2 else 3):
        t.fractures.append((side, rib + i, pos + 0.02 * i, (0.025, 0.05, 0.05)[sev]))


def _support_devices(t: _Thorax, f, rng) -> None:
    """Tubes, lines, a pacemaker and sternotomy wires as metal-bright polylines and shapes."""
    image, draw = t.c.layer()
    c, a = t.c, t.a
    carina = -0.24
    thin, thick = c.width(0.014), c.width(0.025)
    for device in f.devices:
        if device == "endotracheal tube":
            tip = carina - rng.uniform(0.06, 0.14)
            draw.line(c.to_pixels(np.array([[0.0, -1.05], [0.0, tip]])), fill=235, width=thick)
        elif device == "nasogastric tube":
            pts = np.array(
                [
                    [0.02, -1.05],
                    [0.03, carina],
                    [0.05, a.y_dome_left],
                    [0.3, a.y_dome_left + 0.14],
                    [0.42, a.y_dome_left + 0.22],
                ]
            )
            draw.line(c.to_pixels(pts), fill=225, width=thin)
        elif device == "central venous catheter":
            pts = np.array(
                [[-0.28, -1.05], [-0.14, -0.70], [-0.08, -0.42], [-0.07, -0.10 + rng.normal(0, 0.04)]]
            )
            draw.line(c.to_pixels(pts), fill=230, width=thin)
        elif device == "picc":
            pts = np.array([[1.05, -0.58], [0.55, -0.66], [0.20, -0.60], [-0.04, -0.42], [-0.06, -0.12]])
            draw.line(c.to_pixels(pts), fill=225, width=thin)
        elif device == "pacemaker":
            box = np.array([[0.42, -0.62], [0.62, -0.62], [0.62, -0.50], [0.42, -0.50]])
            draw.polygon(c.to_pixels(box), fill=250)
            leads = np.array(
                [[0.44, -0.56], [0.20, -0.55], [0.0, -0.35], [-0.05, 0.0], [0.05, 0.22], [0.2, 0.3]]
            )
            draw.line(c.to_pixels(leads), fill=230, width=thin)
        elif device == "sternotomy wires":
            for i in range(5):
                y = -0.55 + 0.13 * i
                angle = np.linspace(0, 2 * np.pi, 9)
                loop = np.stack([0.028 * np.cos(angle), y + 0.018 * np.sin(angle)], axis=1)
                draw.line(c.to_pixels(loop), fill=255, width=1)
    t.metal = np.maximum(t.metal, c.finish(image, 0.35) / 0.95)


RENDERERS = {
    "Enlarged Cardiomediastinum": None,  # geometry (see render_image)
    "Cardiomegaly": None,
    "Lung Opacity": _lung_opacity,
    "Lung Lesion": _lung_lesion,
    "Edema": _edema,
    "Consolidation": _consolidation,
    "Pneumonia": _pneumonia,
    "Atelectasis": _atelectasis,
    "Pneumothorax": _pneumothorax,
    "Pleural Effusion": _pleural_effusion,
    "Pleural Other": _pleural_other,
    "Fracture": _fracture,
    "Support Devices": _support_devices,
}

CTR_BY_SEVERITY = {"mild": (0.54, 0.58), "moderate": (0.59, 0.64), "large": (0.65, 0.72)}
WIDENING_BY_SEVERITY = {"mild": 0.05, "moderate": 0.08, "large": 0.12}


def render_image(findings: Findings, size: int, rng: np.random.Generator) -> np.ndarray:
    """A frontal chest radiograph showing `findings`: uint8 (size, size), 8-bit grayscale.

    The patient (anatomy, pose, exposure, noise) and the findings draw from separate child streams of
    `rng`, so the same `rng` state with and without a finding gives the same patient."""
    anatomy_rng, finding_rng, noise_rng = rng.spawn(3)
    anatomy = sample_anatomy(anatomy_rng)
    cardiomegaly = findings.get("Cardiomegaly")
    if cardiomegaly is not None:
        anatomy.ctr = finding_rng.uniform(*CTR_BY_SEVERITY[cardiomegaly.severity])
    canvas = _Canvas(size, anatomy)
    thorax = _Thorax(canvas, anatomy, anatomy_rng)
    widening = findings.get("Enlarged Cardiomediastinum")
    if widening is not None:
        thorax.mediastinum_widening = WIDENING_BY_SEVERITY[widening.severity]
    for name, finding in findings.present.items():
        draw = RENDERERS.get(name)
        if draw is not None:
            draw(thorax, finding, finding_rng)
    density = thorax.compose()  # (S, S)
    image = np.clip(density, 0.0, 1.0) ** anatomy.gamma
    image = (image - 0.45) * anatomy.contrast + 0.45 + anatomy.brightness
    image = image + 0.02 * smooth_noise(noise_rng, size, 5)  # uneven exposure
    image = image + noise_rng.normal(0.0, anatomy.noise, image.shape).astype(np.float32)
    return np.clip(image * 255.0 + 0.5, 0, 255).astype(np.uint8)
