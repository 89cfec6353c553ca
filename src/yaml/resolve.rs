//! YAML 1.1 scalar resolution and construction exactly as PyYAML's `SafeLoader` does it:
//! the implicit resolvers (which plain scalar is a bool, int, float, null, timestamp, merge
//! key or `=`), tried in PyYAML's registration order for the scalar's first character, and
//! the constructors that turn the text into a value (`010` is 8, `1_000` is 1000, `1:30` is
//! 90, `.nan`, `yes`/`on`/`off`, `2001-12-14` is a date). Knows nothing about YAML syntax.

use std::sync::LazyLock;

use num_bigint::BigInt;
use num_traits::Num;
use regex::Regex;

use super::json::PY_INT_MAX_STR_DIGITS;
use super::value::{py_strip, Date, DateTime, PyValue};

/// The tag PyYAML's resolver gives a plain scalar.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Implicit {
    Bool,
    Float,
    Int,
    /// `<<`: a merge key.
    Merge,
    Null,
    Timestamp,
    /// `=`: the YAML 1.1 value key (a string when it is a key; no constructor otherwise).
    Value,
    Str,
}

impl Implicit {
    /// The full YAML tag.
    pub fn tag(self) -> &'static str {
        match self {
            Implicit::Bool => "tag:yaml.org,2002:bool",
            Implicit::Float => "tag:yaml.org,2002:float",
            Implicit::Int => "tag:yaml.org,2002:int",
            Implicit::Merge => "tag:yaml.org,2002:merge",
            Implicit::Null => "tag:yaml.org,2002:null",
            Implicit::Timestamp => "tag:yaml.org,2002:timestamp",
            Implicit::Value => "tag:yaml.org,2002:value",
            Implicit::Str => "tag:yaml.org,2002:str",
        }
    }
}

fn re(pattern: &str) -> Regex {
    // The patterns below are fixed and tested; a failure here is a programming error caught
    // by the unit tests on the first call.
    Regex::new(pattern).unwrap_or_else(|e| panic!("bad built-in regex {pattern}: {e}"))
}

static BOOL: LazyLock<Regex> = LazyLock::new(|| {
    re(r"^(?:yes|Yes|YES|no|No|NO|true|True|TRUE|false|False|FALSE|on|On|ON|off|Off|OFF)$")
});
static FLOAT: LazyLock<Regex> = LazyLock::new(|| {
    re(
        r"^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+][0-9]+)?|\.[0-9][0-9_]*(?:[eE][-+][0-9]+)?|[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+\.[0-9_]*|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$",
    )
});
static INT: LazyLock<Regex> = LazyLock::new(|| {
    re(
        r"^(?:[-+]?0b[0-1_]+|[-+]?0[0-7_]+|[-+]?(?:0|[1-9][0-9_]*)|[-+]?0x[0-9a-fA-F_]+|[-+]?[1-9][0-9_]*(?::[0-5]?[0-9])+)$",
    )
});
static NULL: LazyLock<Regex> = LazyLock::new(|| re(r"^(?:~|null|Null|NULL|)$"));
static TIMESTAMP: LazyLock<Regex> = LazyLock::new(|| {
    re(
        r"^(?:[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]|[0-9][0-9][0-9][0-9]-[0-9][0-9]?-[0-9][0-9]?(?:[Tt]|[ \t]+)[0-9][0-9]?:[0-9][0-9]:[0-9][0-9](?:\.[0-9]*)?(?:[ \t]*(?:Z|[-+][0-9][0-9]?(?::[0-9][0-9])?))?)$",
    )
});
static TIMESTAMP_PARTS: LazyLock<Regex> = LazyLock::new(|| {
    re(
        r"^(?P<year>[0-9][0-9][0-9][0-9])-(?P<month>[0-9][0-9]?)-(?P<day>[0-9][0-9]?)(?:(?:[Tt]|[ \t]+)(?P<hour>[0-9][0-9]?):(?P<minute>[0-9][0-9]):(?P<second>[0-9][0-9])(?:\.(?P<fraction>[0-9]*))?(?:[ \t]*(?P<tz>Z|(?P<tz_sign>[-+])(?P<tz_hour>[0-9][0-9]?)(?::(?P<tz_minute>[0-9][0-9]))?))?)?$",
    )
});

