//! The Python data model as HyOps sees an overlay after `yaml.safe_load` / `json.loads`:
//! `None`, `bool`, unbounded `int`, `float` (NaN and infinities included), `str`,
//! `datetime.date` / `datetime.datetime`, `list` and insertion-ordered `dict` whose keys may be
//! any hashable scalar (`1:`, `yes:`, `null:` keys stay an int, a bool, `None`).
//!
//! Also here: Python's `==` between keys (`1 == 1.0 == True`), truthiness, `str()` and
//! `repr()` (floats, strings with quotes or newlines, lists, dicts, dates), `str.strip()`
//! (which also strips `\x1c`–`\x1f`), and the conversions to and from `serde_json::Value`.
//! Knows nothing about YAML syntax, inputs or HyOps.

use std::cmp::Ordering;
use std::fmt::Write as _;
use std::hash::{Hash, Hasher};

use indexmap::IndexMap;
use num_bigint::BigInt;
use num_traits::{FromPrimitive, ToPrimitive, Zero};
use serde_json::{Map, Number, Value};

/// `datetime.date`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Date {
    pub year: i32,
    pub month: u32,
    pub day: u32,
}

/// `datetime.datetime`; `tz_offset_s` is `None` for a naive datetime.
#[derive(Clone, Copy, Debug)]
pub struct DateTime {
    pub date: Date,
    pub hour: u32,
    pub minute: u32,
    pub second: u32,
    pub microsecond: u32,
    pub tz_offset_s: Option<i32>,
}

impl DateTime {
    /// Seconds since 0001-01-01 (local wall time) and microseconds: the comparison key of a
    /// naive datetime; minus the offset for an aware one (its UTC instant).
    fn instant(&self) -> (i64, u32) {
        let days = days_from_civil(self.date.year, self.date.month, self.date.day);
        let secs = days * 86_400
            + i64::from(self.hour) * 3600
            + i64::from(self.minute) * 60
            + i64::from(self.second)
            - i64::from(self.tz_offset_s.unwrap_or(0));
        (secs, self.microsecond)
    }
}

impl PartialEq for DateTime {
    /// Python: aware datetimes compare by instant; naive never equals aware.
    fn eq(&self, other: &Self) -> bool {
        self.tz_offset_s.is_some() == other.tz_offset_s.is_some()
            && self.instant() == other.instant()
    }
}

/// Days from 1970-01-01 to the civil date (proleptic Gregorian).
pub(crate) fn days_from_civil(y: i32, m: u32, d: u32) -> i64 {
    let y = i64::from(y) - i64::from(m <= 2);
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// One Python value.
#[derive(Clone, Debug)]
pub enum PyValue {
    None,
    Bool(bool),
    Int(BigInt),
    Float(f64),
    Str(String),
    Date(Date),
    DateTime(DateTime),
    List(Vec<PyValue>),
    Dict(PyDict),
}

/// A `dict`: insertion-ordered; keys compare with Python `==` (so `1`, `1.0` and `True` are
/// one key). Re-inserting an existing key keeps the first key object and its position.
#[derive(Clone, Debug, Default)]
pub struct PyDict {
    map: IndexMap<PyValue, PyValue>,
}

/// A borrowed string key that hashes and compares like `PyValue::Str`, so lookups by
/// `&str` allocate nothing.
#[derive(Hash)]
struct StrKey<'a> {
    tag: u8,
    text: &'a str,
}

impl<'a> StrKey<'a> {
    fn new(text: &'a str) -> Self {
        // Must match the `PyValue::Str` arm of `impl Hash for PyValue`.
        Self { tag: 3, text }
    }
}

impl indexmap::Equivalent<PyValue> for StrKey<'_> {
    fn equivalent(&self, key: &PyValue) -> bool {
        matches!(key, PyValue::Str(s) if s == self.text)
    }
}

