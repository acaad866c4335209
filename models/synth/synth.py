"""Synthetic brain-tumour MR generator over the MNI ICBM152 2009a anatomy (numpy + nibabel only).

A *case* (``Case``) is a random subject: a deformed copy of the template anatomy (random affine: rotation,
anisotropic scale, translation, optional left-right flip; plus a smooth elastic displacement) with one glioma-like
lesion in template space (necrotic core, enhancing rim, surrounding oedema; irregular shapes from smooth random
fields), and per-contrast tissue intensities, bias fields and noise levels. Everything is drawn from
``numpy.random.default_rng(seed)``, so a seed gives the same case on every machine.

A case is *rendered* on any grid of patient (DICOM LPS, mm) points: ``render(case, geom)`` returns the four
contrasts and the ground-truth labels on the grid described by a ``Geometry`` (DICOM-style: Image Orientation
(Patient) row/column cosines, Image Position (Patient) of the first slice, pixel spacing, slice spacing). The
ground truth is evaluated from the same continuous fields at the voxel centres, so it is exact on every grid.

Label convention (BraTS-like, used by the generator, the training, the model manifest and the tests):
    0 background / healthy tissue, 1 necrotic core, 2 peritumoural oedema, 3 enhancing tumour.
Whole tumour WT = {1,2,3}, tumour core TC = {1,3}, enhancing tumour ET = {3}.

Contrast order everywhere: T1, T1CE (T1 post-contrast), T2, FLAIR.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np

CONTRASTS = ("T1", "T1CE", "T2", "FLAIR")
LABELS = {0: "background", 1: "necrotic core", 2: "oedema", 3: "enhancing tumour"}

ANATOMY_PATH = Path(__file__).resolve().parent.parent / "anatomy" / "mni152_2009a_sym_1mm_t1_gm_wm.nii.gz"

# Mean relative intensities per contrast: CSF, GM, WM, necrosis, enhancing, oedema.
BASE_INTENSITY = {
    "T1": (0.30, 0.60, 0.80, 0.33, 0.55, 0.52),
    "T1CE": (0.30, 0.60, 0.80, 0.33, 1.25, 0.52),
    "T2": (1.00, 0.58, 0.42, 0.92, 0.66, 0.82),
    "FLAIR": (0.18, 0.66, 0.50, 0.55, 0.80, 1.05),
}

_ANATOMY = None


def load_anatomy():
    """(data[X,Y,Z,4] float32: T1/255, GM, WM, brain mask; inverse affine 4x4 RAS mm -> voxel)."""
    global _ANATOMY
    if _ANATOMY is None:
        img = nib.load(str(ANATOMY_PATH))
        a = np.asarray(img.dataobj).astype(np.float32) / 255.0
        mask = (a[..., 0] > 0).astype(np.float32)
        data = np.concatenate([a, mask[..., None]], axis=-1)
        # one voxel of zero padding on every side so that trilinear sampling fades to 0 at the edge
        data = np.pad(data, ((1, 1), (1, 1), (1, 1), (0, 0)))
        aff = img.affine.copy()
        aff[:3, 3] -= aff[:3, :3] @ np.ones(3)
        _ANATOMY = (np.ascontiguousarray(data), np.linalg.inv(aff))
    return _ANATOMY


def trilinear(vol: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Sample vol[X,Y,Z] or vol[X,Y,Z,C] at voxel coordinates v[N,3]; 0 outside. Returns [N] or [N,C]."""
    shp = np.array(vol.shape[:3])
    squeeze = vol.ndim == 3
    flat = vol.reshape(int(np.prod(shp)), -1)
    x0 = np.floor(v).astype(np.int64)
    f = (v - x0).astype(np.float32)
    inside = np.all((x0 >= 0) & (x0 < shp - 1), axis=1)
    x0 = np.where(inside[:, None], x0, 0)
    sy, sz = shp[1] * shp[2], shp[2]
    base = x0[:, 0] * sy + x0[:, 1] * sz + x0[:, 2]
    out = np.zeros((v.shape[0], flat.shape[1]), np.float32)
    for dx in (0, 1):
        wx = f[:, 0] if dx else 1 - f[:, 0]
        for dy in (0, 1):
            wy = f[:, 1] if dy else 1 - f[:, 1]
            for dz in (0, 1):
                wz = f[:, 2] if dz else 1 - f[:, 2]
                out += (wx * wy * wz)[:, None] * flat[base + dx * sy + dy * sz + dz]
    out[~inside] = 0
    return out[:, 0] if squeeze else out


