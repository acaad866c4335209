//! NIfTI-1 and NIfTI-2 volumes in (any byte order, `.nii` or `.nii.gz`), NIfTI-1 label maps out.
//!
//! **Why our own reader, not the `nifti` crate** (decision, issue 18): nifti 0.18 (the maintained
//! crate) reads NIfTI-1 only (its header parser knows the 348-byte layout; NIfTI-2's 540 bytes
//! and 64-bit dimensions are not read), computes qform/sform affines only with its
//! `nalgebra_affine` feature (nalgebra + simba, the heavy part), and sizes its buffer from the
//! header before a caller can bound it. The two header layouts are fixed offsets (below), the
//! geometry is nibabel's `get_best_affine` (sform when its code is set, else qform, else the
//! base affine from pixdim), and gzip is flate2, already built for `zip`: no new crate in the
//! build. nibabel is the oracle in the tests (it writes what we read and reads what we write).
//!
//! Hostile input: every dimension, the voxel count, the data type and the data offset are
//! checked before anything is allocated; decompression is read through a bound (the header's
//! own data size), so a gzip bomb stops at the size the header states.

use std::io::Read;

use ndarray::{Array3, Axis};

use crate::volume::{dot, Grid, Vec3};

/// The most voxels one 3D volume may have (2^27: 512 MiB as f32, the canonical grid's bound);
/// a header stating more is refused before anything is read. A BraTS volume has 8.9 M.
pub const MAX_VOXELS: usize = 1 << 27;
/// The most bytes of voxel data one file may hold once decompressed (a BraTS 4D float32 file
/// holds 142 MB): the gzip layer inside an upload is not bounded by the upload's own limits.
pub const MAX_DATA_BYTES: u64 = 1 << 30;
/// The most voxels along one axis.
pub const MAX_DIM: usize = 8192;
/// The most volumes (4th dimension) of one file: one per contrast.
pub const MAX_VOLUMES: usize = 16;

/// What is wrong with a file; the message names the field.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct NiftiError(pub String);

fn bad(msg: impl Into<String>) -> NiftiError {
    NiftiError(msg.into())
}

/// Which header layout the file had.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    Nifti1,
    Nifti2,
}

/// The header fields segnode uses, widened to f64 / usize.
#[derive(Debug, Clone, PartialEq)]
pub struct Header {
    pub version: Version,
    pub little_endian: bool,
    /// Voxels along i, j, k.
    pub dims: [usize; 3],
    /// Volumes (the 4th dimension; 1 for a 3D file).
    pub volumes: usize,
    pub datatype: i16,
    pub pixdim: [f64; 8],
    pub vox_offset: u64,
    pub scl_slope: f64,
    pub scl_inter: f64,
    pub qform_code: i32,
    pub sform_code: i32,
    /// quatern_b, c, d and qoffset_x, y, z.
    pub quatern: [f64; 3],
    pub qoffset: [f64; 3],
    pub srow: [[f64; 4]; 3],
}

/// Bytes per voxel of a supported data type, and its name.
fn datatype_info(code: i16) -> Option<(usize, &'static str)> {
    Some(match code {
        2 => (1, "uint8"),
        4 => (2, "int16"),
        8 => (4, "int32"),
        16 => (4, "float32"),
        64 => (8, "float64"),
        256 => (1, "int8"),
        512 => (2, "uint16"),
        768 => (4, "uint32"),
        1024 => (8, "int64"),
        1280 => (8, "uint64"),
        _ => return None,
    })
}

struct Fields<'a> {
    b: &'a [u8],
    le: bool,
}

impl Fields<'_> {
    fn bytes<const N: usize>(&self, at: usize) -> [u8; N] {
        let mut a = [0u8; N];
        a.copy_from_slice(&self.b[at..at + N]);
        if !self.le {
            a.reverse();
        }
        a
    }
    fn i16(&self, at: usize) -> i16 {
        i16::from_le_bytes(self.bytes(at))
    }
    fn i32(&self, at: usize) -> i32 {
        i32::from_le_bytes(self.bytes(at))
    }
    fn i64(&self, at: usize) -> i64 {
        i64::from_le_bytes(self.bytes(at))
    }
    fn f32(&self, at: usize) -> f64 {
        f32::from_le_bytes(self.bytes(at)) as f64
    }
    fn f64(&self, at: usize) -> f64 {
        f64::from_le_bytes(self.bytes(at))
    }
}

