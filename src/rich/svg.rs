//! SVG displays rasterised to PNG (resvg) with the fonts the machine has, never reading
//! files an SVG refers to.

/// Largest SVG rasterised.
const MAX_SVG_BYTES: usize = 4 * 1024 * 1024;
/// Longest side of a rasterised SVG, in pixels.
const MAX_SVG_SIDE: f32 = 2048.0;
/// Most elements and most text elements in an SVG rasterised: its tree costs time and memory
/// per element, text the most (each is shaped with the system's fonts: 20,000 `<text>`
/// elements took 2.9 s and 90 MB here, 100,000 twelve seconds and 450 MB). A matplotlib
/// figure saved as SVG draws text as paths; charts of a few thousand labels fit easily.
const MAX_SVG_ELEMENTS: usize = 200_000;
const MAX_SVG_TEXTS: usize = 5_000;
/// Most filter steps (`<fe...>` elements) and most uses of a filter or mask in an SVG drawn:
/// each step allocates a picture the size of the area it filters (16 MB at 2048×2048), and
/// each use filters or masks again, so 2,000 `feMorphology` steps took the server past 5 GB.
/// With any filter the SVG is drawn at most [`MAX_FILTERED_SIDE`] px on its longest side, so
/// the steps together stay within ~64 MB. Charts use a few (a drop shadow is three).
const MAX_SVG_FILTER_STEPS: usize = 16;
const MAX_SVG_EFFECT_USES: usize = 256;
const MAX_FILTERED_SIDE: f32 = 1024.0;

/// The fonts SVG text is drawn with: the system's, loaded once, with the generic families
/// (`sans-serif`, `serif`, `monospace`, and text with no family) mapped to installed fonts.
/// fontdb's defaults (Arial, Times New Roman, Courier New) are missing on most Linux systems,
/// and text set in a family that is not there is not drawn at all. Returns the database and
/// the family for text that names none.
fn fonts() -> (std::sync::Arc<resvg::usvg::fontdb::Database>, String) {
    type Fonts = (std::sync::Arc<resvg::usvg::fontdb::Database>, String);
    static DB: std::sync::OnceLock<Fonts> = std::sync::OnceLock::new();
    DB.get_or_init(|| {
        let mut db = resvg::usvg::fontdb::Database::new();
        db.load_system_fonts();
        let installed = |names: &[&str]| -> Option<String> {
            names
                .iter()
                .find(|n| {
                    db.faces().any(|f| {
                        f.families
                            .iter()
                            .any(|(fam, _)| fam.eq_ignore_ascii_case(n))
                    })
                })
                .map(|n| (*n).to_owned())
        };
        let any = db
            .faces()
            .find_map(|f| f.families.first().map(|(fam, _)| fam.clone()));
        let sans = installed(&[
            "DejaVu Sans",
            "Liberation Sans",
            "Arial",
            "Helvetica",
            "Noto Sans",
            "Segoe UI",
            "Bitstream Vera Sans",
        ])
        .or_else(|| any.clone());
        let serif = installed(&[
            "DejaVu Serif",
            "Liberation Serif",
            "Times New Roman",
            "Times",
            "Noto Serif",
        ])
        .or_else(|| sans.clone());
        let mono = installed(&[
            "DejaVu Sans Mono",
            "Liberation Mono",
            "Courier New",
            "Menlo",
            "Consolas",
            "Noto Sans Mono",
        ])
        .or_else(|| sans.clone());
        if let Some(f) = &sans {
            db.set_sans_serif_family(f.clone());
        }
        if let Some(f) = &serif {
            db.set_serif_family(f.clone());
        }
        if let Some(f) = &mono {
            db.set_monospace_family(f.clone());
        }
        let default = sans.unwrap_or_else(|| "sans-serif".to_owned());
        (std::sync::Arc::new(db), default)
    })
    .clone()
}

/// How the server runs the drawing: `kernel-mcp __draw-svg`, the SVG on stdin, the PNG on
/// stdout (see [`draw`]).
pub const DRAW_ARG: &str = "__draw-svg";

