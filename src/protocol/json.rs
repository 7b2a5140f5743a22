//! Response bodies as compact JSON with every non-ASCII character written as a
//! `\uXXXX` escape. Spec §3.2 (AppInfo.memo) asks for escaped Chinese text; escaping
//! everything keeps the signed bytes independent of any proxy's charset handling.

use serde::Serialize;
use serde_json::ser::{CharEscape, CompactFormatter, Formatter};
use std::io;

/// Serialises `value` to compact, ASCII-only JSON. These are the exact bytes that are
/// signed, sent and stored (house style 6).
#[expect(
    clippy::expect_used,
    reason = "response types have string keys and no fallible serialisers"
)]
pub fn to_ascii_vec<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    let mut ser = serde_json::Serializer::with_formatter(&mut out, AsciiFormatter);
    // Serialising our own response types into a Vec cannot fail: they have string keys
    // and no fallible custom serialisers.
    value
        .serialize(&mut ser)
        .expect("response types always serialise");
    out
}

struct AsciiFormatter;

impl Formatter for AsciiFormatter {
    #[expect(
        clippy::indexing_slicing,
        reason = "char_indices yields char boundaries of this fragment"
    )]
    fn write_string_fragment<W: ?Sized + io::Write>(
        &mut self,
        writer: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        let mut start = 0;
        for (i, ch) in fragment.char_indices() {
            if ch.is_ascii() {
                continue;
            }
            writer.write_all(&fragment.as_bytes()[start..i])?;
            let mut units = [0u16; 2];
            for unit in ch.encode_utf16(&mut units) {
                write!(writer, "\\u{unit:04x}")?;
            }
            start = i + ch.len_utf8();
        }
        writer.write_all(&fragment.as_bytes()[start..])
    }

    fn write_char_escape<W: ?Sized + io::Write>(
        &mut self,
        writer: &mut W,
        char_escape: CharEscape,
    ) -> io::Result<()> {
        CompactFormatter.write_char_escape(writer, char_escape)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn non_ascii_text_is_escaped_and_round_trips() {
        let value = json!({"memo": "开通成功 🎉", "plain": "a\"b\n"});
        let bytes = to_ascii_vec(&value);
        let text = std::str::from_utf8(&bytes).unwrap();
        assert!(text.is_ascii(), "{text}");
        assert!(text.contains(r"\u5f00\u901a"), "{text}");
        assert!(
            text.contains(r"\ud83c\udf89"),
            "surrogate pair expected: {text}"
        );
        let back: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(back, value);
    }

    #[test]
    fn ascii_output_matches_serde_json_compact_form() {
        let value = json!({"resultCode": "000000", "resultMsg": "success."});
        assert_eq!(to_ascii_vec(&value), serde_json::to_vec(&value).unwrap());
    }
}
