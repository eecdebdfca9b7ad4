//! What a plugin logs reaches the operator's terminal and log files: it is
//! capped in length and its control characters are escaped, so a plugin
//! (or an event it echoes) can neither forge log lines with line breaks
//! nor drive a terminal with escape sequences, nor fill the log with one
//! enormous record.

use std::fmt::Write;

/// Longest message kept from one log call or output line.
pub(crate) const MAX_MESSAGE: usize = 8 * 1024;
/// Longest field key or value kept.
pub(crate) const MAX_FIELD: usize = 1024;
/// Most fields kept from one log call.
pub(crate) const MAX_FIELDS: usize = 32;

/// `text` cut to at most `max` bytes (at a character boundary, marked),
/// with every control character written as an escape (`\n`, `\u{1b}`).
pub(crate) fn clean(text: &str, max: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max) + 16);
    for c in text.chars() {
        if out.len() >= max {
            out.push_str(" [truncated]");
            return out;
        }
        if c.is_control() {
            let _ = write!(out, "{}", c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// A log call's fields as `key=value` pairs, each cleaned, at most
/// [`MAX_FIELDS`] of them.
pub(crate) fn fields(fields: &[(String, String)]) -> String {
    let mut out = String::new();
    for (i, (key, value)) in fields.iter().enumerate() {
        if i == MAX_FIELDS {
            let _ = write!(out, " [{} more fields]", fields.len() - MAX_FIELDS);
            break;
        }
        if i > 0 {
            out.push(' ');
        }
        out.push_str(&clean(key, MAX_FIELD));
        out.push('=');
        out.push_str(&clean(value, MAX_FIELD));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped_and_length_capped() {
        assert_eq!(
            clean("a\nforged line\r\u{1b}[31mred\u{7}", 100),
            "a\\nforged line\\r\\u{1b}[31mred\\u{7}"
        );
        let long = "é".repeat(10_000);
        let cut = clean(&long, MAX_MESSAGE);
        assert!(cut.len() <= MAX_MESSAGE + 16 && cut.ends_with(" [truncated]"));
        assert_eq!(clean("plain text", 100), "plain text");
    }

    #[test]
    fn fields_are_cleaned_and_counted() {
        let many: Vec<(String, String)> = (0..40)
            .map(|i| (format!("k{i}"), format!("v\n{i}")))
            .collect();
        let text = fields(&many);
        assert!(text.starts_with("k0=v\\n0 k1=v\\n1"), "{text}");
        assert!(text.ends_with(" [8 more fields]"), "{text}");
        assert!(!text.contains('\n'));
    }
}