def rotation(ax: float, ay: float, az: float) -> np.ndarray:
    """Rotation matrix (radians) about x, then y, then z."""
    cx, sx, cy, sy, cz, sz = np.cos(ax), np.sin(ax), np.cos(ay), np.sin(ay), np.cos(az), np.sin(az)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


@dataclass
class Geometry:
    """A DICOM-style slice stack. Pixel (row j, column i) of slice k sits at
    position + k*slice_spacing*normal + i*col_spacing*row_dir + j*row_spacing*col_dir  (patient LPS, mm),
    where normal = row_dir x col_dir. Arrays on this grid are indexed [k, j, i]."""

    row_dir: np.ndarray  # Image Orientation (Patient) first triplet (direction of increasing column index i)
    col_dir: np.ndarray  # second triplet (direction of increasing row index j)
    position: np.ndarray  # Image Position (Patient) of slice 0
    rows: int
    cols: int
    row_spacing: float  # Pixel Spacing[0]: distance between rows (mm)
    col_spacing: float  # Pixel Spacing[1]: distance between columns (mm)
    slices: int
    slice_spacing: float  # Spacing Between Slices (mm)
    slice_thickness: float  # Slice Thickness (mm); the slab the signal is averaged over

    @property
    def normal(self):
        return np.cross(self.row_dir, self.col_dir)

    def slice_position(self, k):
        return self.position + k * self.slice_spacing * self.normal

    def points(self, k, offset=0.0):
        """[rows*cols, 3] patient coordinates of slice k (row-major: j then i), shifted along the normal."""
        j, i = np.meshgrid(np.arange(self.rows), np.arange(self.cols), indexing="ij")
        p = (
            self.slice_position(k)[None, :]
            + (i.reshape(-1, 1) * self.col_spacing) * self.row_dir[None, :]
            + (j.reshape(-1, 1) * self.row_spacing) * self.col_dir[None, :]
            + offset * self.normal[None, :]
        )
        return p

    def affine_ras(self):
        """NIfTI affine (voxel i, j, k -> RAS mm) for an array stored as [i, j, k] (i.e. arr[k,j,i].transpose(2,1,0))."""
        a = np.eye(4)
        lps2ras = np.diag([-1.0, -1.0, 1.0])
        a[:3, 0] = lps2ras @ (self.row_dir * self.col_spacing)
        a[:3, 1] = lps2ras @ (self.col_dir * self.row_spacing)
        a[:3, 2] = lps2ras @ (self.normal * self.slice_spacing)
        a[:3, 3] = lps2ras @ self.position
        return a

    @staticmethod
    def centred(rotation_matrix, centre, rows, cols, row_spacing, col_spacing, slices, slice_spacing,
                slice_thickness=None):
        """A stack whose axes are the columns of rotation_matrix (row_dir, col_dir, normal) centred on centre."""
        r, c = rotation_matrix[:, 0], rotation_matrix[:, 1]
        n = np.cross(r, c)
        pos = (np.asarray(centre, float) - (cols - 1) / 2 * col_spacing * r - (rows - 1) / 2 * row_spacing * c
               - (slices - 1) / 2 * slice_spacing * n)
        return Geometry(r.astype(float), c.astype(float), pos, rows, cols, float(row_spacing), float(col_spacing),
                        slices, float(slice_spacing),
                        float(slice_spacing if slice_thickness is None else slice_thickness))


