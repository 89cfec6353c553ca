//! `json.loads` as CPython 3.11's C scanner runs it, into [`PyValue`]: `NaN`, `Infinity` and
//! `-Infinity` are numbers, integers are unbounded, a repeated key keeps its first position
//! and its last value, and every decode error reads exactly as Python's `JSONDecodeError`
//! (`Expecting value: line 1 column 1 (char 0)`). HyOps reads `HYOPS_INPUTS_JSON`,
//! `HYOPS_INPUT_*` values and its state files this way.
//!
//! Bounds: nesting deeper than [`MAX_DEPTH`] and strings longer than [`MAX_STRING_BYTES`] are
//! refused early (Python would recurse until its own limit, or accept the string).
//! Knows nothing about what the values mean.

use num_bigint::BigInt;

use super::value::{PyDict, PyValue};
use super::{MAX_DEPTH, MAX_STRING_BYTES};

/// Why `json.loads` failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JsonError {
    /// Python's `JSONDecodeError`, formatted as Python prints it.
    Decode(String),
    /// Another Python exception raised while decoding (e.g. an integer literal over 4300
    /// digits: `ValueError`), formatted as Python prints it.
    Python(String),
    /// Text this crate does not carry (a lone UTF-16 surrogate escape), or a bound hit.
    Refused(String),
}

impl JsonError {
    /// The message alone.
    pub fn message(&self) -> &str {
        match self {
            JsonError::Decode(m) | JsonError::Python(m) | JsonError::Refused(m) => m,
        }
    }
}

impl std::fmt::Display for JsonError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.message())
    }
}

/// Python refuses to parse decimal integers longer than this (`sys.get_int_max_str_digits()`).
pub const PY_INT_MAX_STR_DIGITS: usize = 4300;

/// Which parts of a document [`loads_only`] builds. Everything else is still parsed and
/// checked (the same errors as [`loads`]), then dropped.
#[derive(Clone, Copy, Debug)]
pub enum Keep {
    /// The whole value.
    All,
    /// An object's keys, each with the value `None`; anything but an object is `None`.
    Keys,
    /// These members of an object (each as its own [`Keep`]) and no others; anything but an
    /// object is `None`.
    Members(&'static [(&'static str, Keep)]),
}

/// What the parser does with the value at hand.
#[derive(Clone, Copy)]
enum Sel {
    Build(Keep),
    Drop,
}

impl Sel {
    /// The selection of member `key` of an object selected as `self`.
    fn member(self, key: &str) -> Sel {
        match self {
            Sel::Build(Keep::All) => Sel::Build(Keep::All),
            Sel::Build(Keep::Members(members)) => members
                .iter()
                .find(|(k, _)| *k == key)
                .map_or(Sel::Drop, |(_, keep)| Sel::Build(*keep)),
            Sel::Build(Keep::Keys) | Sel::Drop => Sel::Drop,
        }
    }

    /// The selection of an array item of an array selected as `self`.
    fn item(self) -> Sel {
        match self {
            Sel::Build(Keep::All) => Sel::Build(Keep::All),
            _ => Sel::Drop,
        }
    }
}

/// `json.loads(text)`.
pub fn loads(text: &str) -> Result<PyValue, JsonError> {
    loads_sel(text, Sel::Build(Keep::All))
}

/// `json.loads(text)` building only what `keep` selects: a large document (a 10 000-VM
/// state is ~100 MB as values) is read for a few of its members. Fails exactly where and as
/// [`loads`] fails; where it succeeds, every selected member equals what [`loads`] gives.
pub fn loads_only(text: &str, keep: Keep) -> Result<PyValue, JsonError> {
    loads_sel(text, Sel::Build(keep))
}

fn loads_sel(text: &str, sel: Sel) -> Result<PyValue, JsonError> {
    if text.starts_with('\u{feff}') {
        return Err(decode_err(
            text,
            0,
            "Unexpected UTF-8 BOM (decode using utf-8-sig)",
        ));
    }
    let mut p = Parser {
        text,
        b: text.as_bytes(),
        depth: 0,
    };
    let start = p.skip_ws(0);
    let (value, end) = match p.value(start, sel)? {
        Some(x) => x,
        None => return Err(decode_err(text, start, "Expecting value")),
    };
    let end = p.skip_ws(end);
    if end != p.b.len() {
        return Err(decode_err(text, end, "Extra data"));
    }
    Ok(value)
}

