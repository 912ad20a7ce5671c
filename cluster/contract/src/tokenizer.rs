//! The one tokenizer shared by the engine and the oracle: split a line on Unicode
//! whitespace, keep tokens as they are (case-sensitive, punctuation kept), as Flink's
//! SocketWindowWordCount does.

/// Calls `f` for every token of `line`.
#[inline]
pub fn for_each_token<'a>(line: &'a str, mut f: impl FnMut(&'a str)) {
    if line.is_ascii() {
        // Byte-level fast path. For ASCII, Unicode's White_Space is exactly
        // U+0009..=U+000D and U+0020 (what `char::is_whitespace` says too).
        let b = line.as_bytes();
        let mut start = None;
        for (i, &c) in b.iter().enumerate() {
            let ws = c == b' ' || (b'\t'..=b'\r').contains(&c);
            match (ws, start) {
                (true, Some(s)) => {
                    f(&line[s..i]);
                    start = None;
                }
                (false, None) => start = Some(i),
                _ => {}
            }
        }
        if let Some(s) = start {
            f(&line[s..]);
        }
    } else {
        line.split_whitespace().for_each(f);
    }
}

/// Collects the tokens of a line (convenient in tests and the oracle).
pub fn tokens(line: &str) -> Vec<&str> {
    let mut v = Vec::new();
    for_each_token(line, |t| v.push(t));
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn splits_on_unicode_whitespace_and_keeps_case_and_punctuation() {
        assert_eq!(tokens("  To be, or\tnot to BE.  "), vec!["To", "be,", "or", "not", "to", "BE."]);
        assert_eq!(tokens("a\u{00A0}b\u{3000}c"), vec!["a", "b", "c"]);
        assert_eq!(tokens("żółw  ŻÓŁW"), vec!["żółw", "ŻÓŁW"]);
        assert!(tokens("   \t ").is_empty());
        assert_eq!(tokens("x\u{0b}y\u{0c}z\rw"), vec!["x", "y", "z", "w"]);
    }

    proptest::proptest! {
        /// Both paths (ASCII fast path, Unicode path) agree with `str::split_whitespace`
        /// on any text: random Unicode, and ASCII-heavy text mixed with every kind of
        /// whitespace, where the fast path runs.
        #[test]
        fn tokens_agree_with_split_whitespace(
            s in proptest::prop_oneof![
                ".*",
                proptest::string::string_regex("[ -~\t\n\x0b\x0c\r\x1c-\x1f\u{85}\u{a0}\u{1680}\u{2000}-\u{200b}\u{2028}\u{2029}\u{3000}\u{feff}a-zż]{0,64}").unwrap(),
                proptest::string::string_regex("[\x00-\x7f]{0,64}").unwrap(),
            ]
        ) {
            let want: Vec<&str> = s.split_whitespace().collect();
            proptest::prop_assert_eq!(tokens(&s), want);
        }
    }

    #[test]
    fn ascii_fast_path_agrees_with_split_whitespace() {
        let s = "a  b\t\tc\r\nd \u{0b}e\x1ff";
        let slow: Vec<&str> = s.split_whitespace().collect();
        assert_eq!(tokens(s), slow);
    }
}