impl PyDict {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn len(&self) -> usize {
        self.map.len()
    }
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
    /// `d.get(key)` for a string key.
    pub fn get(&self, key: &str) -> Option<&PyValue> {
        self.map.get(&StrKey::new(key))
    }
    pub fn get_mut(&mut self, key: &str) -> Option<&mut PyValue> {
        self.map.get_mut(&StrKey::new(key))
    }
    /// `d.get(key)` for any key.
    pub fn get_key(&self, key: &PyValue) -> Option<&PyValue> {
        self.map.get(key)
    }
    pub fn contains(&self, key: &str) -> bool {
        self.get(key).is_some()
    }
    /// `d[key] = value` (the caller guarantees the key is hashable: not a list or dict).
    pub fn insert(&mut self, key: PyValue, value: PyValue) {
        self.map.insert(key, value);
    }
    /// `d[key] = value` for a string key.
    pub fn set(&mut self, key: &str, value: PyValue) {
        self.map.insert(PyValue::Str(key.to_string()), value);
    }
    /// `d.pop(key, None)`, keeping the order of the others.
    pub fn remove(&mut self, key: &str) -> Option<PyValue> {
        self.map.shift_remove(&StrKey::new(key))
    }
    pub fn iter(&self) -> impl Iterator<Item = (&PyValue, &PyValue)> {
        self.map.iter()
    }
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (&PyValue, &mut PyValue)> {
        self.map.iter_mut()
    }
    pub fn keys(&self) -> impl Iterator<Item = &PyValue> {
        self.map.keys()
    }
    pub fn values(&self) -> impl Iterator<Item = &PyValue> {
        self.map.values()
    }
}

impl FromIterator<(PyValue, PyValue)> for PyDict {
    fn from_iter<I: IntoIterator<Item = (PyValue, PyValue)>>(iter: I) -> Self {
        let mut d = PyDict::new();
        for (k, v) in iter {
            d.insert(k, v);
        }
        d
    }
}

impl PartialEq for PyDict {
    /// Python dict equality: same keys, equal values, order ignored.
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len()
            && self
                .map
                .iter()
                .all(|(k, v)| other.map.get(k).is_some_and(|o| o == v))
    }
}

/// The numeric value of a bool, int or float, for cross-type comparison.
enum Num<'a> {
    Int(std::borrow::Cow<'a, BigInt>),
    Float(f64),
}

impl PyValue {
    pub fn str(s: impl Into<String>) -> Self {
        PyValue::Str(s.into())
    }
    pub fn int(i: i64) -> Self {
        PyValue::Int(BigInt::from(i))
    }
    pub fn as_dict(&self) -> Option<&PyDict> {
        match self {
            PyValue::Dict(d) => Some(d),
            _ => None,
        }
    }
    pub fn as_dict_mut(&mut self) -> Option<&mut PyDict> {
        match self {
            PyValue::Dict(d) => Some(d),
            _ => None,
        }
    }
    pub fn as_list(&self) -> Option<&Vec<PyValue>> {
        match self {
            PyValue::List(l) => Some(l),
            _ => None,
        }
    }
    pub fn as_str(&self) -> Option<&str> {
        match self {
            PyValue::Str(s) => Some(s),
            _ => None,
        }
    }
    pub fn is_none(&self) -> bool {
        matches!(self, PyValue::None)
    }
    /// `isinstance(v, int) and not isinstance(v, bool)`.
    pub fn as_int(&self) -> Option<&BigInt> {
        match self {
            PyValue::Int(i) => Some(i),
            _ => None,
        }
    }
    /// A list or dict cannot be a dict key (`TypeError: unhashable type`).
    pub fn is_hashable(&self) -> bool {
        !matches!(self, PyValue::List(_) | PyValue::Dict(_))
    }

