//! Numbers from the command line and from tool arguments -> bounded durations and sizes.
//! Pure parsing and clamping: every value is checked before it reaches `Duration` or
//! `Instant` arithmetic, which panics on overflow.

use std::time::Duration;

/// Longest duration any flag accepts: 30 days. Far beyond any sensible timeout, and small
/// enough that `Instant::now() + d` can never overflow.
pub const MAX_FLAG_SECONDS: f64 = 30.0 * 24.0 * 3600.0;

/// Shortest timeout a call may ask for; shorter requests are raised to it (the result says so).
pub const MIN_CALL_TIMEOUT: f64 = 0.1;

/// Largest `--output-budget` (characters kept in memory per call before head/tail truncation).
pub const MAX_OUTPUT_BUDGET: usize = 100_000_000;

/// Largest `--max-queue`.
pub const MAX_QUEUE: usize = 100_000;

/// Largest `--max-images`.
pub const MAX_IMAGES: usize = 10_000;

/// Parses a positive number of seconds for a duration flag (`--timeout 90`, `--interrupt-grace 0.5`).
///
/// # Errors
/// A message for clap when the text is not a number, is not finite, is zero or negative, or is
/// above [`MAX_FLAG_SECONDS`].
/// Like [`parse_seconds`], also taking `0` (a switch-off value, e.g. `--return-after 0`).
pub fn parse_seconds_or_zero(s: &str) -> Result<Duration, String> {
    if s.trim().parse::<f64>() == Ok(0.0) {
        return Ok(Duration::ZERO);
    }
    parse_seconds(s)
}

pub fn parse_seconds(s: &str) -> Result<Duration, String> {
    let v: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a number of seconds"))?;
    if !v.is_finite() || v <= 0.0 {
        return Err(format!("{s:?}: give a positive number of seconds"));
    }
    if v > MAX_FLAG_SECONDS {
        return Err(format!(
            "{s:?}: at most {MAX_FLAG_SECONDS:.0} seconds (30 days)"
        ));
    }
    Duration::try_from_secs_f64(v).map_err(|e| format!("{s:?}: {e}"))
}

/// A byte limit from a flag such as `--memory-limit 4G`; `None` means no limit (`0`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SizeLimit(pub Option<u64>);

/// Parses a size like `4G`, `512M`, `1.5GiB`, `1000` (bytes) or `0` (no limit).
///
/// # Errors
/// A message for clap when the text is not a size, is negative or not finite, or does not fit
/// in 64 bits.
pub fn parse_size(s: &str) -> Result<SizeLimit, String> {
    let t = s.trim().to_ascii_lowercase();
    let t = t.trim_end_matches("ib").trim_end_matches('b');
    let units = [
        ('k', 1u64 << 10),
        ('m', 1 << 20),
        ('g', 1 << 30),
        ('t', 1 << 40),
    ];
    let (num, mult) = units
        .iter()
        .find_map(|&(u, m)| t.strip_suffix(u).map(|n| (n, m)))
        .unwrap_or((t, 1));
    let n: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a size like 4G or 512M"))?;
    if !n.is_finite() || n < 0.0 {
        return Err(format!("{s:?} is not a size like 4G or 512M"));
    }
    let bytes = n * mult as f64;
    // u64::MAX as f64 rounds up to 2^64, so `<` keeps the cast exact-or-below.
    if bytes >= u64::MAX as f64 {
        return Err(format!(
            "{s:?} is too large (at most 16 EiB); use 0 for no limit"
        ));
    }
    let bytes = bytes as u64;
    Ok(SizeLimit((bytes > 0).then_some(bytes)))
}

/// Bytes as a person reads them: "180 B", "1.5 KiB", "2.0 GiB".
pub fn human_bytes(n: u64) -> String {
    const U: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i < U.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", U.get(i).unwrap_or(&"B"))
    }
}

/// A count flag bounded to `1..=max`.
///
/// # Errors
/// A message for clap when the text is not a whole number in range.
/// `--max-image-bytes`: a size from 16K to 64M.
pub fn parse_image_bytes(s: &str) -> Result<usize, String> {
    let n = parse_size(s)?
        .0
        .ok_or_else(|| format!("{s:?}: give a size from 16K to 64M"))?;
    match usize::try_from(n) {
        Ok(n) if ((16 << 10)..=(64 << 20)).contains(&n) => Ok(n),
        _ => Err(format!("{s:?}: give a size from 16K to 64M")),
    }
}

pub fn parse_count(s: &str, max: usize) -> Result<usize, String> {
    let n: u128 = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a whole number"))?;
    match usize::try_from(n) {
        Ok(n) if (1..=max).contains(&n) => Ok(n),
        _ => Err(format!("{s:?}: give a whole number from 1 to {max}")),
    }
}