fn decode_err(text: &str, byte_pos: usize, msg: &str) -> JsonError {
    let before = &text[..byte_pos.min(text.len())];
    let pos = before.chars().count();
    let lineno = before.matches('\n').count() + 1;
    let colno = match before.rfind('\n') {
        Some(nl) => before[nl + 1..].chars().count() + 1,
        None => pos + 1,
    };
    JsonError::Decode(format!("{msg}: line {lineno} column {colno} (char {pos})"))
}

struct Parser<'a> {
    text: &'a str,
    b: &'a [u8],
    depth: usize,
}

fn is_ws(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\n' | b'\r')
}

impl Parser<'_> {
    fn skip_ws(&self, mut i: usize) -> usize {
        while i < self.b.len() && is_ws(self.b[i]) {
            i += 1;
        }
        i
    }

    fn at(&self, i: usize) -> Option<u8> {
        self.b.get(i).copied()
    }

    fn starts(&self, i: usize, lit: &str) -> bool {
        self.b
            .get(i..i + lit.len())
            .is_some_and(|s| s == lit.as_bytes())
    }

    /// One JSON term at `i`; `Ok(None)` is Python's `StopIteration` (→ "Expecting value").
    /// A value not selected ([`Sel::Drop`]) is checked and returned as `None`.
    fn value(&mut self, i: usize, sel: Sel) -> Result<Option<(PyValue, usize)>, JsonError> {
        let Some(c) = self.at(i) else {
            return Ok(None);
        };
        let built = match (c, sel) {
            (b'{', _) => return self.nested(i, true, sel),
            (b'[', _) => return self.nested(i, false, sel),
            // only an object can hold what `Keys`/`Members` select
            (_, Sel::Drop | Sel::Build(Keep::Keys | Keep::Members(_))) => false,
            (_, Sel::Build(Keep::All)) => true,
        };
        let scalar = self.scalar(i, c)?;
        Ok(scalar.map(|(v, e)| (if built { v } else { PyValue::None }, e)))
    }

    fn scalar(&mut self, i: usize, c: u8) -> Result<Option<(PyValue, usize)>, JsonError> {
        match c {
            b'"' => self.string(i + 1).map(|(s, e)| Some((PyValue::Str(s), e))),
            b'n' if self.starts(i, "null") => Ok(Some((PyValue::None, i + 4))),
            b't' if self.starts(i, "true") => Ok(Some((PyValue::Bool(true), i + 4))),
            b'f' if self.starts(i, "false") => Ok(Some((PyValue::Bool(false), i + 5))),
            b'N' if self.starts(i, "NaN") => Ok(Some((PyValue::Float(f64::NAN), i + 3))),
            b'I' if self.starts(i, "Infinity") => Ok(Some((PyValue::Float(f64::INFINITY), i + 8))),
            b'-' if self.starts(i, "-Infinity") => {
                Ok(Some((PyValue::Float(f64::NEG_INFINITY), i + 9)))
            }
            _ => self.number(i),
        }
    }

    fn nested(
        &mut self,
        i: usize,
        object: bool,
        sel: Sel,
    ) -> Result<Option<(PyValue, usize)>, JsonError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(JsonError::Refused(format!(
                "JSON nesting is deeper than {MAX_DEPTH} levels"
            )));
        }
        let r = if object {
            self.object(i + 1, sel)
        } else {
            let sel = match sel {
                Sel::Build(Keep::All) => sel,
                _ => Sel::Drop,
            };
            self.array(i + 1, sel)
        };
        self.depth -= 1;
        r.map(Some)
    }

    fn object(&mut self, i: usize, sel: Sel) -> Result<(PyValue, usize), JsonError> {
        let mut d = PyDict::new();
        let done = |d: PyDict| match sel {
            Sel::Drop => PyValue::None,
            Sel::Build(_) => PyValue::Dict(d),
        };
        let mut i = self.skip_ws(i);
        if self.at(i) == Some(b'}') {
            return Ok((done(d), i + 1));
        }
        loop {
            if self.at(i) != Some(b'"') {
                return Err(decode_err(
                    self.text,
                    i,
                    "Expecting property name enclosed in double quotes",
                ));
            }
            let (key, next) = self.string(i + 1)?;
            i = self.skip_ws(next);
            if self.at(i) != Some(b':') {
                return Err(decode_err(self.text, i, "Expecting ':' delimiter"));
            }
            i = self.skip_ws(i + 1);
            let member = sel.member(&key);
            let Some((val, next)) = self.value(i, member)? else {
                return Err(decode_err(self.text, i, "Expecting value"));
            };
            match (sel, member) {
                (Sel::Drop, _) => {}
                (Sel::Build(Keep::Members(_)), Sel::Drop) => {}
                _ => d.insert(PyValue::Str(key), val),
            }
            i = self.skip_ws(next);
            match self.at(i) {
                Some(b'}') => return Ok((done(d), i + 1)),
                Some(b',') => i = self.skip_ws(i + 1),
                _ => return Err(decode_err(self.text, i, "Expecting ',' delimiter")),
            }
        }
    }

    /// An array; `sel` is [`Sel::Build`] of [`Keep::All`] or [`Sel::Drop`].
    fn array(&mut self, i: usize, sel: Sel) -> Result<(PyValue, usize), JsonError> {
        let mut items = Vec::new();
        let done = |items: Vec<PyValue>| match sel {
            Sel::Drop => PyValue::None,
            Sel::Build(_) => PyValue::List(items),
        };
        let mut i = self.skip_ws(i);
        if self.at(i) == Some(b']') {
            return Ok((done(items), i + 1));
        }
        loop {
            let Some((val, next)) = self.value(i, sel.item())? else {
                return Err(decode_err(self.text, i, "Expecting value"));
            };
            if let Sel::Build(_) = sel {
                items.push(val);
            }
            i = self.skip_ws(next);
            match self.at(i) {
                Some(b']') => return Ok((done(items), i + 1)),
                Some(b',') => i = self.skip_ws(i + 1),
                _ => return Err(decode_err(self.text, i, "Expecting ',' delimiter")),
            }
        }
    }

    /// The string whose opening quote is at `begin - 1`.
    fn string(&self, begin: usize) -> Result<(String, usize), JsonError> {
        let unterminated = || decode_err(self.text, begin - 1, "Unterminated string starting at");
        let mut out = String::new();
        let mut i = begin;
        loop {
            // Copy a run of plain characters (multi-byte UTF-8 passes through untouched).
            let run_start = i;
            while i < self.b.len() {
                let c = self.b[i];
                if c == b'"' || c == b'\\' {
                    break;
                }
                if c <= 0x1f {
                    return Err(decode_err(self.text, i, "Invalid control character at"));
                }
                i += 1;
            }
            out.push_str(&self.text[run_start..i]);
            if out.len() > MAX_STRING_BYTES {
                return Err(JsonError::Refused(format!(
                    "a JSON string is longer than {MAX_STRING_BYTES} bytes"
                )));
            }
            match self.at(i) {
                None => return Err(unterminated()),
                Some(b'"') => return Ok((out, i + 1)),
                _ => {}
            }
            // A backslash escape.
            let bs = i;
            i += 1;
            let Some(c) = self.at(i) else {
                return Err(unterminated());
            };
            if c != b'u' {
                let ch = match c {
                    b'"' => '"',
                    b'\\' => '\\',
                    b'/' => '/',
                    b'b' => '\u{8}',
                    b'f' => '\u{c}',
                    b'n' => '\n',
                    b'r' => '\r',
                    b't' => '\t',
                    _ => return Err(decode_err(self.text, bs, "Invalid \\escape")),
                };
                out.push(ch);
                i += 1;
                continue;
            }
            // \uXXXX, with a following low surrogate joined to a high one.
            let start = i + 1;
            let end = start + 4;
            if end >= self.b.len() {
                return Err(decode_err(self.text, start - 1, "Invalid \\uXXXX escape"));
            }
            let hi = self
                .hex4(start)
                .ok_or_else(|| decode_err(self.text, end - 5, "Invalid \\uXXXX escape"))?;
            i = end;
            let mut code = hi;
            if (0xd800..0xdc00).contains(&hi)
                && end + 6 < self.b.len()
                && self.at(end) == Some(b'\\')
                && self.at(end + 1) == Some(b'u')
            {
                let lo = self
                    .hex4(end + 2)
                    .ok_or_else(|| decode_err(self.text, end + 6 - 5, "Invalid \\uXXXX escape"))?;
                if (0xdc00..0xe000).contains(&lo) {
                    code = 0x10000 + ((hi - 0xd800) << 10) + (lo - 0xdc00);
                    i = end + 6;
                }
            }
            match char::from_u32(code) {
                Some(ch) => out.push(ch),
                None => {
                    return Err(JsonError::Refused(format!(
                        "a JSON string holds a lone UTF-16 surrogate (\\u{code:04x}), which hyops-pve cannot carry"
                    )))
                }
            }
        }
    }

    fn hex4(&self, i: usize) -> Option<u32> {
        let s = self.b.get(i..i + 4)?;
        let s = std::str::from_utf8(s).ok()?;
        if !s.bytes().all(|c| c.is_ascii_hexdigit()) {
            return None;
        }
        u32::from_str_radix(s, 16).ok()
    }

    fn number(&self, start: usize) -> Result<Option<(PyValue, usize)>, JsonError> {
        let digit = |i: usize| self.at(i).is_some_and(|c| c.is_ascii_digit());
        let mut i = start;
        if self.at(i) == Some(b'-') {
            i += 1;
        }
        match self.at(i) {
            Some(b'1'..=b'9') => {
                i += 1;
                while digit(i) {
                    i += 1;
                }
            }
            Some(b'0') => i += 1,
            _ => return Ok(None),
        }
        let mut is_float = false;
        if self.at(i) == Some(b'.') && digit(i + 1) {
            is_float = true;
            i += 2;
            while digit(i) {
                i += 1;
            }
        }
        if matches!(self.at(i), Some(b'e' | b'E')) {
            let e_start = i;
            i += 1;
            if matches!(self.at(i), Some(b'-' | b'+')) {
                i += 1;
            }
            while digit(i) {
                i += 1;
            }
            if self.b[i - 1].is_ascii_digit() {
                is_float = true;
            } else {
                i = e_start;
            }
        }
        let lit = &self.text[start..i];
        if is_float {
            let f: f64 = lit.parse().unwrap_or(f64::NAN);
            return Ok(Some((PyValue::Float(f), i)));
        }
        let digits = lit.trim_start_matches('-').len();
        if digits > PY_INT_MAX_STR_DIGITS {
            return Err(JsonError::Python(format!(
                "Exceeds the limit ({PY_INT_MAX_STR_DIGITS} digits) for integer string conversion: value has {digits} digits; use sys.set_int_max_str_digits() to increase the limit"
            )));
        }
        match lit.parse::<BigInt>() {
            Ok(n) => Ok(Some((PyValue::Int(n), i))),
            Err(_) => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(s: &str) -> String {
        loads(s).unwrap_err().to_string()
    }

    #[test]
    fn python_only_literals_are_numbers() {
        assert!(matches!(loads("NaN"), Ok(PyValue::Float(f)) if f.is_nan()));
        assert!(matches!(loads("-Infinity"), Ok(PyValue::Float(f)) if f == f64::NEG_INFINITY));
        assert!(matches!(loads("1e400"), Ok(PyValue::Float(f)) if f == f64::INFINITY));
        let big = loads("123456789012345678901234567890").unwrap();
        assert_eq!(big.py_str(), "123456789012345678901234567890");
    }

    #[test]
    fn repeated_keys_keep_the_last_value() {
        let v = loads(r#"{"a": 1, "b": 2, "a": 3}"#).unwrap();
        assert_eq!(v.py_str(), "{'a': 3, 'b': 2}");
    }

    #[test]
    fn errors_read_as_python_prints_them() {
        assert_eq!(err(""), "Expecting value: line 1 column 1 (char 0)");
        assert_eq!(err("[1,]"), "Expecting value: line 1 column 4 (char 3)");
        assert_eq!(
            err("{\"a\" 1}"),
            "Expecting ':' delimiter: line 1 column 6 (char 5)"
        );
        assert_eq!(
            err("{\"a\": 1,}"),
            "Expecting property name enclosed in double quotes: line 1 column 9 (char 8)"
        );
        assert_eq!(
            err("[1 2]"),
            "Expecting ',' delimiter: line 1 column 4 (char 3)"
        );
        assert_eq!(err("01"), "Extra data: line 1 column 2 (char 1)");
        assert_eq!(
            err("\"abc"),
            "Unterminated string starting at: line 1 column 1 (char 0)"
        );
        assert_eq!(
            err("\"a\\qb\""),
            "Invalid \\escape: line 1 column 3 (char 2)"
        );
        assert_eq!(
            err("{\n  \"a\": x}"),
            "Expecting value: line 2 column 8 (char 9)"
        );
    }

    #[test]
    fn deep_nesting_is_refused_early() {
        let deep = "[".repeat(MAX_DEPTH + 1);
        assert!(matches!(loads(&deep), Err(JsonError::Refused(_))));
    }

    /// What `keep` selects of a fully read value (the reference for [`loads_only`]).
    fn project(v: &PyValue, keep: Keep) -> PyValue {
        match (keep, v) {
            (Keep::All, v) => v.clone(),
            (Keep::Keys, PyValue::Dict(d)) => {
                let mut out = PyDict::new();
                for k in d.keys() {
                    out.insert(k.clone(), PyValue::None);
                }
                PyValue::Dict(out)
            }
            (Keep::Members(members), PyValue::Dict(d)) => {
                let mut out = PyDict::new();
                for (k, val) in d.iter() {
                    let name = k.as_str().unwrap_or_default();
                    if let Some((_, sub)) = members.iter().find(|(m, _)| *m == name) {
                        out.insert(k.clone(), project(val, *sub));
                    }
                }
                PyValue::Dict(out)
            }
            _ => PyValue::None,
        }
    }

    const NAMES: Keep = Keep::Members(&[
        ("status", Keep::All),
        (
            "outputs",
            Keep::Members(&[("vms", Keep::Keys), ("vm_names", Keep::All)]),
        ),
    ]);

    #[test]
    fn a_selective_read_builds_only_the_selected_members() {
        let text = r#"{"run_id": "x", "outputs": {"vm_ids": {"a": 1},
            "vms": {"a": {"vm_id": 101, "tags": ["x"]}, "b": null, "a": 2},
            "vm_names": ["a", 1, null]}, "status": "ok", "status": "OK"}"#;
        assert_eq!(
            loads_only(text, NAMES).unwrap().py_repr(),
            "{'outputs': {'vms': {'a': None, 'b': None}, 'vm_names': ['a', 1, None]}, 'status': 'OK'}"
        );
        assert_eq!(loads_only("[1, 2]", NAMES).unwrap().py_repr(), "None");
        assert_eq!(
            loads_only(r#"{"outputs": [1], "status": {"a": 1}}"#, NAMES)
                .unwrap()
                .py_repr(),
            "{'outputs': None, 'status': {'a': 1}}"
        );
    }

    #[test]
    fn a_selective_read_fails_where_and_as_the_full_read_fails() {
        let deep = format!(
            "{{\"x\": {}{}}}",
            "[".repeat(MAX_DEPTH + 1),
            "]".repeat(MAX_DEPTH + 1)
        );
        let huge = format!("{{\"x\": {}}}", "9".repeat(PY_INT_MAX_STR_DIGITS + 1));
        let long = format!("{{\"x\": \"{}\"}}", "a".repeat(MAX_STRING_BYTES + 1));
        for text in [
            "",
            r#"{"x": [1,]}"#,
            r#"{"x": {"y" 1}}"#,
            r#"{"x": "\q"}"#,
            r#"{"x": "\ud800"}"#,
            "{\"x\": \"a\u{1}b\"}",
            r#"{"x": "open"#,
            r#"{"outputs": {"vms": {"a": tru}}}"#,
            r#"{"status": "ok"} x"#,
            "\u{feff}{}",
            &deep,
            &huge,
            &long,
        ] {
            assert_eq!(
                loads_only(text, NAMES).unwrap_err(),
                loads(text).unwrap_err(),
                "{text:.60}"
            );
        }
    }

    proptest::proptest! {
        #[test]
        fn a_selective_read_is_the_projection_of_the_full_read(
            text in r#"[{}\[\]",: 0-9a-z.eE+\-]{0,48}|\{"(status|outputs|vms|vm_names|x)": ?(\{"(vms|vm_names|a)": ?[\[\]{}",:0-9a-z ]{0,24}\}|[\[\]{}",:0-9a-z ]{0,24})\}"#
        ) {
            match (loads(&text), loads_only(&text, NAMES)) {
                (Ok(full), Ok(only)) => proptest::prop_assert_eq!(
                    project(&full, NAMES).py_repr(),
                    only.py_repr()
                ),
                (Err(a), Err(b)) => proptest::prop_assert_eq!(a, b),
                (a, b) => proptest::prop_assert!(false, "{:?} vs {:?}", a.map(|v| v.py_repr()), b.map(|v| v.py_repr())),
            }
        }
    }
}