    fn num(&self) -> Option<Num<'_>> {
        match self {
            PyValue::Bool(b) => Some(Num::Int(std::borrow::Cow::Owned(BigInt::from(u8::from(
                *b,
            ))))),
            PyValue::Int(i) => Some(Num::Int(std::borrow::Cow::Borrowed(i))),
            PyValue::Float(f) => Some(Num::Float(*f)),
            _ => None,
        }
    }

    /// Python's type name (`type(v).__name__`, qualified for dates as Python prints them in
    /// comparison errors).
    pub fn type_name(&self) -> &'static str {
        match self {
            PyValue::None => "NoneType",
            PyValue::Bool(_) => "bool",
            PyValue::Int(_) => "int",
            PyValue::Float(_) => "float",
            PyValue::Str(_) => "str",
            PyValue::Date(_) => "datetime.date",
            PyValue::DateTime(_) => "datetime.datetime",
            PyValue::List(_) => "list",
            PyValue::Dict(_) => "dict",
        }
    }

    /// Python truthiness (`bool(v)`).
    pub fn truthy(&self) -> bool {
        match self {
            PyValue::None => false,
            PyValue::Bool(b) => *b,
            PyValue::Int(i) => !i.is_zero(),
            PyValue::Float(f) => *f != 0.0,
            PyValue::Str(s) => !s.is_empty(),
            PyValue::Date(_) | PyValue::DateTime(_) => true,
            PyValue::List(l) => !l.is_empty(),
            PyValue::Dict(d) => !d.is_empty(),
        }
    }

    /// `str(v)`.
    pub fn py_str(&self) -> String {
        match self {
            PyValue::Str(s) => s.clone(),
            PyValue::Date(d) => date_str(d),
            PyValue::DateTime(dt) => datetime_str(dt),
            other => other.py_repr(),
        }
    }

    /// `repr(v)`.
    pub fn py_repr(&self) -> String {
        let mut out = String::new();
        self.write_repr(&mut out);
        out
    }

    fn write_repr(&self, out: &mut String) {
        match self {
            PyValue::None => out.push_str("None"),
            PyValue::Bool(true) => out.push_str("True"),
            PyValue::Bool(false) => out.push_str("False"),
            PyValue::Int(i) => {
                let _ = write!(out, "{i}");
            }
            PyValue::Float(f) => out.push_str(&float_repr(*f)),
            PyValue::Str(s) => out.push_str(&py_repr_str(s)),
            PyValue::Date(d) => {
                let _ = write!(out, "datetime.date({}, {}, {})", d.year, d.month, d.day);
            }
            PyValue::DateTime(dt) => out.push_str(&datetime_repr(dt)),
            PyValue::List(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    item.write_repr(out);
                }
                out.push(']');
            }
            PyValue::Dict(d) => {
                out.push('{');
                for (i, (k, v)) in d.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    k.write_repr(out);
                    out.push_str(": ");
                    v.write_repr(out);
                }
                out.push('}');
            }
        }
    }

    /// `str(v or "").strip()`: the idiom upstream uses to read optional text.
    pub fn str_or_empty(v: Option<&PyValue>) -> String {
        match v {
            Some(v) if v.truthy() => py_strip(&v.py_str()).to_string(),
            _ => String::new(),
        }
    }
}

impl PartialEq for PyValue {
    /// Python `==`.
    fn eq(&self, other: &Self) -> bool {
        if let (Some(a), Some(b)) = (self.num(), other.num()) {
            return num_eq(&a, &b);
        }
        match (self, other) {
            (PyValue::None, PyValue::None) => true,
            (PyValue::Str(a), PyValue::Str(b)) => a == b,
            (PyValue::Date(a), PyValue::Date(b)) => a == b,
            (PyValue::DateTime(a), PyValue::DateTime(b)) => a == b,
            (PyValue::List(a), PyValue::List(b)) => a == b,
            (PyValue::Dict(a), PyValue::Dict(b)) => a == b,
            _ => false,
        }
    }
}

// Dict keys are never lists or dicts (the YAML and JSON readers refuse unhashable keys), and
// NaN keys are distinct objects in Python too, so the non-reflexive NaN only ever makes a new
// entry, as in Python.
impl Eq for PyValue {}

impl Hash for PyValue {
    fn hash<H: Hasher>(&self, state: &mut H) {
        match self.num() {
            Some(Num::Int(i)) => {
                0u8.hash(state);
                i.hash(state);
            }
            Some(Num::Float(f)) => {
                // An integral float hashes as the integer it equals.
                match integral_bigint(f) {
                    Some(i) => {
                        0u8.hash(state);
                        i.hash(state);
                    }
                    None => {
                        1u8.hash(state);
                        f.to_bits().hash(state);
                    }
                }
            }
            None => match self {
                PyValue::None => 2u8.hash(state),
                PyValue::Str(s) => {
                    // Same bytes as `StrKey` (tag 3, then the text).
                    3u8.hash(state);
                    s.as_str().hash(state);
                }
                PyValue::Date(d) => {
                    4u8.hash(state);
                    d.hash(state);
                }
                PyValue::DateTime(dt) => {
                    5u8.hash(state);
                    dt.instant().hash(state);
                }
                // Unhashable in Python; never used as a key here.
                _ => 6u8.hash(state),
            },
        }
    }
}

fn integral_bigint(f: f64) -> Option<BigInt> {
    if f.is_finite() && f.fract() == 0.0 {
        BigInt::from_f64(f)
    } else {
        None
    }
}

