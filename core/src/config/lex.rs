//! The one reader of a config's lines: what is a comment, a section header
//! or a `Key = Value`, and what a value means once comments and quotes are
//! taken off. [`Config::parse`](super::Config::parse) reads its lines with
//! it, and so does anything that looks at a config's text before parsing
//! it (the binary's `WGConfig =` imports and `$VAR` values), so both agree
//! on where a comment starts.
//!
//! The comment rule is wireproxy's (go-ini as wireproxy sets it up), so a
//! wireproxy config means here what it meant there: a line whose first
//! non-blank character is `#` or `;` is a comment; in a value, a `#` or `;`
//! anywhere starts a comment, unless the value is in backquotes or triple
//! double quotes. There are no line continuations.

use super::error::ConfigErrorKind;
use super::parse::shown;

/// One line of a config, as the lexer reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line<'a> {
    /// Blank, or a comment.
    Nothing,
    /// `[Name]`: the name, trimmed, without the brackets; a comment after
    /// the header is allowed.
    Header(&'a str),
    /// `Key = Value`.
    Setting {
        /// As written, trimmed.
        key: &'a str,
        /// The value's text: comment cut off, quotes removed (see
        /// [`ini_value`]).
        value: String,
        /// The comment mark, when it came right after the value's text
        /// (`pa#ss`): the user probably meant it as part of the value.
        glued: Option<char>,
    },
}

/// Reads one line. The error is what makes the line neither a comment, a
/// header nor a setting.
pub fn lex_line(raw: &str) -> Result<Line<'_>, ConfigErrorKind> {
    let text = raw.trim();
    if text.is_empty() || text.starts_with(['#', ';']) {
        return Ok(Line::Nothing);
    }
    if text.starts_with('[') {
        let text = strip_comment(text).trim_end();
        let name = text.strip_prefix('[').and_then(|t| t.strip_suffix(']'));
        let name = name
            .map(str::trim)
            .filter(|name| !name.is_empty() && !name.contains(['[', ']']));
        return name
            .map(Line::Header)
            .ok_or_else(|| ConfigErrorKind::MalformedHeader(shown(text)));
    }
    match text.split_once('=') {
        Some((key, value)) if !key.trim().is_empty() => {
            let (value, glued) = ini_value(value);
            let key = key.trim();
            Ok(Line::Setting { key, value, glued })
        }
        _ => Err(ConfigErrorKind::NotKeyValue),
    }
}

/// The lines of a config's text, numbered from 1, without a leading byte
/// order mark; CRLF line ends are accepted.
pub fn numbered_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    text.lines().enumerate().map(|(i, line)| (i + 1, line))
}

/// Cuts a comment off a header line: at the first `#` or `;`.
fn strip_comment(text: &str) -> &str {
    text.find(['#', ';']).map_or(text, |i| &text[..i])
}

/// A value as wireproxy's INI library (go-ini, as wireproxy sets it up)
/// reads it, so a wireproxy config means here what it meant there: text
/// in backquotes or triple double quotes is taken as it is; otherwise a
/// `#` or `;` anywhere starts a comment, and one pair of quotes around
/// what is left is removed. Also returns the comment mark when it came
/// right after the value's text (`pa#ss`), which is worth a warning.
pub fn ini_value(raw: &str) -> (String, Option<char>) {
    let text = raw.trim();
    for quote in ["\"\"\"", "`"] {
        if let Some(rest) = text.strip_prefix(quote) {
            if let Some(end) = rest.rfind(quote) {
                return (rest[..end].to_string(), None);
            }
        }
    }
    let (text, glued) = match text.char_indices().find(|(_, c)| matches!(c, '#' | ';')) {
        Some((i, mark)) => {
            let before = &text[..i];
            let glued = !before.is_empty() && !before.ends_with(char::is_whitespace);
            (before.trim_end(), glued.then_some(mark))
        }
        None => (text, None),
    };
    let unquoted = ['"', '\''].into_iter().find_map(|q| {
        let inner = text.strip_prefix(q)?.strip_suffix(q)?;
        (!inner.contains(q)).then_some(inner)
    });
    (unquoted.unwrap_or(text).to_string(), glued)
}