/// Parses a header from the first bytes of a (decompressed) file: 348 bytes for NIfTI-1, 540 for
/// NIfTI-2. Checks the magic, the dimensions, the data type and the offset.
pub fn parse_header(b: &[u8]) -> Result<Header, NiftiError> {
    if b.len() < 348 {
        return Err(bad(format!(
            "not a NIfTI file: {} bytes, shorter than a NIfTI-1 header (348)",
            b.len()
        )));
    }
    let size_le = i32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    let size_be = i32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    let (version, le) = match (size_le, size_be) {
        (348, _) => (Version::Nifti1, true),
        (_, 348) => (Version::Nifti1, false),
        (540, _) => (Version::Nifti2, true),
        (_, 540) => (Version::Nifti2, false),
        _ => {
            return Err(bad(
                "not a NIfTI file: sizeof_hdr is neither 348 (NIfTI-1) nor 540 (NIfTI-2)",
            ))
        }
    };
    let f = Fields { b, le };
    let mut h = match version {
        Version::Nifti1 => {
            let magic = &b[344..348];
            if magic != b"n+1\0" {
                return Err(bad(if magic == b"ni1\0" {
                    "a NIfTI-1 header/image pair (.hdr/.img) is not supported: upload single .nii or .nii.gz files".to_string()
                } else {
                    format!(
                        "not a NIfTI-1 file: magic {:?} is not \"n+1\"",
                        String::from_utf8_lossy(magic)
                    )
                }));
            }
            let mut dim = [0i64; 8];
            for (n, d) in dim.iter_mut().enumerate() {
                *d = f.i16(40 + 2 * n) as i64;
            }
            let mut pixdim = [0f64; 8];
            for (n, p) in pixdim.iter_mut().enumerate() {
                *p = f.f32(76 + 4 * n);
            }
            let srow = [0, 1, 2].map(|r| [0, 1, 2, 3].map(|c| f.f32(280 + 16 * r + 4 * c)));
            Header {
                version,
                little_endian: le,
                dims: check_dims(&dim)?.0,
                volumes: check_dims(&dim)?.1,
                datatype: f.i16(70),
                pixdim,
                vox_offset: offset(f.f32(108))?,
                scl_slope: f.f32(112),
                scl_inter: f.f32(116),
                qform_code: f.i16(252) as i32,
                sform_code: f.i16(254) as i32,
                quatern: [f.f32(256), f.f32(260), f.f32(264)],
                qoffset: [f.f32(268), f.f32(272), f.f32(276)],
                srow,
            }
        }
        Version::Nifti2 => {
            if b.len() < 540 {
                return Err(bad(format!(
                    "truncated NIfTI-2 header: {} bytes of 540",
                    b.len()
                )));
            }
            let magic = &b[4..12];
            if &magic[..4] != b"n+2\0" {
                return Err(bad(if &magic[..4] == b"ni2\0" {
                    "a NIfTI-2 header/image pair (.hdr/.img) is not supported: upload single .nii or .nii.gz files".to_string()
                } else {
                    format!(
                        "not a NIfTI-2 file: magic {:?} is not \"n+2\"",
                        String::from_utf8_lossy(&magic[..4])
                    )
                }));
            }
            let mut dim = [0i64; 8];
            for (n, d) in dim.iter_mut().enumerate() {
                *d = f.i64(16 + 8 * n);
            }
            let mut pixdim = [0f64; 8];
            for (n, p) in pixdim.iter_mut().enumerate() {
                *p = f.f64(104 + 8 * n);
            }
            let srow = [0, 1, 2].map(|r| [0, 1, 2, 3].map(|c| f.f64(400 + 32 * r + 8 * c)));
            let vox = f.i64(168);
            Header {
                version,
                little_endian: le,
                dims: check_dims(&dim)?.0,
                volumes: check_dims(&dim)?.1,
                datatype: f.i16(12),
                pixdim,
                vox_offset: offset(vox as f64)?,
                scl_slope: f.f64(176),
                scl_inter: f.f64(184),
                qform_code: f.i32(344),
                sform_code: f.i32(348),
                quatern: [f.f64(352), f.f64(360), f.f64(368)],
                qoffset: [f.f64(376), f.f64(384), f.f64(392)],
                srow,
            }
        }
    };
    let header_len = if version == Version::Nifti1 { 348 } else { 540 };
    if h.vox_offset < header_len {
        return Err(bad(format!(
            "vox_offset {} lies inside the {header_len}-byte header",
            h.vox_offset
        )));
    }
    if datatype_info(h.datatype).is_some() && h.data_bytes() > MAX_DATA_BYTES {
        return Err(bad(format!(
            "{} bytes of voxel data, over the limit of {MAX_DATA_BYTES}",
            h.data_bytes()
        )));
    }
    if datatype_info(h.datatype).is_none() {
        return Err(bad(format!(
            "data type {} is not supported (supported: uint8, int8, int16, uint16, int32, uint32, int64, uint64, float32, float64)",
            h.datatype
        )));
    }
    // nibabel: a slope of 0 or not finite means unscaled data; an intercept that is not finite is 0.
    if h.scl_slope == 0.0 || !h.scl_slope.is_finite() {
        h.scl_slope = 1.0;
        h.scl_inter = 0.0;
    } else if !h.scl_inter.is_finite() {
        h.scl_inter = 0.0;
    }
    Ok(h)
}

