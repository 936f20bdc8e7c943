"""The ``echo`` style of echo-synth: apical four-chamber videos rendered the way a scanner forms them.

The classic style (synthetic.py) paints bright rings on coarse noise: easy to learn, and far from
real ultrasound. This one builds a map of echogenicity (dB) for every frame and images it:

* anatomy: an LV cavity whose outline has its own septal and lateral profile and apex shape,
  a myocardium whose thickness differs by side and thickens in systole, an RV beside the septum,
  both atria below the valve planes, mitral and tricuspid leaflets that open in diastole,
  papillary muscles and trabeculae inside the LV (inside its mask, as tracers draw it), a bright
  pericardium, wall segments that drop out, and tissue of uneven brightness;
* imaging: the map is sampled on the scanner's polar grid (beam angle x depth), multiplied by
  complex Gaussian scatterers that persist from frame to frame, blurred by a point-spread
  function that is wider across beams than along them, detected, log-compressed over a random
  dynamic range, given depth gain (TGC), edge fall-off, rib shadows and near-field clutter, then
  scan-converted back to the 112x112 picture, so speckle stretches sideways with depth like a
  real sector's;
* the display: fan geometry and zoom vary, depth-marker dots and a probe mark may appear, and
  frames may carry JPEG artefacts.

Every draw comes from one seeded generator, so a seed gives the same video. The truth (masks,
ED/ES frames, EF, tracings) is exact, as in the classic style.
"""

from __future__ import annotations

import math

import numpy as np

from .heart import BASE_CUT, FPS, SIZE, Heart, SynthVideo, solve_kb, with_truth

MARGIN = 32  # the echogenicity canvas extends this far past each image edge (fans wider than the picture)
N_DEPTH, N_BEAMS = 176, 128  # the polar grid the image is formed on
FLOOR_DB = -60.0


# Ranges of the scene, by generator version. Version 1 is the first ``echo`` style (the shipped
# model's data, kept bit for bit); version 2 (``echo2``) widens pose, fan, depth, gain, dropout and
# speckle towards what real scanners show and adds the scenes the first model failed on (see
# _SCENE_V2). Draws happen in the same order in both, so version 1 draws what it always drew.
_RANGES = {
    1: dict(ef=(20, 75), half=(34, 48), probe_x=(-4, 4), probe_y=(-16, 2), depth=(102, 150), scale=(0.68, 1.22),
            apex_r=(10, 30), apex_ang=(-2, 14), axis=(-22, 8), ka=(0.84, 0.96), wall=(3.0, 7.5),
            a_k=(0.85, 1.12), b_k=(0.82, 1.18),
            septum_db=(-24, -6), tissue_db=(-42, -24), dropout_db=(6, 18), rv_width=(0.7, 2.1),
            rv_start=(0.04, 0.3), dr=(34, 52), gain_db=(-6, 5), gamma=(0.75, 1.35), psf_a=(0.5, 1.1),
            psf_l=(0.7, 1.7), shadow=0.3, la_bag=0.6, haze=0.5, haze_db=(-60, -26)),
    2: dict(ef=(15, 80), half=(33, 52), probe_x=(-6, 10), probe_y=(-14, 4), depth=(100, 175), scale=(0.55, 1.3),
            apex_r=(10, 32), apex_ang=(-4, 18), axis=(-24, 10), ka=(0.78, 0.96), wall=(2.5, 8.5),
            a_k=(0.9, 1.25), b_k=(0.72, 1.1),
            septum_db=(-26, -4), tissue_db=(-42, -22), dropout_db=(6, 24), rv_width=(0.6, 2.6),
            rv_start=(0.0, 0.3), dr=(32, 54), gain_db=(-6, 6), gamma=(0.7, 1.5), psf_a=(0.35, 1.1),
            psf_l=(0.5, 1.8), shadow=0.35, la_bag=0.7, haze=0.6, haze_db=(-58, -30)),
}
_RANGES[3] = _RANGES[1]  # version 3 (``echo3``): version 1's ranges, then _scene_v3
_RANGES[4] = _RANGES[1]  # version 4 (``echo4``): version 3, then _scene_v4 from a generator of its own
_RANGES[5] = _RANGES[1]  # version 5 (``echo5``): version 3, then _scene_v5 from a generator of its own


