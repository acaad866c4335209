use crate::internal::*;
use crate::ops::cnn::Patch;
use crate::ops::nn::DataShape;

/// A group-1 channels-first f32 convolution over two or three spatial axes computed as a filter
/// along the innermost one, four output channels at a time, instead of im2col and a matrix
/// product. The input is padded once into a scratch image, so every output row is one run of the
/// kernel. `Conv` builds it at codegen on hosts that have the `conv_w4` kernel, and the
/// `depthwise_w` one too when the output channels are not a multiple of four.
#[derive(Debug, Clone, new, Hash, PartialEq, Eq)]
pub struct DirectSpatialConv {
    patch: Patch,
    input_shape: DataShape,
    output_shape: DataShape,
}

impl Op for DirectSpatialConv {
    fn name(&self) -> StaticName {
        "DirectSpatialConv".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!("{:?}", self.patch)])
    }

    fn validation(&self) -> Validation {
        Validation::Rounding
    }

    op_as_typed_op!();
}

impl EvalOp for DirectSpatialConv {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let (img, kernel, bias) = args_3!(inputs);
        ensure!(img.datum_type() == f32::datum_type(), "DirectSpatialConv is f32 only");
        let output = unsafe { self.eval_f32(&img, &kernel, &bias)? };
        Ok(tvec!(output.into_tvalue()))
    }
}

/// Four output channels' run of `len` contiguous points. At input stride 1, the AVX-512 kernel
/// below when `wide` says so; else `conv_w4`, and a run that is not a multiple of eight points
/// long ends with an eight-point block that overlaps the one before it instead of `conv_w4`'s
/// point-at-a-time tail: the overlapped points are computed again, with the same arithmetic, so
/// they get the same values.
///
/// # Safety
/// As [`tract_linalg::routines::ConvW4F32`]; `wide` only on a machine with AVX-512F.
#[allow(clippy::too_many_arguments)]
#[inline]
unsafe fn run_w4(
    conv_w4: tract_linalg::routines::ConvW4F32,
    wide: bool,
    ip: *const f32,
    op: *mut f32,
    taps: &[f32],
    offsets: &[isize],
    b: &[f32; 4],
    len: usize,
    in_stride: isize,
    oc_stride: isize,
) {
    unsafe {
        #[cfg(target_arch = "x86_64")]
        if wide && in_stride == 1 {
            return avx512::conv_w4(ip, op, taps, offsets, b, len, oc_stride);
        }
        let _ = wide;
        if in_stride == 1 && len > 8 && !len.is_multiple_of(8) {
            let body = len - len % 8;
            conv_w4(ip, op, taps, offsets, b, body, 1, oc_stride);
            conv_w4(ip.add(len - 8), op.add(len - 8), taps, offsets, b, 8, 1, oc_stride);
        } else {
            conv_w4(ip, op, taps, offsets, b, len, in_stride, oc_stride);
        }
    }
}

