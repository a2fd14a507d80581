//! Pixel formats a V4L2 camera delivers, converted into the packed RGB8 the preprocess stage reads.
//! Pure functions over caller-owned buffers: nothing allocates per frame (MJPEG aside, in the decoder).

use std::fmt;

/// Capture formats rtvla accepts (board profile `camera.format`; an unknown name is a profile error).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(try_from = "String")]
pub enum PixelFormat {
    /// Packed 4:2:2, Y0 U Y1 V (most USB webcams uncompressed, vivid's default).
    Yuyv,
    /// Motion JPEG (USB webcams at higher resolutions/frame rates).
    Mjpeg,
    /// Planar Y + interleaved UV 4:2:0 (Jetson / ISP pipelines).
    Nv12,
    /// Packed RGB, 3 bytes per pixel.
    Rgb24,
}

impl PixelFormat {
    /// Parse a profile's `camera.format` (case-insensitive; fourcc spellings accepted too).
    pub fn parse(s: &str) -> Option<PixelFormat> {
        match s.to_ascii_lowercase().as_str() {
            "yuyv" | "yuy2" => Some(PixelFormat::Yuyv),
            "mjpeg" | "mjpg" | "jpeg" => Some(PixelFormat::Mjpeg),
            "nv12" => Some(PixelFormat::Nv12),
            "rgb24" | "rgb3" | "rgb" => Some(PixelFormat::Rgb24),
            _ => None,
        }
    }

    /// The V4L2 fourcc code.
    pub fn fourcc(self) -> [u8; 4] {
        match self {
            PixelFormat::Yuyv => *b"YUYV",
            PixelFormat::Mjpeg => *b"MJPG",
            PixelFormat::Nv12 => *b"NV12",
            PixelFormat::Rgb24 => *b"RGB3",
        }
    }

    /// Bytes of one uncompressed frame (`None` for MJPEG, whose size varies).
    pub fn frame_bytes(self, width: usize, height: usize) -> Option<usize> {
        match self {
            PixelFormat::Yuyv => Some(width * height * 2),
            PixelFormat::Nv12 => Some(width * height * 3 / 2),
            PixelFormat::Rgb24 => Some(width * height * 3),
            PixelFormat::Mjpeg => None,
        }
    }
}

impl TryFrom<String> for PixelFormat {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        PixelFormat::parse(&s).ok_or_else(|| format!("camera.format {s:?}: expected yuyv, mjpeg, nv12 or rgb24"))
    }
}

impl fmt::Display for PixelFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(std::str::from_utf8(&self.fourcc()).unwrap_or("????"))
    }
}

/// Why a buffer could not be converted.
#[derive(Debug, PartialEq, Eq)]
pub enum ConvertError {
    /// The driver handed over fewer bytes than the negotiated format needs.
    Short { got: usize, need: usize },
    /// The JPEG did not decode, or decoded to another size.
    Jpeg(String),
}

impl fmt::Display for ConvertError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConvertError::Short { got, need } => write!(f, "short buffer: {got} bytes, need {need}"),
            ConvertError::Jpeg(e) => write!(f, "MJPEG frame: {e}"),
        }
    }
}

/// BT.601 limited-range YCbCr → RGB in 16.16 fixed point (what webcams and vivid send).
#[inline]
fn ycbcr_to_rgb(y: u8, cb: u8, cr: u8, out: &mut [u8]) {
    let c = (y as i32 - 16).max(0) * 76_284; // 1.164 * 65536
    let d = cb as i32 - 128;
    let e = cr as i32 - 128;
    let r = (c + 104_595 * e + 32_768) >> 16; // 1.596
    let g = (c - 25_625 * d - 53_281 * e + 32_768) >> 16; // 0.391, 0.813
    let b = (c + 132_252 * d + 32_768) >> 16; // 2.018
    out[0] = r.clamp(0, 255) as u8;
    out[1] = g.clamp(0, 255) as u8;
    out[2] = b.clamp(0, 255) as u8;
}

fn check_len(got: usize, need: usize) -> Result<(), ConvertError> {
    if got < need {
        Err(ConvertError::Short { got, need })
    } else {
        Ok(())
    }
}