def random_echo_heart(rng: np.random.Generator, ef: float | None = None, version: int = 1) -> tuple[Heart, dict]:
    """A heart with a varied LV shape, and the scene around it (probe, fan, imaging settings)."""
    if version not in _RANGES:
        raise ValueError(f"unknown echo generator version {version}; use one of {sorted(_RANGES)}")
    R = _RANGES[version]
    ef = float(rng.uniform(*R["ef"])) if ef is None else float(ef)
    half = math.radians(rng.uniform(*R["half"]))
    probe = np.array([SIZE / 2 + rng.uniform(*R["probe_x"]), rng.uniform(*R["probe_y"])])
    depth = rng.uniform(*R["depth"]) - probe[1]
    scale = rng.uniform(*R["scale"])
    apex_r = rng.uniform(*R["apex_r"]) - probe[1]
    apex_ang = math.radians(rng.uniform(*R["apex_ang"]))
    apex = probe + apex_r * np.array([math.sin(apex_ang), math.cos(apex_ang)])
    heart = Heart(
        apex=apex,
        axis_angle=math.radians(rng.uniform(*R["axis"])),
        a_ed=33 * scale * rng.uniform(*R["a_k"]),
        b_ed=16.5 * scale * rng.uniform(*R["b_k"]),
        ka=rng.uniform(*R["ka"]),
        kb=1.0,
        wall=rng.uniform(*R["wall"]),
        period=FPS * 60 / rng.uniform(50, 110),
        phase0=rng.uniform(0, 2 * math.pi),
        gain=0.0,
        depth_px=depth,
        sector_half_angle=half,
        sector_apex=probe,
        tissue=0.0,
        cm_per_px=rng.uniform(0.11, 0.17),
        septal=tuple(rng.normal(0, [0.07, 0.05, 0.03]) * rng.uniform(0.3, 1.4)),
        lateral=tuple(rng.normal(0, [0.08, 0.06, 0.04]) * rng.uniform(0.3, 1.4)),
        phases=tuple(rng.uniform(0, 2 * math.pi, 6)),
        apex_power=rng.uniform(0.38, 0.62),
    )
    solve_kb(heart, ef)
    scene = dict(
        lateral_wall=rng.uniform(0.5, 1.5),  # lateral myocardium thickness relative to the septum
        septum_db=rng.uniform(*R["septum_db"]), myo_db=rng.uniform(-30, -20), tissue_db=rng.uniform(*R["tissue_db"]),
        blood_db=rng.uniform(-62, -46), peri_db=rng.uniform(-12, -2), valve_db=rng.uniform(-16, -4),
        dropout=rng.uniform(0, 1), dropout_db=rng.uniform(*R["dropout_db"]),
        rv_width=rng.uniform(*R["rv_width"]), rv_start=rng.uniform(*R["rv_start"]),
        la=(rng.uniform(0.42, 0.7), rng.uniform(0.95, 1.35)), ra=(rng.uniform(0.38, 0.6), rng.uniform(0.75, 1.1)),
        groove_db=rng.uniform(-16, -4), la_gap=rng.uniform(-1.0, 2.5), annulus_db=rng.uniform(-14, -2),
        papillary=int(rng.integers(0, 3)), trabeculae=int(rng.integers(0, 14)),
        clutter_db=rng.uniform(-50, -22), clutter_depth=rng.uniform(8, 45),
        dr=rng.uniform(*R["dr"]), gain_db=rng.uniform(*R["gain_db"]), gamma=rng.uniform(*R["gamma"]),
        tgc=rng.uniform(-5, 5, 4), edge_falloff=rng.uniform(0, 10),
        psf=(rng.uniform(*R["psf_a"]), rng.uniform(*R["psf_l"])), persistence=rng.uniform(0.8, 0.97),
        noise_db=rng.uniform(-58, -44),
        shadow=(rng.uniform() < R["shadow"], rng.uniform(-1, 1), rng.uniform(0.05, 0.2), rng.uniform(0.3, 0.8),
                rng.uniform(6, 18)),
        markers=rng.uniform() < 0.75, probe_mark=rng.uniform() < 0.6,
        jpeg=int(rng.integers(35, 95)) if rng.uniform() < 0.5 else 0,
        valve_open=(rng.uniform(1.05, 1.3), rng.uniform(1.75, 1.95)),
        # Tracers draw the border on the inner edge of the bright endocardium, inside the dark pool
        # that blur and speckle make of it: the blood is drawn this much wider than the mask.
        inset=rng.uniform(0.5, 2.0),
        # the LA as its own ellipse behind a wall, or as a bag continuing the LV's walls past the
        # annulus (the commoner picture, where only the valve plane says where the LV ends)
        la_bag=rng.uniform() < R["la_bag"],
        # blood in the LV is often not black: slow flow, clutter and haze; the other chambers can be
        # darker than the LV, so darkness alone never says which chamber is the LV
        lv_haze_db=rng.uniform(*R["haze_db"]) if rng.uniform() < R["haze"] else None,
    )
    if version == 2:
        scene.update(_scene_v2(rng, scene))
        _fan_covers_heart(heart, scene)
    elif version in (3, 4, 5):
        scene.update(_scene_v3(rng, scene))
    return heart, scene