fn num_eq(a: &Num<'_>, b: &Num<'_>) -> bool {
    match (a, b) {
        (Num::Int(x), Num::Int(y)) => x == y,
        (Num::Float(x), Num::Float(y)) => x == y,
        (Num::Int(i), Num::Float(f)) | (Num::Float(f), Num::Int(i)) => {
            integral_bigint(*f).is_some_and(|fi| &fi == i.as_ref())
        }
    }
}

/// Python's ordering of two numbers (for `sorted()` of dict keys); `None` when NaN is involved.
pub(crate) fn num_cmp(a: &PyValue, b: &PyValue) -> Option<Ordering> {
    let (x, y) = (a.num()?, b.num()?);
    match (&x, &y) {
        (Num::Int(i), Num::Int(j)) => Some(i.cmp(j)),
        (Num::Float(f), Num::Float(g)) => f.partial_cmp(g),
        (Num::Int(i), Num::Float(f)) => cmp_int_float(i, *f),
        (Num::Float(f), Num::Int(i)) => cmp_int_float(i, *f).map(Ordering::reverse),
    }
}

fn cmp_int_float(i: &BigInt, f: f64) -> Option<Ordering> {
    if f.is_nan() {
        return None;
    }
    if f == f64::INFINITY {
        return Some(Ordering::Less);
    }
    if f == f64::NEG_INFINITY {
        return Some(Ordering::Greater);
    }
    let fl = f.floor();
    let fi = BigInt::from_f64(fl)?;
    match i.cmp(&fi) {
        Ordering::Equal if f > fl => Some(Ordering::Less),
        o => Some(o),
    }
}

/// Python `str.strip()` with no argument: Unicode whitespace plus the ASCII separators
/// `\x1c`–`\x1f`, which Rust's `trim` keeps.
pub fn py_strip(s: &str) -> &str {
    s.trim_matches(is_py_space)
}

/// `str.isspace()` for one character.
pub fn is_py_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// `repr(float)`: the shortest digits that round-trip, in fixed notation when the decimal
/// point falls in `-4 < exp <= 16`, else `d.ddde±XX`.
pub fn float_repr(f: f64) -> String {
    if f.is_nan() {
        return "nan".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "inf".into() } else { "-inf".into() };
    }
    if f == 0.0 {
        return if f.is_sign_negative() {
            "-0.0".into()
        } else {
            "0.0".into()
        };
    }
    // Rust's `{:e}` prints the shortest round-trip digits: `1.2345e3`, `-1e-5`.
    let sci = format!("{f:e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let (neg, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => (true, m),
        None => (false, mantissa),
    };
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    let decpt = exp + 1;
    let mut out = String::new();
    if neg {
        out.push('-');
    }
    if -4 < decpt && decpt <= 16 {
        let n = digits.len() as i32;
        if decpt <= 0 {
            out.push_str("0.");
            for _ in 0..(-decpt) {
                out.push('0');
            }
            out.push_str(&digits);
        } else if decpt >= n {
            out.push_str(&digits);
            for _ in 0..(decpt - n) {
                out.push('0');
            }
            out.push_str(".0");
        } else {
            let (a, b) = digits.split_at(decpt as usize);
            out.push_str(a);
            out.push('.');
            out.push_str(b);
        }
    } else {
        let (first, rest) = digits.split_at(1);
        out.push_str(first);
        if !rest.is_empty() {
            out.push('.');
            out.push_str(rest);
        }
        let e = decpt - 1;
        let _ = write!(out, "e{}{:02}", if e < 0 { '-' } else { '+' }, e.abs());
    }
    out
}

/// `repr(str)`: single quotes unless the text holds `'` and no `"`; backslash escapes for
/// the quote, `\\`, `\t`, `\n`, `\r`, and `\xNN` / `\uNNNN` / `\UNNNNNNNN` for characters
/// Python does not consider printable.
pub fn py_repr_str(s: &str) -> String {
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    let mut out = String::with_capacity(s.len() + 2);
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if (c as u32) < 0x7f => out.push(c),
            c if !is_printable(c) => {
                let n = c as u32;
                if n <= 0xff {
                    let _ = write!(out, "\\x{n:02x}");
                } else if n <= 0xffff {
                    let _ = write!(out, "\\u{n:04x}");
                } else {
                    let _ = write!(out, "\\U{n:08x}");
                }
            }
            c => out.push(c),
        }
    }
    out.push(quote);
    out
}

