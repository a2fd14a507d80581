//! Preprocess: camera RGB8 → SimLingo crop of the bottom rows → bilinear resize → ImageNet normalisation, CHW f32.
//!
//! One fused pass over precomputed sampling tables into a buffer allocated once: the hot path never allocates and
//! touches every output value exactly once.

use crate::model::manifest::PreprocessSpec;

/// Precomputed bilinear taps for one output coordinate.
#[derive(Clone, Copy, Debug)]
struct Tap {
    i0: u32,
    i1: u32,
    w1: f32,
}

fn taps(src_len: usize, dst_len: usize) -> Vec<Tap> {
    let scale = src_len as f32 / dst_len as f32;
    (0..dst_len)
        .map(|d| {
            // Pixel-centre alignment (align_corners = false), as torch/PIL resize.
            let s = ((d as f32 + 0.5) * scale - 0.5).max(0.0);
            let i0 = (s.floor() as usize).min(src_len - 1);
            let i1 = (i0 + 1).min(src_len - 1);
            Tap { i0: i0 as u32, i1: i1 as u32, w1: s - i0 as f32 }
        })
        .collect()
}

/// Fused crop + resize + normalise into a preallocated model input.
pub struct Preprocessor {
    src_w: usize,
    src_h: usize,
    dst_w: usize,
    dst_h: usize,
    xs: Vec<Tap>,
    ys: Vec<Tap>,
    /// Per channel: (1/255/std, -mean/std).
    scale: [f32; 3],
    offset: [f32; 3],
    out: Vec<f32>,
}

impl Preprocessor {
    /// `src_w × src_h` camera frames, of which the bottom `crop_bottom` rows are dropped, into `dst_w × dst_h`.
    pub fn new(
        src_w: usize,
        src_h: usize,
        crop_bottom: usize,
        dst_w: usize,
        dst_h: usize,
        norm: &PreprocessSpec,
    ) -> Self {
        assert!(crop_bottom < src_h && src_w > 0 && dst_w > 0 && dst_h > 0);
        let kept_h = src_h - crop_bottom;
        let mut scale = [0.0; 3];
        let mut offset = [0.0; 3];
        for c in 0..3 {
            scale[c] = 1.0 / (255.0 * norm.std[c]);
            offset[c] = -norm.mean[c] / norm.std[c];
        }
        Preprocessor {
            src_w,
            src_h,
            dst_w,
            dst_h,
            xs: taps(src_w, dst_w),
            ys: taps(kept_h, dst_h),
            scale,
            offset,
            out: vec![0.0; 3 * dst_w * dst_h],
        }
    }

    /// Expected frame size in bytes (packed RGB8).
    pub fn frame_len(&self) -> usize {
        self.src_w * self.src_h * 3
    }

    /// Convert one frame; returns the CHW buffer. Panics never: a short frame is refused with `None`.
    pub fn run(&mut self, rgb: &[u8]) -> Option<&[f32]> {
        if rgb.len() < self.frame_len() {
            return None;
        }
        let plane = self.dst_w * self.dst_h;
        let row = self.src_w * 3;
        for (dy, ty) in self.ys.iter().enumerate() {
            let r0 = &rgb[ty.i0 as usize * row..][..row];
            let r1 = &rgb[ty.i1 as usize * row..][..row];
            let wy = ty.w1;
            for (dx, tx) in self.xs.iter().enumerate() {
                let (a, b, wx) = (tx.i0 as usize * 3, tx.i1 as usize * 3, tx.w1);
                let o = dy * self.dst_w + dx;
                for c in 0..3 {
                    let top = r0[a + c] as f32 + (r0[b + c] as f32 - r0[a + c] as f32) * wx;
                    let bot = r1[a + c] as f32 + (r1[b + c] as f32 - r1[a + c] as f32) * wx;
                    let v = top + (bot - top) * wy;
                    self.out[c * plane + o] = v * self.scale[c] + self.offset[c];
                }
            }
        }
        Some(&self.out)
    }

    pub fn output(&self) -> &[f32] {
        &self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_size_normalises_exactly() {
        let norm = PreprocessSpec::default();
        let mut p = Preprocessor::new(4, 3, 1, 4, 2, &norm);
        let mut rgb = vec![0u8; 4 * 3 * 3];
        for (i, v) in rgb.iter_mut().enumerate() {
            *v = (i * 7 % 256) as u8;
        }
        let out = p.run(&rgb).unwrap().to_vec();
        // Pixel (x=2, y=1), channel 1 maps straight through when sizes match.
        let src = rgb[(4 + 2) * 3 + 1] as f32;
        let want = (src / 255.0 - norm.mean[1]) / norm.std[1];
        assert!((out[8 + 4 + 2] - want).abs() < 1e-5);
    }

    #[test]
    fn crop_drops_bottom_rows() {
        let norm = PreprocessSpec { mean: [0.0; 3], std: [1.0; 3] };
        // 2x4 image, rows 0-1 white, rows 2-3 black (the "hood"), crop 2 → all white.
        let mut rgb = vec![255u8; 2 * 4 * 3];
        for v in &mut rgb[2 * 2 * 3..] {
            *v = 0;
        }
        let mut p = Preprocessor::new(2, 4, 2, 2, 2, &norm);
        assert!(p.run(&rgb).unwrap().iter().all(|v| (*v - 1.0).abs() < 1e-6));
    }

    #[test]
    fn downscale_averages_and_short_frame_is_refused() {
        let norm = PreprocessSpec { mean: [0.0; 3], std: [1.0; 3] };
        let mut rgb = vec![0u8; 4 * 1 * 3];
        rgb[3..6].copy_from_slice(&[255, 255, 255]); // x=1 white
        let mut p = Preprocessor::new(4, 1, 0, 2, 1, &norm);
        let out = p.run(&rgb).unwrap();
        assert!((out[0] - 0.5).abs() < 1e-6, "{out:?}");
        assert!(p.run(&rgb[..5]).is_none());
    }
}