fn offset(v: f64) -> Result<u64, NiftiError> {
    if !(v.is_finite() && (0.0..=(1u64 << 32) as f64).contains(&v)) {
        return Err(bad(format!("vox_offset {v} is not a usable file offset")));
    }
    Ok(v as u64)
}

/// dim[0] = rank (1-7); the spatial dims and the volume count, each bounded; dims beyond 4 must be 1.
fn check_dims(dim: &[i64; 8]) -> Result<([usize; 3], usize), NiftiError> {
    let rank = dim[0];
    if !(1..=7).contains(&rank) {
        return Err(bad(format!(
            "dim[0] = {rank}: the number of dimensions must be 1 to 7"
        )));
    }
    let rank = rank as usize;
    let mut d = [1usize; 7];
    for n in 1..=rank {
        let v = dim[n];
        if v < 1 || v as u64 > MAX_DIM as u64 {
            return Err(bad(format!(
                "dim[{n}] = {v}: every dimension must be 1 to {MAX_DIM}"
            )));
        }
        d[n - 1] = v as usize;
    }
    if d[4..].iter().any(|&v| v != 1) {
        return Err(bad(format!(
            "dimensions {:?}: more than 4 dimensions are not images segnode can read",
            &dim[1..=rank]
        )));
    }
    let spatial = [d[0], d[1], d[2]];
    let n: usize = spatial.iter().product();
    if n > MAX_VOXELS {
        return Err(bad(format!(
            "{}x{}x{} = {n} voxels, over the limit of {MAX_VOXELS}",
            d[0], d[1], d[2]
        )));
    }
    if d[3] > MAX_VOLUMES {
        return Err(bad(format!(
            "{} volumes in the 4th dimension, over the limit of {MAX_VOLUMES}",
            d[3]
        )));
    }
    Ok((spatial, d[3]))
}

impl Header {
    pub fn bytes_per_voxel(&self) -> usize {
        datatype_info(self.datatype).expect("checked").0
    }

    /// Bytes of voxel data the header describes.
    pub fn data_bytes(&self) -> u64 {
        (self.dims.iter().product::<usize>() * self.volumes * self.bytes_per_voxel()) as u64
    }

