//! RFC 8785 JSON Canonicalization Scheme (JCS): the exact bytes a receipt hash is taken over.
//!
//! Pure and independent of `serde_json`'s map ordering: object members are sorted here by their
//! UTF-16 code units, numbers are written as ECMAScript's `Number.prototype.toString` writes
//! IEEE-754 doubles, and strings use the minimal JSON escapes.

use std::fmt::Write as _;

use serde_json::Value;

/// The canonical text of `value`.
///
/// ```
/// use serde_json::json;
/// use tai_autonomics::receipts::jcs::canonical;
/// assert_eq!(canonical(&json!({"b": 1e21, "a": [80.0, 1e-7, "é\n"]})), r#"{"a":[80,1e-7,"é\n"],"b":1e+21}"#);
/// ```
pub fn canonical(value: &Value) -> String {
    let mut out = String::with_capacity(256);
    write_value(&mut out, value);
    out
}

/// Appends the canonical text of `value` to `out`.
pub fn write_value(out: &mut String, value: &Value) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => match n.as_u64() {
            // Integers a double holds exactly print as themselves (timestamps, counts).
            Some(u) => write_u64(out, u),
            _ => write_number(out, n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(s) => write_string(out, s),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_value(out, item);
            }
            out.push(']');
        }
        Value::Object(map) => {
            // Whatever order the map iterates in (sorted, or insertion order under serde_json's
            // `preserve_order`), members are written in UTF-16 order. Already-ordered maps (the
            // common case) are written in one pass; at the first member out of order, what was
            // written of this object is dropped and it is written again, sorted.
            let start = out.len();
            out.push('{');
            let mut prev: Option<&str> = None;
            for (k, v) in map {
                if let Some(p) = prev {
                    if utf16_cmp(p, k).is_ge() {
                        out.truncate(start);
                        let mut members: Vec<(&String, &Value)> = map.iter().collect();
                        members.sort_by(|a, b| utf16_cmp(a.0, b.0));
                        out.push('{');
                        write_members(out, members.into_iter());
                        out.push('}');
                        return;
                    }
                    out.push(',');
                }
                write_string(out, k);
                out.push(':');
                write_value(out, v);
                prev = Some(k);
            }
            out.push('}');
        }
    }
}

fn write_members<'a>(out: &mut String, members: impl Iterator<Item = (&'a String, &'a Value)>) {
    for (i, (k, v)) in members.enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_string(out, k);
        out.push(':');
        write_value(out, v);
    }
}

/// Orders strings by their UTF-16 code units, as RFC 8785 requires. Byte order is the same
/// except between characters above U+FFFF (surrogate pairs) and U+E000..U+FFFF, so the
/// common ASCII case skips the re-encoding.
fn utf16_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    let (x, y) = (a.as_bytes(), b.as_bytes());
    match x.iter().zip(y).position(|(p, q)| p != q) {
        // Lead bytes 0xEE..=0xEF start U+E000..U+FFFF and 0xF0.. start surrogate pairs: only
        // when both differing bytes are in that range can the two orders disagree. (A
        // difference in a continuation byte means equal lead bytes, hence the same class.)
        Some(i) if x[i] >= 0xEE && y[i] >= 0xEE => a.encode_utf16().cmp(b.encode_utf16()),
        Some(i) => x[i].cmp(&y[i]),
        None => x.len().cmp(&y.len()),
    }
}

