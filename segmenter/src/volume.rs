//! A series as a volume: pixels decoded (any transfer syntax the SCP accepts), rescaled, and stacked
//! along the slice normal on a checked, regular grid.

use dicom_dictionary_std::tags;
use dicom_object::DefaultDicomObject;
use dicom_pixeldata::{ConvertOptions, PixelDecoder};
use dicom_seg::SourceSeries;
use ndarray::Array3;

use crate::error::SegmentError;
use crate::study::{text, Series};

pub type Vec3 = [f64; 3];

pub fn dot(a: Vec3, b: Vec3) -> f64 {
    a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
}

pub fn sub(a: Vec3, b: Vec3) -> Vec3 {
    [a[0] - b[0], a[1] - b[1], a[2] - b[2]]
}

/// A regular 3D grid in patient coordinates (mm). Voxel (k, j, i) — slice, row, column — sits at
/// `origin + k * slice_step * normal + j * spacing[0] * col_dir + i * spacing[1] * row_dir`
/// (DICOM: Pixel Spacing is [between rows, between columns]; the row direction cosines are the first
/// three of Image Orientation (Patient) and point along increasing column index).
#[derive(Debug, Clone, PartialEq)]
pub struct Grid {
    pub slices: usize,
    pub rows: usize,
    pub cols: usize,
    pub row_dir: Vec3,
    pub col_dir: Vec3,
    pub normal: Vec3,
    pub spacing: [f64; 2],
    /// Distance between consecutive slices along `normal`, > 0 (slices ascend along the normal).
    pub slice_step: f64,
    pub origin: Vec3,
}

impl Grid {
    /// Position of voxel (k, j, i), continuous indices allowed.
    pub fn point(&self, k: f64, j: f64, i: f64) -> Vec3 {
        let mut p = self.origin;
        for (a, p) in p.iter_mut().enumerate() {
            *p += k * self.slice_step * self.normal[a]
                + j * self.spacing[0] * self.col_dir[a]
                + i * self.spacing[1] * self.row_dir[a];
        }
        p
    }

    /// Continuous (k, j, i) index of a patient-space point.
    pub fn index_of(&self, p: Vec3) -> Vec3 {
        let d = sub(p, self.origin);
        [
            dot(d, self.normal) / self.slice_step,
            dot(d, self.col_dir) / self.spacing[0],
            dot(d, self.row_dir) / self.spacing[1],
        ]
    }

    /// Same sampling, within `tol_mm` at every corner.
    pub fn same_as(&self, other: &Grid, tol_mm: f64) -> bool {
        if (self.slices, self.rows, self.cols) != (other.slices, other.rows, other.cols) {
            return false;
        }
        let (k, j, i) = (
            (self.slices - 1) as f64,
            (self.rows - 1) as f64,
            (self.cols - 1) as f64,
        );
        [
            (0.0, 0.0, 0.0),
            (k, 0.0, 0.0),
            (0.0, j, 0.0),
            (0.0, 0.0, i),
            (k, j, i),
        ]
        .iter()
        .all(|&(k, j, i)| {
            let d = sub(self.point(k, j, i), other.point(k, j, i));
            dot(d, d).sqrt() <= tol_mm
        })
    }

    /// Volume of one voxel in mL.
    pub fn voxel_ml(&self) -> f64 {
        self.spacing[0] * self.spacing[1] * self.slice_step / 1000.0
    }
}

/// A decoded series: `data[[k, j, i]]` on `grid`; `frame_of_slice[k]` is the index into
/// `source.frames()` of slice k (the SEG writer indexes masks like `source.frames()`).
#[derive(Debug)]
pub struct Volume {
    pub grid: Grid,
    pub data: Array3<f32>,
    pub source: SourceSeries,
    pub frame_of_slice: Vec<usize>,
}

fn geometry_error(series: &Series, message: impl Into<String>) -> SegmentError {
    SegmentError::Geometry {
        series_uid: series.uid.clone(),
        message: message.into(),
    }
}

/// Frames of one instance as f32 after the Modality LUT (Rescale Slope/Intercept, per frame for
/// Enhanced MR).
fn decode_frames(obj: &DefaultDicomObject) -> Result<Vec<Vec<f32>>, SegmentError> {
    let sop = text(obj, tags::SOP_INSTANCE_UID).unwrap_or_default();
    let err = |source: DecodeError| SegmentError::Decode {
        sop_uid: sop.clone(),
        transfer_syntax: obj.meta().transfer_syntax().to_string(),
        source: Box::new(source),
    };
    let native;
    let obj = if crate::jpeg_ls::is_jpeg_ls(obj.meta().transfer_syntax()) {
        native = crate::jpeg_ls::to_native(obj).map_err(|e| err(DecodeError::JpegLs(e)))?;
        &native
    } else {
        obj
    };
    let decoded = obj
        .decode_pixel_data()
        .map_err(|e| err(DecodeError::Pixels(e)))?;
    if decoded.samples_per_pixel() != 1 {
        return Err(err(DecodeError::Samples(decoded.samples_per_pixel())));
    }
    let options = ConvertOptions::new();
    (0..decoded.number_of_frames())
        .map(|f| {
            decoded
                .to_vec_frame_with_options::<f32>(f, &options)
                .map_err(|source| {
                    err(DecodeError::Frame {
                        frame: f + 1,
                        source,
                    })
                })
        })
        .collect()
}