    /// nibabel's `get_best_affine`: the sform when sform_code > 0, else the qform when
    /// qform_code > 0, else the base affine from pixdim (x flipped, centred). Rows are RAS mm.
    pub fn affine(&self) -> Result<[[f64; 4]; 3], NiftiError> {
        if self.sform_code > 0 {
            Ok(self.srow)
        } else if self.qform_code > 0 {
            self.qform()
        } else {
            let mut a = [[0.0; 4]; 3];
            for (d, row) in a.iter_mut().enumerate() {
                let z = self.pixdim[d + 1] * if d == 0 { -1.0 } else { 1.0 };
                row[d] = z;
                row[3] = -((self.dims[d] as f64 - 1.0) / 2.0) * z;
            }
            Ok(a)
        }
    }

    /// Which transform [`Header::affine`] used.
    pub fn affine_source(&self) -> &'static str {
        if self.sform_code > 0 {
            "sform"
        } else if self.qform_code > 0 {
            "qform"
        } else {
            "pixdim"
        }
    }

    /// nibabel's `get_qform`: quaternion (a from b, c, d), pixdim[1..4] with qfac on the third.
    pub fn qform(&self) -> Result<[[f64; 4]; 3], NiftiError> {
        let [b, c, d] = self.quatern;
        let w2 = 1.0 - (b * b + c * c + d * d);
        // fillpositive: a small negative from float32 rounding is 0.
        let a = if w2 < 0.0 {
            if w2 < -3.0 * f32::EPSILON as f64 {
                return Err(bad(format!(
                    "qform quaternion ({b}, {c}, {d}) has a norm above 1"
                )));
            }
            0.0
        } else {
            w2.sqrt()
        };
        let n = a * a + b * b + c * c + d * d;
        let r = if n < f64::EPSILON {
            [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]
        } else {
            let s = 2.0 / n;
            let (x, y, z, w) = (b, c, d, a);
            let (xs, ys, zs) = (x * s, y * s, z * s);
            let (wx, wy, wz) = (w * xs, w * ys, w * zs);
            let (xx, xy, xz) = (x * xs, x * ys, x * zs);
            let (yy, yz, zz) = (y * ys, y * zs, z * zs);
            [
                [1.0 - (yy + zz), xy - wz, xz + wy],
                [xy + wz, 1.0 - (xx + zz), yz - wx],
                [xz - wy, yz + wx, 1.0 - (xx + yy)],
            ]
        };
        let mut vox = [self.pixdim[1], self.pixdim[2], self.pixdim[3]];
        if vox.iter().any(|&v| v < 0.0) {
            return Err(bad("pixdim[1..4] must not be negative with a qform"));
        }
        // nibabel reads a qfac (pixdim[0]) other than -1 as 1.
        if self.pixdim[0] == -1.0 {
            vox[2] = -vox[2];
        }
        let mut out = [[0.0; 4]; 3];
        for (i, row) in out.iter_mut().enumerate() {
            for j in 0..3 {
                row[j] = r[i][j] * vox[j];
            }
            row[3] = self.qoffset[i];
        }
        Ok(out)
    }
}

/// A decoded NIfTI file: its header and every volume's voxels as f32 after scl_slope/scl_inter,
/// each `[k][j][i]` (the file's own order: i fastest).
#[derive(Debug)]
pub struct NiftiImage {
    pub header: Header,
    pub volumes: Vec<Array3<f32>>,
}

/// Decompresses (when gzip) and parses `bytes`, a whole `.nii` or `.nii.gz` file.
pub fn read(bytes: &[u8]) -> Result<NiftiImage, NiftiError> {
    let gz = bytes.len() >= 2 && bytes[0] == 0x1f && bytes[1] == 0x8b;
    if gz {
        let mut dec = flate2::read::MultiGzDecoder::new(bytes);
        let mut head = Vec::with_capacity(540);
        (&mut dec)
            .take(540)
            .read_to_end(&mut head)
            .map_err(|e| bad(format!("gzip stream cannot be read: {e}")))?;
        let h = parse_header(&head)?;
        let want = h.vox_offset + h.data_bytes();
        let mut all = head;
        all.try_reserve_exact((want as usize).saturating_sub(all.len()))
            .map_err(|_| bad(format!("{want} bytes of voxel data cannot be allocated")))?;
        (&mut dec)
            .take(want.saturating_sub(all.len() as u64))
            .read_to_end(&mut all)
            .map_err(|e| bad(format!("gzip stream cannot be read: {e}")))?;
        decode(h, &all)
    } else {
        let h = parse_header(bytes)?;
        decode(h, bytes)
    }
}