/// Whether [`run_w4`] may use the AVX-512 kernel here (`TRACT_DIRECT_SPATIAL_AVX512`, on by
/// default, turns it off for comparisons).
fn wide_kernel() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx512f") && super::conv::TRACT_DIRECT_SPATIAL_AVX512.get()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Whether a convolution with `oc` output channels and input stride `w_stride` along the rows
/// runs the AVX-512 kernel's eight-channel pass on this host: a multiple of eight channels, stride
/// 1, and `TRACT_DIRECT_SPATIAL_OC8` (on by default; off for comparisons). The lowering then takes
/// more inputs per output point, and the op runs its units eight channels wide.
pub(crate) fn eight_channel_pass(oc: usize, w_stride: usize) -> bool {
    oc.is_multiple_of(8)
        && w_stride == 1
        && wide_kernel()
        && super::conv::TRACT_DIRECT_SPATIAL_OC8.get()
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    /// [`tract_linalg::routines::ConvW4F32`] at input stride 1 with AVX-512F: 32 points a step
    /// (eight accumulators), then 16, the last block masked, so no point is computed alone. Each
    /// point is the bias, then one fused multiply-add per tap in the order of `offsets`, as in
    /// the AVX2 kernel. No load reaches past `offsets[t] + len - 1`.
    ///
    /// # Safety
    /// As [`tract_linalg::routines::ConvW4F32`] with `in_stride` 1, on a machine with AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn conv_w4(
        input: *const f32,
        output: *mut f32,
        taps: &[f32],
        offsets: &[isize],
        bias: &[f32; 4],
        len: usize,
        oc_stride: isize,
    ) {
        unsafe {
            let n = offsets.len();
            debug_assert!(taps.len() >= 4 * n);
            let off = offsets.as_ptr();
            let k = [
                taps.as_ptr(),
                taps.as_ptr().add(n),
                taps.as_ptr().add(2 * n),
                taps.as_ptr().add(3 * n),
            ];
            let b = [
                _mm512_set1_ps(bias[0]),
                _mm512_set1_ps(bias[1]),
                _mm512_set1_ps(bias[2]),
                _mm512_set1_ps(bias[3]),
            ];
            let out = [
                output,
                output.offset(oc_stride),
                output.offset(2 * oc_stride),
                output.offset(3 * oc_stride),
            ];
            let mut i = 0usize;
            while i + 32 <= len {
                let base = input.add(i);
                let (mut a0, mut a1, mut a2, mut a3) = (b[0], b[1], b[2], b[3]);
                let (mut a4, mut a5, mut a6, mut a7) = (b[0], b[1], b[2], b[3]);
                for t in 0..n {
                    let p = base.offset(*off.add(t));
                    let x = _mm512_loadu_ps(p);
                    let y = _mm512_loadu_ps(p.add(16));
                    let k0 = _mm512_set1_ps(*k[0].add(t));
                    let k1 = _mm512_set1_ps(*k[1].add(t));
                    let k2 = _mm512_set1_ps(*k[2].add(t));
                    let k3 = _mm512_set1_ps(*k[3].add(t));
                    a0 = _mm512_fmadd_ps(x, k0, a0);
                    a1 = _mm512_fmadd_ps(x, k1, a1);
                    a2 = _mm512_fmadd_ps(x, k2, a2);
                    a3 = _mm512_fmadd_ps(x, k3, a3);
                    a4 = _mm512_fmadd_ps(y, k0, a4);
                    a5 = _mm512_fmadd_ps(y, k1, a5);
                    a6 = _mm512_fmadd_ps(y, k2, a6);
                    a7 = _mm512_fmadd_ps(y, k3, a7);
                }
                _mm512_storeu_ps(out[0].add(i), a0);
                _mm512_storeu_ps(out[1].add(i), a1);
                _mm512_storeu_ps(out[2].add(i), a2);
                _mm512_storeu_ps(out[3].add(i), a3);
                _mm512_storeu_ps(out[0].add(i + 16), a4);
                _mm512_storeu_ps(out[1].add(i + 16), a5);
                _mm512_storeu_ps(out[2].add(i + 16), a6);
                _mm512_storeu_ps(out[3].add(i + 16), a7);
                i += 32;
            }
            while i < len {
                let left = len - i;
                let m: __mmask16 = if left >= 16 { 0xffff } else { (1u16 << left) - 1 };
                let base = input.add(i);
                let (mut a0, mut a1, mut a2, mut a3) = (b[0], b[1], b[2], b[3]);
                for t in 0..n {
                    let x = _mm512_maskz_loadu_ps(m, base.offset(*off.add(t)));
                    a0 = _mm512_fmadd_ps(x, _mm512_set1_ps(*k[0].add(t)), a0);
                    a1 = _mm512_fmadd_ps(x, _mm512_set1_ps(*k[1].add(t)), a1);
                    a2 = _mm512_fmadd_ps(x, _mm512_set1_ps(*k[2].add(t)), a2);
                    a3 = _mm512_fmadd_ps(x, _mm512_set1_ps(*k[3].add(t)), a3);
                }
                _mm512_mask_storeu_ps(out[0].add(i), m, a0);
                _mm512_mask_storeu_ps(out[1].add(i), m, a1);
                _mm512_mask_storeu_ps(out[2].add(i), m, a2);
                _mm512_mask_storeu_ps(out[3].add(i), m, a3);
                i += 16;
            }
        }
    }

    /// [`conv_w4`] for eight output channels (`taps` holds eight channels' taps, `bias` eight
    /// biases): sixteen accumulators for 32 points, so each input vector loaded serves sixteen
    /// fused multiply-adds instead of eight, and enough independent chains to cover the FMA
    /// latency. Every point gets exactly the arithmetic of [`conv_w4`], so the same value.
    ///
    /// # Safety
    /// As [`conv_w4`], with eight output planes at `oc_stride` from each other.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn conv_w8(
        input: *const f32,
        output: *mut f32,
        taps: &[f32],
        offsets: &[isize],
        bias: &[f32; 8],
        len: usize,
        oc_stride: isize,
    ) {
        unsafe {
            let n = offsets.len();
            debug_assert!(taps.len() >= 8 * n);
            let off = offsets.as_ptr();
            let mut k = [taps.as_ptr(); 8];
            let mut b = [_mm512_setzero_ps(); 8];
            let mut out = [output; 8];
            for c in 0..8 {
                k[c] = taps.as_ptr().add(c * n);
                b[c] = _mm512_set1_ps(bias[c]);
                out[c] = output.offset(c as isize * oc_stride);
            }
            let mut i = 0usize;
            while i + 32 <= len {
                let base = input.add(i);
                let (mut lo, mut hi) = (b, b);
                for t in 0..n {
                    let p = base.offset(*off.add(t));
                    let x = _mm512_loadu_ps(p);
                    let y = _mm512_loadu_ps(p.add(16));
                    for c in 0..8 {
                        let kc = _mm512_set1_ps(*k[c].add(t));
                        lo[c] = _mm512_fmadd_ps(x, kc, lo[c]);
                        hi[c] = _mm512_fmadd_ps(y, kc, hi[c]);
                    }
                }
                for c in 0..8 {
                    _mm512_storeu_ps(out[c].add(i), lo[c]);
                    _mm512_storeu_ps(out[c].add(i + 16), hi[c]);
                }
                i += 32;
            }
            while i < len {
                let left = len - i;
                let m: __mmask16 = if left >= 16 { 0xffff } else { (1u16 << left) - 1 };
                let base = input.add(i);
                let mut a = b;
                for t in 0..n {
                    let x = _mm512_maskz_loadu_ps(m, base.offset(*off.add(t)));
                    for c in 0..8 {
                        a[c] = _mm512_fmadd_ps(x, _mm512_set1_ps(*k[c].add(t)), a[c]);
                    }
                }
                for c in 0..8 {
                    _mm512_mask_storeu_ps(out[c].add(i), m, a[c]);
                }
                i += 16;
            }
        }
    }
}