@dataclass
class Case:
    seed: int
    # subject (patient LPS) -> template (RAS mm): q = M @ (p - centre_subject) + centre_template
    M: np.ndarray = None
    centre_subject: np.ndarray = None
    centre_template: np.ndarray = None
    disp: np.ndarray = None  # coarse elastic displacement [gx,gy,gz,3] in template voxels
    disp_spacing: float = 16.0
    # lesion (template voxel coordinates)
    les_centre: np.ndarray = None
    les_rot: np.ndarray = None
    les_axes: np.ndarray = None
    R: float = 12.0  # core radius (mm)
    a: float = 0.5  # necrosis boundary (fraction of d)
    c: float = 2.0  # oedema boundary (in d2 units)
    noise: list = field(default_factory=list)  # coarse random grids for shape/texture
    intens: dict = None
    bias: dict = None
    sigma: dict = None
    gain: dict = None
    head: object = None  # head.Head when the case has a skull, scalp and neck (models/synth/head.py)


def make_case(seed: int, head: bool = False, strong_bias=None) -> Case:
    """A random case. head=True adds a procedural head (head.py) drawn from its own generator, so the brain,
    the lesion and every other draw are those of the skull-stripped case of the same seed; strong_bias (None:
    random per case, True/False: forced) then applies to the head case's bias fields."""
    cs = _make_case(seed)
    if head:
        import head as head_mod

        cs.head = head_mod.make_head(seed, cs, strong_bias)
    elif strong_bias:
        rng = np.random.default_rng([seed, 0xB1A5])
        for con in CONTRASTS:
            cs.bias[con] = rng.normal(0, 0.35, 9)
    return cs


def _make_case(seed: int) -> Case:
    rng = np.random.default_rng(seed)
    data, inv_aff = load_anatomy()
    cs = Case(seed=seed)
    # --- affine: LPS -> RAS, random rotation, scale, LR flip
    lps2ras = np.diag([-1.0, -1.0, 1.0])
    rot = rotation(*np.deg2rad(rng.uniform(-10, 10, 3)))
    scale = np.diag(rng.uniform(0.9, 1.1, 3))
    flip = np.diag([-1.0 if rng.random() < 0.5 else 1.0, 1.0, 1.0])
    cs.M = flip @ rot @ scale @ lps2ras
    # template brain centre (RAS) from the mask
    shp = np.array(data.shape[:3])
    aff = np.linalg.inv(inv_aff)
    cs.centre_template = (aff @ np.r_[(shp - 1) / 2.0, 1.0])[:3] + rng.uniform(-4, 4, 3)
    cs.centre_subject = np.array([0.0, 10.0, 20.0]) + rng.uniform(-5, 5, 3)
    # --- elastic displacement: coarse grid (16 mm) of N(0, 2.5 mm) vectors
    g = (shp / cs.disp_spacing).astype(int) + 3
    cs.disp = (rng.normal(0, 2.5, (*g, 3))).astype(np.float32)
    # --- lesion centre: a white-matter voxel with brain all around at the core radius
    cs.R = float(rng.uniform(8, 22))
    wm, mask = data[..., 2], data[..., 3]
    cand = np.argwhere(wm > 0.6)
    for _ in range(1000):
        v = cand[rng.integers(len(cand))].astype(float)
        ok = True
        for d in np.vstack([np.eye(3), -np.eye(3)]):
            pt = np.round(v + d * (cs.R + 6)).astype(int)
            if np.any(pt < 0) or np.any(pt >= shp) or mask[tuple(pt)] < 0.5:
                ok = False
                break
        if ok:
            break
    cs.les_centre = v
    cs.les_rot = rotation(*rng.uniform(-np.pi, np.pi, 3))
    cs.les_axes = rng.uniform(0.75, 1.3, 3)
    rim = rng.uniform(2.5, 6.0)
    cs.a = float(max(0.0, 1.0 - rim / cs.R)) if rng.random() > 0.1 else 0.0
    cs.c = float(rng.uniform(1.6, 2.8))
    # coarse noise grids (values ~N(0,1)), 14^3 each, used in lesion-local coordinates
    cs.noise = [rng.normal(0, 1, (14, 14, 14)).astype(np.float32) for _ in range(4)]
    # --- per contrast intensities (+-10 %), bias field polynomial, noise sigma, scanner gain
    cs.intens, cs.bias, cs.sigma, cs.gain = {}, {}, {}, {}
    for con in CONTRASTS:
        base = np.array(BASE_INTENSITY[con])
        cs.intens[con] = base * rng.uniform(0.9, 1.1, base.shape)
        cs.bias[con] = rng.normal(0, 0.12, 9)
        cs.sigma[con] = float(rng.uniform(0.01, 0.04))
        cs.gain[con] = float(rng.uniform(600, 1400))
    return cs