fn decode(h: Header, file: &[u8]) -> Result<NiftiImage, NiftiError> {
    let start = h.vox_offset;
    let need = h.data_bytes();
    let have = (file.len() as u64).saturating_sub(start);
    if have < need {
        return Err(bad(format!(
            "the header describes {}x{}x{}x{} voxels ({need} bytes) but the file holds {have} bytes of voxel data: truncated, or dimensions that do not match the data",
            h.dims[0], h.dims[1], h.dims[2], h.volumes
        )));
    }
    let data = &file[start as usize..(start + need) as usize];
    let bpv = h.bytes_per_voxel();
    let n: usize = h.dims.iter().product();
    let (slope, inter) = (h.scl_slope, h.scl_inter);
    let le = h.little_endian;
    let value = |c: &[u8]| -> f64 {
        let mut a = [0u8; 8];
        a[..c.len()].copy_from_slice(c);
        if !le {
            a[..c.len()].reverse();
        }
        match h.datatype {
            2 => a[0] as f64,
            256 => a[0] as i8 as f64,
            4 => i16::from_le_bytes([a[0], a[1]]) as f64,
            512 => u16::from_le_bytes([a[0], a[1]]) as f64,
            8 => i32::from_le_bytes([a[0], a[1], a[2], a[3]]) as f64,
            768 => u32::from_le_bytes([a[0], a[1], a[2], a[3]]) as f64,
            16 => f32::from_le_bytes([a[0], a[1], a[2], a[3]]) as f64,
            64 => f64::from_le_bytes(a),
            1024 => i64::from_le_bytes(a) as f64,
            1280 => u64::from_le_bytes(a) as f64,
            _ => unreachable!("checked by parse_header"),
        }
    };
    let shape = (h.dims[2], h.dims[1], h.dims[0]);
    let mut volumes = Vec::with_capacity(h.volumes);
    for v in 0..h.volumes {
        let chunk = &data[v * n * bpv..(v + 1) * n * bpv];
        let mut vals = Vec::with_capacity(n);
        for c in chunk.chunks_exact(bpv) {
            let x = value(c) * slope + inter;
            if !x.is_finite() {
                return Err(bad(format!(
                    "volume {}: a voxel value is not finite (NaN or infinity)",
                    v + 1
                )));
            }
            vals.push(x as f32);
        }
        volumes.push(Array3::from_shape_vec(shape, vals).expect("n voxels"));
    }
    Ok(NiftiImage { header: h, volumes })
}

/// How a NIfTI file's voxel array maps onto segnode's [`Grid`] (patient LPS, slices ascending
/// along `normal = row_dir x col_dir`): `flip_k` when the file's k axis runs against that normal
/// (a left-handed voxel frame), in which case the slices are reversed on the way in and out.
#[derive(Debug, Clone, PartialEq)]
pub struct Placement {
    pub grid: Grid,
    pub flip_k: bool,
}