thread_local! {
    /// The last padded input of this thread's direct convolutions, kept for the next one while
    /// it is at most [`KEEP_PADDED`] floats: a megabyte-sized buffer freed and allocated again
    /// per call went back to the kernel and came back as fresh zeroed pages every time.
    static PADDED: std::cell::Cell<Vec<f32>> = const { std::cell::Cell::new(Vec::new()) };
}

/// 16 MiB of floats.
const KEEP_PADDED: usize = 4 << 20;

/// Hands the padded input back to [`PADDED`] when the convolution is done (or unwinds).
struct KeepPadded(Vec<f32>);

impl Drop for KeepPadded {
    fn drop(&mut self) {
        if self.0.capacity() <= KEEP_PADDED {
            let buffer = std::mem::take(&mut self.0);
            let _ = PADDED.try_with(|b| b.set(buffer));
        }
    }
}

/// The input copied once into a zero-padded image, in which every output point reads all its taps
/// at the same offsets from its input corner: each output row is then one run of the kernel, with
/// no border zone and no scalar edge.
struct Padded {
    /// The padded image's spatial dimensions.
    dims: TVec<usize>,
    /// Element strides of the padded image's spatial axes, the innermost one 1.
    strides: TVec<usize>,
    /// Elements in one channel of the padded image.
    plane: usize,
    /// The offset of every tap from its output point's input corner, input channel major and
    /// then kernel row-major: the order of the kernel's `O x (I x kernel)` layout, so the taps
    /// of consecutive output channels are one contiguous slice of the kernel.
    offsets: Vec<isize>,
}