/// `value` written so that [`ini_value`] reads it back unchanged: as it
/// is, in backquotes, or in triple double quotes.
pub fn ini_quoted(value: &str) -> String {
    [
        value.to_string(),
        format!("`{value}`"),
        format!("\"\"\"{value}\"\"\""),
    ]
    .into_iter()
    .find(|written| ini_value(written).0 == value)
    .unwrap_or_else(|| value.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(line: &str) -> (String, Option<char>) {
        match lex_line(line) {
            Ok(Line::Setting { value, glued, .. }) => (value, glued),
            other => panic!("{line:?} is not a setting: {other:?}"),
        }
    }

    #[test]
    fn hash_and_semicolon_start_a_comment_anywhere_in_a_value() {
        assert_eq!(value("Password = pa#ss"), ("pa".into(), Some('#')));
        assert_eq!(value("Password = pa;ss"), ("pa".into(), Some(';')));
        assert_eq!(value("Password = pass # note"), ("pass".into(), None));
        assert_eq!(value("Password = pass ; note"), ("pass".into(), None));
    }

    #[test]
    fn backquotes_and_triple_quotes_keep_comment_marks() {
        assert_eq!(value("Password = `pa#ss;x`"), ("pa#ss;x".into(), None));
        assert_eq!(
            value(r#"Password = """pa#"ss""""#),
            (r#"pa#"ss"#.into(), None)
        );
    }

    #[test]
    fn one_pair_of_quotes_is_removed_after_the_comment_is_cut() {
        assert_eq!(value(r#"Key = "a b""#), ("a b".into(), None));
        assert_eq!(value("Key = 'a b' # c"), ("a b".into(), None));
        // The comment cuts first: the quote is then unbalanced and kept.
        assert_eq!(value(r#"Key = "a#b""#), (r#""a"#.into(), Some('#')));
        assert_eq!(value(r#"Key = "a"b""#), (r#""a"b""#.into(), None));
    }

    #[test]
    fn a_value_ends_at_its_line_no_continuation() {
        assert_eq!(value(r"Target = host:80 \"), (r"host:80 \".into(), None));
        assert_eq!(lex_line("  next:81"), Err(ConfigErrorKind::NotKeyValue));
    }

    #[test]
    fn comments_headers_and_malformed_lines() {
        for nothing in ["", "   ", "# x = y", "; x = y", "  # [Peer]"] {
            assert_eq!(lex_line(nothing), Ok(Line::Nothing), "{nothing:?}");
        }
        assert_eq!(lex_line(" [ Peer ] # office"), Ok(Line::Header("Peer")));
        assert_eq!(lex_line("[Peer];x"), Ok(Line::Header("Peer")));
        let malformed = |t: &str| Err(ConfigErrorKind::MalformedHeader(t.into()));
        assert_eq!(lex_line("[Peer"), malformed("[Peer"));
        assert_eq!(lex_line("[Peer] x"), malformed("[Peer] x"));
        assert_eq!(lex_line("= 1"), Err(ConfigErrorKind::NotKeyValue));
        let Ok(Line::Setting { key, .. }) = lex_line("  Private Key =x=") else {
            panic!("not a setting")
        };
        assert_eq!(key, "Private Key");
        assert_eq!(value("k = a=b"), ("a=b".into(), None));
    }

    #[test]
    fn numbered_lines_skip_the_byte_order_mark_and_crlf() {
        let lines: Vec<_> = numbered_lines("\u{feff}[Peer]\r\nA = 1\r\n").collect();
        assert_eq!(lines, [(1, "[Peer]"), (2, "A = 1")]);
    }

    #[test]
    fn quoted_values_read_back_unchanged() {
        for v in ["plain", "pa#ss", "a;b", "\"q\"", "`tick`#"] {
            assert_eq!(ini_value(&ini_quoted(v)).0, v, "{v:?}");
        }
    }
}