/// The grid of a file from its affine (RAS; converted to DICOM's LPS). Voxel (i, j, k) = column i
/// along `row_dir`, row j along `col_dir`, slice k along the normal. A sheared affine (axes not
/// orthogonal within 0.1 %) or a zero-length axis is refused: as on the DICOM path, only
/// orthogonal grids are supported.
pub fn placement(h: &Header) -> Result<Placement, NiftiError> {
    let a = h.affine()?;
    if a.iter().flatten().any(|v| !v.is_finite()) {
        return Err(bad(format!(
            "the {} affine has values that are not finite",
            h.affine_source()
        )));
    }
    let lps = |v: Vec3| [-v[0], -v[1], v[2]];
    let col = |c: usize| lps([a[0][c], a[1][c], a[2][c]]);
    let (ci, cj, ck) = (col(0), col(1), col(2));
    let len = |v: Vec3| dot(v, v).sqrt();
    let (si, sj, sk) = (len(ci), len(cj), len(ck));
    if !(si > 1e-6 && sj > 1e-6 && sk > 1e-6) {
        return Err(bad(format!(
            "the {} affine gives voxel sizes {si:.6} x {sj:.6} x {sk:.6} mm: an axis has no length",
            h.affine_source()
        )));
    }
    let unit = |v: Vec3, s: f64| [v[0] / s, v[1] / s, v[2] / s];
    let (row_dir, col_dir, mut normal) = (unit(ci, si), unit(cj, sj), unit(ck, sk));
    for (x, y, what) in [
        (row_dir, col_dir, "i and j"),
        (row_dir, normal, "i and k"),
        (col_dir, normal, "j and k"),
    ] {
        if dot(x, y).abs() > 1e-3 {
            return Err(bad(format!(
                "the {} affine is sheared (voxel axes {what} are not orthogonal); only orthogonal grids are supported",
                h.affine_source()
            )));
        }
    }
    let cross = [
        row_dir[1] * col_dir[2] - row_dir[2] * col_dir[1],
        row_dir[2] * col_dir[0] - row_dir[0] * col_dir[2],
        row_dir[0] * col_dir[1] - row_dir[1] * col_dir[0],
    ];
    let mut origin = lps([a[0][3], a[1][3], a[2][3]]);
    let flip_k = dot(cross, normal) < 0.0;
    if flip_k {
        // Slice 0 becomes the file's last slice; the normal turns to row_dir x col_dir.
        let last = (h.dims[2] - 1) as f64 * sk;
        for (o, n) in origin.iter_mut().zip(normal) {
            *o += last * n;
        }
        normal = normal.map(|x| -x);
    }
    Ok(Placement {
        grid: Grid {
            slices: h.dims[2],
            rows: h.dims[1],
            cols: h.dims[0],
            row_dir,
            col_dir,
            normal,
            spacing: [sj, si],
            slice_step: sk,
            origin,
        },
        flip_k,
    })
}

impl Placement {
    /// A volume in file order -> on [`Placement::grid`] (or back: the flip is its own inverse).
    pub fn orient<T: Clone>(&self, mut v: Array3<T>) -> Array3<T> {
        if self.flip_k {
            v.invert_axis(Axis(0));
            v.as_standard_layout().into_owned()
        } else {
            v
        }
    }
}