def _to_template_voxels(cs: Case, p: np.ndarray) -> np.ndarray:
    data, inv_aff = load_anatomy()
    q = (p - cs.centre_subject) @ cs.M.T + cs.centre_template
    v = q @ inv_aff[:3, :3].T + inv_aff[:3, 3]
    v = v + trilinear(cs.disp, v / cs.disp_spacing + 1.0)
    return v


def _noise(grid, x):
    """Smooth random field at lesion-local coordinates x (units of grid cells, 0 = grid centre)."""
    return trilinear(grid, x + (np.array(grid.shape) - 1) / 2.0)


def _fields(cs: Case, p: np.ndarray):
    """Anatomy and lesion quantities at patient points p[N,3]."""
    data, _ = load_anatomy()
    v = _to_template_voxels(cs, p)
    an = trilinear(data, v)  # t1, gm, wm, mask
    dv = v - cs.les_centre
    y = (dv @ cs.les_rot.T) / cs.les_axes
    r = np.sqrt((y ** 2).sum(1))
    n1 = _noise(cs.noise[0], dv / (0.55 * cs.R))
    n2 = _noise(cs.noise[1], dv / (0.9 * cs.R))
    n3 = _noise(cs.noise[2], dv / 4.0)
    n4 = _noise(cs.noise[3], dv / (0.35 * cs.R))
    d = r / (cs.R * np.clip(1 + 0.22 * n1 + 0.1 * n4, 0.4, None))
    d2 = r / (cs.R * np.clip(1 + 0.35 * n2, 0.3, None))
    if cs.head is not None:
        import head as head_mod

        _, inv_aff = load_anatomy()
        n3 = (n3, head_mod.head_fractions(cs.head, v, inv_aff))
    return an, d, d2, n3


def _labels(cs: Case, an, d, d2):
    brain = an[:, 3] > 0.5
    gm = an[:, 1]
    lab = np.zeros(d.shape, np.uint8)
    core = (d < 1.0) & brain
    lab[(d >= 1.0) & (d2 < cs.c) & brain & (gm < 0.6)] = 2
    lab[core] = 3
    lab[core & (d < cs.a)] = 1
    return lab


def _sig(x):
    return 1.0 / (1.0 + np.exp(-np.clip(x, -30, 30)))


def _images(cs: Case, p, an, d, d2, n3, rng):
    hfr = None
    if cs.head is not None:
        n3, hfr = n3
    t1t, gm, wm, brain = an[:, 0], an[:, 1], an[:, 2], an[:, 3]
    csf = np.clip(brain - gm - wm, 0, None)
    R = cs.R
    f_tc = _sig((1.0 - d) * R / 0.7) * brain
    f_nec = _sig((cs.a - d) * R / 0.7) * brain if cs.a > 0 else np.zeros_like(d)
    f_nec = np.minimum(f_nec, f_tc)
    ed_ok = np.clip((0.75 - gm) / 0.3, 0, 1) * brain
    f_ed = (1 - f_tc) * _sig((cs.c - d2) * R / 1.0) * ed_ok
    f_h = np.clip(1 - f_tc - f_ed, 0, 1)
    pn = (p - cs.centre_subject) / 100.0
    poly = np.stack([pn[:, 0], pn[:, 1], pn[:, 2], pn[:, 0] ** 2, pn[:, 1] ** 2, pn[:, 2] ** 2,
                     pn[:, 0] * pn[:, 1], pn[:, 1] * pn[:, 2], pn[:, 0] * pn[:, 2]], 1)
    out = {}
    for con in CONTRASTS:
        i_csf, i_gm, i_wm, i_nec, i_enh, i_ed = cs.intens[con]
        healthy = csf * i_csf + gm * i_gm + wm * i_wm
        if con in ("T1", "T1CE"):
            healthy = 0.5 * healthy + 0.5 * t1t * 0.95
        img = (f_h * healthy + f_nec * i_nec * (1 + 0.08 * n3)
               + (f_tc - f_nec) * i_enh * (1 + 0.12 * n3) + f_ed * i_ed * (0.92 + 0.12 * wm + 0.05 * n3))
        if hfr is not None:
            import head as head_mod

            img = img + (1 - brain) * head_mod.head_image(cs.head, con, hfr, i_csf)
        img = img * np.exp(poly @ cs.bias[con])
        s = cs.sigma[con] * 0.8
        img = np.sqrt((img + rng.normal(0, s, img.shape)) ** 2 + rng.normal(0, s, img.shape) ** 2)
        out[con] = img.astype(np.float32)
    return out