/// PyYAML's implicit resolution of a plain scalar: resolvers are looked up by the first
/// character and tried in registration order (bool, float, int, merge, null, timestamp,
/// value); anything else is a string.
pub fn resolve_plain(value: &str) -> Implicit {
    let Some(first) = value.chars().next() else {
        return Implicit::Null;
    };
    let candidates: &[Implicit] = match first {
        'y' | 'Y' | 't' | 'T' | 'f' | 'F' | 'o' | 'O' => &[Implicit::Bool],
        'n' | 'N' => &[Implicit::Bool, Implicit::Null],
        '-' | '+' => &[Implicit::Float, Implicit::Int],
        '0'..='9' => &[Implicit::Float, Implicit::Int, Implicit::Timestamp],
        '.' => &[Implicit::Float],
        '<' => &[Implicit::Merge],
        '~' => &[Implicit::Null],
        '=' => &[Implicit::Value],
        _ => &[],
    };
    for c in candidates {
        let hit = match c {
            Implicit::Bool => BOOL.is_match(value),
            Implicit::Float => FLOAT.is_match(value),
            Implicit::Int => INT.is_match(value),
            Implicit::Merge => value == "<<",
            Implicit::Null => NULL.is_match(value),
            Implicit::Timestamp => TIMESTAMP.is_match(value),
            Implicit::Value => value == "=",
            Implicit::Str => false,
        };
        if hit {
            return *c;
        }
    }
    Implicit::Str
}

/// Python's `int(text, base)` (surrounding whitespace allowed, as Python does).
fn py_int(text: &str, base: u32) -> Result<BigInt, String> {
    let t = py_strip(text);
    let bad = || {
        format!(
            "invalid literal for int() with base {base}: {}",
            PyValue::str(text).py_repr()
        )
    };
    let digits = t.trim_start_matches(['+', '-']);
    if digits.is_empty() || t.len() - digits.len() > 1 {
        return Err(bad());
    }
    if base == 10 && digits.len() > PY_INT_MAX_STR_DIGITS {
        return Err(format!(
            "Exceeds the limit ({PY_INT_MAX_STR_DIGITS} digits) for integer string conversion: value has {} digits; use sys.set_int_max_str_digits() to increase the limit",
            digits.len()
        ));
    }
    BigInt::from_str_radix(t, base).map_err(|_| bad())
}

/// Python's `float(text)`.
fn py_float(text: &str) -> Result<f64, String> {
    let t = py_strip(text);
    let lower = t.to_ascii_lowercase();
    let body = lower.trim_start_matches(['+', '-']);
    let ok_word = matches!(body, "inf" | "infinity" | "nan");
    let ok_num = !body.is_empty()
        && body
            .bytes()
            .all(|c| c.is_ascii_digit() || matches!(c, b'.' | b'e' | b'+' | b'-'));
    if ok_word || ok_num {
        if let Ok(f) = t.parse::<f64>() {
            return Ok(f);
        }
    }
    Err(format!(
        "could not convert string to float: {}",
        PyValue::str(text).py_repr()
    ))
}

/// `SafeConstructor.construct_yaml_int`.
pub fn construct_int(text: &str) -> Result<BigInt, String> {
    let value = text.replace('_', "");
    let Some(first) = value.chars().next() else {
        return Err("string index out of range".into());
    };
    let negative = first == '-';
    let body = if first == '+' || first == '-' {
        &value[1..]
    } else {
        value.as_str()
    };
    let magnitude = if body == "0" {
        BigInt::from(0)
    } else if let Some(b) = body.strip_prefix("0b") {
        py_int(b, 2)?
    } else if let Some(h) = body.strip_prefix("0x") {
        py_int(h, 16)?
    } else if body.starts_with('0') {
        py_int(body, 8)?
    } else if body.contains(':') {
        let mut total = BigInt::from(0);
        let mut base = BigInt::from(1);
        for part in body.split(':').rev() {
            total += py_int(part, 10)? * &base;
            base *= 60;
        }
        total
    } else {
        py_int(body, 10)?
    };
    Ok(if negative { -magnitude } else { magnitude })
}