/// Writes `labels` (`[k][j][i]` in the reference file's own voxel order) as a gzipped NIfTI-1
/// uint8 image whose geometry fields (pixdim, qform, sform and their codes) are the reference
/// header's, so nibabel reads the same affine as the input's (NIfTI-2 values rounded to f32).
pub fn write_labels_gz(reference: &Header, labels: &Array3<u8>) -> Result<Vec<u8>, NiftiError> {
    let (nk, nj, ni) = labels.dim();
    if [ni, nj, nk] != reference.dims {
        return Err(bad(format!(
            "labels {ni}x{nj}x{nk} do not match the reference grid {:?}",
            reference.dims
        )));
    }
    if reference.dims.iter().any(|&d| d > i16::MAX as usize) {
        return Err(bad("a dimension over 32767 cannot be written as NIfTI-1"));
    }
    let mut h = vec![0u8; 352];
    let put = |h: &mut Vec<u8>, at: usize, b: &[u8]| h[at..at + b.len()].copy_from_slice(b);
    put(&mut h, 0, &348i32.to_le_bytes());
    let dims = [3i16, ni as i16, nj as i16, nk as i16, 1, 1, 1, 1];
    for (n, d) in dims.iter().enumerate() {
        put(&mut h, 40 + 2 * n, &d.to_le_bytes());
    }
    put(&mut h, 68, &1002i16.to_le_bytes()); // intent NIFTI_INTENT_LABEL
    put(&mut h, 70, &2i16.to_le_bytes()); // uint8
    put(&mut h, 72, &8i16.to_le_bytes());
    let qfac = if reference.pixdim[0] == -1.0 {
        -1.0
    } else {
        1.0
    };
    let pixdim = [
        qfac,
        reference.pixdim[1],
        reference.pixdim[2],
        reference.pixdim[3],
        0.0,
        0.0,
        0.0,
        0.0,
    ];
    for (n, p) in pixdim.iter().enumerate() {
        put(&mut h, 76 + 4 * n, &(*p as f32).to_le_bytes());
    }
    put(&mut h, 108, &352f32.to_le_bytes());
    put(&mut h, 112, &1f32.to_le_bytes()); // scl_slope
    h[123] = 2; // xyzt_units: mm
    let max = labels.iter().copied().max().unwrap_or(0);
    put(&mut h, 124, &(max as f32).to_le_bytes()); // cal_max
    put(&mut h, 148, b"segnode labels");
    put(&mut h, 252, &(reference.qform_code as i16).to_le_bytes());
    put(&mut h, 254, &(reference.sform_code as i16).to_le_bytes());
    for (n, v) in reference
        .quatern
        .iter()
        .chain(reference.qoffset.iter())
        .enumerate()
    {
        put(&mut h, 256 + 4 * n, &(*v as f32).to_le_bytes());
    }
    for (r, row) in reference.srow.iter().enumerate() {
        for (c, v) in row.iter().enumerate() {
            put(&mut h, 280 + 16 * r + 4 * c, &(*v as f32).to_le_bytes());
        }
    }
    put(&mut h, 344, b"n+1\0");
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
    use std::io::Write;
    let io = |e: std::io::Error| bad(format!("cannot compress the labels: {e}"));
    enc.write_all(&h).map_err(io)?;
    let std = labels.as_standard_layout();
    enc.write_all(std.as_slice().expect("standard layout"))
        .map_err(io)?;
    enc.finish().map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A NIfTI-1 file as nibabel writes one: header, 4 bytes of extension flag, data.
    fn nifti1(dims: [i16; 3], datatype: i16, data: &[u8], le: bool) -> Vec<u8> {
        let mut h = vec![0u8; 352];
        let w = |h: &mut Vec<u8>, at: usize, mut b: Vec<u8>| {
            if !le {
                b.reverse();
            }
            h[at..at + b.len()].copy_from_slice(&b);
        };
        w(&mut h, 0, 348i32.to_le_bytes().to_vec());
        let dim = [3, dims[0], dims[1], dims[2], 1, 1, 1, 1];
        for (n, d) in dim.iter().enumerate() {
            w(&mut h, 40 + 2 * n, d.to_le_bytes().to_vec());
        }
        w(&mut h, 70, datatype.to_le_bytes().to_vec());
        for n in 0..8 {
            w(&mut h, 76 + 4 * n, 1f32.to_le_bytes().to_vec());
        }
        w(&mut h, 80, 2f32.to_le_bytes().to_vec()); // pixdim[1] = 2 mm
        w(&mut h, 108, 352f32.to_le_bytes().to_vec());
        h[344..348].copy_from_slice(b"n+1\0");
        h.extend_from_slice(data);
        h
    }

    #[test]
    fn reads_both_byte_orders_and_the_base_affine() {
        let data: Vec<u8> = (0..24u8).collect();
        for le in [true, false] {
            let img = read(&nifti1([2, 3, 4], 2, &data, le)).unwrap();
            assert_eq!(img.header.dims, [2, 3, 4]);
            assert_eq!(img.volumes[0][[3, 2, 1]], 23.0);
            assert_eq!(img.volumes[0][[0, 0, 1]], 1.0);
            // No qform/sform code: pixdim, x flipped, centred (nibabel's base affine).
            let a = img.header.affine().unwrap();
            assert_eq!(a[0], [-2.0, 0.0, 0.0, 1.0]);
            assert_eq!(a[2], [0.0, 0.0, 1.0, -1.5]);
        }
    }

    #[test]
    fn hostile_headers_are_refused_before_allocation() {
        let mut f = nifti1([2, 3, 4], 2, &[0; 24], true);
        assert!(read(&f[..100]).unwrap_err().0.contains("shorter than"));
        f[40..56].copy_from_slice(
            &[3i16, 8192, 8192, 8192, 1, 1, 1, 1]
                .iter()
                .flat_map(|d| d.to_le_bytes())
                .collect::<Vec<_>>(),
        );
        assert!(read(&f).unwrap_err().0.contains("over the limit"));
        let f = nifti1([2, 3, 4], 2, &[0; 10], true);
        assert!(read(&f).unwrap_err().0.contains("truncated"));
        let f = nifti1([2, 3, 4], 3, &[0; 24], true);
        assert!(read(&f).unwrap_err().0.contains("data type 3"));
        let mut f = nifti1([2, 3, 4], 2, &[0; 24], true);
        f[344..348].copy_from_slice(b"xyz\0");
        assert!(read(&f).unwrap_err().0.contains("magic"));
        assert!(read(b"%PDF-1.4 not NIfTI at all")
            .unwrap_err()
            .0
            .contains("not a NIfTI file"));
    }

    #[test]
    fn a_gzip_bomb_stops_at_the_size_the_header_states() {
        let mut f = nifti1([2, 3, 4], 2, &[7; 24], true);
        f.extend(std::iter::repeat_n(0u8, 8 << 20));
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
        std::io::Write::write_all(&mut enc, &f).unwrap();
        let gz = enc.finish().unwrap();
        let img = read(&gz).unwrap();
        assert_eq!(img.volumes[0].len(), 24);
    }

    #[test]
    fn qform_of_a_rotation_and_a_left_handed_grid_flips_k() {
        let h = Header {
            version: Version::Nifti1,
            little_endian: true,
            dims: [4, 5, 6],
            volumes: 1,
            datatype: 2,
            pixdim: [-1.0, 1.0, 2.0, 3.0, 0.0, 0.0, 0.0, 0.0],
            vox_offset: 352,
            scl_slope: 1.0,
            scl_inter: 0.0,
            qform_code: 1,
            sform_code: 0,
            // 180 degrees about z: x -> -x, y -> -y (b = c = 0, d = 1).
            quatern: [0.0, 0.0, 1.0],
            qoffset: [10.0, 20.0, 30.0],
            srow: [[0.0; 4]; 3],
        };
        let a = h.affine().unwrap();
        assert_eq!(a[0], [-1.0, 0.0, 0.0, 10.0]);
        assert_eq!(a[1], [0.0, -2.0, 0.0, 20.0]);
        assert_eq!(a[2], [0.0, 0.0, -3.0, 30.0]);
        // RAS columns (-1,0,0), (0,-2,0), (0,0,-3) are LPS (1,0,0), (0,2,0), (0,0,-3): k runs
        // against row x col = +z, so the slices are reversed.
        let p = placement(&h).unwrap();
        assert!(p.flip_k);
        assert_eq!(p.grid.normal, [0.0, 0.0, 1.0]);
        assert_eq!(p.grid.origin, [-10.0, -20.0, 30.0 - 15.0]);
        assert_eq!(p.grid.spacing, [2.0, 1.0]);
        assert_eq!(p.grid.slice_step, 3.0);
        let mut sheared = h.clone();
        sheared.sform_code = 1;
        sheared.srow = [
            [1.0, 0.5, 0.0, 0.0],
            [0.0, 1.0, 0.0, 0.0],
            [0.0, 0.0, 1.0, 0.0],
        ];
        assert!(placement(&sheared).unwrap_err().0.contains("sheared"));
    }

    #[test]
    fn written_labels_read_back_with_the_reference_geometry() {
        let mut f = nifti1([2, 3, 4], 4, &[0; 48], true);
        f[254..256].copy_from_slice(&2i16.to_le_bytes());
        for (n, v) in [2f32, 0.0, 0.0, -5.0].iter().enumerate() {
            f[280 + 4 * n..284 + 4 * n].copy_from_slice(&v.to_le_bytes());
        }
        let reference = read(&f).unwrap().header;
        let labels = Array3::from_shape_fn((4, 3, 2), |(k, j, i)| (k + j + i) as u8 % 4);
        let gz = write_labels_gz(&reference, &labels).unwrap();
        let back = read(&gz).unwrap();
        assert_eq!(back.header.affine().unwrap(), reference.affine().unwrap());
        assert_eq!(back.volumes[0].mapv(|v| v as u8), labels);
        assert!(write_labels_gz(&reference, &Array3::zeros((1, 1, 1))).is_err());
    }
}
