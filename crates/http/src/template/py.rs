//! Python semantics where minijinja's differ from jinja2's under transformers: how values print
//! (`str`/`repr`), the `tojson` filter transformers installs (`json.dumps` with its options), the
//! `iterable` / `sequence` / `number` tests, and the string methods minijinja-contrib's pycompat
//! lacks.

use minijinja::value::{Kwargs, Rest, ValueKind};
use minijinja::{Error, ErrorKind, Output, State, Value};

fn invalid(msg: impl Into<String>) -> Error {
    Error::new(ErrorKind::InvalidOperation, msg.into())
}

/// Python's `repr(float)` (also its `str` and `json.dumps`): shortest round-trip digits, fixed
/// notation for exponents -4..16 (with `.0` when integral), else `1.5e-07` / `1e+16`.
pub fn float_repr(f: f64) -> String {
    if f.is_nan() {
        return "nan".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "inf" } else { "-inf" }.into();
    }
    let sci = format!("{f:e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    if f != 0.0 && !(-4..16).contains(&exp) {
        let sign = if exp < 0 { '-' } else { '+' };
        return format!("{mantissa}e{sign}{:02}", exp.abs());
    }
    let fixed = format!("{f}");
    if fixed.contains('.') {
        fixed
    } else {
        fixed + ".0"
    }
}

/// Python's `str.isprintable` for one character, as far as the Unicode categories templates meet
/// go (controls, format characters, separators other than space, private use, noncharacters).
fn printable(c: char) -> bool {
    let u = c as u32;
    !matches!(u,
        0..=0x1f | 0x7f..=0xa0 | 0xad | 0x600..=0x605 | 0x61c | 0x6dd | 0x70f | 0x1680
        | 0x180e | 0x2000..=0x200f | 0x2028..=0x202f | 0x205f..=0x2064 | 0x2066..=0x206f
        | 0x3000 | 0xd800..=0xf8ff | 0xfdd0..=0xfdef | 0xfeff | 0xfff9..=0xfffb
        | 0xe0001 | 0xe0020..=0xe007f | 0xf0000..)
        && u & 0xfffe != 0xfffe
}

/// Python's `repr(str)`.
fn str_repr(s: &str, out: &mut String) {
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if printable(c) => out.push(c),
            c if (c as u32) < 0x100 => out.push_str(&format!("\\x{:02x}", c as u32)),
            c if (c as u32) < 0x10000 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push_str(&format!("\\U{:08x}", c as u32)),
        }
    }
    out.push(quote);
}

/// How deep printed or serialized values may nest: deeper is an error, not a stack overflow (a
/// template can nest a list in itself in a loop).
const MAX_DEPTH: usize = 256;

/// The widest padding (`ljust`, `center`, `zfill`, `tojson` indent) a template may ask for.
const MAX_WIDTH: usize = 1 << 16;

fn too_deep() -> Error {
    invalid(format!("value nested deeper than {MAX_DEPTH} levels"))
}

/// Python's `repr` of a template value (lists and dicts as Python prints them).
fn repr(v: &Value, depth: usize, out: &mut String) -> Result<(), Error> {
    if depth > MAX_DEPTH {
        return Err(too_deep());
    }
    match v.kind() {
        ValueKind::String => str_repr(v.as_str().unwrap_or_default(), out),
        ValueKind::Seq | ValueKind::Iterable => {
            out.push('[');
            for (i, item) in v.try_iter()?.enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                repr(&item, depth + 1, out)?;
            }
            out.push(']');
        }
        ValueKind::Map => {
            out.push('{');
            for (i, key) in v.try_iter()?.enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                repr(&key, depth + 1, out)?;
                out.push_str(": ");
                repr(&v.get_item(&key)?, depth + 1, out)?;
            }
            out.push('}');
        }
        _ => out.push_str(&str_of(v)?),
    }
    Ok(())
}