/// `str.isprintable()` for one non-ASCII character: false for controls (Cc), format
/// characters (Cf), separators other than the space (Zs, Zl, Zp), private use (Co) and the
/// noncharacters. Unassigned code points (Cn) are treated as printable: this crate carries no
/// Unicode age table, and no overlay field takes them.
fn is_printable(c: char) -> bool {
    let n = c as u32;
    const NON_PRINTABLE: &[(u32, u32)] = &[
        (0x80, 0xa0),
        (0xad, 0xad),
        (0x600, 0x605),
        (0x61c, 0x61c),
        (0x6dd, 0x6dd),
        (0x70f, 0x70f),
        (0x890, 0x891),
        (0x8e2, 0x8e2),
        (0x1680, 0x1680),
        (0x180e, 0x180e),
        (0x2000, 0x200f),
        (0x2028, 0x202f),
        (0x205f, 0x2064),
        (0x2066, 0x206f),
        (0x3000, 0x3000),
        (0xd800, 0xf8ff),
        (0xfdd0, 0xfdef),
        (0xfeff, 0xfeff),
        (0xfff9, 0xfffb),
        (0xfffe, 0xffff),
        (0x110bd, 0x110bd),
        (0x110cd, 0x110cd),
        (0x13430, 0x1343f),
        (0x1bca0, 0x1bca3),
        (0x1d173, 0x1d17a),
        (0xe0001, 0xe0001),
        (0xe0020, 0xe007f),
        (0xf0000, 0x10ffff),
    ];
    if n & 0xfffe == 0xfffe {
        return false;
    }
    !NON_PRINTABLE
        .iter()
        .any(|(lo, hi)| (*lo..=*hi).contains(&n))
}

fn date_str(d: &Date) -> String {
    format!("{:04}-{:02}-{:02}", d.year, d.month, d.day)
}

fn tz_str(offset: i32) -> String {
    let sign = if offset < 0 { '-' } else { '+' };
    let a = offset.unsigned_abs();
    let mut s = format!("{sign}{:02}:{:02}", a / 3600, (a % 3600) / 60);
    if !a.is_multiple_of(60) {
        let _ = write!(s, ":{:02}", a % 60);
    }
    s
}

fn datetime_str(dt: &DateTime) -> String {
    let mut s = format!(
        "{} {:02}:{:02}:{:02}",
        date_str(&dt.date),
        dt.hour,
        dt.minute,
        dt.second
    );
    if dt.microsecond != 0 {
        let _ = write!(s, ".{:06}", dt.microsecond);
    }
    if let Some(off) = dt.tz_offset_s {
        s.push_str(&tz_str(off));
    }
    s
}

fn timedelta_repr(secs: i32) -> String {
    let days = secs.div_euclid(86_400);
    let rest = secs.rem_euclid(86_400);
    match (days, rest) {
        (0, 0) => "datetime.timedelta(0)".into(),
        (0, s) => format!("datetime.timedelta(seconds={s})"),
        (d, 0) => format!("datetime.timedelta(days={d})"),
        (d, s) => format!("datetime.timedelta(days={d}, seconds={s})"),
    }
}

fn datetime_repr(dt: &DateTime) -> String {
    let mut s = format!(
        "datetime.datetime({}, {}, {}, {}, {}",
        dt.date.year, dt.date.month, dt.date.day, dt.hour, dt.minute
    );
    if dt.second != 0 || dt.microsecond != 0 {
        let _ = write!(s, ", {}", dt.second);
    }
    if dt.microsecond != 0 {
        let _ = write!(s, ", {}", dt.microsecond);
    }
    match dt.tz_offset_s {
        None => {}
        Some(0) => s.push_str(", tzinfo=datetime.timezone.utc"),
        Some(off) => {
            let _ = write!(s, ", tzinfo=datetime.timezone({})", timedelta_repr(off));
        }
    }
    s.push(')');
    s
}

// ---------------------------------------------------------------------------------------------
// JSON interop
// ---------------------------------------------------------------------------------------------

impl From<&Value> for PyValue {
    /// What `json.loads` would give for this JSON (numbers keep their int/float kind).
    fn from(v: &Value) -> Self {
        match v {
            Value::Null => PyValue::None,
            Value::Bool(b) => PyValue::Bool(*b),
            Value::Number(n) => {
                if let Some(i) = n.as_i64() {
                    PyValue::Int(BigInt::from(i))
                } else if let Some(u) = n.as_u64() {
                    PyValue::Int(BigInt::from(u))
                } else {
                    PyValue::Float(n.as_f64().unwrap_or(f64::NAN))
                }
            }
            Value::String(s) => PyValue::Str(s.clone()),
            Value::Array(a) => PyValue::List(a.iter().map(PyValue::from).collect()),
            Value::Object(m) => PyValue::Dict(
                m.iter()
                    .map(|(k, v)| (PyValue::Str(k.clone()), PyValue::from(v)))
                    .collect(),
            ),
        }
    }
}