/// A JSON string with only the escapes JCS requires. Runs of characters that need no escape
/// are copied whole (every escaped character is ASCII, so the slices stay on char boundaries).
pub fn write_string(out: &mut String, s: &str) {
    out.push('"');
    let bytes = s.as_bytes();
    // A branch-free scan (the compiler vectorises it): does anything need an escape?
    let special = bytes.iter().fold(false, |acc, &b| {
        acc | (b < 0x20) | (b == b'"') | (b == b'\\')
    });
    if !special {
        // The common case (ids, hashes, names): nothing to escape.
        out.push_str(s);
        out.push('"');
        return;
    }
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            0x08 => "\\b",
            b'\t' => "\\t",
            b'\n' => "\\n",
            0x0c => "\\f",
            b'\r' => "\\r",
            0x00..=0x1f => "",
            _ => continue,
        };
        out.push_str(&s[start..i]);
        if escape.is_empty() {
            let _ = write!(out, "\\u{b:04x}");
        } else {
            out.push_str(escape);
        }
        start = i + 1;
    }
    out.push_str(&s[start..]);
    out.push('"');
}

/// Levels of objects and arrays [`write_text`] follows before it leaves the text to the tree.
const TEXT_DEPTH: usize = 64;

/// Writes the canonical text of the JSON `text` into `out` without building a tree: what
/// [`write_value`] writes for the value `text` parses to. `None` when the text is left to the
/// tree (parse it, then [`write_value`]): members out of order, nesting past 64 levels, or
/// anything that is not JSON; `out` then holds a partial text.
///
/// ```
/// use tai_autonomics::receipts::jcs::write_text;
/// let mut out = String::new();
/// write_text(&mut out, r#"{"a": [80.0, 1e-7, "\u00e9\n"], "b": 1e21}"#).unwrap();
/// assert_eq!(out, r#"{"a":[80,1e-7,"é\n"],"b":1e+21}"#);
/// assert!(write_text(&mut String::new(), r#"{"b": 1, "a": 2}"#).is_none());
/// ```
pub fn write_text(out: &mut String, text: &str) -> Option<()> {
    let mut p = TextReader {
        bytes: text.as_bytes(),
        text,
        at: 0,
        scratch: String::new(),
    };
    p.value(out, 0)?;
    p.skip_ws();
    (p.at == p.bytes.len()).then_some(())
}

struct TextReader<'a> {
    bytes: &'a [u8],
    text: &'a str,
    at: usize,
    /// A decoded string with escapes (most strings have none and are borrowed).
    scratch: String,
}