impl DirectSpatialConv {
    fn padded(&self) -> Padded {
        let spec = &self.patch.spec;
        let input = self.input_shape.hw_dims();
        let output = self.output_shape.hw_dims();
        let rank = input.len();
        // At least what the output reads, whatever the padding spec says.
        let dims: TVec<usize> = (0..rank)
            .map(|i| {
                let stated = self.patch.pad_before[i] + input[i] + self.patch.pad_after[i];
                let read = (output[i].max(1) - 1) * spec.strides[i]
                    + (spec.kernel_shape[i] - 1) * spec.dilations[i]
                    + 1;
                stated.max(read)
            })
            .collect();
        let mut strides: TVec<usize> = tvec![1; rank];
        for i in (0..rank.saturating_sub(1)).rev() {
            strides[i] = strides[i + 1] * dims[i + 1];
        }
        let plane = dims.iter().product::<usize>();
        let window: Vec<isize> = ndarray::indices(&*spec.kernel_shape)
            .into_iter()
            .map(|k| {
                (0..rank).map(|i| (k[i] * spec.dilations[i] * strides[i]) as isize).sum::<isize>()
            })
            .collect();
        let ic = *self.input_shape.c();
        let offsets = (0..ic as isize)
            .flat_map(|c| window.iter().map(move |w| c * plane as isize + w))
            .collect();
        Padded { dims, strides, plane, offsets }
    }

    /// Writes the `n` images into `buffer` as `n * ic` padded channels (plus a few floats of
    /// slack), every element outside the copied rows zero. The buffer is reused across calls
    /// (see [`PADDED`]), so what it held before is overwritten, not assumed zero: a fresh zeroed
    /// buffer per call cost more in page faults than the copy itself on megabyte-sized images.
    ///
    /// # Safety
    /// `img` must hold `n` standard-layout channels-first images of the op's input shape.
    unsafe fn pad_input(&self, img: *const f32, n: usize, padded: &Padded, buffer: &mut Vec<f32>) {
        let input = self.input_shape.hw_dims();
        let rank = input.len();
        let ic = *self.input_shape.c();
        let row = input[rank - 1];
        let width = padded.dims[rank - 1];
        let before = self.patch.pad_before[rank - 1];
        let rows_per_channel = padded.dims[..rank - 1].iter().product::<usize>();
        // A few floats of slack: the stride-2 vector path loads one element past a run.
        let len = n * ic * padded.plane + 16;
        buffer.clear();
        buffer.reserve(len);
        // Capacity reserved above; every element is written below before it is read.
        unsafe { buffer.set_len(len) };
        let mut src = img;
        let mut at = 0usize;
        let mut coords: TVec<usize> = tvec![0; rank - 1];
        for _ in 0..n * ic {
            coords.iter_mut().for_each(|c| *c = 0);
            for _ in 0..rows_per_channel {
                let dst = &mut buffer[at..at + width];
                let inside = (0..rank - 1).all(|i| {
                    coords[i] >= self.patch.pad_before[i]
                        && coords[i] < self.patch.pad_before[i] + input[i]
                });
                if inside {
                    dst[..before].fill(0.0);
                    unsafe {
                        std::ptr::copy_nonoverlapping(src, dst.as_mut_ptr().add(before), row);
                        src = src.add(row);
                    }
                    dst[before + row..].fill(0.0);
                } else {
                    dst.fill(0.0);
                }
                at += width;
                for i in (0..rank - 1).rev() {
                    coords[i] += 1;
                    if coords[i] < padded.dims[i] {
                        break;
                    }
                    coords[i] = 0;
                }
            }
        }
        buffer[at..].fill(0.0);
    }