/// `SafeConstructor.construct_yaml_float`.
pub fn construct_float(text: &str) -> Result<f64, String> {
    let value = text.replace('_', "").to_lowercase();
    let Some(first) = value.chars().next() else {
        return Err("string index out of range".into());
    };
    let sign = if first == '-' { -1.0 } else { 1.0 };
    let body = if first == '+' || first == '-' {
        &value[1..]
    } else {
        value.as_str()
    };
    if body == ".inf" {
        return Ok(sign * f64::INFINITY);
    }
    if body == ".nan" {
        return Ok(f64::NAN);
    }
    if body.contains(':') {
        let mut total = 0.0;
        let mut base = 1.0;
        for part in body.split(':').rev() {
            total += py_float(part)? * base;
            base *= 60.0;
        }
        return Ok(sign * total);
    }
    Ok(sign * py_float(body)?)
}

/// `SafeConstructor.construct_yaml_bool` (`KeyError` text when the word is not a boolean).
pub fn construct_bool(text: &str) -> Result<bool, String> {
    match text.to_lowercase().as_str() {
        "yes" | "true" | "on" => Ok(true),
        "no" | "false" | "off" => Ok(false),
        other => Err(PyValue::str(other).py_repr()),
    }
}

fn days_in_month(year: i32, month: u32) -> u32 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        _ => 28,
    }
}

/// `SafeConstructor.construct_yaml_timestamp`: a `datetime.date`, or a `datetime.datetime`
/// (aware when a zone is given). Errors are Python's `ValueError` texts.
pub fn construct_timestamp(text: &str) -> Result<PyValue, String> {
    let Some(c) = TIMESTAMP_PARTS.captures(text) else {
        return Err("'NoneType' object has no attribute 'groupdict'".into());
    };
    let num = |name: &str| -> u32 {
        c.name(name)
            .and_then(|m| m.as_str().parse().ok())
            .unwrap_or(0)
    };
    let year = num("year") as i32;
    let (month, day) = (num("month"), num("day"));
    if !(1..=9999).contains(&year) {
        return Err(format!("year {year} is out of range"));
    }
    if !(1..=12).contains(&month) {
        return Err("month must be in 1..12".into());
    }
    if day < 1 || day > days_in_month(year, month) {
        return Err("day is out of range for month".into());
    }
    let date = Date { year, month, day };
    if c.name("hour").is_none() {
        return Ok(PyValue::Date(date));
    }
    let (hour, minute, second) = (num("hour"), num("minute"), num("second"));
    if hour > 23 {
        return Err("hour must be in 0..23".into());
    }
    if minute > 59 {
        return Err("minute must be in 0..59".into());
    }
    if second > 59 {
        return Err("second must be in 0..59".into());
    }
    let microsecond = match c.name("fraction").map(|m| m.as_str()) {
        Some(f) if !f.is_empty() => {
            let mut f: String = f.chars().take(6).collect();
            while f.len() < 6 {
                f.push('0');
            }
            f.parse().unwrap_or(0)
        }
        _ => 0,
    };
    let tz_offset_s = match (c.name("tz_sign"), c.name("tz")) {
        (Some(sign), _) => {
            let secs = (num("tz_hour") * 3600 + num("tz_minute") * 60) as i32;
            let secs = if sign.as_str() == "-" { -secs } else { secs };
            if secs.abs() >= 86_400 {
                return Err(format!(
                    "offset must be a timedelta strictly between -timedelta(hours=24) and timedelta(hours=24), not {}.",
                    timedelta_text(secs)
                ));
            }
            Some(secs)
        }
        (None, Some(_)) => Some(0),
        (None, None) => None,
    };
    Ok(PyValue::DateTime(DateTime {
        date,
        hour,
        minute,
        second,
        microsecond,
        tz_offset_s,
    }))
}