impl<'a> TextReader<'a> {
    fn skip_ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.bytes.get(self.at) {
            self.at += 1;
        }
    }

    fn eat(&mut self, b: u8) -> Option<()> {
        self.skip_ws();
        (self.bytes.get(self.at) == Some(&b)).then(|| self.at += 1)
    }

    fn value(&mut self, out: &mut String, depth: usize) -> Option<()> {
        self.skip_ws();
        match *self.bytes.get(self.at)? {
            b'{' if depth < TEXT_DEPTH => {
                self.at += 1;
                out.push('{');
                if self.eat(b'}').is_some() {
                    out.push('}');
                    return Some(());
                }
                let (mut prev, mut first) = (String::new(), true);
                loop {
                    self.skip_ws();
                    let key = self.string()?;
                    if !first && utf16_cmp(&prev, key).is_ge() {
                        return None;
                    }
                    if !first {
                        out.push(',');
                    }
                    write_string(out, key);
                    prev.clear();
                    prev.push_str(key);
                    first = false;
                    self.eat(b':')?;
                    out.push(':');
                    self.value(out, depth + 1)?;
                    if self.eat(b',').is_none() {
                        self.eat(b'}')?;
                        out.push('}');
                        return Some(());
                    }
                }
            }
            b'[' if depth < TEXT_DEPTH => {
                self.at += 1;
                out.push('[');
                if self.eat(b']').is_some() {
                    out.push(']');
                    return Some(());
                }
                loop {
                    self.value(out, depth + 1)?;
                    if self.eat(b',').is_none() {
                        self.eat(b']')?;
                        out.push(']');
                        return Some(());
                    }
                    out.push(',');
                }
            }
            b'"' => {
                let s = self.string()?;
                write_string(out, s);
                Some(())
            }
            b't' => self.literal("true", out),
            b'f' => self.literal("false", out),
            b'n' => self.literal("null", out),
            b'-' | b'0'..=b'9' => self.number(out),
            _ => None,
        }
    }

    fn literal(&mut self, word: &str, out: &mut String) -> Option<()> {
        let end = self.at + word.len();
        (self.bytes.get(self.at..end)? == word.as_bytes()).then(|| {
            self.at = end;
            out.push_str(word);
        })
    }

    /// A number as [`write_value`] writes the `serde_json::Number` it parses to: a
    /// non-negative integer that fits in 64 bits as an integer, anything else as its double.
    fn number(&mut self, out: &mut String) -> Option<()> {
        let start = self.at;
        while let Some(b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9') = self.bytes.get(self.at) {
            self.at += 1;
        }
        let token = &self.text[start..self.at];
        if !valid_number(token.as_bytes()) {
            return None;
        }
        match token.parse::<u64>() {
            Ok(u) => write_u64(out, u),
            Err(_) => write_number(out, token.parse::<f64>().ok().filter(|v| v.is_finite())?),
        }
        Some(())
    }

    /// The string at the cursor (which is on its opening quote), unescaped.
    fn string(&mut self) -> Option<&str> {
        if self.bytes.get(self.at) != Some(&b'"') {
            return None;
        }
        self.at += 1;
        let start = self.at;
        loop {
            match *self.bytes.get(self.at)? {
                b'"' => {
                    self.at += 1;
                    return Some(&self.text[start..self.at - 1]);
                }
                b'\\' => break,
                0x00..=0x1f => return None,
                _ => self.at += 1,
            }
        }
        // Escapes: decode into the scratch string.
        self.scratch.clear();
        self.scratch.push_str(&self.text[start..self.at]);
        loop {
            match *self.bytes.get(self.at)? {
                b'"' => {
                    self.at += 1;
                    return Some(&self.scratch);
                }
                b'\\' => {
                    let c = match *self.bytes.get(self.at + 1)? {
                        b'"' => '"',
                        b'\\' => '\\',
                        b'/' => '/',
                        b'b' => '\u{8}',
                        b'f' => '\u{c}',
                        b'n' => '\n',
                        b'r' => '\r',
                        b't' => '\t',
                        b'u' => {
                            let hi = self.hex4(self.at + 2)?;
                            self.at += 6;
                            let code = if (0xd800..0xdc00).contains(&hi) {
                                if self.bytes.get(self.at..self.at + 2)? != b"\\u" {
                                    return None;
                                }
                                let lo = self.hex4(self.at + 2)?;
                                if !(0xdc00..0xe000).contains(&lo) {
                                    return None;
                                }
                                self.at += 6;
                                0x10000 + ((hi - 0xd800) << 10) + (lo - 0xdc00)
                            } else {
                                hi
                            };
                            self.scratch.push(char::from_u32(code)?);
                            continue;
                        }
                        _ => return None,
                    };
                    self.scratch.push(c);
                    self.at += 2;
                }
                0x00..=0x1f => return None,
                _ => {
                    // Copy up to the next quote or escape in one go (on char boundaries: both
                    // are ASCII).
                    let run = self.bytes[self.at..]
                        .iter()
                        .position(|&b| b == b'"' || b == b'\\' || b < 0x20)?;
                    self.scratch.push_str(&self.text[self.at..self.at + run]);
                    self.at += run;
                }
            }
        }
    }

    fn hex4(&self, at: usize) -> Option<u32> {
        let digits = self.text.get(at..at + 4)?;
        if !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        u32::from_str_radix(digits, 16).ok()
    }
}

