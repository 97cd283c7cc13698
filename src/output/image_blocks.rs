//! How a [`Collector`] takes images: fitted to the client's limits (`images.rs`), counted and
//! saved as workspace files past them, their data sent clean (no line breaks) or not at all.

use std::io::Write;

use super::{images, Block, Collector, Kind};

/// Most notes on images not shown kept per result (and images saved for them).
pub(super) const MAX_DROPPED_NOTES: usize = 20;

/// "PNG" for image/png, "JPEG" for image/jpeg.
fn short_type(mime: &str) -> &str {
    match mime {
        "image/png" => "PNG",
        "image/jpeg" => "JPEG",
        other => other,
    }
}

impl Collector {
    /// Saves `bytes` as a workspace output file; its path. A link to it follows the next note.
    fn save_original(&mut self, mime: &str, bytes: &[u8]) -> Option<String> {
        let ext = if mime == "image/png" { ".png" } else { ".jpg" };
        let (path, mut f) = self.spill_target.as_mut()?.create(ext).ok()?;
        f.write_all(bytes).ok()?;
        if let Some(uri) = self.spill_target.as_ref().and_then(|t| t.uri(&path)) {
            self.pending_link = Some(Block::Link {
                uri,
                name: path.clone(),
                mime: mime.to_owned(),
                size: bytes.len() as u64,
            });
        }
        Some(path)
    }

    /// Saves base64 `data` decoded to a new workspace file, a slice at a time (the image can
    /// be tens of MB: it is never held decoded). None when there is no spill target or the
    /// data is not base64.
    fn save_base64(&mut self, mime: &str, data: &str) -> Option<String> {
        let ext = if mime == "image/png" { ".png" } else { ".jpg" };
        let (path, mut f) = self.spill_target.as_mut()?.create(ext).ok()?;
        images::decode_base64_to(data, &mut f).ok()?;
        Some(path)
    }

    /// Records an image not shown. Past [`MAX_DROPPED_NOTES`] it is only counted (and not
    /// saved: see [`Collector::may_save_dropped`]).
    fn note_dropped(&mut self, note: String) {
        if self.dropped_images.len() < MAX_DROPPED_NOTES {
            self.dropped_images.push(note);
        } else {
            self.dropped_more = self.dropped_more.saturating_add(1);
        }
    }

    /// Saves an image not shown (base64 `data`) while [`Collector::may_save_dropped`] allows:
    /// `" saved as PATH"` for its note, or nothing.
    fn save_dropped(&mut self, mime: &str, data: &str) -> String {
        if !self.may_save_dropped() {
            return String::new();
        }
        self.save_base64(mime, data)
            .map(|p| format!(" saved as {p}"))
            .unwrap_or_default()
    }

    /// Whether an image not shown may still be saved as a file (100,000 tiny images would
    /// otherwise become 100,000 files and notes).
    fn may_save_dropped(&self) -> bool {
        self.dropped_images.len() < MAX_DROPPED_NOTES
    }

    pub(super) fn push_image(&mut self, mime: &str, data: &str, display_id: Option<String>) {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD;
        if self.images >= self.limits.max_images || self.image_bytes >= self.limits.max_image_bytes
        {
            // The call shows no more images: not decoded or fitted (a small PNG can decode to
            // hundreds of MB), only saved, a slice at a time.
            self.dropped_for_limits = true;
            let saved = self.save_dropped(mime, data);
            self.note_dropped(format!(
                "{mime} image of {} KiB{saved}",
                data.len() / 4 * 3 / 1024
            ));
            return;
        }
        if data.len() > images::MAX_DECODE_BASE64 {
            // Past what any client takes even fitted: never decoded in memory, only saved.
            let saved = self.save_dropped(mime, data);
            self.note_dropped(format!(
                "{mime} image of {} KiB not shown: over the {} MiB the server decodes to fit images;{saved}",
                data.len() / 4 * 3 / 1024,
                (images::MAX_DECODE_BASE64 / 4 * 3) >> 20
            ));
            return;
        }
        // Line breaks in base64 are legal (some libraries wrap at 76); copy only then.
        let clean: std::borrow::Cow<str> = if data.bytes().any(|b| b.is_ascii_whitespace()) {
            data.chars()
                .filter(|c| !c.is_whitespace())
                .collect::<String>()
                .into()
        } else {
            data.into()
        };
        let decoded = b64.decode(clean.as_bytes()).ok();
        if decoded.is_none() {
            // Passed on, it would be an image block a strict client refuses, and with it the
            // whole result.
            self.note_dropped(format!(
                "{mime} image of {} KiB not shown: its data is not valid base64",
                data.len() / 1024
            ));
            return;
        }
        let fitted = decoded
            .as_deref()
            .map(|bytes| images::fit(mime, bytes, &self.limits.image_fit));
        match (fitted, decoded.as_deref()) {
            (Some(images::Fit::Fitted(f)), Some(orig)) => {
                let saved = self
                    .save_original(mime, orig)
                    .map(|p| format!("; the full-size original is saved as {p} (read_file returns it fitted the same way; open it from Python for the full resolution)"))
                    .unwrap_or_default();
                let note = format!(
                    "[image: {}×{} {} of {} KiB shown at {}×{} as {} of {} KiB, to fit the client's image limits (--max-image-px {}, --max-image-bytes {}){saved}]",
                    f.from.0,
                    f.from.1,
                    short_type(mime),
                    orig.len() / 1024,
                    f.to.0,
                    f.to.1,
                    short_type(f.mime),
                    f.bytes.len() / 1024,
                    self.limits.image_fit.max_px,
                    self.limits.image_fit.max_bytes,
                );
                let data = b64.encode(&f.bytes);
                self.push_fitted_image(f.mime, &data, display_id);
                self.push_text(Kind::Note, &format!("{note}\n"), None);
                if let Some(link) = self.pending_link.take() {
                    self.blocks.push(link);
                }
                return;
            }
            (Some(images::Fit::Refused(why)), Some(orig)) => {
                let saved = if self.may_save_dropped() {
                    self.save_original(mime, orig)
                        .map(|p| format!(" saved as {p}"))
                        .unwrap_or_default()
                } else {
                    String::new()
                };
                self.note_dropped(format!(
                    "{mime} image of {} KiB not shown: {why};{saved}",
                    orig.len() / 1024
                ));
                return;
            }
            _ => {}
        }
        // Unchanged: as sent, without the line breaks some libraries wrap base64 in.
        self.push_fitted_image(mime, &clean, display_id);
    }