/// Longest a drawing may take; past it the drawing process is killed. Counting elements bounds
/// most of the work, but not all of it (30,000 full-page clips or one `feMorphology` of radius
/// 300 ran for minutes in the server): the time limit bounds the rest.
const DRAW_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Most memory the drawing process may take for its data (Linux and macOS; an SVG within the
/// checks stays far below it). Windows has no such limit for one process here.
#[cfg(unix)]
const DRAW_MEMORY: u64 = 1 << 30;

/// Draws an SVG from the kernel to PNG bytes in a process of its own (this binary, see
/// [`draw_main`]), bounded in time ([`DRAW_TIMEOUT`]) and memory ([`DRAW_MEMORY`]): what an
/// SVG makes the renderer do cannot be bounded by counting alone, and the server must outlast
/// it. The cheap checks run here first, so a refused SVG starts no process.
pub(super) fn draw(svg: &str) -> Result<Vec<u8>, String> {
    check(svg)?;
    let exe = std::env::current_exe()
        .map_err(|e| format!("the drawing process could not start ({e})"))?;
    let argv = [exe.to_string_lossy().into_owned(), DRAW_ARG.to_owned()];
    crate::runner::run_bytes(&argv, svg.as_bytes(), DRAW_TIMEOUT, 64 << 20).map_err(|why| {
        if let Some(rest) = why.strip_prefix("it took over") {
            format!("drawing it took over{rest} and was stopped")
        } else {
            why
        }
    })
}

/// The drawing process: reads an SVG on stdin, writes its PNG on stdout, exits 0; or says why
/// not on stderr and exits 1. Its own limits come first (memory; CPU as a second bound).
pub fn draw_main() -> ! {
    use std::io::{Read, Write};
    #[cfg(unix)]
    {
        use nix::sys::resource::{setrlimit, Resource};
        let _ = setrlimit(Resource::RLIMIT_DATA, DRAW_MEMORY, DRAW_MEMORY);
        let cpu = DRAW_TIMEOUT.as_secs().saturating_add(5);
        let _ = setrlimit(Resource::RLIMIT_CPU, cpu, cpu);
    }
    let mut svg = Vec::new();
    let limit = u64::try_from(MAX_SVG_BYTES)
        .unwrap_or(u64::MAX)
        .saturating_add(1);
    let read = std::io::stdin().take(limit).read_to_end(&mut svg);
    let drawn = read
        .map_err(|e| e.to_string())
        .and_then(|_| String::from_utf8(svg).map_err(|_| "the SVG is not UTF-8 text".to_owned()))
        .and_then(|svg| svg_to_png(&svg));
    match drawn {
        Ok(png) => {
            let mut out = std::io::stdout().lock();
            let ok = out.write_all(&png).and_then(|()| out.flush()).is_ok();
            std::process::exit(if ok { 0 } else { 1 })
        }
        Err(why) => {
            eprintln!("{why}");
            std::process::exit(1)
        }
    }
}

/// Rasterises an SVG document to PNG bytes (at most 2048 px on its longest side).
///
/// The SVG comes from the kernel, so it may only embed `data:` images: a path or URL in
/// `<image href>` is never opened (the server is not sandboxed the way the kernel is).
/// The checks made before an SVG is drawn (size, elements, text, filters and masks, counted
/// without parsing); the longest side to draw it at.
fn check(svg: &str) -> Result<f32, String> {
    if svg.len() > MAX_SVG_BYTES {
        return Err(format!(
            "the SVG is {} KiB, over the {} KiB drawn here",
            svg.len() / 1024,
            MAX_SVG_BYTES / 1024
        ));
    }
    // Counted before parsing (the parse is what costs): every element starts with `<`.
    let elements = memchr::memchr_iter(b'<', svg.as_bytes()).count();
    if elements > MAX_SVG_ELEMENTS {
        return Err(format!(
            "the SVG has about {elements} elements, over the {MAX_SVG_ELEMENTS} drawn here"
        ));
    }
    let texts = memchr::memmem::find_iter(svg.as_bytes(), b"<text").count()
        + memchr::memmem::find_iter(svg.as_bytes(), b"<tspan").count();
    if texts > MAX_SVG_TEXTS {
        return Err(format!(
            "the SVG has {texts} text elements, over the {MAX_SVG_TEXTS} drawn here"
        ));
    }
    let count = |what: &[u8]| memchr::memmem::find_iter(svg.as_bytes(), what).count();
    let steps = count(b"<fe");
    if steps > MAX_SVG_FILTER_STEPS {
        return Err(format!(
            "the SVG has {steps} filter steps, over the {MAX_SVG_FILTER_STEPS} drawn here"
        ));
    }
    let uses = count(b"filter=") + count(b"mask=") + count(b"filter:") + count(b"mask:");
    if uses > MAX_SVG_EFFECT_USES {
        return Err(format!(
            "the SVG applies filters or masks {uses} times, over the {MAX_SVG_EFFECT_USES} drawn here"
        ));
    }
    let max_side = if steps > 0 {
        MAX_FILTERED_SIDE
    } else {
        MAX_SVG_SIDE
    };
    Ok(max_side)
}

fn svg_to_png(svg: &str) -> Result<Vec<u8>, String> {
    use resvg::{tiny_skia, usvg};
    let max_side = check(svg)?;
    let (fontdb, font_family) = fonts();
    let mut opt = usvg::Options {
        fontdb,
        font_family,
        ..usvg::Options::default()
    };
    opt.image_href_resolver = usvg::ImageHrefResolver {
        resolve_data: usvg::ImageHrefResolver::default_data_resolver(),
        resolve_string: Box::new(|_, _| None),
    };
    let tree =
        usvg::Tree::from_str(svg, &opt).map_err(|e| format!("it could not be read ({e})"))?;
    let size = tree.size();
    let (w, h) = (size.width(), size.height());
    if !(w.is_finite() && h.is_finite() && w > 0.0 && h > 0.0) {
        return Err("SVG has no size".into());
    }
    let scale = (max_side / w.max(h)).min(1.0);
    let pw = (w * scale).ceil().max(1.0) as u32;
    let ph = (h * scale).ceil().max(1.0) as u32;
    let mut pixmap = tiny_skia::Pixmap::new(pw, ph).ok_or("SVG size is not drawable")?;
    // A white page, as a notebook shows SVG figures (transparent pixels read as black to some viewers).
    pixmap.fill(tiny_skia::Color::WHITE);
    resvg::render(
        &tree,
        tiny_skia::Transform::from_scale(scale, scale),
        &mut pixmap.as_mut(),
    );
    pixmap.encode_png().map_err(|e| e.to_string())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// Filter and mask bombs are refused before anything is drawn (2,000 feMorphology steps
    /// took the server past 5 GB); a filtered SVG is drawn smaller; a drop shadow still is.
    #[test]
    fn filter_bombs_are_refused_and_filters_drawn_small() {
        let head = r#"<svg xmlns="http://www.w3.org/2000/svg" width="4000" height="4000">"#;
        let bomb = format!(
            "{head}<filter id=\"f\">{}</filter><rect width=\"4000\" height=\"4000\" filter=\"url(#f)\"/></svg>",
            "<feMorphology operator=\"dilate\" radius=\"3\"/>".repeat(2000)
        );
        let why = svg_to_png(&bomb).unwrap_err();
        assert!(why.contains("2000 filter steps"), "{why}");
        let uses = format!(
            "{head}<filter id=\"f\"><feGaussianBlur stdDeviation=\"2\"/></filter>{}</svg>",
            "<rect width=\"10\" height=\"10\" filter=\"url(#f)\"/>".repeat(300)
        );
        assert!(svg_to_png(&uses).unwrap_err().contains("300 times"));
        let shadow = format!(
            "{head}<filter id=\"s\"><feGaussianBlur stdDeviation=\"4\"/><feOffset dx=\"3\" dy=\"3\"/></filter><rect x=\"100\" y=\"100\" width=\"2000\" height=\"1000\" fill=\"red\" filter=\"url(#s)\"/></svg>"
        );
        let png = svg_to_png(&shadow).unwrap();
        // 4000 px drawn at 1024 with a filter (2048 without).
        assert_eq!(png.get(16..24), Some(&[0, 0, 4, 0, 0, 0, 4, 0][..]));
    }

    #[test]
    fn svg_rasterises_and_never_reads_files() {
        let svg = r#"<svg xmlns="http://www.w3.org/2000/svg" width="40" height="20"><rect width="40" height="20" fill="red"/></svg>"#;
        let png = svg_to_png(svg).unwrap();
        assert_eq!(png.get(..8), Some(&b"\x89PNG\r\n\x1a\n"[..]));
        assert_eq!(png.get(16..24), Some(&[0, 0, 0, 40, 0, 0, 0, 20][..]));
        // A file reference renders as nothing rather than reading the file.
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("secret.png");
        std::fs::write(&secret, png).unwrap();
        let refers = format!(
            r#"<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" width="40" height="20"><image width="40" height="20" xlink:href="{}"/></svg>"#,
            secret.display()
        );
        let out = svg_to_png(&refers).unwrap();
        let blank =
            svg_to_png(r#"<svg xmlns="http://www.w3.org/2000/svg" width="40" height="20"></svg>"#)
                .unwrap();
        assert_eq!(out, blank);
        assert!(svg_to_png("<svg").is_err());
        for extreme in ["1e30", "0", "-5", "NaN"] {
            let svg = format!(
                r#"<svg xmlns="http://www.w3.org/2000/svg" width="{extreme}" height="{extreme}"/>"#
            );
            if let Ok(png) = svg_to_png(&svg) {
                assert!(png.len() < 1_000_000);
            }
        }
    }
}