/// Python's `str` of a template value: what `{{ v }}` and `v | string` print.
pub fn str_of(v: &Value) -> Result<String, Error> {
    Ok(match v.kind() {
        ValueKind::Undefined => String::new(),
        ValueKind::None => "None".into(),
        ValueKind::Bool => if v.is_true() { "True" } else { "False" }.into(),
        ValueKind::Number if !v.is_integer() => float_repr(f64::try_from(v.clone())?),
        ValueKind::Seq | ValueKind::Iterable | ValueKind::Map => {
            let mut s = String::new();
            repr(v, 0, &mut s)?;
            s
        }
        _ => v.to_string(),
    })
}

/// The environment's formatter: values print as Python prints them (no autoescaping: chat
/// templates render text, not HTML).
pub fn format(out: &mut Output, _state: &State, v: &Value) -> Result<(), Error> {
    match v.as_str() {
        Some(s) => out.write_str(s),
        None => out.write_str(&str_of(v)?),
    }
    .map_err(|e| invalid(format!("writing the output: {e}")))
}

/// The `string` filter: Python's `str`.
pub fn string(v: &Value) -> Result<String, Error> {
    match v.as_str() {
        Some(s) => Ok(s.to_string()),
        None => str_of(v),
    }
}

/// `json.dumps` options of transformers' `tojson`.
struct JsonOpts {
    ensure_ascii: bool,
    indent: Option<String>,
    item_sep: String,
    key_sep: String,
    sort_keys: bool,
}

