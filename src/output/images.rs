//! Images fitted to what clients accept: at most `max_px` on the long edge (Claude's API
//! downscales past ~1568 px and refuses past 8000; Codex takes about 2048) and at most
//! `max_bytes` encoded (PNG first; when that is too big, JPEG at falling quality, then smaller).
//! The caller keeps the original (in the workspace) and says so.

use std::io::Cursor;

use image::{DynamicImage, GenericImageView, ImageFormat, ImageReader};

/// Largest image decoded, in pixels (a 300-dpi 20×12 in figure is 21 Mpx): decoding and
/// resizing 100 Mpx took 8.5 s and 560 MB here; 40 Mpx takes ~3 s and ~200 MB.
const MAX_DECODE_PIXELS: u64 = 40_000_000;
/// Largest allocation the decoder may make.
const MAX_DECODE_ALLOC: u64 = 320 * 1024 * 1024;

/// What to fit images to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageFit {
    /// Longest edge, in pixels.
    pub max_px: u32,
    /// Largest encoded size, in bytes.
    pub max_bytes: usize,
}

impl Default for ImageFit {
    fn default() -> Self {
        ImageFit {
            max_px: 1568,
            max_bytes: 1024 * 1024,
        }
    }
}

/// An image made to fit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fitted {
    pub mime: &'static str,
    pub bytes: Vec<u8>,
    /// Size before and after, in pixels.
    pub from: (u32, u32),
    pub to: (u32, u32),
}

/// What [`fit`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fit {
    /// Already within the limits (or not a format this decodes: passed on as it is).
    Unchanged,
    Fitted(Fitted),
    /// Could not be made to fit (too many pixels to decode, corrupt): why.
    Refused(String),
}

fn encode(img: &DynamicImage, format: ImageFormat, quality: u8) -> Option<Vec<u8>> {
    let mut out = Cursor::new(Vec::new());
    match format {
        ImageFormat::Jpeg => {
            // JPEG has no alpha: flatten onto white, as a viewer would show it on a page.
            let rgba = img.to_rgba8();
            let mut rgb = image::RgbImage::new(rgba.width(), rgba.height());
            for (x, y, p) in rgba.enumerate_pixels() {
                let a = u16::from(p[3]);
                let mix = |c: u8| ((u16::from(c) * a + 255 * (255 - a)) / 255) as u8;
                rgb.put_pixel(x, y, image::Rgb([mix(p[0]), mix(p[1]), mix(p[2])]));
            }
            let enc = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, quality);
            rgb.write_with_encoder(enc).ok()?;
        }
        _ => img.write_to(&mut out, ImageFormat::Png).ok()?,
    }
    Some(out.into_inner())
}

/// Fits `bytes` (an image of type `mime`) to `limits`.
pub fn fit(mime: &str, bytes: &[u8], limits: &ImageFit) -> Fit {
    let format = match mime {
        "image/png" => ImageFormat::Png,
        "image/jpeg" => ImageFormat::Jpeg,
        _ => return Fit::Unchanged,
    };
    let mut reader = ImageReader::with_format(Cursor::new(bytes), format);
    let mut l = image::Limits::default();
    l.max_alloc = Some(MAX_DECODE_ALLOC);
    reader.limits(l);
    let dims = match ImageReader::with_format(Cursor::new(bytes), format).into_dimensions() {
        Ok(d) => d,
        Err(e) => return Fit::Refused(format!("the image could not be read ({e})")),
    };
    let (w, h) = dims;
    let max_px = limits.max_px.max(16);
    if w.max(h) <= max_px && bytes.len() <= limits.max_bytes {
        return Fit::Unchanged;
    }
    if u64::from(w) * u64::from(h) > MAX_DECODE_PIXELS {
        return Fit::Refused(format!(
            "{w}×{h} is more than {} megapixels, too large to decode here",
            MAX_DECODE_PIXELS / 1_000_000
        ));
    }
    crate::cpu::heavy(|| decode_and_fit(reader, (w, h), max_px, limits))
}