fn timedelta_text(secs: i32) -> String {
    let days = secs.div_euclid(86_400);
    let rest = secs.rem_euclid(86_400);
    if rest == 0 {
        format!("datetime.timedelta(days={days})")
    } else {
        format!("datetime.timedelta(days={days}, seconds={rest})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn int(s: &str) -> String {
        assert_eq!(resolve_plain(s), Implicit::Int, "{s} should resolve to int");
        construct_int(s).unwrap().to_string()
    }

    #[test]
    fn yaml11_booleans_include_yes_no_on_off() {
        for s in ["yes", "No", "ON", "off", "true", "FALSE"] {
            assert_eq!(resolve_plain(s), Implicit::Bool, "{s}");
        }
        assert!(construct_bool("on").unwrap());
        assert!(!construct_bool("NO").unwrap());
        // Not booleans in YAML 1.1:
        assert_eq!(resolve_plain("y"), Implicit::Str);
        assert_eq!(resolve_plain("oN"), Implicit::Str);
    }

    #[test]
    fn yaml11_ints_cover_octal_binary_hex_sexagesimal_and_underscores() {
        assert_eq!(int("010"), "8");
        assert_eq!(int("0b101"), "5");
        assert_eq!(int("-0x1F"), "-31");
        assert_eq!(int("4_096"), "4096");
        assert_eq!(int("1:30"), "90");
        assert_eq!(int("52:54:00:12:34:56"), "41135085296");
        assert_eq!(int("+0"), "0");
        assert_eq!(int("1_"), "1");
        assert_eq!(int("99999999999999999999999"), "99999999999999999999999");
        // `09` is not octal and not decimal in YAML 1.1: a string.
        assert_eq!(resolve_plain("09"), Implicit::Str);
        assert_eq!(resolve_plain("52:54:00:AA:BB:CC"), Implicit::Str);
    }

    #[test]
    fn yaml11_floats_need_a_dot_and_cover_nan_inf() {
        assert_eq!(resolve_plain("1.5"), Implicit::Float);
        assert_eq!(construct_float("1_0.5").unwrap(), 10.5);
        assert_eq!(construct_float("1.0e+3").unwrap(), 1000.0);
        assert_eq!(construct_float("190:20:30.15").unwrap(), 685_230.15);
        assert!(construct_float(".NaN").unwrap().is_nan());
        assert_eq!(construct_float("-.inf").unwrap(), f64::NEG_INFINITY);
        assert_eq!(resolve_plain(".Inf"), Implicit::Float);
        // No dot or no exponent sign: not a float in YAML 1.1.
        assert_eq!(resolve_plain("1e3"), Implicit::Str);
        assert_eq!(resolve_plain("1.0e3"), Implicit::Str);
    }

    #[test]
    fn yaml11_nulls() {
        for s in ["", "~", "null", "Null", "NULL"] {
            assert_eq!(resolve_plain(s), Implicit::Null, "{s:?}");
        }
        assert_eq!(resolve_plain("nULL"), Implicit::Str);
    }

    #[test]
    fn yaml11_timestamps_become_dates_and_datetimes() {
        assert_eq!(resolve_plain("2001-12-14"), Implicit::Timestamp);
        assert_eq!(
            construct_timestamp("2001-12-14").unwrap().py_str(),
            "2001-12-14"
        );
        let dt = construct_timestamp("2001-12-14t21:59:43.10-05:00").unwrap();
        assert_eq!(dt.py_str(), "2001-12-14 21:59:43.100000-05:00");
        assert_eq!(
            construct_timestamp("2001-12-15 2:59:43.10Z")
                .unwrap()
                .py_str(),
            "2001-12-15 02:59:43.100000+00:00"
        );
        assert_eq!(
            construct_timestamp("2001-02-30").unwrap_err(),
            "day is out of range for month"
        );
        assert_eq!(resolve_plain("2001-1-1"), Implicit::Str);
    }

    #[test]
    fn yaml11_strings_are_whatever_matches_no_resolver() {
        for s in [
            "vmbr0",
            "y",
            "n",
            "0o7",
            "1e3",
            "09",
            "2024-1-1",
            "BC:24:11:00:05:21",
            "<<<",
            "==",
            "True!",
            ".",
            "-",
            "+",
        ] {
            assert_eq!(resolve_plain(s), Implicit::Str, "{s:?}");
        }
    }

    #[test]
    fn merge_and_value_keys() {
        assert_eq!(resolve_plain("<<"), Implicit::Merge);
        assert_eq!(resolve_plain("="), Implicit::Value);
        assert_eq!(resolve_plain("<<<"), Implicit::Str);
    }

    #[test]
    fn explicit_int_tag_errors_read_as_python() {
        assert_eq!(
            construct_int("abc").unwrap_err(),
            "invalid literal for int() with base 10: 'abc'"
        );
        assert_eq!(
            construct_float("abc").unwrap_err(),
            "could not convert string to float: 'abc'"
        );
        assert_eq!(construct_bool("maybe").unwrap_err(), "'maybe'");
    }
}