def _fan_covers_heart(heart: Heart, scene: dict) -> None:
    """Widen and deepen the fan until it holds the LV with its walls, as a sonographer sets it
    (version 2's wider poses and steering would otherwise put part of the mask outside the image)."""
    from .heart import cavity_outline

    pts = cavity_outline(heart, 0.0, grow=heart.wall + 2.0) - heart.sector_apex
    ang = np.abs(np.arctan2(pts[:, 0], pts[:, 1]) - scene["tilt"]).max()
    heart.sector_half_angle = float(min(max(heart.sector_half_angle, ang + math.radians(2)), math.radians(62)))
    heart.depth_px = float(max(heart.depth_px, np.hypot(pts[:, 0], pts[:, 1]).max() + 6))


def _scene_v2(rng: np.random.Generator, scene: dict) -> dict:
    """What version 2 adds, aimed at where the first bundled model failed on real patients:

    * a second dark chamber: the RV and LA as dark as the LV or darker, the LA growing through
      systole (largest at ES, beside the smallest LV) and joined to the LV through an open mitral
      valve whose leaflets can be faint;
    * hazy, small ventricles: haze that varies over the cavity and reaches from the apex down a
      random share of it, so the basal blood is often black and echo-free (and still LV: the
      model that read it as outside drew C-shaped masks);
    * ES: walls that thicken by a varied amount, bright papillary muscles and chords that crowd
      the cavity in systole (inside the mask, as tracers draw it);
    * the fan steered a few degrees off vertical, near-field clutter over the apex.
    """
    blood = scene["blood_db"]
    return dict(
        rv_db=blood + rng.uniform(-8, 3), la_db=blood + rng.uniform(-8, 3), ra_db=blood + rng.uniform(-8, 3),
        la_pump=rng.uniform(0.0, 0.35),  # the LA's growth from ED to ES, relative
        valve_fade=rng.uniform(0, 14) if rng.uniform() < 0.5 else 0.0,  # faint leaflets (dB down)
        haze_reach=rng.uniform(0.25, 1.1),  # haze from the apex down to this share of the long axis
        haze_var=rng.uniform(0, 8),  # dB of smooth variation of the haze over the cavity
        thicken=rng.uniform(0.15, 0.8),  # systolic wall thickening
        chords=int(rng.integers(0, 4)), chord_db=rng.uniform(-26, -8),
        papillary_db=rng.uniform(-6, 8),  # brighter (or dimmer) papillary muscles than version 1 drew
        tilt=math.radians(rng.uniform(-8, 8)) if rng.uniform() < 0.5 else 0.0,
        apical_clutter_db=rng.uniform(-44, -26) if rng.uniform() < 0.45 else None,
        apical_clutter_depth=rng.uniform(0.25, 0.6),  # share of the LV length the clutter reaches
    )


def _scene_v3(rng: np.random.Generator, scene: dict) -> dict:
    """What version 3 changes in version 1's scenes: atria that can dwarf the LV.

    Version 1 sizes both atria from the LV (0.4-1x its area), so the largest dark chamber in the
    picture is nearly always the LV; in real apical views of a small LV (or of enlarged atria) the
    right heart beside and below the septum is often the biggest dark blob, and the shipped model
    drew its mask there. Here 60% of the videos get atria 1.2-2x as long and wide (each atrium its
    own factor), so size and darkness stop naming the LV and position has to. Drawn after every
    version 1 draw of the scene, so the heart, pose and the rest of the scene are version 1's.
    """
    if rng.uniform() >= 0.6:
        return {}
    k_la, k_ra = rng.uniform(1.2, 2.0, 2)
    return dict(la=(scene["la"][0] * k_la, scene["la"][1] * k_la), ra=(scene["ra"][0] * k_ra, scene["ra"][1] * k_ra))


def _scene_v4(rng: np.random.Generator) -> dict:
    """What version 4 adds to version 3: haze over the apical part of the LV only.

    Version 1 (and 3) fills a hazy LV with haze from apex to annulus while the atria stay black,
    so "grey inside" names the LV and a grey-to-black step names the valve plane. Real apical views
    often have the haze (near-field clutter, slow flow) only towards the apex, with black blood in
    the basal half: on two of the dev patients (0X148F, 0X18BA) the ``echo3`` models drew the LV
    only as far down as the haze reached and stopped mid-cavity. Here the haze reaches from the apex down a
    random share of the long axis (fading over 0.4 of it) and varies smoothly over the cavity, as
    version 2 draws it; the video is hazy or not as version 1 decided. Drawn from a generator of
    its own (see make_echo_video), so every other draw of the video is version 3's.
    """
    return dict(haze_reach=rng.uniform(0.25, 1.1), haze_var=rng.uniform(0, 8))