    /// Calls `f(input_offset, output_offset)` for the first point of every output row, the input
    /// offset in the padded image.
    fn rows(&self, padded: &Padded, mut f: impl FnMut(isize, isize)) {
        let output = self.output_shape.hw_dims();
        let rank = output.len();
        let out_strides = self.output_shape.hw_strides();
        let rows = output[..rank - 1].iter().product::<usize>();
        if output[rank - 1] == 0 {
            return;
        }
        let mut coords: TVec<usize> = tvec![0; rank - 1];
        for _ in 0..rows {
            let (mut i, mut o) = (0isize, 0isize);
            for axis in 0..rank - 1 {
                i += (coords[axis] * self.patch.spec.strides[axis] * padded.strides[axis]) as isize;
                o += (coords[axis] * out_strides[axis]) as isize;
            }
            f(i, o);
            for axis in (0..rank - 1).rev() {
                coords[axis] += 1;
                if coords[axis] < output[axis] {
                    break;
                }
                coords[axis] = 0;
            }
        }
    }

    unsafe fn eval_f32(&self, img: &Tensor, kernel: &Tensor, bias: &Tensor) -> TractResult<Tensor> {
        let conv_w4 = tract_linalg::routines::conv_w4_f32()
            .context("DirectSpatialConv needs a conv_w4 kernel")?;
        let ic = *self.input_shape.c();
        let oc = *self.output_shape.c();
        let conv_w1 = tract_linalg::routines::depthwise_w_f32();
        ensure!(
            oc.is_multiple_of(4) || conv_w1.is_some(),
            "DirectSpatialConv needs a depthwise_w kernel for its last channels"
        );
        let kvol = self.patch.spec.kernel_shape.iter().product::<usize>();
        let n = *self.input_shape.n().unwrap_or(&1);
        ensure!(img.len() == n * ic * self.input_shape.hw_dims().iter().product::<usize>());
        ensure!(kernel.len() == oc * ic * kvol && bias.len() == oc);
        ensure!(*self.output_shape.w_stride() == 1 && *self.input_shape.w_stride() == 1);
        let padded = self.padded();
        let image = ic * padded.plane;
        let ow = *self.output_shape.hw_dims().last().unwrap();
        let in_stride = *self.patch.spec.strides.last().unwrap() as isize;
        let plane = self.output_shape.hw_dims().iter().product::<usize>();
        let mut output = unsafe { Tensor::uninitialized::<f32>(&self.output_shape.shape)? };
        let total = output.len();
        ensure!(total == n * oc * plane);
        if total == 0 {
            return Ok(output);
        }
        let n_taps = padded.offsets.len();
        let wide = wide_kernel();
        // Eight output channels per unit where the AVX-512 kernel runs them, else four.
        let per: usize = if eight_channel_pass(oc, in_stride as usize) { 8 } else { 4 };
        unsafe {
            let mut input = PADDED.with(|b| b.take());
            self.pad_input(img.as_ptr::<f32>()?, n, &padded, &mut input);
            let _keep = KeepPadded(input);
            let input = &_keep.0;
            // `as_ptr` checks the datum type; the lengths are checked above.
            let kernel = std::slice::from_raw_parts(kernel.as_ptr::<f32>()?, kernel.len());
            let bias = std::slice::from_raw_parts(bias.as_ptr::<f32>()?, bias.len());
            let groups = oc / per;
            // A group of `per` output channels is `per` whole planes, contiguous in the output,
            // so a (batch, group) unit owns a block of the output that no other unit touches: the
            // units split across the executor with no other change, and every output point keeps
            // the arithmetic, and the value, it has serially.
            let unit = |unit: usize, out: &mut [f32]| {
                let ni = unit / groups;
                let o = (unit % groups) * per;
                let ip = input.as_ptr().add(ni * image);
                let op = out.as_mut_ptr();
                #[cfg(target_arch = "x86_64")]
                if per == 8 {
                    let taps = &kernel[o * n_taps..][..8 * n_taps];
                    let b: [f32; 8] = bias[o..o + 8].try_into().unwrap();
                    self.rows(&padded, |at_in, at_out| {
                        avx512::conv_w8(
                            ip.offset(at_in),
                            op.offset(at_out),
                            taps,
                            &padded.offsets,
                            &b,
                            ow,
                            plane as isize,
                        )
                    });
                    return;
                }
                let taps = &kernel[o * n_taps..][..4 * n_taps];
                let b = [bias[o], bias[o + 1], bias[o + 2], bias[o + 3]];
                self.rows(&padded, |at_in, at_out| {
                    run_w4(
                        conv_w4,
                        wide,
                        ip.offset(at_in),
                        op.offset(at_out),
                        taps,
                        &padded.offsets,
                        &b,
                        ow,
                        in_stride,
                        plane as isize,
                    )
                });
            };
            if oc.is_multiple_of(per) {
                tract_linalg::multithread::par_chunks_mut(
                    output.as_slice_mut_unchecked::<f32>(),
                    per * plane,
                    total,
                    |first, chunk| {
                        for (ix, out) in chunk.chunks_mut(per * plane).enumerate() {
                            unit(first + ix, out);
                        }
                        Ok(())
                    },
                )?;
                return Ok(output);
            }
            let out = output.as_slice_mut_unchecked::<f32>();
            for ni in 0..n {
                for g in 0..groups {
                    unit(ni * groups + g, &mut out[(ni * oc + 4 * g) * plane..][..4 * plane]);
                }
                let ip = input.as_ptr().add(ni * image);
                for o in 4 * groups..oc {
                    let taps = &kernel[o * n_taps..][..n_taps];
                    let op = out.as_mut_ptr().add((ni * oc + o) * plane);
                    self.rows(&padded, |at_in, at_out| {
                        conv_w1.unwrap()(
                            ip.offset(at_in),
                            op.offset(at_out),
                            taps,
                            &padded.offsets,
                            bias[o],
                            ow,
                            in_stride,
                        )
                    });
                }
            }
        }
        Ok(output)
    }
}

