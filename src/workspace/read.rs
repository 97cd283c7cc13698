//! Reading: text by lines within the character cap, images as bytes, other binaries described.

use std::io::{Read, Seek, SeekFrom};

use super::*;

/// What a read returned.
#[derive(Debug, Clone, PartialEq)]
pub enum ReadOutcome {
    Text { text: String, note: Option<String> },
    Image { mime: &'static str, bytes: Vec<u8> },
    Binary { description: String },
}

fn sniff(head: &[u8]) -> Option<(&'static str, bool)> {
    // (type, is_image_we_return)
    let starts = |m: &[u8]| head.starts_with(m);
    if starts(b"\x89PNG\r\n\x1a\n") {
        Some(("image/png", true))
    } else if starts(b"\xff\xd8\xff") {
        Some(("image/jpeg", true))
    } else if starts(b"GIF87a") || starts(b"GIF89a") {
        Some(("image/gif", true))
    } else if starts(b"RIFF") && head.get(8..12) == Some(b"WEBP") {
        Some(("image/webp", true))
    } else if starts(b"%PDF") {
        Some(("PDF document", false))
    } else if starts(b"PK\x03\x04") {
        Some(("ZIP archive (also xlsx/docx/jar)", false))
    } else if starts(b"\x1f\x8b") {
        Some(("gzip data", false))
    } else if starts(b"PAR1") {
        Some(("Parquet file", false))
    } else if starts(b"SQLite format 3\0") {
        Some(("SQLite database", false))
    } else if starts(b"\x93NUMPY") {
        Some(("NumPy .npy array", false))
    } else if starts(b"\x7fELF") {
        Some(("ELF executable", false))
    } else if starts(b"\x89HDF") {
        Some(("HDF5 file", false))
    } else if starts(b"ARROW1") {
        Some(("Arrow IPC / Feather file", false))
    } else {
        None
    }
}

impl Workspace {
    /// Reads a file: text by lines (`offset` is the 1-based first line), images as bytes, other binaries described.
    pub fn read(
        &self,
        path: &WorkspacePath,
        offset: Option<usize>,
        limit: Option<usize>,
        line_numbers: bool,
    ) -> Result<ReadOutcome, WorkspaceError> {
        let (mut f, meta) = self.open_regular(path)?;
        let size = meta.len();
        let mut head = vec![0u8; 8192];
        let n = read_full(&mut f, &mut head).map_err(io_err(path))?;
        head.truncate(n);
        if let Some((kind, is_image)) = sniff(&head) {
            if is_image {
                if size > MAX_IMAGE_BYTES {
                    return Ok(ReadOutcome::Binary {
                        description: format!(
                            "{}: {kind} image of {} — larger than the {} limit for returning images; downscale it in Python first",
                            path.display(),
                            human(size),
                            human(MAX_IMAGE_BYTES)
                        ),
                    });
                }
                let mut bytes = head;
                f.read_to_end(&mut bytes).map_err(io_err(path))?;
                let mime = match kind {
                    "image/png" => "image/png",
                    "image/jpeg" => "image/jpeg",
                    "image/gif" => "image/gif",
                    _ => "image/webp",
                };
                return Ok(ReadOutcome::Image { mime, bytes });
            }
            return Ok(ReadOutcome::Binary {
                description: format!(
                    "{}: binary file, {kind}, {}. Load it from Python with execute_python.",
                    path.display(),
                    human(size)
                ),
            });
        }
        if head.contains(&0) {
            return Ok(ReadOutcome::Binary {
                description: format!(
                    "{}: binary file of unknown type, {}. Inspect it from Python with execute_python.",
                    path.display(),
                    human(size)
                ),
            });
        }
        f.seek(SeekFrom::Start(0)).map_err(io_err(path))?;
        let first = offset.unwrap_or(1).max(1);
        let limit = limit.unwrap_or(DEFAULT_READ_LINES).clamp(1, 100_000);
        let mut reader = std::io::BufReader::new(f);
        let mut out = String::new();
        let mut line_no = 0usize;
        let mut buf = Vec::new();
        let mut lossy = false;
        let mut shown = 0usize;
        let mut more = false;
        let mut cut_chars = false;
        let mut scanned = 0u64;
        let mut too_far = false;
        loop {
            buf.clear();
            let n = read_line_capped(&mut reader, &mut buf, MAX_READ_CHARS + 1)
                .map_err(io_err(path))?;
            if n == 0 {
                break;
            }
            line_no += 1;
            scanned += n as u64;
            if line_no < first {
                if scanned > MAX_SKIP_BYTES {
                    too_far = true;
                    break;
                }
                continue;
            }
            if shown >= limit {
                more = true;
                break;
            }
            let text = match std::str::from_utf8(&buf) {
                Ok(t) => std::borrow::Cow::Borrowed(t),
                Err(_) => {
                    lossy = true;
                    String::from_utf8_lossy(&buf)
                }
            };
            if out.len() + text.len() > MAX_READ_CHARS {
                let room = MAX_READ_CHARS.saturating_sub(out.len());
                if shown == 0 {
                    let mut cut = room.min(text.len());
                    while cut > 0 && !text.is_char_boundary(cut) {
                        cut -= 1;
                    }
                    out.push_str(text.get(..cut).unwrap_or(""));
                    shown = 1;
                    cut_chars = true;
                }
                more = true;
                break;
            }
            if line_numbers {
                out.push_str(&format!("{line_no:>6}\t"));
            }
            out.push_str(&text);
            shown += 1;
        }
        let mut notes = Vec::new();
        if too_far {
            notes.push(format!(
                "offset {first} lies beyond the first {} of the file; read that part from Python",
                human(MAX_SKIP_BYTES)
            ));
        } else if first > 1 && shown == 0 {
            notes.push(format!(
                "the file has only {line_no} lines; offset {first} is past the end"
            ));
        }
        if more {
            let last = first + shown.saturating_sub(1);
            if cut_chars {
                notes.push(format!(
                    "line {first} is longer than {MAX_READ_CHARS} characters and was cut; read the rest from Python"
                ));
            } else {
                notes.push(format!(
                    "showing lines {first}-{last} of a {} file; call read_file with offset={} to read on",
                    human(size),
                    last + 1
                ));
            }
        }
        if lossy {
            notes.push("the file is not valid UTF-8; undecodable bytes are shown as U+FFFD".into());
        }
        Ok(ReadOutcome::Text {
            text: out,
            note: if notes.is_empty() {
                None
            } else {
                Some(notes.join("; "))
            },
        })
    }