def _scene_v5(rng: np.random.Generator) -> dict:
    """What version 5 adds to version 3: a grey inner wall that widens as the LV contracts.

    Version 1 (and 3) draws the systolic wall as compact bright myocardium right up to the blood,
    the blood even a little wider than the mask. Real end-systolic frames show a grey, speckled
    inner layer (trabeculae and papillary muscles crowding as the wall thickens) that tracers leave
    out of the cavity, and the ``echo3`` bundle drew its ES masks into it: at ES it marked pixels
    beside the label worth 16% of the label's area, at ED 9% (nine dev patients, pooled). Here 70%
    of the videos get a band outside the mask, 0 wide at ED and 1-4 px at ES, between blood and
    myocardium in level and speckled; the mask is version 3's. Drawn from a generator of its own
    (see make_echo_video), so every other draw of the video is version 3's.
    """
    if rng.uniform() >= 0.7:
        return {}
    return dict(es_band=rng.uniform(1.0, 4.0), es_band_level=rng.uniform(0.3, 0.75))


class _Canvas:
    """An echogenicity map in dB on a canvas MARGIN px wider than the image on every side."""

    def __init__(self, db: np.ndarray) -> None:
        self.db = db

    def poly(self, pts: np.ndarray, value: float) -> None:
        import cv2

        cv2.fillPoly(self.db, [np.round((pts + MARGIN) * 16).astype(np.int32)], float(value), cv2.LINE_AA, 4)

    def line(self, p: np.ndarray, q: np.ndarray, value: float, thick: int) -> None:
        import cv2

        a, b = np.round((p + MARGIN) * 16).astype(int), np.round((q + MARGIN) * 16).astype(int)
        cv2.line(self.db, tuple(int(v) for v in a), tuple(int(v) for v in b), float(value), thick, cv2.LINE_AA, 4)

    def ellipse(self, centre: np.ndarray, axes: tuple[float, float], angle_deg: float, value: float) -> None:
        import cv2

        c = np.round((centre + MARGIN) * 16).astype(int)
        ax = (max(1, int(round(axes[0] * 16))), max(1, int(round(axes[1] * 16))))
        cv2.ellipse(self.db, (int(c[0]), int(c[1])), ax, angle_deg, 0, 360, float(value), -1, cv2.LINE_AA, 4)