/// Why an instance's pixel data cannot become f32 frames (`SegmentError::Decode`, permanent).
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error(transparent)]
    JpegLs(#[from] crate::jpeg_ls::JpegLsError),
    /// dicom-pixeldata's decoder (uncompressed, RLE, JPEG, JPEG 2000).
    #[error(transparent)]
    Pixels(dicom_pixeldata::Error),
    #[error("{0} samples per pixel; only single-channel (MONOCHROME) images can be segmented")]
    Samples(u16),
    /// The Modality LUT of one frame (numbered from 1).
    #[error("frame {frame}: {source}")]
    Frame {
        frame: u32,
        #[source]
        source: dicom_pixeldata::Error,
    },
}

impl Volume {
    /// Decodes and stacks a series. Errors name the series and say what is wrong: mixed
    /// orientations or sizes, a missing slice (uneven spacing), a sheared stack (gantry tilt).
    pub fn from_series(series: &Series) -> Result<Self, SegmentError> {
        let source = SourceSeries::from_datasets(series.instances.iter().map(|o| &**o))
            .map_err(|e| geometry_error(series, e.to_string()))?;
        let frames = source.frames();
        let (rows, cols) = (source.rows() as usize, source.columns() as usize);
        let o = source.orientation();
        let row_dir = [o[0], o[1], o[2]];
        let col_dir = [o[3], o[4], o[5]];
        let normal = source.normal();
        let order: Vec<usize> = source.order_along_normal().to_vec();
        let dist: Vec<f64> = order
            .iter()
            .map(|&f| dot(frames[f].position, normal))
            .collect();
        if order.len() < 2 {
            return Err(geometry_error(
                series,
                "a volume needs at least 2 slices; this series has 1",
            ));
        }
        let steps: Vec<f64> = dist.windows(2).map(|w| w[1] - w[0]).collect();
        let mut sorted = steps.clone();
        sorted.sort_by(f64::total_cmp);
        let step = sorted[sorted.len() / 2];
        let tol = (step * 0.01).max(0.01);
        for (k, s) in steps.iter().enumerate() {
            if (s - step).abs() > tol {
                let hint = if (s / step - (s / step).round()).abs() < 0.05 && *s > step {
                    format!(" ({} slice(s) missing?)", (s / step).round() as usize - 1)
                } else {
                    String::new()
                };
                return Err(geometry_error(
                    series,
                    format!(
                        "slice spacing is not uniform: {s:.3} mm between slices {} and {} along the normal, \
                         {step:.3} mm elsewhere{hint}; send the complete series",
                        k + 1,
                        k + 2
                    ),
                ));
            }
        }
        let origin = frames[order[0]].position;
        let in_plane_tol =
            (0.05 * source.pixel_spacing()[0].min(source.pixel_spacing()[1])).max(1e-3);
        for (k, &f) in order.iter().enumerate() {
            let d = sub(frames[f].position, origin);
            let along = dot(d, normal);
            let off = [
                d[0] - along * normal[0],
                d[1] - along * normal[1],
                d[2] - along * normal[2],
            ];
            if dot(off, off).sqrt() > in_plane_tol {
                return Err(geometry_error(
                    series,
                    format!(
                        "slice {} is shifted {:.3} mm within its plane from the stack's axis \
                         (gantry tilt or sheared acquisition); only orthogonal stacks are supported",
                        k + 1,
                        dot(off, off).sqrt()
                    ),
                ));
            }
        }
        // Decode every instance, frames in the order SourceSeries lists them.
        let mut pixels: Vec<Vec<f32>> = Vec::with_capacity(frames.len());
        for obj in &series.instances {
            pixels.extend(decode_frames(obj)?);
        }
        if pixels.len() != frames.len() {
            return Err(geometry_error(
                series,
                format!(
                    "{} frames of pixel data for {} frames described",
                    pixels.len(),
                    frames.len()
                ),
            ));
        }
        let mut data = Array3::<f32>::zeros((order.len(), rows, cols));
        for (k, &f) in order.iter().enumerate() {
            let px = &pixels[f];
            if px.len() != rows * cols {
                return Err(geometry_error(
                    series,
                    format!(
                        "frame {} decoded to {} pixels, expected {rows}x{cols}",
                        f + 1,
                        px.len()
                    ),
                ));
            }
            data.index_axis_mut(ndarray::Axis(0), k)
                .as_slice_mut()
                .expect("standard layout")
                .copy_from_slice(px);
        }
        let grid = Grid {
            slices: order.len(),
            rows,
            cols,
            row_dir,
            col_dir,
            normal,
            spacing: source.pixel_spacing(),
            slice_step: step,
            origin,
        };
        Ok(Volume {
            grid,
            data,
            frame_of_slice: order,
            source,
        })
    }
}
