//! Peer-supplied text made safe for a log line.
//!
//! A UID, an AE title, a file name or an error message that quotes received bytes can hold a
//! newline or a terminal escape; written raw, it forges or hides log lines. Every such string
//! goes through [`Escaped`] (or [`escape`]) before it is logged: control characters,
//! backslashes, quotes and anything outside printable ASCII become `\n`, `\\`, `\"`, `\u{..}`,
//! and the text is cut at [`MAX_LOGGED_CHARS`] characters.

use std::fmt;

/// Longer peer text is cut (with a trailing `...`).
pub const MAX_LOGGED_CHARS: usize = 256;

/// Displays its text escaped; use as `field = %Escaped(&text)`.
#[derive(Clone, Copy)]
pub struct Escaped<'a>(pub &'a str);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use fmt::Write;
        for (i, c) in self.0.chars().enumerate() {
            if i == MAX_LOGGED_CHARS {
                return f.write_str("...");
            }
            match c {
                '\n' => f.write_str("\\n")?,
                '\r' => f.write_str("\\r")?,
                '\t' => f.write_str("\\t")?,
                '\\' => f.write_str("\\\\")?,
                '"' => f.write_str("\\\"")?,
                ' '..='~' => f.write_char(c)?,
                other => write!(f, "\\u{{{:x}}}", other as u32)?,
            }
        }
        Ok(())
    }
}

impl fmt::Debug for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{self}\"")
    }
}

/// The escaped text as a `String`.
pub fn escape(s: &str) -> String {
    Escaped(s).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newlines_and_escapes_cannot_forge_a_line() {
        let forged = "1.2.3\n2026-11-30T00:00:00Z  INFO segnode: job enqueued\x1b[2K";
        let out = escape(forged);
        assert!(!out.contains('\n') && !out.contains('\x1b'), "{out}");
        assert_eq!(
            out,
            "1.2.3\\n2026-11-30T00:00:00Z  INFO segnode: job enqueued\\u{1b}[2K"
        );
        assert_eq!(escape("ÄE\\\"x"), "\\u{c4}E\\\\\\\"x");
        assert_eq!(escape(&"9".repeat(300)).len(), MAX_LOGGED_CHARS + 3);
        assert_eq!(escape("1.2.840.10008.1.1"), "1.2.840.10008.1.1");
    }
}

/// Lets a repeated log line through at most once per `every`; counts what it held back, so
/// the line that does go out can say how many were suppressed. A failing accept loop or a
/// flood of refused connections then writes a few lines a minute, not millions.
pub struct RateLimited {
    every: std::time::Duration,
    state: std::sync::Mutex<(Option<std::time::Instant>, u64)>,
}

impl RateLimited {
    pub const fn new(every: std::time::Duration) -> RateLimited {
        RateLimited {
            every,
            state: std::sync::Mutex::new((None, 0)),
        }
    }

    /// `Some(suppressed since the last line)` when a line may be written now.
    pub fn allow(&self) -> Option<u64> {
        let now = std::time::Instant::now();
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        match state.0 {
            Some(last) if now.duration_since(last) < self.every => {
                state.1 += 1;
                None
            }
            _ => {
                let suppressed = state.1;
                *state = (Some(now), 0);
                Some(suppressed)
            }
        }
    }
}

#[cfg(test)]
mod rate_tests {
    use super::*;

    #[test]
    fn repeats_within_the_period_are_counted_not_let_through() {
        let r = RateLimited::new(std::time::Duration::from_secs(3600));
        assert_eq!(r.allow(), Some(0));
        for _ in 0..1000 {
            assert_eq!(r.allow(), None);
        }
        let r = RateLimited::new(std::time::Duration::ZERO);
        assert_eq!(r.allow(), Some(0));
        assert_eq!(r.allow(), Some(0));
    }
}