/// JSON's number grammar: `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`.
fn valid_number(b: &[u8]) -> bool {
    let mut i = usize::from(b.first() == Some(&b'-'));
    let digits = |i: &mut usize| {
        let start = *i;
        while b.get(*i).is_some_and(u8::is_ascii_digit) {
            *i += 1;
        }
        *i > start
    };
    if b.get(i) == Some(&b'0') {
        i += 1;
    } else if !digits(&mut i) {
        return false;
    }
    if b.get(i) == Some(&b'.') {
        i += 1;
        if !digits(&mut i) {
            return false;
        }
    }
    if let Some(b'e' | b'E') = b.get(i) {
        i += 1;
        if let Some(b'+' | b'-') = b.get(i) {
            i += 1;
        }
        if !digits(&mut i) {
            return false;
        }
    }
    i == b.len()
}

/// 2^53 - 1: every integer up to it is exactly a double.
const MAX_SAFE_INTEGER: u64 = (1 << 53) - 1;

/// An integer as ECMAScript writes it: up to 2^53 its decimal digits (written here without
/// the formatting machinery), beyond that the nearest double's text.
pub fn write_u64(out: &mut String, mut v: u64) {
    if v > MAX_SAFE_INTEGER {
        write_number(out, v as f64);
        return;
    }
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    // Only ASCII digits were written.
    out.push_str(std::str::from_utf8(&buf[i..]).unwrap_or_default());
}

