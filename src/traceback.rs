//! Tracebacks shaped for a model: the user's frames and the frame that raised are kept, other
//! library frames shrink to their location line, IPython's filler is dropped, the total is capped.
//! Works on IPython's structured traceback (one chunk per frame), already ANSI-stripped.

/// Longest shortened traceback, in characters.
pub const MAX_TRACEBACK_CHARS: usize = 6000;

/// IPython's placeholder for frames without Python source (Cython, C extensions).
const NO_SOURCE: &str = "Could not get source, probably due dynamically evaluated source code.";

/// A traceback for reading, and whether anything beyond filler was left out.
#[derive(Debug, Clone, PartialEq)]
pub struct Shortened {
    pub text: String,
    pub shortened: bool,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Frame {
    User,
    Library,
}

/// What kind of frame a chunk is, from its first line: `Cell In[3], line 4, in f()`,
/// `Input In [3], ...` or `File <path>:<line>, in f()`.
fn frame_kind(chunk: &str) -> Option<Frame> {
    let first = chunk.lines().next().unwrap_or("");
    if first.starts_with("Cell In[") || first.starts_with("Input In [") {
        return Some(Frame::User);
    }
    let path = first.strip_prefix("File ")?;
    let path = path.split([':', ',']).next().unwrap_or(path);
    let library = path.contains("site-packages")
        || path.contains("dist-packages")
        || path.contains("/lib/python")
        || path.starts_with("<frozen")
        || path.ends_with(".pyx")
        || path.ends_with(".pxi")
        || !(path.starts_with('/') || path.starts_with('~') || path.starts_with('.'));
    Some(if library { Frame::Library } else { Frame::User })
}

/// A chunk without IPython's filler lines.
fn without_filler(chunk: &str) -> String {
    chunk
        .lines()
        .filter(|l| !l.contains(NO_SOURCE))
        .collect::<Vec<_>>()
        .join("\n")
}

fn is_rule(s: &str) -> bool {
    let t = s.trim();
    t.len() >= 20 && t.chars().all(|c| c == '-')
}

fn cut_chars(s: &str, max: usize) -> (&str, &str) {
    let mut head = s.len().min(max);
    while head > 0 && !s.is_char_boundary(head) {
        head -= 1;
    }
    (s.get(..head).unwrap_or(""), s.get(head..).unwrap_or(""))
}

/// Shortens IPython traceback chunks (ANSI already removed) for a model to read.
pub fn for_model(chunks: &[String], cap: usize) -> Shortened {
    let raising = chunks.iter().rposition(|c| frame_kind(c).is_some());
    let mut out: Vec<String> = Vec::new();
    let mut shortened = false;
    for (i, chunk) in chunks.iter().enumerate() {
        let t = chunk.trim_end();
        if t.trim().is_empty() || is_rule(t) {
            continue;
        }
        match frame_kind(t) {
            Some(Frame::User) => out.push(without_filler(t)),
            Some(Frame::Library) if Some(i) == raising => {
                // The location and the line that raised; the surrounding library source goes.
                let mut lines = t.lines();
                let mut kept = vec![lines.next().unwrap_or("").to_owned()];
                let rest: Vec<&str> = lines.collect();
                let arrow: Vec<&str> = rest
                    .iter()
                    .copied()
                    .filter(|l| l.trim_start().starts_with("-") && l.contains('>'))
                    .filter(|l| !l.contains(NO_SOURCE))
                    .collect();
                shortened |= rest.len() > arrow.len();
                kept.extend(arrow.into_iter().map(str::to_owned));
                out.push(kept.join("\n"));
            }
            Some(Frame::Library) => {
                let first = t.lines().next().unwrap_or("");
                shortened |= t.lines().skip(1).any(|l| !l.contains(NO_SOURCE));
                out.push(first.to_owned());
            }
            None if t.contains("Traceback (most recent call last)") => {
                out.push("Traceback (most recent call last):".to_owned());
            }
            None => out.push(without_filler(t).trim().to_owned()),
        }
    }
    let text = out.join("\n");
    if text.chars().count() <= cap {
        return Shortened { text, shortened };
    }
    let head_len = cap / 4;
    let (head, _) = cut_chars(&text, head_len);
    let tail_start = text.len().saturating_sub(cap - head_len);
    let mut start = tail_start;
    while start < text.len() && !text.is_char_boundary(start) {
        start += 1;
    }
    let tail = text.get(start..).unwrap_or("");
    Shortened {
        text: format!("{head}\n[... traceback shortened ...]\n{tail}"),
        shortened: true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunks(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn keeps_user_frames_and_the_raising_line() {
        let tb = chunks(&[
            "---------------------------------------------------------------------------",
            "KeyError                                  Traceback (most recent call last)",
            "File ~/env/lib/python3.11/site-packages/pandas/core/indexes/base.py:3816, in Index.get_loc(self, key)\n   3815 try:\n-> 3816     return self._engine.get_loc(casted_key)\n   3817 except KeyError as err:\n",
            "File pandas/_libs/index.pyx:172, in pandas._libs.index.IndexEngine.get_loc()\n--> 172 'Could not get source, probably due dynamically evaluated source code.'\n",
            "KeyError: 'b'",
            "\nThe above exception was the direct cause of the following exception:\n",
            "KeyError                                  Traceback (most recent call last)",
            "Cell In[1], line 4, in load()\n      2 def load():\n      3     df = pd.DataFrame({'a': [1]})\n----> 4     return df['b']\n",
            "File ~/env/lib/python3.11/site-packages/pandas/core/frame.py:4330, in DataFrame.__getitem__(self, key)\n   4329 x\n-> 4330             indexer = self.columns.get_loc(key)\n   4331 y\n",
            "File ~/env/lib/python3.11/site-packages/pandas/core/indexes/base.py:3823, in Index.get_loc(self, key)\n   3822 z\n-> 3823     raise KeyError(key) from err\n   3824 except TypeError:\n",
            "KeyError: 'b'",
        ]);
        let s = for_model(&tb, MAX_TRACEBACK_CHARS);
        assert_eq!(
            s.text,
            "Traceback (most recent call last):\n\
             File ~/env/lib/python3.11/site-packages/pandas/core/indexes/base.py:3816, in Index.get_loc(self, key)\n\
             File pandas/_libs/index.pyx:172, in pandas._libs.index.IndexEngine.get_loc()\n\
             KeyError: 'b'\n\
             The above exception was the direct cause of the following exception:\n\
             Traceback (most recent call last):\n\
             Cell In[1], line 4, in load()\n      2 def load():\n      3     df = pd.DataFrame({'a': [1]})\n----> 4     return df['b']\n\
             File ~/env/lib/python3.11/site-packages/pandas/core/frame.py:4330, in DataFrame.__getitem__(self, key)\n\
             File ~/env/lib/python3.11/site-packages/pandas/core/indexes/base.py:3823, in Index.get_loc(self, key)\n\
             -> 3823     raise KeyError(key) from err\n\
             KeyError: 'b'"
        );
        assert!(s.shortened);
    }

    #[test]
    fn a_user_only_traceback_is_not_shortened() {
        let tb = chunks(&[
            "Cell In[2], line 1\n----> 1 1/0\n",
            "ZeroDivisionError: division by zero",
        ]);
        let s = for_model(&tb, MAX_TRACEBACK_CHARS);
        assert_eq!(
            s.text,
            "Cell In[2], line 1\n----> 1 1/0\nZeroDivisionError: division by zero"
        );
        assert!(!s.shortened);
        // Scripts run from the workspace are the user's too.
        assert_eq!(
            frame_kind("File /work/ws/script.py:3\n----> 3 f()"),
            Some(Frame::User)
        );
    }

    #[test]
    fn the_total_is_capped() {
        let user = "Cell In[1], line 1, in f()\n----> 1 f()\n".to_owned();
        let tb: Vec<String> = std::iter::repeat_n(user, 5000).collect();
        let s = for_model(&tb, 1000);
        assert!(s.text.chars().count() < 1100);
        assert!(s.shortened);
        assert!(s.text.contains("[... traceback shortened ...]"));
        // Multi-byte text is cut on character boundaries.
        let tb = vec!["é".repeat(5000)];
        let s = for_model(&tb, 999);
        assert!(s.shortened);
    }
}