/// A number as a person would write it: `1e308` rather than 309 digits.
fn show(t: f64) -> String {
    if t != 0.0 && t.is_finite() && !(1e-3..1e9).contains(&t.abs()) {
        format!("{t:e}")
    } else {
        format!("{t}")
    }
}

/// The timeout a tool call runs with, and a note for the result when the request was adjusted.
///
/// `None` uses `default`. A request above `max` is lowered to it, one below
/// [`MIN_CALL_TIMEOUT`] is raised to it; both say so in the note.
///
/// # Errors
/// The sentence for the model when the number is zero, negative or not finite (nothing runs).
pub fn call_timeout(
    requested: Option<f64>,
    default: Duration,
    max: Duration,
) -> Result<(Duration, Option<String>), String> {
    let Some(t) = requested else {
        return Ok((default.min(max), None));
    };
    if !t.is_finite() || t <= 0.0 {
        return Err(format!(
            "timeout_seconds must be a positive number of seconds (got {}); at most {}. Nothing was run.",
            show(t),
            max.as_secs_f64()
        ));
    }
    if t > max.as_secs_f64() {
        return Ok((
            max,
            Some(format!(
                "timeout_seconds={} is above the server maximum; {} s was used",
                show(t),
                max.as_secs_f64()
            )),
        ));
    }
    if t < MIN_CALL_TIMEOUT {
        return Ok((
            Duration::from_millis(100),
            Some(format!(
                "timeout_seconds={} is below the {MIN_CALL_TIMEOUT} s minimum; {MIN_CALL_TIMEOUT} s was used",
                show(t)
            )),
        ));
    }
    // In range, so finite and small: the conversion cannot fail; fall back to max anyway.
    Ok((Duration::try_from_secs_f64(t).unwrap_or(max), None))
}

/// Longest line (one JSON-RPC message) the stdio transport takes (`stdin_guard::MAX_LINE`);
/// also what bounds the largest message kernel-mcp sends a gateway kernel.
pub const MAX_STDIO_LINE: usize = 48 * 1024 * 1024;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_flags_refuse_extremes() {
        for bad in [
            "1e308", "-1", "0", "-0", "nan", "NaN", "inf", "-inf", "soon", "", "1e-400",
        ] {
            assert!(parse_seconds(bad).is_err(), "{bad:?} was accepted");
        }
        assert_eq!(parse_seconds("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_seconds(" 0.5 "), Ok(Duration::from_millis(500)));
        assert_eq!(parse_seconds("2592000"), Ok(Duration::from_secs(2_592_000)));
        assert!(parse_seconds("2592001").is_err());
        assert!(parse_seconds("1e308")
            .err()
            .is_some_and(|e| e.contains("at most 2592000 seconds")));
    }

    #[test]
    fn sizes_parse_and_refuse_extremes() {
        assert_eq!(parse_size("4G"), Ok(SizeLimit(Some(4 << 30))));
        assert_eq!(parse_size("512MiB"), Ok(SizeLimit(Some(512 << 20))));
        assert_eq!(parse_size("1000"), Ok(SizeLimit(Some(1000))));
        assert_eq!(parse_size("0"), Ok(SizeLimit(None)));
        for bad in [
            "1e308G",
            "1e400",
            "-1G",
            "nan",
            "inf",
            "16E",
            "lots",
            "17179869184G",
        ] {
            assert!(parse_size(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn counts_are_bounded() {
        assert_eq!(parse_count("16", MAX_QUEUE), Ok(16));
        for bad in ["0", "-1", "1e308", "18446744073709551616", "100001", "x"] {
            assert!(parse_count(bad, MAX_QUEUE).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn call_timeouts_are_refused_or_clamped_with_a_note() {
        let (d, m) = (Duration::from_secs(60), Duration::from_secs(3600));
        assert_eq!(call_timeout(None, d, m), Ok((d, None)));
        assert_eq!(
            call_timeout(Some(5.0), d, m),
            Ok((Duration::from_secs(5), None))
        );
        for bad in [0.0, -0.0, -5.0, f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            let e = call_timeout(Some(bad), d, m).err().unwrap_or_default();
            assert!(
                e.starts_with("timeout_seconds must be a positive number"),
                "{bad}: {e}"
            );
        }
        let (t, note) = call_timeout(Some(1e308), d, m).unwrap_or_default();
        assert_eq!(t, m);
        assert_eq!(
            note.as_deref(),
            Some("timeout_seconds=1e308 is above the server maximum; 3600 s was used")
        );
        let (t, note) = call_timeout(Some(1e-300), d, m).unwrap_or_default();
        assert_eq!(t, Duration::from_millis(100));
        assert!(note.is_some_and(|n| n.contains("below the 0.1 s minimum")));
        // A default above the maximum is lowered too.
        assert_eq!(
            call_timeout(None, Duration::from_secs(7200), m),
            Ok((m, None))
        );
    }
}
