"""SynthCXR renderer: a frontal (PA) chest radiograph drawn from a `Findings`, in vectorised numpy.

The patient (anatomy, pose, exposure) comes from `synth_anatomy`; each finding here paints its opacity,
lucency, geometry change or metal into the patient's `Thorax` (one painter per observation, `RENDERERS`)
before the density map is composed; `render_image` then applies an exposure curve and noise.
"""

from __future__ import annotations

import math

import numpy as np

from leadrrg.data.synth.anatomy import Canvas, Thorax, ramp, sample_anatomy, smooth_noise
from leadrrg.data.synth.types import Findings

__all__ = ["RENDERERS", "render_image"]

SEVERITY_INDEX = {"mild": 0, "moderate": 1, "large": 2}


def _side_sign(side: str) -> float:
    """Canonical X sign of a patient side: the patient's right is on the image's left."""
    return -1.0 if side == "right" else 1.0


def _sides(side: str) -> tuple[float, ...]:
    return (-1.0, 1.0) if side == "bilateral" else (_side_sign(side),)


# --------------------------------------------------------------------------------------------------
# Findings


def _zone_center(thorax: Thorax, side: float, zone: str) -> tuple[float, float]:
    a = thorax.a
    y = {"upper": -0.45, "middle": -0.02, "lower": 0.25}[zone]
    y = y if zone != "lower" else (a.y_dome_left if side > 0 else a.y_dome_right) - 0.14
    x = side * a.half_width * (0.58 if zone != "middle" else 0.48)
    return x, y


def _blob(thorax: Thorax, x: float, y: float, rx: float, ry: float) -> np.ndarray:
    X, Y = thorax.c.X, thorax.c.Y
    return np.exp(-(((X - x) / rx) ** 2 + ((Y - y) / ry) ** 2))


def _same_side(thorax: Thorax, side: float) -> np.ndarray:
    return ramp(side * thorax.c.X - 0.02, 0.04)


def _lung_opacity(t: Thorax, f, rng) -> None:
    """Ill-defined hazy (ground-glass) opacity, soft-edged."""
    sev = SEVERITY_INDEX[f.severity]
    noise = smooth_noise(rng, t.c.size, 6)
    for side in _sides(f.side):
        x, y = _zone_center(t, side, f.zone)
        r = 0.16 + 0.06 * sev
        t.density += (
            (0.35 + 0.12 * sev) * _blob(t, x, y, r * 1.2, r) * (0.8 + 0.25 * noise) * _same_side(t, side)
        )


def _lung_lesion(t: Thorax, f, rng) -> None:
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
    t.density += (0.85 + 0.1 * sev) * ramp(radius - r, 3 * t.c.edge)


def _edema(t: Thorax, f, rng) -> None:
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


def _lobe_mask(t: Thorax, side: float, zone: str, extent: float) -> np.ndarray:
    """A lobe-shaped region: upper (sharp lower border at the fissure), middle (right: between the
    minor fissure and the base, medial) or lower (from the base up to an oblique border)."""
    X, Y, e = t.c.X, t.c.Y, t.c.edge
    lateral = side * X
    if zone == "upper":
        border = -0.08 - 0.3 * (1 - extent) + 0.12 * (lateral - 0.4) ** 2
        m = ramp(border - Y, 3 * e) * ramp(Y - (border - 0.3 - 0.4 * extent), 0.3)
        m = m * ramp(lateral - 0.18, 0.12)
    elif zone == "middle":
        top = -0.02 + 0.05 * (1 - extent)
        m = ramp(Y - top, 2 * e) * ramp(top + 0.22 + 0.12 * extent - Y, 0.15)
        m = m * ramp(0.45 + 0.2 * extent - lateral, 0.2)
    else:
        y_base = (t.a.y_dome_left if side > 0 else t.a.y_dome_right) + 0.1
        top = y_base - 0.25 - 0.3 * extent + 0.25 * (lateral - 0.3)  # oblique: higher medially
        m = ramp(Y - top, 0.06)
    return m * _same_side(t, side)


def _consolidation(t: Thorax, f, rng) -> None:
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


def _pneumonia(t: Thorax, f, rng) -> None:
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