/// Decodes the image `reader` holds (`w`×`h`) and fits it (the slow part: seconds for tens
/// of megapixels, so it runs off the event loop's thread).
fn decode_and_fit(
    reader: ImageReader<Cursor<&[u8]>>,
    (w, h): (u32, u32),
    max_px: u32,
    limits: &ImageFit,
) -> Fit {
    let img = match reader.decode() {
        Ok(i) => i,
        Err(e) => return Fit::Refused(format!("the image could not be decoded ({e})")),
    };
    let mut side = max_px.min(w.max(h));
    for _ in 0..8 {
        let scaled = if w.max(h) > side {
            let s = f64::from(side) / f64::from(w.max(h));
            let nw = ((f64::from(w) * s).round() as u32).max(1);
            let nh = ((f64::from(h) * s).round() as u32).max(1);
            img.resize_exact(nw, nh, image::imageops::FilterType::Lanczos3)
        } else {
            img.clone()
        };
        let to = scaled.dimensions();
        // PNG keeps line art and text sharp; JPEG takes over when PNG is too big.
        let tries: [(ImageFormat, u8, &'static str); 3] = [
            (ImageFormat::Png, 0, "image/png"),
            (ImageFormat::Jpeg, 85, "image/jpeg"),
            (ImageFormat::Jpeg, 70, "image/jpeg"),
        ];
        for (f, q, m) in tries {
            if let Some(b) = encode(&scaled, f, q) {
                if b.len() <= limits.max_bytes {
                    return Fit::Fitted(Fitted {
                        mime: m,
                        bytes: b,
                        from: (w, h),
                        to,
                    });
                }
            }
        }
        side = ((f64::from(side) * 0.7) as u32).max(16);
    }
    Fit::Refused(format!(
        "it could not be brought under {} bytes",
        limits.max_bytes
    ))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn png(w: u32, h: u32, noisy: bool) -> Vec<u8> {
        let img = image::RgbaImage::from_fn(w, h, |x, y| {
            if noisy {
                let v = (x.wrapping_mul(2_654_435_761) ^ y.wrapping_mul(40_503)) as u8;
                image::Rgba([v, v.wrapping_mul(3), v.wrapping_add(y as u8), 255])
            } else {
                image::Rgba([(x % 256) as u8, (y % 256) as u8, 128, 255])
            }
        });
        let mut out = Cursor::new(Vec::new());
        DynamicImage::ImageRgba8(img)
            .write_to(&mut out, ImageFormat::Png)
            .unwrap();
        out.into_inner()
    }

    #[test]
    fn small_images_pass_unchanged() {
        assert_eq!(
            fit("image/png", &png(100, 50, false), &ImageFit::default()),
            Fit::Unchanged
        );
        assert_eq!(
            fit("image/gif", b"GIF89a", &ImageFit::default()),
            Fit::Unchanged
        );
    }

    #[test]
    fn big_images_shrink_to_the_long_edge_and_the_byte_budget() {
        let limits = ImageFit {
            max_px: 400,
            max_bytes: 60 * 1024,
        };
        let Fit::Fitted(f) = fit("image/png", &png(1200, 600, true), &limits) else {
            panic!("not fitted")
        };
        assert_eq!(f.from, (1200, 600));
        assert!(f.to.0 <= 400 && f.to.1 <= 200, "{:?}", f.to);
        assert!(f.bytes.len() <= 60 * 1024, "{}", f.bytes.len());
        // What comes back decodes, at the size it says.
        let back = image::load_from_memory(&f.bytes).unwrap();
        assert_eq!(back.dimensions(), f.to);
    }

    #[test]
    fn garbage_is_refused_not_panicked_on() {
        assert!(matches!(
            fit(
                "image/png",
                b"\x89PNG\r\n\x1a\nnot really",
                &ImageFit::default()
            ),
            Fit::Refused(_)
        ));
    }
}

/// Base64 longer than this (24 MiB decoded) is not decoded in memory to fit, only saved: it
/// is four times the largest figure seen in practice (6.3 MiB at 5967×3570), and decoding
/// costs the server its size again.
pub const MAX_DECODE_BASE64: usize = 32 << 20;

/// Decodes base64 `data` (whitespace allowed) into `out` a slice at a time, so memory stays
/// at one slice however large the data is.
///
/// # Errors
/// When the data is not base64, or writing fails.
pub fn decode_base64_to(data: &str, out: &mut dyn std::io::Write) -> std::io::Result<u64> {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    // A multiple of 4 characters: each full slice decodes on its own.
    const SLICE: usize = 64 << 10;
    let mut pending: Vec<u8> = Vec::with_capacity(SLICE);
    let mut written = 0u64;
    let bad = |e: base64::DecodeError| std::io::Error::new(std::io::ErrorKind::InvalidData, e);
    for b in data.bytes().filter(|b| !b.is_ascii_whitespace()) {
        pending.push(b);
        if pending.len() == SLICE {
            let bytes = b64.decode(&pending).map_err(bad)?;
            out.write_all(&bytes)?;
            written += bytes.len() as u64;
            pending.clear();
        }
    }
    if !pending.is_empty() {
        let bytes = b64.decode(&pending).map_err(bad)?;
        out.write_all(&bytes)?;
        written += bytes.len() as u64;
    }
    Ok(written)
}

#[cfg(test)]
mod streaming_tests {
    use super::*;

    #[test]
    fn base64_decodes_the_same_in_slices_with_or_without_line_breaks() {
        use base64::Engine;
        let raw: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let b64 = base64::engine::general_purpose::STANDARD.encode(&raw);
        let wrapped: String = b64
            .as_bytes()
            .chunks(76)
            .map(|c| String::from_utf8_lossy(c).into_owned() + "\n")
            .collect();
        for text in [&b64, &wrapped] {
            let mut out = Vec::new();
            assert_eq!(
                decode_base64_to(text, &mut out).ok(),
                Some(raw.len() as u64)
            );
            assert_eq!(out, raw);
        }
        assert!(decode_base64_to("not base64!", &mut Vec::new()).is_err());
    }
}
