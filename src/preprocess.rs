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
    /// Per channel, u8 → normalised value ((v/255 − mean)/std). Bilinear interpolation commutes with this affine
    /// map, so values are normalised by table look-up before interpolating.
    lut: [[f32; 256]; 3],
    /// Every tap lands exactly on a source pixel (crop without resize): plain gather, no interpolation.
    exact: bool,
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
        let mut lut = [[0.0f32; 256]; 3];
        for (c, table) in lut.iter_mut().enumerate() {
            for (v, slot) in table.iter_mut().enumerate() {
                *slot = (v as f32 / 255.0 - norm.mean[c]) / norm.std[c];
            }
        }
        let xs = taps(src_w, dst_w);
        let ys = taps(kept_h, dst_h);
        let exact = xs.iter().chain(&ys).all(|t| t.w1 == 0.0);
        Preprocessor { src_w, src_h, dst_w, dst_h, xs, ys, lut, exact, out: vec![0.0; 3 * dst_w * dst_h] }
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
        let (r_out, rest) = self.out.split_at_mut(plane);
        let (g_out, b_out) = rest.split_at_mut(plane);
        let [lr, lg, lb] = &self.lut;
        for (dy, ty) in self.ys.iter().enumerate() {
            let r0 = &rgb[ty.i0 as usize * row..][..row];
            let o = dy * self.dst_w;
            let (ro, go, bo) =
                (&mut r_out[o..][..self.dst_w], &mut g_out[o..][..self.dst_w], &mut b_out[o..][..self.dst_w]);
            if self.exact {
                for (dx, tx) in self.xs.iter().enumerate() {
                    let p = &r0[tx.i0 as usize * 3..][..3];
                    ro[dx] = lr[p[0] as usize];
                    go[dx] = lg[p[1] as usize];
                    bo[dx] = lb[p[2] as usize];
                }
                continue;
            }
            let r1 = &rgb[ty.i1 as usize * row..][..row];
            let wy = ty.w1;
            for (dx, tx) in self.xs.iter().enumerate() {
                let (a, b, wx) = (tx.i0 as usize * 3, tx.i1 as usize * 3, tx.w1);
                for (c, (lut, out)) in [(lr, &mut *ro), (lg, &mut *go), (lb, &mut *bo)].into_iter().enumerate() {
                    let (p00, p01) = (lut[r0[a + c] as usize], lut[r0[b + c] as usize]);
                    let (p10, p11) = (lut[r1[a + c] as usize], lut[r1[b + c] as usize]);
                    let top = p00 + (p01 - p00) * wx;
                    let bot = p10 + (p11 - p10) * wx;
                    out[dx] = top + (bot - top) * wy;
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
        let mut rgb = vec![0u8; 4 * 3];
        rgb[3..6].copy_from_slice(&[255, 255, 255]); // x=1 white
        let mut p = Preprocessor::new(4, 1, 0, 2, 1, &norm);
        let out = p.run(&rgb).unwrap();
        assert!((out[0] - 0.5).abs() < 1e-6, "{out:?}");
        assert!(p.run(&rgb[..5]).is_none());
    }
}
