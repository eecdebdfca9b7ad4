//! The rules for names that travel between safd, its plugins and the
//! servers it delivers to: agent ids, stream (source) names, group and
//! member names.
//!
//! A name is 1 to [`MAX_NAME_BYTES`] bytes of printable UTF-8: no control
//! characters (U+0000–U+001F, U+007F–U+009F), no invisible formatting
//! characters that make two names look alike or reorder a terminal line
//! (zero-width characters, bidirectional overrides, line and paragraph
//! separators, the byte-order mark), and no white space at either end.
//! safd's `check` refuses a configuration that breaks them and safd-mgmt
//! refuses a request that does, so a name is the same text everywhere it is
//! shown, stored or compared.
//!
//! [`quote`] is for the other direction: showing text that broke a rule (or
//! any text a client chose) in a message or a log without letting its size
//! or its control characters through.

use std::fmt;

/// The longest name, in bytes of UTF-8.
pub const MAX_NAME_BYTES: usize = 128;

/// Why a name breaks the rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NameError {
    Empty,
    TooLong { bytes: usize },
    Forbidden { character: char, at: usize },
    Padded,
}

impl fmt::Display for NameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Empty => f.write_str("is empty"),
            Self::TooLong { bytes } => write!(
                f,
                "is {bytes} bytes long; a name has at most {MAX_NAME_BYTES} bytes"
            ),
            Self::Forbidden { character, at } => write!(
                f,
                "contains U+{:04X} ({}) at byte {at}; a name is printable text without \
                 control or invisible formatting characters",
                u32::from(*character),
                if character.is_control() {
                    "a control character"
                } else {
                    "an invisible formatting character"
                }
            ),
            Self::Padded => f.write_str("begins or ends with white space"),
        }
    }
}

impl std::error::Error for NameError {}

/// Characters a name may not contain.
pub fn is_forbidden(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            // Zero-width space, non-joiner, joiner, left-to-right and
            // right-to-left marks.
            '\u{200B}'..='\u{200F}'
            // Line and paragraph separators, bidirectional embeddings and
            // overrides.
            | '\u{2028}'..='\u{202E}'
            // Word joiner, invisible operators, bidirectional isolates and
            // the deprecated format characters after them.
            | '\u{2060}'..='\u{206F}'
            // Byte-order mark (zero-width no-break space).
            | '\u{FEFF}'
            // Interlinear annotation characters.
            | '\u{FFF9}'..='\u{FFFB}'
        )
}

/// Check `name` against the rules.
pub fn check(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.len() > MAX_NAME_BYTES {
        return Err(NameError::TooLong { bytes: name.len() });
    }
    if let Some((at, character)) = name.char_indices().find(|&(_, c)| is_forbidden(c)) {
        return Err(NameError::Forbidden { character, at });
    }
    if name.trim() != name {
        return Err(NameError::Padded);
    }
    Ok(())
}

/// Why `token` cannot travel in an HTTP `Authorization` header, if it
/// cannot: a bearer token is printable ASCII without spaces (a CR or LF
/// would end the header).
pub fn header_token_problem(token: &str) -> Option<String> {
    let (at, c) = token.char_indices().find(|&(_, c)| !c.is_ascii_graphic())?;
    Some(format!(
        "contains U+{:04X} at byte {at}, which cannot travel in an HTTP header; a token is \
         printable ASCII without spaces",
        u32::from(c)
    ))
}

/// How many characters of client-chosen text a message quotes.
pub const QUOTE_CHARS: usize = 64;

/// `text` as a message may show it: at most `max_chars` characters, each
/// forbidden character written as `\u{…}`, and the full length in bytes
/// after an ellipsis when it was cut.
pub fn quote(text: &str, max_chars: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max_chars.saturating_mul(2)) + 2);
    for (shown, c) in text.chars().enumerate() {
        if shown == max_chars {
            out.push_str(&format!("… ({} bytes)", text.len()));
            return out;
        }
        if is_forbidden(c) {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printable_names_pass() {
        for name in [
            "prod1-safd",
            "ems-prod1",
            "\\PROD1.$0",
            "Zürich 2",
            "a",
            "名前",
        ] {
            assert_eq!(check(name), Ok(()), "{name}");
        }
        assert_eq!(check(&"x".repeat(MAX_NAME_BYTES)), Ok(()));
    }

    #[test]
    fn every_control_character_is_refused_wherever_it_stands() {
        for c in (0u32..0x20).chain(0x7f..0xa0).filter_map(char::from_u32) {
            for name in [format!("{c}ab"), format!("a{c}b"), format!("ab{c}")] {
                let err = check(&name).unwrap_err();
                assert!(
                    matches!(err, NameError::Forbidden { character, .. } if character == c),
                    "{name:?}: {err}"
                );
            }
        }
    }

    #[test]
    fn invisible_and_oversized_and_padded_names_are_refused() {
        assert_eq!(check(""), Err(NameError::Empty));
        assert_eq!(
            check(&"x".repeat(MAX_NAME_BYTES + 1)),
            Err(NameError::TooLong {
                bytes: MAX_NAME_BYTES + 1
            })
        );
        for c in ['\u{200B}', '\u{202E}', '\u{2066}', '\u{FEFF}', '\u{2028}'] {
            assert!(check(&format!("a{c}b")).is_err(), "U+{:04X}", c as u32);
        }
        assert_eq!(check(" a"), Err(NameError::Padded));
        assert_eq!(check("a\u{3000}"), Err(NameError::Padded));
    }

    #[test]
    fn header_tokens_are_printable_ascii() {
        assert_eq!(header_token_problem("s3cret-Token_1.~+/="), None);
        let problem = header_token_problem("a\r\nX: 1").unwrap();
        assert!(
            problem.starts_with("contains U+000D at byte 1"),
            "{problem}"
        );
        assert!(header_token_problem("a b").is_some());
        assert!(header_token_problem("é").is_some());
    }

    #[test]
    fn quotes_are_short_and_show_control_characters_escaped() {
        assert_eq!(quote("a\u{0}b\nc", 10), "a\\u{0}b\\u{a}c");
        let long = "y".repeat(10_000_000);
        let quoted = quote(&long, QUOTE_CHARS);
        assert_eq!(quoted, format!("{}… (10000000 bytes)", "y".repeat(64)));
        assert_eq!(quote("abc", 3), "abc");
    }
}