/// Why a value cannot become JSON (see [`PyValue::to_json`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CarryError {
    /// Where, in the caller's path notation (`inputs.vms[app-01].vm_id`).
    pub path: String,
    /// The value as Python prints it.
    pub value: String,
    pub kind: CarryErrorKind,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CarryErrorKind {
    /// An integer outside the signed/unsigned 64-bit range.
    IntOutOfRange,
    /// NaN or an infinity.
    NonFinite,
    /// A `datetime.date` / `datetime.datetime` value.
    Timestamp,
}

impl std::fmt::Display for CarryError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.kind {
            CarryErrorKind::IntOutOfRange => write!(
                f,
                "{} is out of range: {} does not fit in a 64-bit integer (hyops-pve carries integers between -9223372036854775808 and 18446744073709551615)",
                self.path, self.value
            ),
            CarryErrorKind::NonFinite => write!(
                f,
                "{} is out of range: {} is not a finite number (hyops-pve carries finite numbers only)",
                self.path, self.value
            ),
            CarryErrorKind::Timestamp => write!(
                f,
                "{} is a YAML timestamp ({}); quote it to pass it as text",
                self.path, self.value
            ),
        }
    }
}

impl PyValue {
    /// The JSON this value is carried as from here on. Dict keys become strings the way
    /// `json.dumps` writes them (`True` → `"true"`, `None` → `"null"`, `1` → `"1"`).
    /// Never replaces a value silently: an integer outside 64 bits, NaN/infinity or a
    /// timestamp is an error naming the path (`path` is the root's name, e.g. `inputs`).
    pub fn to_json(&self, path: &str) -> Result<Value, CarryError> {
        let err = |kind| CarryError {
            path: path.to_string(),
            value: self.py_repr(),
            kind,
        };
        Ok(match self {
            PyValue::None => Value::Null,
            PyValue::Bool(b) => Value::Bool(*b),
            PyValue::Int(i) => {
                if let Some(x) = i.to_i64() {
                    Value::Number(x.into())
                } else if let Some(x) = i.to_u64() {
                    Value::Number(x.into())
                } else {
                    return Err(err(CarryErrorKind::IntOutOfRange));
                }
            }
            PyValue::Float(f) => match Number::from_f64(*f) {
                Some(n) => Value::Number(n),
                None => return Err(err(CarryErrorKind::NonFinite)),
            },
            PyValue::Str(s) => Value::String(s.clone()),
            PyValue::Date(_) | PyValue::DateTime(_) => return Err(err(CarryErrorKind::Timestamp)),
            PyValue::List(items) => Value::Array(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, v)| v.to_json(&format!("{path}[{}]", i + 1)))
                    .collect::<Result<_, _>>()?,
            ),
            PyValue::Dict(d) => {
                let mut m = Map::new();
                for (k, v) in d.iter() {
                    let key = json_key(k);
                    let child = if path.ends_with(".vms") || path == "vms" {
                        format!("{path}[{key}]")
                    } else {
                        format!("{path}.{key}")
                    };
                    // A later key that reads the same as an earlier one (`1` and `"1"`) wins,
                    // as a JSON reader of json.dumps' output would do.
                    m.insert(key, v.to_json(&child)?);
                }
                Value::Object(m)
            }
        })
    }
}