    pub(super) fn push_fitted_image(&mut self, mime: &str, data: &str, display_id: Option<String>) {
        if self.images >= self.limits.max_images
            || self.image_bytes + data.len() > self.limits.max_image_bytes
        {
            self.dropped_for_limits = true;
            let saved = self.save_dropped(mime, data);
            self.note_dropped(format!(
                "{mime} image of {} KiB{saved}",
                data.len() / 1024 * 3 / 4
            ));
            return;
        }
        self.images += 1;
        self.image_bytes += data.len();
        self.blocks.push(Block::Image {
            mime: mime.to_owned(),
            data: data.to_owned(),
            display_id,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{display, png_1x1, texts};
    use super::super::OutputLimits;
    use super::*;
    use crate::kernel::{OutputSink, Report};
    use std::time::Duration;

    /// Images past the call's count are neither decoded nor fitted (a PNG whose header claims
    /// 100,000 × 100,000 pixels would be, and refused for its size), and past 20 notes they
    /// are only counted.
    #[test]
    fn images_past_the_limit_are_counted_not_decoded() {
        let limits = OutputLimits {
            max_images: 1,
            ..Default::default()
        };
        let mut c = Collector::new(limits, None);
        c.output(&display(&[("image/png", &png_1x1())], None, false));
        let mut bomb = vec![0x89, b'P', b'N', b'G', 0x0d, 0x0a, 0x1a, 0x0a, 0, 0, 0, 13];
        bomb.extend_from_slice(b"IHDR");
        bomb.extend_from_slice(&100_000u32.to_be_bytes());
        bomb.extend_from_slice(&100_000u32.to_be_bytes());
        bomb.extend_from_slice(&[8, 6, 0, 0, 0, 0, 0, 0, 0]);
        let bomb = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, bomb);
        for _ in 0..200 {
            c.output(&display(&[("image/png", &bomb)], None, false));
        }
        let r = c.finish(None, &Report::default(), Duration::from_secs(1));
        let images = r.content.iter().filter(|c| c.as_image().is_some()).count();
        assert_eq!(images, 1);
        let note = texts(&r)
            .into_iter()
            .find(|t| t.contains("not shown"))
            .unwrap_or_default();
        assert!(
            note.starts_with("[200 image(s) not shown (limit 1 images"),
            "{note:.300}"
        );
        assert!(note.ends_with("; and 180 more, not saved]"), "{note:.300}");
        assert!(
            !note.contains("could not be")
                && !note.contains("not shown:")
                && !note.contains("megapixels"),
            "decoded: {note:.300}"
        );
    }

    /// Base64 wrapped in lines goes to the client without the line breaks; base64 that does
    /// not decode is not sent as an image at all (a strict client would refuse the result).
    #[test]
    fn image_data_is_sent_clean_or_not_at_all() {
        let png = png_1x1();
        let wrapped: String = png
            .as_bytes()
            .chunks(8)
            .map(|c| String::from_utf8_lossy(c).into_owned())
            .collect::<Vec<_>>()
            .join("\n");
        let mut c = Collector::new(OutputLimits::default(), None);
        c.output(&display(&[("image/png", &wrapped)], None, false));
        c.output(&display(
            &[("image/png", "not base64 at all!")],
            None,
            false,
        ));
        let r = c.finish(None, &Report::default(), Duration::from_secs(1));
        let images: Vec<String> = r
            .content
            .iter()
            .filter_map(|c| c.as_image().map(|i| i.data.clone()))
            .collect();
        assert_eq!(images, vec![png]);
        assert!(
            texts(&r).iter().any(|t| t
                .starts_with("[1 image(s) not shown: image/png image of 0 KiB not shown: its data is not valid base64")),
            "no limit named where none was why: {:?}",
            texts(&r)
        );
    }

    /// A display updated many times keeps showing its latest image: the old one's bytes are
    /// given back to the call's image budget.
    #[test]
    fn an_updated_image_keeps_its_place_in_the_budget() {
        let png = png_1x1();
        let limits = OutputLimits {
            max_image_bytes: png.len() * 3,
            ..Default::default()
        };
        let mut c = Collector::new(limits, None);
        c.output(&display(&[("image/png", &png)], Some("fig"), false));
        for _ in 0..20 {
            c.output(&display(&[("image/png", &png)], Some("fig"), true));
        }
        let r = c.finish(None, &Report::default(), Duration::from_secs(1));
        assert_eq!(
            r.content.iter().filter(|c| c.as_image().is_some()).count(),
            1
        );
        assert!(
            !texts(&r).iter().any(|t| t.contains("not shown")),
            "{:?}",
            texts(&r)
        );
    }
}