def _anatomy(heart: Heart, scene: dict, c: float, phase: float, tissue: np.ndarray, wall_mod: np.ndarray,
             blobs: dict) -> tuple[np.ndarray, np.ndarray]:
    """Echogenicity (dB, canvas) and exact LV mask (image) of one frame."""
    import cv2

    from .heart import cavity_outline, lv_halfwidths

    n_c = SIZE + 2 * MARGIN
    canvas = _Canvas(tissue.copy())
    d, nrm = heart.frame_axes()
    a, b = heart.axes(c)
    u_c = a * (1 + BASE_CUT)
    wall = heart.wall * (1 + scene.get("thicken", 0.35) * c)
    cavity = cavity_outline(heart, c)

    # Where each canvas pixel lies in the LV frame: u along the axis from the apex, v towards the septum.
    yy, xx = np.mgrid[0:n_c, 0:n_c].astype(np.float32)
    px, py = xx - MARGIN - heart.apex[0], yy - MARGIN - heart.apex[1]
    u = px * d[0] + py * d[1]
    v = px * nrm[0] + py * nrm[1]

    cav = np.zeros((n_c, n_c), np.uint8)
    cv2.fillPoly(cav, [np.round((cavity + MARGIN) * 16).astype(np.int32)], 1, cv2.LINE_8, 4)
    dist = cv2.distanceTransform(1 - cav, cv2.DIST_L2, 3) - scene["inset"]  # from the edge of the blood pool
    side = 1 / (1 + np.exp(-v / 2.5))  # 1 on the septal side, 0 on the lateral side
    thick = wall * (side + (1 - side) * scene["lateral_wall"])
    above_base = u < u_c + 1.5
    myo = (dist > 0) & (dist <= thick) & above_base
    # Myocardium: septum brighter than the lateral wall, brightness varying along the wall,
    # lateral segments dropping out.
    level = side * scene["septum_db"] + (1 - side) * scene["myo_db"] + wall_mod
    canvas.db[myo] = np.maximum(canvas.db[myo], level[myo])
    peri = (dist > thick) & (dist <= thick + 2.2) & (v < 0) & (u < u_c + 4)
    canvas.db[peri] = np.maximum(canvas.db[peri], scene["peri_db"] + 0.5 * wall_mod[peri])

    # RV beside the septum, from part-way down the LV to the tricuspid plane.
    us = np.linspace(scene["rv_start"] * u_c, u_c, 24)
    ws, _ = lv_halfwidths(heart, c, us)
    t_s = wall
    rv_w = scene["rv_width"] * heart.b_ed * np.clip((us - us[0]) / (u_c - us[0]), 0, 1) ** 0.4 + 1
    inner = heart.apex + np.outer(us, d) + np.outer(ws + t_s, nrm)
    outer = heart.apex + np.outer(us, d) + np.outer(ws + t_s + rv_w, nrm)
    canvas.poly(np.concatenate([inner, outer[::-1]]), scene.get("rv_db", scene["blood_db"]))
    # RV free wall
    for p, q in zip(outer[:-1], outer[1:]):
        canvas.line(p, q, scene["myo_db"] + 4, 2)

    # Atria below the valve planes, split by the interatrial septum.
    la_a, la_b = scene["la"][0] * heart.a_ed, scene["la"][1] * heart.b_ed
    if "la_pump" in scene:  # the LA fills through systole: largest at ES
        la_a, la_b = la_a * (1 + scene["la_pump"] * c), la_b * (1 + 0.5 * scene["la_pump"] * c)
    la_db, ra_db = scene.get("la_db", scene["blood_db"]), scene.get("ra_db", scene["blood_db"])
    gap = scene["la_gap"]
    la_c = heart.apex + d * (u_c + gap + la_a) - nrm * 1.5
    ang = math.degrees(math.atan2(d[1], d[0]))
    # the atrioventricular groove: bright tissue beyond the far side of the atria
    canvas.ellipse(la_c + d * 5, (la_a + 3, la_b + 4), ang, scene["groove_db"])
    if scene["la_bag"]:
        ws_c, wl_c = lv_halfwidths(heart, c, np.array([u_c]))
        for grow, value in ((2.5, scene["myo_db"]), (0.0, la_db)):
            canvas.poly(_la_bag(heart, u_c, ws_c[0] + grow, wl_c[0] + grow, 2 * la_a + grow, la_b + grow),
                        value)
    else:
        canvas.ellipse(la_c, (la_a + 2.5, la_b + 2.5), ang, scene["myo_db"])
        canvas.ellipse(la_c, (la_a, la_b), ang, la_db)
    ra_a, ra_b = scene["ra"][0] * heart.a_ed, scene["ra"][1] * heart.b_ed
    ra_c = heart.apex + d * (u_c + gap + 1 + ra_a) + nrm * (0.85 * (la_b + ra_b) + 3)
    canvas.ellipse(ra_c, (ra_a, ra_b), ang, ra_db)

    # The LV cavity: blood, with papillary muscles and trabeculae inside its mask.
    if "haze_reach" in scene:
        _lv_blood_v2(canvas, scene, (dist <= 0) & above_base, cavity, u / u_c, blobs["haze"])
    else:
        lv_blood = scene["blood_db"] if scene["lv_haze_db"] is None else max(scene["blood_db"], scene["lv_haze_db"])
        canvas.poly(cavity, lv_blood)
        canvas.db[(dist <= 0) & above_base] = lv_blood
        if "es_band" in scene and c > 0:  # version 5: the grey inner wall, outside the mask
            edge = dist + scene["inset"]  # from the mask's edge
            band = (edge > 0) & (edge <= scene["es_band"] * c + 0.5) & above_base
            wall_db = side * scene["septum_db"] + (1 - side) * scene["myo_db"]
            grey = lv_blood + scene["es_band_level"] * (wall_db - lv_blood) + blobs["band"]
            canvas.db[band] = np.maximum(grey[band], lv_blood + 3)
    papillary_tips = []
    for (s, off, size, lvl) in blobs["papillary"]:
        uu = s * u_c
        _, wl = lv_halfwidths(heart, c, np.array([uu]))
        centre = heart.apex + d * uu - nrm * (wl[0] - off * (1 + 0.6 * c))
        canvas.ellipse(centre, (size[0] * (1 + 0.3 * c), size[1]), ang, lvl + scene.get("papillary_db", 0.0))
        papillary_tips.append(centre + d * size[0])
    for (s, sgn, r, lvl) in blobs["trabeculae"]:
        uu = s * u_c
        wsv, wlv = lv_halfwidths(heart, c, np.array([uu]))
        wv = wsv[0] if sgn > 0 else wlv[0]
        centre = heart.apex + d * uu + nrm * sgn * max(0.0, wv - 1.2)
        canvas.ellipse(centre, (r, r), 0.0, lvl)

    # The mitral orifice joins the LV to the LA (the mask stops at the annulus, as tracers draw it),
    # with bright annulus hinges and leaflets across it.
    ws_c, wl_c = lv_halfwidths(heart, c, np.array([u_c]))
    hinge_s, hinge_l = heart.apex + d * u_c + nrm * ws_c[0], heart.apex + d * u_c - nrm * wl_c[0]
    reach = d * (max(gap, 0.0) + 4)
    canvas.poly(np.array([hinge_s - nrm * 0.5, hinge_l + nrm * 0.5, hinge_l + nrm * 0.5 + reach,
                          hinge_s - nrm * 0.5 + reach]), scene["blood_db"])
    for h in (hinge_s, hinge_l):
        canvas.ellipse(h, (1.6, 1.6), 0.0, scene["annulus_db"])
    # Mitral and tricuspid leaflets: hinged at the annulus, open towards the apex in diastole.
    ph = (phase % (2 * math.pi)) / math.pi  # 0 ED .. 1 ES .. 2 next ED
    lo, hi = scene["valve_open"]
    opening = math.sin(math.pi * (ph - lo) / (hi - lo)) if lo < ph < hi else 0.0
    hinges = [(hinge_s, -1), (hinge_l, 1)]
    leaflet = 0.55 * (ws_c[0] + wl_c[0]) * 0.55
    valve_db = scene["valve_db"] - scene.get("valve_fade", 0.0)
    tips = []
    for hinge, sgn in hinges:
        across = nrm * sgn  # closed: pointing across the annulus
        direction = across * math.cos(1.25 * opening) - d * math.sin(1.25 * opening)
        canvas.line(hinge, hinge + direction * leaflet, valve_db, 1)
        tips.append(hinge + direction * leaflet)
    # chordae: thin bright strands from the papillary muscles (or the wall) to the leaflet tips
    for k, (s, across, lvl) in enumerate(blobs.get("chords", [])):
        if papillary_tips:
            start = papillary_tips[k % len(papillary_tips)]
        else:
            _, wl = lv_halfwidths(heart, c, np.array([s * u_c]))
            start = heart.apex + d * s * u_c - nrm * (wl[0] - 1.5)
        canvas.line(start, tips[1] + (tips[0] - tips[1]) * across, lvl, 1)
    if scene.get("apical_clutter_db") is not None:  # reverberation in the near field, over the apex
        near = u < scene["apical_clutter_depth"] * u_c
        ramp = np.clip(1 - u[near] / (scene["apical_clutter_depth"] * u_c), 1e-3, 1)
        # fading to nothing (-120 dB) where it ends, so it leaves no edge
        clutter = scene["apical_clutter_db"] + 40 * np.log10(ramp) + 3 * blobs["haze"][near]
        canvas.db[near] = np.maximum(canvas.db[near], clutter)
    tv_hinge = heart.apex + d * u_c + nrm * (ws_c[0] + t_s)
    direction = nrm * math.cos(1.2 * opening) - d * math.sin(1.2 * opening)
    canvas.line(tv_hinge, tv_hinge + direction * scene["rv_width"] * heart.b_ed * 0.7, scene["valve_db"] - 3, 1)

    mask = np.zeros((SIZE, SIZE), np.uint8)
    cv2.fillPoly(mask, [np.round(cavity * 16).astype(np.int32)], 1, cv2.LINE_8, 4)
    return canvas.db, mask.astype(bool)