/// A dict key as `json.dumps` writes it.
pub fn json_key(k: &PyValue) -> String {
    match k {
        PyValue::Str(s) => s.clone(),
        PyValue::Bool(true) => "true".into(),
        PyValue::Bool(false) => "false".into(),
        PyValue::None => "null".into(),
        PyValue::Float(f) if f.is_nan() => "NaN".into(),
        PyValue::Float(f) if f.is_infinite() => {
            if *f > 0.0 {
                "Infinity".into()
            } else {
                "-Infinity".into()
            }
        }
        other => other.py_str(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(x: f64) -> String {
        float_repr(x)
    }

    #[test]
    fn float_repr_matches_python() {
        assert_eq!(f(1.0), "1.0");
        assert_eq!(f(1.5), "1.5");
        assert_eq!(f(0.1), "0.1");
        assert_eq!(f(1e16), "1e+16");
        assert_eq!(f(1e15), "1000000000000000.0");
        assert_eq!(f(0.0001), "0.0001");
        assert_eq!(f(0.00001), "1e-05");
        assert_eq!(f(-1.5e-7), "-1.5e-07");
        assert_eq!(f(1.5e300), "1.5e+300");
        assert_eq!(f(123456789.125), "123456789.125");
        assert_eq!(f(f64::NAN), "nan");
        assert_eq!(f(f64::NEG_INFINITY), "-inf");
        assert_eq!(f(-0.0), "-0.0");
    }

    #[test]
    fn repr_of_strings_quotes_and_escapes_like_python() {
        assert_eq!(py_repr_str("foo"), "'foo'");
        assert_eq!(py_repr_str("it's"), "\"it's\"");
        assert_eq!(py_repr_str("a'b\"c"), "'a\\'b\"c'");
        assert_eq!(py_repr_str("l1\nl2\t\\"), "'l1\\nl2\\t\\\\'");
        assert_eq!(
            py_repr_str("\u{1}\u{7f}\u{a0}é\u{200b}"),
            "'\\x01\\x7f\\xa0é\\u200b'"
        );
    }

    #[test]
    fn str_of_containers_uses_repr_of_items() {
        let d: PyDict = [
            (
                PyValue::str("a"),
                PyValue::List(vec![PyValue::int(1), PyValue::str("x")]),
            ),
            (PyValue::Bool(true), PyValue::None),
        ]
        .into_iter()
        .collect();
        assert_eq!(PyValue::Dict(d).py_str(), "{'a': [1, 'x'], True: None}");
    }

    #[test]
    fn dict_keys_use_python_equality() {
        let mut d = PyDict::new();
        d.insert(PyValue::int(1), PyValue::str("int"));
        d.insert(PyValue::Bool(true), PyValue::str("bool"));
        d.insert(PyValue::Float(1.0), PyValue::str("float"));
        assert_eq!(d.len(), 1);
        let (k, v) = d.iter().next().unwrap();
        assert!(matches!(k, PyValue::Int(_)));
        assert_eq!(v, &PyValue::str("float"));
    }

    #[test]
    fn string_lookups_find_string_keys_only() {
        let mut d = PyDict::new();
        d.insert(PyValue::str("a"), PyValue::int(1));
        d.insert(PyValue::int(1), PyValue::int(2));
        assert_eq!(d.get("a"), Some(&PyValue::int(1)));
        assert_eq!(d.get("1"), None);
        assert_eq!(d.remove("a"), Some(PyValue::int(1)));
        assert!(d.get("a").is_none());
    }

    #[test]
    fn strip_removes_the_ascii_separators_too() {
        assert_eq!(py_strip("\u{1c}\u{1f} x \u{a0}\u{3000}"), "x");
    }

    #[test]
    fn dates_print_as_python_does() {
        let d = Date {
            year: 2001,
            month: 12,
            day: 14,
        };
        assert_eq!(PyValue::Date(d).py_str(), "2001-12-14");
        let dt = DateTime {
            date: d,
            hour: 21,
            minute: 59,
            second: 43,
            microsecond: 100_000,
            tz_offset_s: Some(-5 * 3600),
        };
        assert_eq!(
            PyValue::DateTime(dt).py_str(),
            "2001-12-14 21:59:43.100000-05:00"
        );
        assert_eq!(
            PyValue::DateTime(dt).py_repr(),
            "datetime.datetime(2001, 12, 14, 21, 59, 43, 100000, tzinfo=datetime.timezone(datetime.timedelta(days=-1, seconds=68400)))"
        );
    }

    #[test]
    fn carrying_refuses_what_json_cannot_hold() {
        let big = PyValue::Int(BigInt::from(u64::MAX) + 1);
        let e = big.to_json("inputs.cpu_cores").unwrap_err();
        assert_eq!(e.kind, CarryErrorKind::IntOutOfRange);
        assert!(e
            .to_string()
            .starts_with("inputs.cpu_cores is out of range: 18446744073709551616"));
        let e = PyValue::Float(f64::NAN).to_json("inputs.x").unwrap_err();
        assert_eq!(e.kind, CarryErrorKind::NonFinite);
    }
}
