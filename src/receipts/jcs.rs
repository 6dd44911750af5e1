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

    #[test]
    fn nesting_and_literals() {
        assert_eq!(
            canonical(&json!({"z": [true, false, null, {}, []], "y": {"b": 1, "a": 2}})),
            r#"{"y":{"a":2,"b":1},"z":[true,false,null,{},[]]}"#
        );
    }
}