/// A finite double as ECMAScript writes it (NaN and infinities cannot occur in JSON values;
/// they would be written as `null`).
pub fn write_number(out: &mut String, v: f64) {
    if !v.is_finite() {
        out.push_str("null");
        return;
    }
    if v == 0.0 {
        out.push('0');
        return;
    }
    if v < 0.0 {
        out.push('-');
    }
    let a = v.abs();
    if a.fract() == 0.0 && a < 1e15 {
        // Integers below 2^53 print as themselves (the common case: seq, counts, millis).
        write_u64(out, a as u64);
        return;
    }
    // zmij writes the shortest digits that round-trip, in plain decimal notation for a range
    // inside ECMAScript's (1e-6 ≤ a < 1e21), where the two texts agree once a trailing ".0"
    // is dropped, and as `d.ddde±x` elsewhere.
    let mut buf = zmij::Buffer::new();
    let text = buf.format_finite(a);
    let Some((mantissa, exp)) = text.split_once('e') else {
        out.push_str(text.strip_suffix(".0").unwrap_or(text));
        return;
    };
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    let exp: i32 = exp.trim_start_matches('+').parse().unwrap_or(0);
    let k = digits.len() as i32;
    let n = exp + 1; // position of the decimal point relative to the digits
    if k <= n && n <= 21 {
        out.push_str(&digits);
        out.extend(std::iter::repeat_n('0', (n - k) as usize));
    } else if 0 < n && n <= 21 {
        out.push_str(&digits[..n as usize]);
        out.push('.');
        out.push_str(&digits[n as usize..]);
    } else if -6 < n && n <= 0 {
        out.push_str("0.");
        out.extend(std::iter::repeat_n('0', (-n) as usize));
        out.push_str(&digits);
    } else {
        out.push_str(&digits[..1]);
        if k > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        let e = n - 1;
        let _ = write!(out, "e{}{}", if e >= 0 { '+' } else { '-' }, e.abs());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn num(v: f64) -> String {
        let mut s = String::new();
        write_number(&mut s, v);
        s
    }

    #[test]
    fn numbers_follow_ecmascript() {
        let cases: &[(f64, &str)] = &[
            (0.0, "0"),
            (-0.0, "0"),
            (1.0, "1"),
            (-1.5, "-1.5"),
            (80.0, "80"),
            (72.5, "72.5"),
            (1e21, "1e+21"),
            (1e20, "100000000000000000000"),
            (1e-7, "1e-7"),
            (1e-6, "0.000001"),
            (123456789012345680000.0, "123456789012345680000"),
            (0.1 + 0.2, "0.30000000000000004"),
            (5e-324, "5e-324"),
            (1.7976931348623157e308, "1.7976931348623157e+308"),
            (1769437845123.0, "1769437845123"),
            (4.5e-5, "0.000045"),
            (1.25e22, "1.25e+22"),
            // Two shortest candidates equally near: the even one (V8 agrees).
            (1.658_206_780_088_562_3e15, "1658206780088562.2"),
        ];
        for (v, want) in cases {
            assert_eq!(num(*v), *want, "{v:e}");
        }
    }

    /// ECMAScript's layout of the shortest round-trip digits, from Rust's `{:e}` (independent
    /// of the float printer `write_number` uses).
    fn reference(v: f64) -> String {
        if v == 0.0 {
            return "0".into();
        }
        let sci = format!("{:e}", v.abs());
        let (mantissa, exp) = sci.split_once('e').unwrap();
        let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
        let (k, n) = (digits.len() as i32, exp.parse::<i32>().unwrap() + 1);
        let body = if k <= n && n <= 21 {
            format!("{digits}{}", "0".repeat((n - k) as usize))
        } else if 0 < n && n <= 21 {
            format!("{}.{}", &digits[..n as usize], &digits[n as usize..])
        } else if -6 < n && n <= 0 {
            format!("0.{}{digits}", "0".repeat((-n) as usize))
        } else {
            let frac = if k > 1 {
                format!(".{}", &digits[1..])
            } else {
                String::new()
            };
            let e = n - 1;
            format!(
                "{}{frac}e{}{}",
                &digits[..1],
                if e >= 0 { '+' } else { '-' },
                e.abs()
            )
        };
        if v < 0.0 {
            format!("-{body}")
        } else {
            body
        }
    }

    #[test]
    fn numbers_agree_with_the_reference_layout_over_many_doubles() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let (mut checked, mut ties) = (0, 0);
        while checked < 200_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // Random bit patterns cover every exponent; every tenth is a short decimal value.
            let v = if checked % 10 == 0 {
                (x % 10_000_000) as f64 / [1.0, 10.0, 1e3, 1e7, 1e-3][(x % 5) as usize]
            } else {
                f64::from_bits(x)
            };
            if v.is_finite() {
                let (ours, theirs) = (num(v), reference(v));
                if ours != theirs {
                    // Two shortest candidates equally near: ECMAScript (and RFC 8785) take the
                    // even one, where Rust's printer may take the other.
                    assert_eq!(ours.len(), theirs.len(), "{v:e}: {ours} vs {theirs}");
                    assert_eq!(ours.parse::<f64>().unwrap(), v, "{v:e}: {ours}");
                    let last = |s: &str| {
                        let mantissa = s.split('e').next().unwrap_or(s);
                        mantissa.bytes().rfind(|b| b.is_ascii_digit() && *b != b'0')
                    };
                    assert!(
                        last(&ours).is_some_and(|d| d % 2 == 0),
                        "{v:e}: {ours} vs {theirs}"
                    );
                    ties += 1;
                }
                checked += 1;
            }
        }
        assert!(ties < checked / 1000, "{ties} ties in {checked}");
    }

    #[test]
    fn integers_print_as_their_double_would() {
        for (v, want) in [
            (json!(0), "0"),
            (json!(7), "7"),
            (json!(1769437845123u64), "1769437845123"),
            (json!(9007199254740991u64), "9007199254740991"),
            // Beyond 2^53 the value is rounded to a double first, as ECMAScript does.
            (json!(9007199254740993u64), "9007199254740992"),
            (json!(u64::MAX), "18446744073709552000"),
            (json!(-12), "-12"),
        ] {
            assert_eq!(canonical(&v), want);
        }
        for v in [0, 9, 10, 4_294_967_296, (1 << 53) - 1] {
            let mut s = String::new();
            write_u64(&mut s, v);
            assert_eq!(s, v.to_string());
        }
    }

    #[test]
    fn members_sort_by_utf16_code_units() {
        // U+10000 is D800 DC00 in UTF-16, which sorts before U+E000 though its UTF-8 is larger.
        let v = json!({"\u{e000}": 1, "\u{10000}": 2, "b": 3, "a": 4, "": 5});
        assert_eq!(
            canonical(&v),
            "{\"\":5,\"a\":4,\"b\":3,\"\u{10000}\":2,\"\u{e000}\":1}"
        );
        // The byte-order shortcut agrees with a full UTF-16 comparison on every pair.
        let words = [
            "",
            "a",
            "ab",
            "b",
            "é",
            "éa",
            "\u{7ff}",
            "\u{800}",
            "\u{d7ff}",
            "\u{e000}",
            "\u{e000}a",
            "\u{ffff}",
            "\u{10000}",
            "\u{10000}a",
            "\u{10ffff}",
            "x\u{e000}",
            "x\u{10000}",
        ];
        for a in words {
            for b in words {
                assert_eq!(
                    utf16_cmp(a, b),
                    a.encode_utf16().cmp(b.encode_utf16()),
                    "{a:?} vs {b:?}"
                );
            }
        }
    }

    #[test]
    fn strings_use_minimal_escapes() {
        assert_eq!(
            canonical(&json!("a\"b\\c\u{1}\u{1f}\u{7f}\u{2028}é")),
            "\"a\\\"b\\\\c\\u0001\\u001f\u{7f}\u{2028}é\""
        );
        assert_eq!(canonical(&json!("\u{8}\t\n\u{c}\r")), r#""\b\t\n\f\r""#);
    }

    fn json_value() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<u64>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            (proptest::num::f64::NORMAL | proptest::num::f64::SUBNORMAL | proptest::num::f64::ZERO)
                .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
            "[ -~é\u{1f600}\u{e000}\n\t\u{1}\"\\\\]{0,12}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                proptest::collection::btree_map("[a-zé\u{1f600}\u{e000}]{0,4}", inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest::proptest! {
        #[test]
        fn the_text_path_writes_what_the_tree_path_writes(v in json_value()) {
            let want = canonical(&v);
            for text in [serde_json::to_string(&v).unwrap(), serde_json::to_string_pretty(&v).unwrap()] {
                let mut got = String::new();
                match write_text(&mut got, &text) {
                    // Maps serde orders by bytes: surrogate pairs against U+E000.. go to the tree.
                    None => proptest::prop_assert!(write_text(&mut String::new(), &want).is_some()),
                    Some(()) => proptest::prop_assert_eq!(&got, &want, "{}", text),
                }
            }
        }
    }

    #[test]
    fn the_text_path_leaves_what_is_not_plain_json_to_the_tree() {
        for bad in [
            "",
            "{",
            "[1,]",
            "{\"a\":1,}",
            "01",
            "1.",
            "-",
            "1e",
            "tru",
            "\"a",
            "\"\\x\"",
            "\"\\ud800\"",
            "\"\\udc00\"",
            "{\"b\":1,\"a\":2}",
            "{\"a\":1,\"a\":2}",
            "1 2",
            "\"\u{1}\"",
            "NaN",
            "1e999",
        ] {
            assert!(write_text(&mut String::new(), bad).is_none(), "{bad:?}");
        }
        let deep = format!("{}{}", "[".repeat(65), "]".repeat(65));
        assert!(write_text(&mut String::new(), &deep).is_none());
        let mut out = String::new();
        write_text(&mut out, "\"\\ud83d\\ude00\\/\\u0041\\u001f\"").unwrap();
        assert_eq!(out, "\"\u{1f600}/A\\u001f\"");
    }

    #[test]
    fn nesting_and_literals() {
        assert_eq!(
            canonical(&json!({"z": [true, false, null, {}, []], "y": {"b": 1, "a": 2}})),
            r#"{"y":{"a":2,"b":1},"z":[true,false,null,{},[]]}"#
        );
    }
}