def _lv_blood_v2(canvas: _Canvas, scene: dict, inside: np.ndarray, cavity: np.ndarray, s: np.ndarray,
                 haze_noise: np.ndarray) -> None:
    """Version 2's LV blood: black, or hazy from the apex down ``haze_reach`` of the long axis
    (s: the share of it at each canvas pixel), the haze varying smoothly over the cavity."""
    blood = scene["blood_db"]
    canvas.poly(cavity, blood)
    if scene["lv_haze_db"] is None:
        canvas.db[inside] = blood
        return
    w = np.clip((scene["haze_reach"] - s[inside]) / 0.4, 0, 1)
    haze = np.maximum(scene["lv_haze_db"] + scene["haze_var"] * haze_noise[inside], blood)
    canvas.db[inside] = blood + w * (haze - blood)


def _la_bag(heart: Heart, u_c: float, ws: float, wl: float, length: float, half: float) -> np.ndarray:
    """An LA outline that starts at the annulus with the LV's base widths, widens to ``half`` and
    closes ``length`` further on."""
    d, nrm = heart.frame_axes()
    t = np.linspace(0, 1, 24)
    grow = np.sin(np.pi * t / 2) ** 2 * 0.9
    close = np.sqrt(np.clip(1 - t ** 4, 0, 1))
    left, right = (ws + (half - ws) * grow) * close, (wl + (half - wl) * grow) * close
    axis = heart.apex + np.outer(u_c + t * length, d)
    return np.concatenate([axis + np.outer(left, nrm), (axis - np.outer(right, nrm))[::-1]])