    /// Reads a whole small file's bytes (for resources), refusing non-regular files and big files.
    pub fn read_bytes(&self, path: &WorkspacePath, max: u64) -> Result<Vec<u8>, WorkspaceError> {
        let (f, meta) = self.open_regular(path)?;
        if meta.len() > max {
            return Err(WorkspaceError::TooLarge {
                what: format!(
                    "{} is {}; the limit here is {}",
                    path.display(),
                    human(meta.len()),
                    human(max)
                ),
            });
        }
        let mut bytes = Vec::new();
        f.take(max + 1)
            .read_to_end(&mut bytes)
            .map_err(io_err(path))?;
        Ok(bytes)
    }
}

fn read_full(f: &mut std::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(buf.get_mut(n..).unwrap_or_default()) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Reads one line (with its newline) but never more than `cap` bytes of it.
fn read_line_capped<R: std::io::BufRead>(
    r: &mut R,
    buf: &mut Vec<u8>,
    cap: usize,
) -> std::io::Result<usize> {
    let mut total = 0;
    loop {
        let chunk = r.fill_buf()?;
        if chunk.is_empty() {
            return Ok(total);
        }
        let (take, done) = match chunk.iter().position(|&b| b == b'\n') {
            Some(i) => (i + 1, true),
            None => (chunk.len(), false),
        };
        let room = cap.saturating_sub(buf.len());
        buf.extend_from_slice(chunk.get(..take.min(room)).unwrap_or_default());
        r.consume(take);
        total += take;
        if done {
            return Ok(total);
        }
        if buf.len() >= cap {
            // Skip the rest of an over-long line.
            continue;
        }
    }
}