def render(cs: Case, geom: Geometry, with_images=True, quantise=True, with_brain=False, slices=None):
    """Images {contrast: float32[k,j,i]} (stored pixel values, 0..4095 when quantise) and labels uint8[k,j,i].
    Signal is averaged over the slice thickness (1 sample per mm); labels are taken at the voxel centres.
    with_brain: also return the ground-truth brain mask uint8[k,j,i] (template mask > 0.5 at the voxel centre).
    slices: render only these slice indices (arrays are then [len(slices), j, i])."""
    rng = np.random.default_rng([cs.seed, 0xA11CE, geom.rows, geom.cols, geom.slices])
    ks = list(range(geom.slices)) if slices is None else list(slices)
    K, NJ, NI = len(ks), geom.rows, geom.cols
    labels = np.zeros((K, NJ, NI), np.uint8)
    brain = np.zeros((K, NJ, NI), np.uint8)
    imgs = {con: np.zeros((K, NJ, NI), np.float32) for con in CONTRASTS} if with_images else None
    nsub = max(1, int(round(geom.slice_thickness / 1.0)))
    offsets = (np.arange(nsub) + 0.5) / nsub * geom.slice_thickness - geom.slice_thickness / 2 if nsub > 1 else [0.0]
    for out_k, k in enumerate(ks):
        p0 = geom.points(k)
        an, d, d2, n3 = _fields(cs, p0)
        k = out_k
        labels[k] = _labels(cs, an, d, d2).reshape(NJ, NI)
        brain[k] = (an[:, 3] > 0.5).reshape(NJ, NI)
        if not with_images:
            continue
        acc = {con: np.zeros(NJ * NI, np.float32) for con in CONTRASTS}
        for off in offsets:
            if off == 0.0:
                p, f = p0, (an, d, d2, n3)
            else:
                p = p0 + off * geom.normal[None, :]
                f = _fields(cs, p)
            im = _images(cs, p, *f, rng)
            for con in CONTRASTS:
                acc[con] += im[con]
        for con in CONTRASTS:
            x = acc[con] / len(offsets) * cs.gain[con]
            if cs.head is not None:
                import head as head_mod

                x = head_mod.motion_blur(x.reshape(NJ, NI), cs.head).reshape(-1)
            if quantise:
                x = np.clip(np.round(x), 0, 4095)
            imgs[con][k] = x.reshape(NJ, NI)
    if with_brain:
        return imgs, labels, brain
    return imgs, labels


def head_extent_slices(cs: Case, geom_rot: np.ndarray, centre, spacing, half_extent=95.0):
    """Number of slices of the given spacing to cover +-half_extent mm along the normal of geom_rot."""
    return int(np.ceil(2 * half_extent / spacing)) + 1


def random_geometry(rng, cs: Case, kind="train", rows=128, cols=128, pixel=2.0, thickness=None, oblique=None):
    """A random acquisition geometry covering the head (axial, optionally oblique)."""
    if oblique is None:
        oblique = rng.random() < 0.35
    if oblique:
        ang = np.deg2rad([rng.uniform(-25, 25), rng.uniform(-12, 12), rng.uniform(-8, 8)])
    else:
        ang = np.deg2rad(rng.uniform(-2, 2, 3))
    Rm = rotation(*ang)
    if thickness is None:
        thickness = float(rng.choice([1.0, 2.0, 3.0, 4.0, 5.0]))
    centre = cs.centre_subject + rng.uniform(-8, 8, 3)
    n = int(np.ceil(170.0 / thickness))
    return Geometry.centred(Rm, centre, rows, cols, pixel, pixel, n, thickness, thickness)