/// Convert one captured buffer into `rgb` (`width * height * 3` bytes, preallocated by the caller).
pub fn to_rgb(
    format: PixelFormat,
    src: &[u8],
    width: usize,
    height: usize,
    rgb: &mut [u8],
) -> Result<(), ConvertError> {
    debug_assert_eq!(rgb.len(), width * height * 3);
    match format {
        PixelFormat::Yuyv => {
            check_len(src.len(), width * height * 2)?;
            for (px, out) in src[..width * height * 2].chunks_exact(4).zip(rgb.chunks_exact_mut(6)) {
                let (y0, u, y1, v) = (px[0], px[1], px[2], px[3]);
                ycbcr_to_rgb(y0, u, v, &mut out[..3]);
                ycbcr_to_rgb(y1, u, v, &mut out[3..]);
            }
        }
        PixelFormat::Nv12 => {
            check_len(src.len(), width * height * 3 / 2)?;
            let (luma, chroma) = src.split_at(width * height);
            for row in 0..height {
                let uv_row = &chroma[(row / 2) * width..(row / 2) * width + width];
                for col in 0..width {
                    let y = luma[row * width + col];
                    let (u, v) = (uv_row[col & !1], uv_row[(col & !1) + 1]);
                    let o = (row * width + col) * 3;
                    ycbcr_to_rgb(y, u, v, &mut rgb[o..o + 3]);
                }
            }
        }
        PixelFormat::Rgb24 => {
            check_len(src.len(), width * height * 3)?;
            rgb.copy_from_slice(&src[..width * height * 3]);
        }
        PixelFormat::Mjpeg => {
            use zune_jpeg::zune_core::bytestream::ZCursor;
            use zune_jpeg::zune_core::colorspace::ColorSpace;
            use zune_jpeg::zune_core::options::DecoderOptions;
            let opts = DecoderOptions::default().jpeg_set_out_colorspace(ColorSpace::RGB);
            let mut dec = zune_jpeg::JpegDecoder::new_with_options(ZCursor::new(src), opts);
            dec.decode_headers().map_err(|e| ConvertError::Jpeg(format!("{e:?}")))?;
            let (w, h) = dec.dimensions().ok_or_else(|| ConvertError::Jpeg("no dimensions".into()))?;
            if (w, h) != (width, height) {
                return Err(ConvertError::Jpeg(format!("{w}x{h}, negotiated {width}x{height}")));
            }
            dec.decode_into(rgb).map_err(|e| ConvertError::Jpeg(format!("{e:?}")))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yuyv_greys_and_primaries() {
        // Black (Y=16), white (Y=235), mid grey, and a saturated red (BT.601: Y=81 U=90 V=240).
        let src = [16, 128, 235, 128, 126, 128, 126, 128, 81, 90, 81, 240];
        let mut rgb = [0u8; 6 * 3];
        to_rgb(PixelFormat::Yuyv, &src, 6, 1, &mut rgb).unwrap();
        assert_eq!(&rgb[0..3], &[0, 0, 0]);
        assert_eq!(&rgb[3..6], &[255, 255, 255]);
        assert_eq!(&rgb[6..9], &[128, 128, 128]);
        let red = &rgb[15..18];
        assert!(red[0] > 250 && red[1] < 5 && red[2] < 5, "{red:?}");
    }

    #[test]
    fn nv12_shares_chroma_per_2x2_block() {
        // 2x2 image: all Y=235 (white), one UV pair neutral.
        let src = [235, 235, 235, 235, 128, 128];
        let mut rgb = [0u8; 12];
        to_rgb(PixelFormat::Nv12, &src, 2, 2, &mut rgb).unwrap();
        assert!(rgb.iter().all(|&v| v == 255), "{rgb:?}");
        // Blue chroma (U high) tints all four pixels.
        let src = [81, 81, 81, 81, 240, 110];
        to_rgb(PixelFormat::Nv12, &src, 2, 2, &mut rgb).unwrap();
        for px in rgb.chunks(3) {
            assert!(px[2] > px[0] && px[2] > px[1], "{px:?}");
        }
    }

    #[test]
    fn short_buffers_are_errors_not_panics() {
        let mut rgb = [0u8; 4 * 4 * 3];
        for f in [PixelFormat::Yuyv, PixelFormat::Nv12, PixelFormat::Rgb24] {
            let err = to_rgb(f, &[0u8; 7], 4, 4, &mut rgb).unwrap_err();
            assert!(matches!(err, ConvertError::Short { got: 7, .. }), "{f}: {err}");
        }
        assert!(matches!(to_rgb(PixelFormat::Mjpeg, &[0xff, 0xd8, 0], 4, 4, &mut rgb), Err(ConvertError::Jpeg(_))));
    }

    #[test]
    fn mjpeg_roundtrip_through_a_real_encoder() {
        // Encode a gradient with the same jpeg-encoder the thumbnails use, decode it as a camera frame.
        let (w, h) = (32usize, 16usize);
        let mut img = vec![0u8; w * h * 3];
        for (i, px) in img.chunks_mut(3).enumerate() {
            px[0] = (i % w * 8) as u8;
            px[1] = 100;
            px[2] = (i / w * 16) as u8;
        }
        let mut jpeg = Vec::new();
        jpeg_encoder::Encoder::new(&mut jpeg, 95)
            .encode(&img, w as u16, h as u16, jpeg_encoder::ColorType::Rgb)
            .unwrap();
        let mut rgb = vec![0u8; w * h * 3];
        to_rgb(PixelFormat::Mjpeg, &jpeg, w, h, &mut rgb).unwrap();
        let max_err = img.iter().zip(&rgb).map(|(a, b)| (*a as i32 - *b as i32).abs()).max().unwrap();
        assert!(max_err < 24, "max error {max_err}");
        // A JPEG of another size than negotiated is refused.
        let mut small = vec![0u8; 16 * 16 * 3];
        assert!(matches!(to_rgb(PixelFormat::Mjpeg, &jpeg, 16, 16, &mut small), Err(ConvertError::Jpeg(_))));
    }

    #[test]
    fn format_names() {
        assert_eq!(PixelFormat::parse("YUYV"), Some(PixelFormat::Yuyv));
        assert_eq!(PixelFormat::parse("mjpg"), Some(PixelFormat::Mjpeg));
        assert_eq!(PixelFormat::parse("bayer"), None);
        assert_eq!(PixelFormat::Nv12.to_string(), "NV12");
    }
}