impl TypedOp for DirectSpatialConv {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        ensure!(inputs.len() == 3);
        Ok(tvec!(inputs[0].datum_type.fact(&self.output_shape.shape)))
    }

    fn cost(&self, inputs: &[&TypedFact]) -> TractResult<TVec<(Cost, TDim)>> {
        let [_input, kernel, _bias] = inputs else {
            bail!("DirectSpatialConv expects three inputs");
        };
        let n_output_points = self.patch.output_shape.iter().cloned().product::<usize>();
        Ok(tvec!((
            Cost::FMA(inputs[0].datum_type),
            kernel.shape.volume() * self.input_shape.n().unwrap_or(&1) * n_output_points
        )))
    }

    as_op!();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::knobs::KnobScope;
    use crate::ops::cnn::{Conv, KernelFormat, PaddingSpec, PoolSpec};
    use crate::ops::nn::DataFormat;

    struct Case {
        n: usize,
        ic: usize,
        oc: usize,
        input: Vec<usize>,
        kernel: Vec<usize>,
        strides: Vec<usize>,
        dilations: Vec<usize>,
        before: Vec<usize>,
        after: Vec<usize>,
    }

    fn values(len: usize, seed: usize) -> Vec<f32> {
        (0..len).map(|i| ((i * 7919 + seed * 104729) % 211) as f32 / 105. - 1.).collect()
    }

    impl Case {
        fn output(&self) -> Vec<usize> {
            (0..self.input.len())
                .map(|i| {
                    let span = (self.kernel[i] - 1) * self.dilations[i] + 1;
                    (self.input[i] + self.before[i] + self.after[i] - span) / self.strides[i] + 1
                })
                .collect()
        }

        /// The convolution by its definition, point by point.
        fn reference(&self, x: &[f32], k: &[f32], b: &[f32]) -> Vec<f32> {
            let output = self.output();
            let kvol: usize = self.kernel.iter().product();
            let ivol: usize = self.input.iter().product();
            let mut y = vec![];
            for n in 0..self.n {
                for o in 0..self.oc {
                    for out in ndarray::indices(&*output) {
                        let mut sum = b[o];
                        for c in 0..self.ic {
                            for (kix, tap) in
                                ndarray::indices(&*self.kernel).into_iter().enumerate()
                            {
                                let mut at = 0usize;
                                let mut inside = true;
                                for i in 0..self.input.len() {
                                    let p = (out[i] * self.strides[i] + tap[i] * self.dilations[i])
                                        as isize
                                        - self.before[i] as isize;
                                    inside &= p >= 0 && (p as usize) < self.input[i];
                                    at = at * self.input[i] + p.max(0) as usize;
                                }
                                if inside {
                                    sum += k[(o * self.ic + c) * kvol + kix]
                                        * x[(n * self.ic + c) * ivol + at];
                                }
                            }
                        }
                        y.push(sum);
                    }
                }
            }
            y
        }

        /// Against the reference with each kernel; the AVX-512 kernel's eight-channel pass must
        /// give exactly the values of its four-channel one (same arithmetic per point).
        fn check(&self) -> TractResult<()> {
            let eight = self.check_with(true, true)?;
            let four = self.check_with(true, false)?;
            ensure!(eight == four, "eight channels a pass changed values");
            self.check_with(false, false)?;
            Ok(())
        }

        /// Lowered and run with or without the AVX-512 kernel and its eight-channel pass.
        fn check_with(&self, avx512: bool, oc8: bool) -> TractResult<Tensor> {
            let flag = |on: bool| if on { "true" } else { "false" };
            let knobs = [
                ("TRACT_DIRECT_SPATIAL_MIN_W", "1"),
                ("TRACT_DIRECT_SPATIAL_MAX_K", "4096"),
                ("TRACT_DIRECT_SPATIAL_AVX512", flag(avx512)),
                ("TRACT_DIRECT_SPATIAL_OC8", flag(oc8)),
            ];
            KnobScope::new(knobs)?
                .enter(|| self.run())
                .with_context(|| format!("avx512 {avx512} oc8 {oc8}"))
        }

        fn run(&self) -> TractResult<Tensor> {
            let mut x_shape = vec![self.n, self.ic];
            x_shape.extend(&self.input);
            let mut k_shape = vec![self.oc, self.ic];
            k_shape.extend(&self.kernel);
            let x = values(x_shape.iter().product(), 1);
            let k = values(k_shape.iter().product(), 2);
            let b = values(self.oc, 3);
            let mut model = TypedModel::default();
            let source = model.add_source("input", f32::fact(x_shape.clone()))?;
            let kernel = model.add_const("kernel", Tensor::from_shape(&k_shape, &k)?)?;
            let bias = model.add_const("bias", Tensor::from_shape(&[self.oc], &b)?)?;
            let conv = Conv {
                pool_spec: PoolSpec {
                    data_format: DataFormat::NCHW,
                    kernel_shape: self.kernel.iter().copied().collect(),
                    padding: PaddingSpec::Explicit(
                        self.before.iter().copied().collect(),
                        self.after.iter().copied().collect(),
                    ),
                    dilations: Some(self.dilations.iter().copied().collect()),
                    strides: Some(self.strides.iter().copied().collect()),
                    input_channels: self.ic,
                    output_channels: self.oc,
                },
                kernel_fmt: KernelFormat::OIHW,
                group: 1,
                q_params: None,
            };
            let y = model.wire_node("conv", conv, &[source, kernel, bias])?;
            model.select_output_outlets(&y)?;
            let model = model.into_optimized()?;
            if tract_linalg::routines::conv_w4_f32().is_some() {
                ensure!(
                    model.nodes().iter().any(|n| n.op_is::<DirectSpatialConv>()),
                    "not lowered to DirectSpatialConv"
                );
            }
            let got = model
                .into_runnable()?
                .run(tvec!(Tensor::from_shape(&x_shape, &x)?.into_tvalue()))?;
            let mut y_shape = vec![self.n, self.oc];
            y_shape.extend(self.output());
            let want = Tensor::from_shape(&y_shape, &self.reference(&x, &k, &b))?;
            got[0].close_enough(&want, Approximation::Approximate)?;
            Ok(got[0].clone().into_tensor())
        }
    }

    fn case2(ic: usize, oc: usize, h: usize, w: usize, pad: usize, stride: usize) -> Case {
        Case {
            n: 1,
            ic,
            oc,
            input: vec![h, w],
            kernel: vec![3, 3],
            strides: vec![stride, stride],
            dilations: vec![1, 1],
            before: vec![pad, pad],
            after: vec![pad, pad],
        }
    }

    #[test]
    fn widths_around_the_vector_width() -> TractResult<()> {
        for w in [1, 2, 5, 7, 8, 9, 13, 16, 17, 23, 24, 31, 33, 64, 130] {
            for oc in [4, 8, 24] {
                case2(3, oc, 5, w, 1, 1).check().with_context(|| format!("w {w} oc {oc}"))?;
            }
        }
        Ok(())
    }

    #[test]
    fn strides_paddings_and_channel_remainders() -> TractResult<()> {
        for stride in 1..=3 {
            for pad in 0..=2 {
                for oc in [4, 6, 9, 16] {
                    // Strided rows are lowered from 128 output points on.
                    case2(2, oc, 11, 400, pad, stride)
                        .check()
                        .with_context(|| format!("stride {stride} pad {pad} oc {oc}"))?;
                }
            }
        }
        Ok(())
    }

    #[test]
    fn asymmetric_padding_dilation_and_batch() -> TractResult<()> {
        Case {
            n: 2,
            ic: 3,
            oc: 8,
            input: vec![9, 21],
            kernel: vec![2, 3],
            strides: vec![1, 1],
            dilations: vec![2, 3],
            before: vec![0, 4],
            after: vec![3, 1],
        }
        .check()
    }

    #[test]
    fn three_spatial_axes() -> TractResult<()> {
        Case {
            n: 1,
            ic: 4,
            oc: 8,
            input: vec![5, 6, 19],
            kernel: vec![3, 3, 3],
            strides: vec![1, 1, 1],
            dilations: vec![1, 1, 1],
            before: vec![1, 1, 1],
            after: vec![1, 1, 1],
        }
        .check()?;
        Case {
            n: 2,
            ic: 2,
            oc: 5,
            input: vec![4, 7, 12],
            kernel: vec![3, 2, 3],
            strides: vec![2, 2, 1],
            dilations: vec![1, 2, 1],
            before: vec![1, 0, 2],
            after: vec![0, 1, 1],
        }
        .check()
    }

    #[test]
    fn many_input_channels() -> TractResult<()> {
        // 144 channels x 9 taps: above the default cap of 576 (raised for the tests).
        case2(144, 8, 6, 40, 1, 1).check()
    }
}