class _Imager:
    """Polar image formation for one video: scatterers, PSF, TGC, log compression, scan conversion."""

    def __init__(self, heart: Heart, scene: dict, rng: np.random.Generator) -> None:
        self.scene, self.rng = scene, rng
        half, depth, probe = heart.sector_half_angle, heart.depth_px, heart.sector_apex
        self.r = np.linspace(0, depth, N_DEPTH, dtype=np.float32)
        self.th = np.linspace(-half, half, N_BEAMS, dtype=np.float32)
        tilt = scene.get("tilt", 0.0)
        beams = self.th + np.float32(tilt) if tilt else self.th  # steered: beam angles from vertical
        rr, tt = np.meshgrid(self.r, beams, indexing="ij")
        # polar sample -> canvas pixel
        self.map_x = (probe[0] + rr * np.sin(tt) + MARGIN).astype(np.float32)
        self.map_y = (probe[1] + rr * np.cos(tt) + MARGIN).astype(np.float32)
        # image pixel -> polar sample
        yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
        dx, dy = xx - probe[0], yy - probe[1]
        rad = np.hypot(dx, dy)
        theta = np.arctan2(dx, dy) - tilt if tilt else np.arctan2(dx, dy)
        self.inv_r = (rad / depth * (N_DEPTH - 1)).astype(np.float32)
        self.inv_t = ((theta + half) / (2 * half) * (N_BEAMS - 1)).astype(np.float32)
        self.fan = (np.abs(theta) <= half) & (rad <= depth)
        # depth gain: a smooth random TGC curve minus attenuation, and fall-off at the fan edges
        knots = np.interp(np.linspace(0, 1, N_DEPTH), np.linspace(0, 1, len(scene["tgc"])), scene["tgc"])
        gain = knots - 4 * (self.r / depth) + scene["gain_db"]
        edge = -scene["edge_falloff"] * (np.abs(self.th) / half) ** 4
        self.gain_db = (gain[:, None] + edge[None, :]).astype(np.float32)
        on, centre, width, loss, start = scene["shadow"]
        if on:  # a rib or lung shadow: one band of beams loses signal past some depth
            band = np.abs(self.th / half - centre) < width
            self.gain_db[np.ix_(self.r > start, band)] -= 20 * loss
        self.clutter = np.exp(-self.r / scene["clutter_depth"])[:, None].astype(np.float32)
        self.z = self._scatterers()

    def _scatterers(self) -> np.ndarray:
        return (self.rng.standard_normal((N_DEPTH, N_BEAMS, 2)).astype(np.float32)
                * np.float32(math.sqrt(0.5)))

    def frame(self, db_canvas: np.ndarray) -> np.ndarray:
        import cv2

        s = self.scene
        rho = s["persistence"]
        self.z = rho * self.z + math.sqrt(1 - rho * rho) * self._scatterers()
        db = cv2.remap(db_canvas, self.map_x, self.map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        power = np.power(10.0, db / 10.0, dtype=np.float32)
        power += np.float32(10 ** (s["clutter_db"] / 10)) * self.clutter * (0.5 + self.rng.random(power.shape,
                                                                                                  np.float32))
        amp = np.sqrt(power)[..., None] * self.z
        sa, sl = s["psf"]
        amp = cv2.GaussianBlur(amp, (0, 0), sigmaX=sl, sigmaY=sa)  # x: across beams, y: along depth
        env = amp[..., 0] ** 2 + amp[..., 1] ** 2
        norm = (sa * sl) * 4 * math.pi * 0.5  # keeps the mean power of blurred unit scatterers near 1
        env = env * norm * np.power(10.0, self.gain_db / 10.0, dtype=np.float32)
        env += np.float32(10 ** (s["noise_db"] / 10)) * self.rng.exponential(1.0, env.shape).astype(np.float32)
        disp = (10 * np.log10(env + 1e-12) + s["dr"]) / s["dr"]
        disp = np.clip(disp, 0, 1) ** s["gamma"]
        img = cv2.remap(disp.astype(np.float32), self.inv_t, self.inv_r, cv2.INTER_LINEAR,
                        borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        img[~self.fan] = 0
        return img


def _overlays(img: np.ndarray, heart: Heart, scene: dict) -> np.ndarray:
    import cv2

    probe, half, depth = heart.sector_apex, heart.sector_half_angle, heart.depth_px
    if scene["markers"]:  # depth-marker dots just outside the right edge of the fan
        step = 10 + 4 * (depth > 125)
        for r in np.arange(step, depth, step):
            ang = half + 0.06 + scene.get("tilt", 0.0)
            x, y = probe[0] + r * math.sin(ang), probe[1] + r * math.cos(ang)
            if 0 <= x < SIZE and 0 <= y < SIZE:
                cv2.circle(img, (int(x), int(y)), 0, 0.85, -1)
    if scene["probe_mark"]:
        x, y = probe[0] + 2 + 0.9 * max(0.0, -probe[1]) * math.tan(half), max(1.0, probe[1] + 2)
        if 0 <= x < SIZE:
            cv2.circle(img, (int(x), int(y)), 1, 0.9, -1)
    return img


def make_echo_video(seed: int, frames: int = 96, name: str | None = None, ef: float | None = None,
                    version: int = 1) -> SynthVideo:
    """One ``echo``-style video with its exact masks, ED/ES frames, EF and EchoNet tracings
    (``version`` 2: the ``echo2`` style, with wider ranges and the scenes the first model failed on;
    3: ``echo3``, version 1 with atria that can dwarf the LV; 4: ``echo4``, version 3 with the haze
    over the apical part of the LV only; 5: ``echo5``, version 3 with a grey inner wall at ES)."""
    import cv2

    from .heart import _smooth_noise

    rng = np.random.default_rng([seed, 0xEC40])
    heart, scene = random_echo_heart(rng, ef, version)
    heart.period = min(heart.period, max(6.0, frames - 4.0))
    n_c = SIZE + 2 * MARGIN
    tissue = (scene["tissue_db"] + 3.0 * _smooth_noise(rng, (n_c, n_c), 7) / 0.06).astype(np.float32)
    tissue = np.clip(tissue, scene["tissue_db"] - 8, scene["tissue_db"] + 8)
    wall_mod = _smooth_noise(rng, (n_c, n_c), 5)
    wall_mod = (4.0 * wall_mod / (wall_mod.std() + 1e-6)).astype(np.float32)
    if scene["dropout"] > 0.35:  # some wall segments go dark
        drop = _smooth_noise(rng, (n_c, n_c), 9)
        wall_mod -= scene["dropout_db"] * (drop > drop.std() * (1.4 - scene["dropout"])).astype(np.float32)
    blobs = {
        "papillary": [(rng.uniform(0.5, 0.78), rng.uniform(0.5, 3.0), (rng.uniform(3, 7), rng.uniform(1.5, 3.5)),
                       rng.uniform(-28, -14)) for _ in range(scene["papillary"])],
        "trabeculae": [(rng.uniform(0.05, 0.6), rng.choice([-1, 1]), rng.uniform(0.6, 1.6), rng.uniform(-34, -20))
                       for _ in range(scene["trabeculae"])],
    }
    if version == 2:
        blobs["chords"] = [(rng.uniform(0.5, 0.75), rng.uniform(0, 1), scene["chord_db"] + rng.uniform(-4, 4))
                           for _ in range(scene["chords"])]
        haze = _smooth_noise(rng, (n_c, n_c), 6)
        blobs["haze"] = (haze / (haze.std() + 1e-6)).astype(np.float32)
    if version == 4:  # its own generator: the video is version 3's but for the haze
        rng4 = np.random.default_rng([seed, 0xEC44])
        scene.update(_scene_v4(rng4))
        haze = _smooth_noise(rng4, (n_c, n_c), 6)
        blobs["haze"] = (haze / (haze.std() + 1e-6)).astype(np.float32)
    if version == 5:  # its own generator: the video is version 3's but for the grey inner wall
        rng5 = np.random.default_rng([seed, 0xEC45])
        scene.update(_scene_v5(rng5))
        band = _smooth_noise(rng5, (n_c, n_c), 2)
        blobs["band"] = (4.0 * band / (band.std() + 1e-6)).astype(np.float32)
    imager = _Imager(heart, scene, rng)
    t = np.arange(frames)
    contraction = heart.contraction(t)
    phi = 2 * math.pi * t / heart.period + heart.phase0
    out = np.empty((frames, SIZE, SIZE, 3), np.uint8)
    masks = np.empty((frames, SIZE, SIZE), bool)
    for i in range(frames):
        db, masks[i] = _anatomy(heart, scene, float(contraction[i]), float(phi[i]), tissue, wall_mod, blobs)
        img = _overlays(imager.frame(np.maximum(db, FLOOR_DB)), heart, scene)
        grey = (np.clip(img, 0, 1) * 255).astype(np.uint8)
        if scene["jpeg"]:
            ok, buf = cv2.imencode(".jpg", grey, [cv2.IMWRITE_JPEG_QUALITY, scene["jpeg"]])
            grey = cv2.imdecode(buf, cv2.IMREAD_GRAYSCALE)
        out[i] = grey[:, :, None]
    return with_truth(heart, out, masks, name or f"SYN{seed:06d}")
