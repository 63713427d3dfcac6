"""SynthCXR anatomy: a normal frontal (PA) chest of one patient, as implicit shapes in vectorised numpy.

Geometry lives in a canonical frame: X from -1 (image left, the patient's RIGHT) to 1, Y from -1 (top)
to 1. A random pose (scale, rotation, shift) maps the pixel grid into that frame (`Canvas`), so every shape
below is written once, as an implicit function of (X, Y) arrays. Thin structures (vessels, devices, Kerley
lines, air bronchograms) are drawn as polylines with Pillow, through the same pose, and blurred.

`Thorax` holds the patient's shapes (lungs, heart, mediastinum, bones, vessels) and the layers the
findings of `synth_render` paint into; `Thorax.compose` builds the density map D (bright = dense): body
soft tissue, minus lung air, plus heart, mediastinum, bones, vessels and the findings' opacities.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

__all__ = ["Anatomy", "Canvas", "Thorax", "ramp", "sample_anatomy", "smooth_noise"]


def ramp(d: np.ndarray, width: float) -> np.ndarray:
    """Soft step: 0 for d <= -width/2, 1 for d >= width/2, linear between (an anti-aliased edge)."""
    return np.clip(0.5 + d / width, 0.0, 1.0)


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


class Canvas:
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
# The thorax: shapes, bones, vessels and their composition


class Thorax:
    """Implicit anatomy of one patient on one canvas; findings modify it before `compose`."""

    def __init__(self, canvas: Canvas, anatomy: Anatomy, rng: np.random.Generator) -> None:
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
        m = ramp(self.lateral() - shrink - self.ax, e) * ramp(Y - apex, e)
        return m * ramp(self.dome() - Y, e) * ramp(self.ax - 0.05, e)

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
        return ramp(1.0 - r, 5 * self.c.edge)

    def mediastinum(self) -> np.ndarray:
        a, X, Y, e = self.a, self.c.X, self.c.Y, self.c.edge
        w = self.mediastinum_widening
        band = np.clip((0.15 - Y) / 0.1, 0, 1) * np.clip((Y + 0.75) / 0.12, 0, 1)
        half = a.mediastinum + w * band
        upper = ramp(half - np.abs(X - 0.01 - 0.2 * w * band), 4 * e) * (a.y_dome_left + 0.05 > Y)
        knob_r = 0.06 + 0.4 * w
        knob = ramp(knob_r - np.hypot(X - 0.09 - 0.6 * w, (Y + 0.34) / 1.4), 4 * e)
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
            gap = ramp(0.03 - np.abs(self.ax - pos), self.c.edge) * (np.abs(k - rib - w / 2) < 0.6)
            band = band * (1 - gap * (np.sign(self.c.X) == side))
        wall = ramp(self.lateral() + 0.07 - self.ax, 4 * self.c.edge) * ramp(self.ax - 0.07, self.c.edge)
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
        return ramp(thick - np.abs(Y - yc), 2 * self.c.edge) * ramp(0.72 - self.ax, 0.08) * (self.ax > 0.06)

    def spine(self) -> np.ndarray:
        Y = self.c.Y
        column = ramp(0.075 - np.abs(self.c.X), 2 * self.c.edge)
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
        body = ramp(shoulders - self.ax, 4 * e) * ramp(Y - top, 6 * e)
        humerus = ramp(0.16 - np.hypot(self.ax - (a.half_width + 0.22), Y + 0.66), 3 * e)
        dome = self.dome()
        abdomen = ramp(Y - dome, 2 * e) * ramp(torso_half - 0.04 - self.ax, 8 * e)
        bubble = ramp(0.07 - np.hypot((X - 0.33) / 1.7, Y - (a.y_dome_left + 0.10)), 4 * e) * self.left
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
        trachea = ramp(0.03 - np.abs(X - 0.005), 2 * e) * ramp(-0.26 - Y, 0.06)
        texture = smooth_noise(self.rng, c.size, 24)
        # Lung density rises towards the bases (soft tissue in front) and the hila.
        base = np.clip((Y - a.y_apex) / (a.y_cp - a.y_apex), 0, 1)
        soft = 0.48 + 0.10 * a.soft_tissue
        D = soft * body + 0.06 * humerus * body + 0.14 * dense * body - 0.14 * bubble * abdomen
        D = D - (0.36 - 0.08 * base - 0.015 * texture) * air
        if a.breasts:
            D = D + 0.08 * ramp(0.30 - np.hypot((self.ax - 0.52) / 1.3, Y - (a.y_cp - 0.12)), 0.25) * lung
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