fn json_str(s: &str, ascii: bool, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 || (ascii && !(' '..='~').contains(&c)) => {
                let mut units = [0u16; 2];
                for u in c.encode_utf16(&mut units) {
                    out.push_str(&format!("\\u{u:04x}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

fn json_float(f: f64) -> String {
    if f.is_nan() {
        "NaN".into()
    } else if f.is_infinite() {
        if f > 0.0 { "Infinity" } else { "-Infinity" }.into()
    } else {
        float_repr(f)
    }
}

/// A dict key as `json.dumps` writes it (keys become strings).
fn json_key(k: &Value) -> Result<String, Error> {
    Ok(match k.kind() {
        ValueKind::String => k.as_str().unwrap_or_default().to_string(),
        ValueKind::None => "null".into(),
        ValueKind::Bool => if k.is_true() { "true" } else { "false" }.into(),
        ValueKind::Number if !k.is_integer() => {
            json_float(f64::try_from(k.clone()).unwrap_or(f64::NAN))
        }
        ValueKind::Number => k.to_string(),
        _ => {
            return Err(invalid(format!(
                "keys must be str, int, float, bool or None, not {}",
                k.kind()
            )));
        }
    })
}

fn newline(o: &JsonOpts, depth: usize, out: &mut String) {
    if let Some(ind) = &o.indent {
        out.push('\n');
        for _ in 0..depth {
            out.push_str(ind);
        }
    }
}

fn json(v: &Value, o: &JsonOpts, depth: usize, out: &mut String) -> Result<(), Error> {
    if depth > MAX_DEPTH {
        return Err(too_deep());
    }
    match v.kind() {
        ValueKind::None => out.push_str("null"),
        ValueKind::Bool => out.push_str(if v.is_true() { "true" } else { "false" }),
        ValueKind::Number if v.is_integer() => out.push_str(&v.to_string()),
        ValueKind::Number => out.push_str(&json_float(f64::try_from(v.clone())?)),
        ValueKind::String => json_str(v.as_str().unwrap_or_default(), o.ensure_ascii, out),
        ValueKind::Seq | ValueKind::Iterable => {
            let items: Vec<Value> = v.try_iter()?.collect();
            if items.is_empty() {
                out.push_str("[]");
                return Ok(());
            }
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(&o.item_sep);
                }
                newline(o, depth + 1, out);
                json(item, o, depth + 1, out)?;
            }
            newline(o, depth, out);
            out.push(']');
        }
        ValueKind::Map => {
            let mut entries = Vec::new();
            for k in v.try_iter()? {
                let val = v.get_item(&k)?;
                entries.push((json_key(&k)?, val));
            }
            if o.sort_keys {
                entries.sort_by(|a, b| a.0.cmp(&b.0));
            }
            if entries.is_empty() {
                out.push_str("{}");
                return Ok(());
            }
            out.push('{');
            for (i, (k, val)) in entries.iter().enumerate() {
                if i > 0 {
                    out.push_str(&o.item_sep);
                }
                newline(o, depth + 1, out);
                json_str(k, o.ensure_ascii, out);
                out.push_str(&o.key_sep);
                json(val, o, depth + 1, out)?;
            }
            newline(o, depth, out);
            out.push('}');
        }
        kind => {
            let name = if kind == ValueKind::Undefined {
                "Undefined".to_string()
            } else {
                kind.to_string()
            };
            return Err(invalid(format!(
                "Object of type {name} is not JSON serializable"
            )));
        }
    }
    Ok(())
}

/// transformers' `tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False)`:
/// `json.dumps` with those options (no HTML escaping, keys in insertion order).
pub fn tojson(v: &Value, args: Rest<Value>, kwargs: Kwargs) -> Result<Value, Error> {
    const NAMES: [&str; 4] = ["ensure_ascii", "indent", "separators", "sort_keys"];
    if args.len() > NAMES.len() {
        return Err(invalid("tojson takes at most 4 arguments"));
    }
    let mut opt: [Value; 4] = Default::default();
    for (slot, a) in opt.iter_mut().zip(args.iter()) {
        *slot = a.clone();
    }
    for (slot, name) in opt.iter_mut().zip(NAMES) {
        if let Some(a) = kwargs.get::<Option<Value>>(name)? {
            *slot = a;
        }
    }
    kwargs.assert_all_used()?;
    let [ensure_ascii, indent, separators, sort_keys] = opt;
    let indent = match indent.kind() {
        ValueKind::Undefined | ValueKind::None => None,
        ValueKind::String => Some(
            indent
                .as_str()
                .unwrap_or_default()
                .chars()
                .take(MAX_WIDTH)
                .collect(),
        ),
        ValueKind::Number => Some(" ".repeat(width(indent.as_i64().unwrap_or(0))?)),
        k => {
            return Err(invalid(format!(
                "tojson: indent must be an int or str, not {k}"
            )))
        }
    };
    let (item_sep, key_sep) = match separators.kind() {
        ValueKind::Undefined | ValueKind::None => (
            if indent.is_some() { "," } else { ", " }.to_string(),
            ": ".to_string(),
        ),
        _ => {
            let s: Vec<Value> = separators.try_iter()?.collect();
            match s.as_slice() {
                [a, b] if a.as_str().is_some() && b.as_str().is_some() => (
                    a.as_str().unwrap_or_default().to_string(),
                    b.as_str().unwrap_or_default().to_string(),
                ),
                _ => return Err(invalid("tojson: separators must be two strings")),
            }
        }
    };
    let o = JsonOpts {
        ensure_ascii: ensure_ascii.is_true(),
        indent,
        item_sep,
        key_sep,
        sort_keys: sort_keys.is_true(),
    };
    let mut out = String::new();
    json(v, &o, 0, &mut out)?;
    Ok(Value::from(out))
}

/// A padding width: negative is none, over [`MAX_WIDTH`] an error.
fn width(w: i64) -> Result<usize, Error> {
    let w = w.max(0) as usize;
    if w > MAX_WIDTH {
        return Err(invalid(format!("width {w} is over {MAX_WIDTH}")));
    }
    Ok(w)
}

/// jinja2's `iterable` test: `iter(v)` works (`none` and numbers are not; undefined is).
pub fn is_iterable(v: &Value) -> bool {
    match v.kind() {
        ValueKind::None | ValueKind::Bool | ValueKind::Number => false,
        ValueKind::Plain | ValueKind::Invalid => v.try_iter().is_ok(),
        _ => true,
    }
}

/// jinja2's `sequence` test: has `len` and `[]` (strings, lists, dicts; undefined too).
pub fn is_sequence(v: &Value) -> bool {
    matches!(
        v.kind(),
        ValueKind::Undefined | ValueKind::String | ValueKind::Seq | ValueKind::Map
    )
}

/// jinja2's `number` test: a Python number, booleans included.
pub fn is_number(v: &Value) -> bool {
    matches!(v.kind(), ValueKind::Number | ValueKind::Bool)
}

/// jinja2's `length` filter: Python's `len` (0 for undefined).
pub fn length(v: &Value) -> Result<usize, Error> {
    if v.is_undefined() {
        return Ok(0);
    }
    v.len().ok_or_else(|| {
        invalid(format!(
            "object of type '{}' has no len()",
            if v.is_none() {
                "NoneType".to_string()
            } else {
                v.kind().to_string()
            }
        ))
    })
}

/// jinja2's `round(value, precision=0, method='common')`: Python's `round` (half to even, on the
/// float's exact value; an integer stays an integer), or `ceil` / `floor` at that precision.
pub fn round(v: &Value, precision: Option<i32>, method: Option<&str>) -> Result<Value, Error> {
    let p = precision.unwrap_or(0);
    let method = method.unwrap_or("common");
    if !matches!(method, "common" | "ceil" | "floor") {
        return Err(invalid("method must be common, ceil or floor"));
    }
    if v.is_integer() && method == "common" && p >= 0 {
        return Ok(v.clone());
    }
    let f = f64::try_from(v.clone())?;
    // Past 340 digits every float is already exact at that precision.
    if p > 340 {
        return Ok(Value::from(f));
    }
    let r = match method {
        "common" if p >= 0 => format!("{f:.*}", p as usize).parse().unwrap_or(f),
        "common" => (f / 10f64.powi(-p)).round_ties_even() * 10f64.powi(-p),
        "ceil" => (f * 10f64.powi(p)).ceil() / 10f64.powi(p),
        _ => (f * 10f64.powi(p)).floor() / 10f64.powi(p),
    };
    Ok(Value::from(r))
}

/// jinja2's `wordcount` filter.
pub fn wordcount(s: &str) -> usize {
    s.split(|c: char| !(c.is_alphanumeric() || c == '_'))
        .filter(|w| !w.is_empty())
        .count()
}

/// Python's `str.center(width, fill)` (extra padding goes left when `pad & width` is odd).
fn center(s: &str, width: usize, fill: char) -> String {
    let n = s.chars().count();
    if width <= n {
        return s.to_string();
    }
    let pad = width - n;
    let left = pad / 2 + (pad & width & 1);
    let f = |k| std::iter::repeat_n(fill, k).collect::<String>();
    format!("{}{s}{}", f(left), f(pad - left))
}

/// The `center` filter (`center(width=80)`).
pub fn center_filter(s: &str, w: Option<i64>) -> Result<String, Error> {
    Ok(center(s, width(w.unwrap_or(80))?, ' '))
}

/// Python's `str.rsplit(sep=None, maxsplit=-1)`.
fn rsplit(s: &str, sep: Option<&str>, maxsplit: i64) -> Result<Vec<String>, Error> {
    let limit = if maxsplit < 0 {
        usize::MAX
    } else {
        maxsplit as usize
    };
    let mut parts: Vec<String> = match sep {
        Some("") => return Err(invalid("empty separator")),
        Some(sep) => {
            let mut v: Vec<String> = s
                .rsplitn(limit.saturating_add(1), sep)
                .map(str::to_string)
                .collect();
            v.reverse();
            return Ok(v);
        }
        None => Vec::new(),
    };
    // Whitespace runs separate; the leftmost part keeps its inner whitespace.
    let mut rest = s.trim_end();
    while !rest.is_empty() {
        if parts.len() == limit {
            parts.push(rest.trim_start().to_string());
            break;
        }
        match rest.rfind(char::is_whitespace) {
            Some(i) => {
                let w = &rest[i..];
                let ws = w.chars().next().map_or(1, char::len_utf8);
                parts.push(rest[i + ws..].to_string());
                rest = rest[..i].trim_end();
            }
            None => {
                parts.push(rest.to_string());
                break;
            }
        }
    }
    parts.reverse();
    Ok(parts)
}

fn arg_str<'a>(args: &'a [Value], i: usize, what: &str) -> Result<Option<&'a str>, Error> {
    match args.get(i) {
        None => Ok(None),
        Some(v) if v.is_none() => Ok(None),
        Some(v) => v
            .as_str()
            .map(Some)
            .ok_or_else(|| invalid(format!("{what}: argument {} must be a str", i + 1))),
    }
}

fn arg_int(args: &[Value], i: usize, default: i64) -> Result<i64, Error> {
    match args.get(i) {
        None => Ok(default),
        Some(v) => v
            .as_i64()
            .ok_or_else(|| invalid(format!("argument {} must be an int", i + 1))),
    }
}

fn fill_arg(args: &[Value]) -> Result<char, Error> {
    match arg_str(args, 1, "fill")? {
        None => Ok(' '),
        Some(f) if f.chars().count() == 1 => Ok(f.chars().next().unwrap_or(' ')),
        Some(_) => Err(invalid(
            "The fill character must be exactly one character long",
        )),
    }
}

/// Python string methods beyond minijinja-contrib's pycompat, then pycompat's.
pub fn unknown_method(
    state: &State,
    value: &Value,
    method: &str,
    args: &[Value],
) -> Result<Value, Error> {
    if let Some(s) = value.as_str() {
        let width = || arg_int(args, 0, 0).and_then(width);
        let pad = |w: usize| w.saturating_sub(s.chars().count());
        match method {
            "rsplit" => {
                return Ok(Value::from(rsplit(
                    s,
                    arg_str(args, 0, "rsplit")?,
                    arg_int(args, 1, -1)?,
                )?));
            }
            "removeprefix" => {
                let p = arg_str(args, 0, method)?.unwrap_or_default();
                return Ok(Value::from(s.strip_prefix(p).unwrap_or(s)));
            }
            "removesuffix" => {
                let p = arg_str(args, 0, method)?.unwrap_or_default();
                return Ok(Value::from(s.strip_suffix(p).unwrap_or(s)));
            }
            "zfill" => {
                let n = pad(width()?);
                let (sign, digits) = match s.chars().next() {
                    Some(c @ ('+' | '-')) => (c.to_string(), &s[1..]),
                    _ => (String::new(), s),
                };
                return Ok(Value::from(format!("{sign}{}{digits}", "0".repeat(n))));
            }
            "ljust" => {
                let fill = fill_arg(args)?.to_string();
                return Ok(Value::from(format!("{s}{}", fill.repeat(pad(width()?)))));
            }
            "rjust" => {
                let fill = fill_arg(args)?.to_string();
                return Ok(Value::from(format!("{}{s}", fill.repeat(pad(width()?)))));
            }
            "center" => return Ok(Value::from(center(s, width()?, fill_arg(args)?))),
            _ => {}
        }
    }
    minijinja_contrib::pycompat::unknown_method_callback(state, value, method, args)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_print_as_python() {
        for (f, want) in [
            (1.0, "1.0"),
            (0.1 + 0.2, "0.30000000000000004"),
            (1e16, "1e+16"),
            (1e15, "1000000000000000.0"),
            (1e-5, "1e-05"),
            (1e-4, "0.0001"),
            (-0.0, "-0.0"),
            (-2.5e-300, "-2.5e-300"),
        ] {
            assert_eq!(float_repr(f), want);
        }
    }

    #[test]
    fn python_rsplit() {
        assert_eq!(rsplit("a b  c ", None, 1).unwrap(), ["a b", "c"]);
        assert_eq!(rsplit("  a b", None, -1).unwrap(), ["a", "b"]);
        assert_eq!(rsplit("a-b-c", Some("-"), 1).unwrap(), ["a-b", "c"]);
        assert_eq!(rsplit("", None, -1).unwrap(), Vec::<String>::new());
        assert_eq!(center("ab", 5, '*'), "**ab*");
        assert_eq!(center("abc", 6, '*'), "*abc**");
    }
}