def _atelectasis(t: Thorax, f, rng) -> None:
    """Plate-like (discoid) basal bands; large: lobar collapse with an elevated hemidiaphragm."""
    sev = SEVERITY_INDEX[f.severity]
    X, Y = t.c.X, t.c.Y
    for side in _sides(f.side):
        y_dome = t.a.y_dome_left if side > 0 else t.a.y_dome_right
        if sev == 2:
            t.dome_raise[side] = 0.08
            wedge = ramp(Y - (y_dome - 0.28 + 0.5 * (side * X - 0.15)), 0.04) * _same_side(t, side)
            t.density += 0.9 * wedge * ramp(0.5 - side * X, 0.1)
            continue
        t.dome_raise[side] = 0.03 * sev
        for i in range(1 + sev):
            cx = side * t.a.half_width * rng.uniform(0.45, 0.62)
            cy = y_dome - 0.08 - 0.07 * i + rng.normal(0, 0.01)
            tilt = rng.uniform(-0.15, 0.15)
            along = (X - cx) * math.cos(tilt) + (Y - cy) * math.sin(tilt)
            across = -(X - cx) * math.sin(tilt) + (Y - cy) * math.cos(tilt)
            length, thick = rng.uniform(0.14, 0.22), 0.018 + 0.008 * sev
            band = ramp(thick - np.abs(across), 2 * t.c.edge) * ramp(length - np.abs(along), 0.06)
            t.density += 0.95 * band


def _pneumothorax(t: Thorax, f, rng) -> None:
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


def _pleural_effusion(t: Thorax, f, rng) -> None:
    """Dependent fluid: a meniscus rising laterally, blunting the costophrenic angle; size sets the level."""
    sev = SEVERITY_INDEX[f.severity]
    X, Y = t.c.X, t.c.Y
    hemithorax = ramp(t.lateral() + 0.02 - t.ax, 2 * t.c.edge) * ramp(t.ax - 0.03, 0.02)
    for side in _sides(f.side):
        lateral = np.clip(side * X / t.a.half_width, 0, 1)
        y_dome = t.a.y_dome_left if side > 0 else t.a.y_dome_right
        level = (y_dome - 0.02, y_dome - 0.16, y_dome - 0.50)[sev] - rng.uniform(0, 0.04)
        top = level + (0.30, 0.24, 0.22)[sev] * (1 - lateral) ** 1.5
        fluid = ramp(Y - top, 0.06) * hemithorax * _same_side(t, side)
        t.pleura += fluid


def _pleural_other(t: Thorax, f, rng) -> None:
    """Pleural thickening: a smooth band along the lateral chest wall (or an apical cap)."""
    sev = SEVERITY_INDEX[f.severity]
    Y = t.c.Y
    thick = (0.035, 0.045, 0.06)[sev]
    for side in _sides(f.side):
        inner = t.lateral() - t.ax
        band = ramp(thick - inner, 2 * t.c.edge) * ramp(inner + 0.01, 2 * t.c.edge)
        extent = ramp(0.5 - np.abs(Y - (-0.15 if f.zone != "upper" else -0.5)), 0.2)
        cap = t.lung_shape() - t.lung_shape(shrink=thick)
        region = np.clip(band * extent + (cap * (Y < -0.4) if f.zone == "upper" else 0), 0, 1)
        t.pleura += 0.8 * region * _same_side(t, side)


def _fracture(t: Thorax, f, rng) -> None:
    """Rib fracture(s): a cortical gap with a displaced lateral fragment (one rib, or several if large)."""
    sev = SEVERITY_INDEX[f.severity]
    side = _side_sign(f.side) if f.side != "bilateral" else float(rng.choice([-1.0, 1.0]))
    rib = int(rng.integers(3, 7))
    pos = t.a.half_width * rng.uniform(0.55, 0.75)
    for i in range(1 if sev < 2 else 3):
        t.fractures.append((side, rib + i, pos + 0.02 * i, (0.025, 0.05, 0.05)[sev]))


def _support_devices(t: Thorax, f, rng) -> None:
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
    canvas = Canvas(size, anatomy)
    thorax = Thorax(canvas, anatomy, anatomy_rng)
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
