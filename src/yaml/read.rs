//! `yaml.safe_load` for one document, as PyYAML 6 does it, on top of the `saphyr-parser`
//! event stream: PyYAML's reader check for characters it refuses, a leading byte-order mark
//! skipped, one document at most, duplicate anchors refused, anchor names as PyYAML scans
//! them, merge keys (`<<`) flattened exactly as `SafeConstructor.flatten_mapping`, repeated
//! keys (last value wins, first position kept), unhashable keys refused, and every scalar
//! resolved with the YAML 1.1 rules of [`super::resolve`].
//!
//! Bounds, checked while the events stream in so a hostile document fails fast: the text size
//! ([`MAX_DOCUMENT_BYTES`]), nesting depth ([`MAX_DEPTH`], also after aliases), scalar length
//! ([`MAX_STRING_BYTES`]) and the number of values built ([`MAX_NODES`], so an alias bomb
//! cannot expand). Knows nothing about what the document means.

use std::collections::{HashMap, HashSet};

use saphyr_parser::{Event, Parser, ScalarStyle, Span};

use super::resolve::{
    construct_bool, construct_float, construct_int, construct_timestamp, resolve_plain, Implicit,
};
use super::value::{PyDict, PyValue};
use super::{MAX_DEPTH, MAX_DOCUMENT_BYTES, MAX_NODES, MAX_STRING_BYTES};

/// Why a document could not be read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct YamlError {
    /// 1-based line of the problem (0 when it concerns the whole text).
    pub line: usize,
    /// 1-based column.
    pub column: usize,
    pub message: String,
    pub kind: YamlErrorKind,
}

/// What kind of refusal a [`YamlError`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum YamlErrorKind {
    /// PyYAML refuses the document too (syntax, unknown tag, bad merge, unhashable key…).
    Refused,
    /// A bound of this crate (size, depth, length, alias expansion): PyYAML might read it.
    Bound,
    /// Something PyYAML reads but this crate does not carry (recursive aliases, `!!binary`,
    /// `!!set`, `!!omap`, `!!pairs`).
    Unsupported,
}

impl std::fmt::Display for YamlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.line == 0 {
            f.write_str(&self.message)
        } else {
            write!(
                f,
                "line {}, column {}: {}",
                self.line, self.column, self.message
            )
        }
    }
}

const SEQ: &str = "tag:yaml.org,2002:seq";
const MAP: &str = "tag:yaml.org,2002:map";
const STR: &str = "tag:yaml.org,2002:str";

#[derive(Debug)]
enum Kind {
    Scalar(String),
    Seq(Vec<usize>),
    Map(Vec<(usize, usize)>),
}

impl Kind {
    fn id(&self) -> &'static str {
        match self {
            Kind::Scalar(_) => "scalar",
            Kind::Seq(_) => "sequence",
            Kind::Map(_) => "mapping",
        }
    }
}

#[derive(Debug)]
struct Node {
    kind: Kind,
    /// The resolved full tag (`tag:yaml.org,2002:int`, `!local`).
    tag: String,
    line: usize,
    column: usize,
    /// False while a collection is still open (an alias to it would be recursive).
    complete: bool,
}

fn err(line: usize, column: usize, kind: YamlErrorKind, message: impl Into<String>) -> YamlError {
    YamlError {
        line,
        column,
        message: message.into(),
        kind,
    }
}

/// PyYAML's `Reader.check_printable`: tabs, line breaks, printable ASCII, NEL and the BMP /
/// astral ranges outside the surrogates and U+FFFE/U+FFFF.
fn check_printable(text: &str) -> Result<(), YamlError> {
    for (pos, c) in text.chars().enumerate() {
        let n = c as u32;
        let ok = matches!(n, 0x09 | 0x0a | 0x0d | 0x20..=0x7e | 0x85 | 0xa0..=0xd7ff | 0xe000..=0xfffd | 0x10000..=0x10ffff);
        if !ok {
            return Err(err(
                0,
                0,
                YamlErrorKind::Refused,
                format!(
                    "unacceptable character #x{n:04x}: special characters are not allowed (position {pos})"
                ),
            ));
        }
    }
    Ok(())
}

/// PyYAML's line breaks (`Reader`, `Scanner.scan_line_break`): `\r\n`, `\r` and NEL
/// (U+0085) are each one line break, read as `\n` wherever they stand (between tokens, inside
/// plain, quoted and block scalars); saphyr (YAML 1.2) knows only `\r\n`, `\r` and `\n`, and
/// keeps a NEL as content (`a: "x<NEL>y"` was `'x\x85y'` here and `'x y'` in hyops). Turning
/// them into `\n` first gives saphyr PyYAML's text, line numbers included. LINE SEPARATOR and
/// PARAGRAPH SEPARATOR (U+2028, U+2029) are line breaks to PyYAML too, but kept as themselves
/// in scalars, which no `\n` rewrite can give: they are refused with their position (a
/// deliberate difference, README "Differences from hyops"), never read as content. A
/// byte-order mark left at the start (a second one) is refused too: PyYAML keeps it as part
/// of the first key, saphyr would skip it.
fn pyyaml_line_breaks(body: &str) -> Result<std::borrow::Cow<'_, str>, YamlError> {
    if body.starts_with('\u{feff}') {
        return Err(err(
            1,
            1,
            YamlErrorKind::Unsupported,
            "a second byte-order mark (U+FEFF) starts the document; hyops would read it as part \
             of the first key: remove it",
        ));
    }
    if !body.contains(['\r', '\u{85}', '\u{2028}', '\u{2029}']) {
        return Ok(std::borrow::Cow::Borrowed(body));
    }
    let mut out = String::with_capacity(body.len());
    let (mut line, mut column) = (1usize, 1usize);
    let mut chars = body.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\r' => {
                if chars.peek() == Some(&'\n') {
                    chars.next();
                }
                out.push('\n');
                (line, column) = (line + 1, 1);
            }
            '\u{85}' | '\n' => {
                out.push('\n');
                (line, column) = (line + 1, 1);
            }
            '\u{2028}' | '\u{2029}' => {
                let name = if c == '\u{2028}' {
                    "LINE SEPARATOR (U+2028)"
                } else {
                    "PARAGRAPH SEPARATOR (U+2029)"
                };
                return Err(err(
                    line,
                    column,
                    YamlErrorKind::Unsupported,
                    format!(
                        "a {name} is a line break in YAML 1.1 that hyops keeps inside the value; \
                         hyops-pve does not read it: replace it with a newline or remove it"
                    ),
                ));
            }
            other => {
                out.push(other);
                column += 1;
            }
        }
    }
    Ok(std::borrow::Cow::Owned(out))
}

/// PyYAML's scanner skips only spaces between tokens (`scan_to_next_token`) and ends a plain
/// scalar at a tab (`scan_plain`, `scan_plain_spaces`), so a tab anywhere but inside a quoted
/// or block scalar or a comment fails with "found character '\t' that cannot start any
/// token"; saphyr (YAML 1.2) reads `a: x<TAB>y` as `'x\ty'` and skips tabs between tokens.
/// `scalars` are the byte ranges of the quoted and block scalars of `text`, in document order
/// (one pass: linear in the text, whatever the number of scalars).
fn check_tabs(text: &str, scalars: &[(usize, usize)]) -> Result<(), YamlError> {
    if !text.contains('\t') {
        return Ok(());
    }
    let mut scalars: Vec<(usize, usize)> = scalars.to_vec();
    scalars.sort_unstable();
    let mut next = 0usize;
    let (mut line, mut column) = (1usize, 1usize);
    let mut in_comment = false;
    let mut prev = '\n';
    for (at, c) in text.char_indices() {
        while scalars.get(next).is_some_and(|(_, e)| *e <= at) {
            next += 1;
        }
        let in_scalar = scalars
            .get(next)
            .is_some_and(|(s, e)| (*s..*e).contains(&at));
        if c == '\n' {
            in_comment = false;
        } else if !in_scalar && !in_comment {
            if c == '#' && matches!(prev, ' ' | '\t' | '\n') {
                in_comment = true;
            } else if c == '\t' {
                return Err(err(
                    line,
                    column,
                    YamlErrorKind::Refused,
                    "found character '\\t' that cannot start any token (YAML 1.1, as PyYAML reads \
                     it, takes tabs only inside quoted and block scalars and comments: indent and \
                     separate with spaces)",
                ));
            }
        }
        prev = c;
        if c == '\n' {
            (line, column) = (line + 1, 1);
        } else {
            column += 1;
        }
    }
    Ok(())
}

/// Reads one YAML document the way `yaml.safe_load` does. An empty stream is `None`.
pub fn safe_load(text: &str) -> Result<PyValue, YamlError> {
    if text.len() > MAX_DOCUMENT_BYTES {
        return Err(err(
            0,
            0,
            YamlErrorKind::Bound,
            format!(
                "the document is {} bytes; hyops-pve reads at most {MAX_DOCUMENT_BYTES} bytes",
                text.len()
            ),
        ));
    }
    check_printable(text)?;
    // PyYAML skips a byte-order mark at the very start only.
    let body = text.strip_prefix('\u{feff}').unwrap_or(text);
    let body = pyyaml_line_breaks(body)?;
    let mut c = Composer::new(&body);
    let composed = c.compose()?;
    check_tabs(&body, &c.tab_ranges)?;
    let Some(root) = composed else {
        return Ok(PyValue::None);
    };
    let mut k = Constructor {
        nodes: &mut c.nodes,
        built: 0,
    };
    k.construct(root, 0)
}

/// Turns events into a node graph (PyYAML's composer), resolving scalar tags.
struct Composer<'a> {
    src: &'a str,
    /// Byte offset of each character, built only when the text is not ASCII.
    char_bytes: Option<Vec<usize>>,
    nodes: Vec<Node>,
    /// saphyr anchor id → node.
    anchors: HashMap<usize, usize>,
    /// anchor name → where it was first defined.
    anchor_names: HashMap<String, (usize, usize)>,
    /// Byte ranges of the quoted and block scalars (the only places PyYAML takes a tab).
    tab_ranges: Vec<(usize, usize)>,
}

struct Open {
    node: usize,
    pending_key: Option<usize>,
}

fn full_tag(tag: &saphyr_parser::Tag) -> String {
    if tag.handle.is_empty() && tag.suffix == "!" {
        "!".to_string()
    } else {
        format!("{}{}", tag.handle, tag.suffix)
    }
}

impl<'a> Composer<'a> {
    fn new(src: &'a str) -> Self {
        let char_bytes = if src.is_ascii() {
            None
        } else {
            Some(src.char_indices().map(|(b, _)| b).collect())
        };
        Self {
            src,
            char_bytes,
            nodes: Vec::new(),
            anchors: HashMap::new(),
            anchor_names: HashMap::new(),
            tab_ranges: Vec::new(),
        }
    }

    fn byte_at(&self, char_index: usize) -> usize {
        match &self.char_bytes {
            None => char_index.min(self.src.len()),
            Some(v) => v.get(char_index).copied().unwrap_or(self.src.len()),
        }
    }

    fn pos(span: &Span) -> (usize, usize) {
        (span.start.line(), span.start.col() + 1)
    }

    /// The anchor (`&name`) among the node properties starting at `span`, checked as
    /// PyYAML's scanner checks it.
    fn anchor_name(&self, span: &Span) -> Result<Option<String>, YamlError> {
        let (line, column) = Self::pos(span);
        let rest = &self.src[self.byte_at(span.start.index())..];
        let mut chars = rest.char_indices().peekable();
        loop {
            while chars
                .peek()
                .is_some_and(|(_, c)| matches!(c, ' ' | '\t' | '\r' | '\n'))
            {
                chars.next();
            }
            match chars.peek().map(|(_, c)| *c) {
                Some('&') => {
                    chars.next();
                    let start = chars.peek().map(|(i, _)| *i).unwrap_or(rest.len());
                    return scan_name(rest, start, "anchor", line, column).map(Some);
                }
                Some('!') => {
                    // Skip the tag token.
                    let verbatim =
                        rest[chars.peek().map(|(i, _)| *i).unwrap_or(0)..].starts_with("!<");
                    for (_, c) in chars.by_ref() {
                        if verbatim && c == '>' {
                            break;
                        }
                        if !verbatim && c.is_whitespace() {
                            break;
                        }
                    }
                }
                _ => return Ok(None),
            }
        }
    }

    fn push(&mut self, kind: Kind, tag: String, span: &Span, complete: bool) -> usize {
        let (line, column) = Self::pos(span);
        self.nodes.push(Node {
            kind,
            tag,
            line,
            column,
            complete,
        });
        self.nodes.len() - 1
    }

    fn register_anchor(&mut self, id: usize, node: usize, span: &Span) -> Result<(), YamlError> {
        if id == 0 {
            return Ok(());
        }
        self.anchors.insert(id, node);
        if let Some(name) = self.anchor_name(span)? {
            let (line, column) = Self::pos(span);
            if let Some((l0, c0)) = self.anchor_names.get(&name) {
                return Err(err(
                    line,
                    column,
                    YamlErrorKind::Refused,
                    format!(
                        "found duplicate anchor {}; first occurrence at line {l0}, column {c0}",
                        PyValue::str(name.clone()).py_repr()
                    ),
                ));
            }
            self.anchor_names.insert(name, (line, column));
        }
        Ok(())
    }

    /// Composes the single document; `None` for an empty stream.
    fn compose(&mut self) -> Result<Option<usize>, YamlError> {
        let mut parser = Parser::new_from_str(self.src);
        let mut stack: Vec<Open> = Vec::new();
        let mut root: Option<usize> = None;
        let mut documents = 0usize;
        loop {
            let (event, span) = match parser.next_event() {
                None => break,
                Some(Ok(x)) => x,
                Some(Err(e)) => {
                    // saphyr stops runaway nesting itself, before the events reach the
                    // depth check below.
                    let (kind, message) = if e.info().contains("recursion limit") {
                        (
                            YamlErrorKind::Bound,
                            format!("nesting is deeper than {MAX_DEPTH} levels"),
                        )
                    } else {
                        (YamlErrorKind::Refused, e.info().to_string())
                    };
                    return Err(err(e.marker().line(), e.marker().col() + 1, kind, message));
                }
            };
            let new_node = match event {
                Event::StreamEnd => break,
                Event::StreamStart | Event::Nothing | Event::DocumentEnd => continue,
                Event::DocumentStart(_) => {
                    documents += 1;
                    if documents > 1 {
                        let (line, column) = Self::pos(&span);
                        return Err(err(
                            line,
                            column,
                            YamlErrorKind::Refused,
                            "expected a single document in the stream, but found another document",
                        ));
                    }
                    continue;
                }
                Event::Scalar(value, style, anchor, tag) => {
                    if value.len() > MAX_STRING_BYTES {
                        let (line, column) = Self::pos(&span);
                        return Err(err(
                            line,
                            column,
                            YamlErrorKind::Bound,
                            format!(
                                "a value is {} bytes long; hyops-pve reads values of at most {MAX_STRING_BYTES} bytes",
                                value.len()
                            ),
                        ));
                    }
                    let tag = match tag.as_deref().map(full_tag) {
                        // `!` (non-specific): PyYAML resolves it as a plain scalar.
                        Some(t) if t == "!" => resolve_plain(&value).tag().to_string(),
                        Some(t) => t,
                        None if style == ScalarStyle::Plain => {
                            resolve_plain(&value).tag().to_string()
                        }
                        None => STR.to_string(),
                    };
                    if style != ScalarStyle::Plain {
                        self.tab_ranges.push((
                            self.byte_at(span.start.index()),
                            self.byte_at(span.end.index()),
                        ));
                    }
                    let id = self.push(Kind::Scalar(value.into_owned()), tag, &span, true);
                    self.register_anchor(anchor, id, &span)?;
                    id
                }
                Event::SequenceStart(anchor, ref tag) | Event::MappingStart(anchor, ref tag) => {
                    let is_seq = matches!(event, Event::SequenceStart(..));
                    if stack.len() >= MAX_DEPTH {
                        let (line, column) = Self::pos(&span);
                        return Err(err(
                            line,
                            column,
                            YamlErrorKind::Bound,
                            format!("nesting is deeper than {MAX_DEPTH} levels"),
                        ));
                    }
                    let tag = match tag.as_deref().map(full_tag) {
                        Some(t) if t != "!" => t,
                        _ if is_seq => SEQ.to_string(),
                        _ => MAP.to_string(),
                    };
                    let kind = if is_seq {
                        Kind::Seq(Vec::new())
                    } else {
                        Kind::Map(Vec::new())
                    };
                    let id = self.push(kind, tag, &span, false);
                    self.register_anchor(anchor, id, &span)?;
                    stack.push(Open {
                        node: id,
                        pending_key: None,
                    });
                    continue;
                }
                Event::SequenceEnd | Event::MappingEnd => {
                    let Some(open) = stack.pop() else { continue };
                    self.nodes[open.node].complete = true;
                    open.node
                }
                Event::Alias(id) => {
                    let (line, column) = Self::pos(&span);
                    let rest = &self.src[self.byte_at(span.start.index())..];
                    if rest.starts_with('*') {
                        scan_name(rest, 1, "alias", line, column)?;
                    }
                    let Some(&target) = self.anchors.get(&id) else {
                        return Err(err(
                            line,
                            column,
                            YamlErrorKind::Refused,
                            "found undefined alias",
                        ));
                    };
                    if !self.nodes[target].complete {
                        return Err(err(
                            line,
                            column,
                            YamlErrorKind::Unsupported,
                            "an alias refers to a node that contains it (a recursive structure); hyops-pve does not read recursive YAML",
                        ));
                    }
                    target
                }
            };
            // Attach the finished node to its parent (or make it the root).
            match stack.last_mut() {
                None => root = Some(new_node),
                Some(open) => match &mut self.nodes[open.node].kind {
                    Kind::Seq(items) => items.push(new_node),
                    Kind::Map(pairs) => match open.pending_key.take() {
                        None => open.pending_key = Some(new_node),
                        Some(k) => pairs.push((k, new_node)),
                    },
                    Kind::Scalar(_) => {}
                },
            }
        }
        Ok(root)
    }
}

/// PyYAML's `scan_anchor`: `[0-9A-Za-z_-]+`, followed by a blank, the end, or one of
/// `?:,]}%@` and the backquote. `start` is the byte offset of the name in `rest`.
fn scan_name(
    rest: &str,
    start: usize,
    what: &str,
    line: usize,
    column: usize,
) -> Result<String, YamlError> {
    let name: String = rest[start..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
        .collect();
    let next = rest[start + name.len()..].chars().next();
    let ok_end = match next {
        None => true,
        Some(c) => matches!(
            c,
            '\0' | ' '
                | '\t'
                | '\r'
                | '\n'
                | '\u{85}'
                | '\u{2028}'
                | '\u{2029}'
                | '?'
                | ':'
                | ','
                | ']'
                | '}'
                | '%'
                | '@'
                | '`'
        ),
    };
    if name.is_empty() || !ok_end {
        let found = next.map(|c| PyValue::str(c.to_string()).py_repr());
        return Err(err(
            line,
            column,
            YamlErrorKind::Refused,
            format!(
                "while scanning an {what}: expected alphabetic or numeric character, but found {}",
                found.unwrap_or_else(|| "end of stream".into())
            ),
        ));
    }
    Ok(name)
}

/// What `id(pair[0].value)` compares in PyYAML's merge.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum KeyIdentity {
    Node(usize),
    SharedText(String),
}

/// Builds Python values from the node graph (PyYAML's `SafeConstructor`).
struct Constructor<'n> {
    nodes: &'n mut Vec<Node>,
    built: usize,
}

impl Constructor<'_> {
    fn fail(&self, id: usize, kind: YamlErrorKind, message: impl Into<String>) -> YamlError {
        err(self.nodes[id].line, self.nodes[id].column, kind, message)
    }

    fn scalar_text(&self, id: usize) -> Result<String, YamlError> {
        match &self.nodes[id].kind {
            Kind::Scalar(s) => Ok(s.clone()),
            other => Err(self.fail(
                id,
                YamlErrorKind::Refused,
                format!("expected a scalar node, but found {}", other.id()),
            )),
        }
    }

    fn construct(&mut self, id: usize, depth: usize) -> Result<PyValue, YamlError> {
        self.built += 1;
        if self.built > MAX_NODES {
            return Err(self.fail(
                id,
                YamlErrorKind::Bound,
                format!("the document expands to more than {MAX_NODES} values (aliases included)"),
            ));
        }
        if depth > MAX_DEPTH {
            return Err(self.fail(
                id,
                YamlErrorKind::Bound,
                format!("nesting is deeper than {MAX_DEPTH} levels (aliases included)"),
            ));
        }
        let tag = self.nodes[id].tag.clone();
        let refused = |s: &Self, m: String| s.fail(id, YamlErrorKind::Refused, m);
        match tag.as_str() {
            "tag:yaml.org,2002:null" => {
                self.scalar_text(id)?;
                Ok(PyValue::None)
            }
            "tag:yaml.org,2002:bool" => construct_bool(&self.scalar_text(id)?)
                .map(PyValue::Bool)
                .map_err(|m| refused(self, m)),
            "tag:yaml.org,2002:int" => construct_int(&self.scalar_text(id)?)
                .map(PyValue::Int)
                .map_err(|m| refused(self, m)),
            "tag:yaml.org,2002:float" => construct_float(&self.scalar_text(id)?)
                .map(PyValue::Float)
                .map_err(|m| refused(self, m)),
            "tag:yaml.org,2002:timestamp" => {
                construct_timestamp(&self.scalar_text(id)?).map_err(|m| refused(self, m))
            }
            STR => self.scalar_text(id).map(PyValue::Str),
            SEQ => {
                let items = match &self.nodes[id].kind {
                    Kind::Seq(items) => items.clone(),
                    other => {
                        return Err(refused(
                            self,
                            format!("expected a sequence node, but found {}", other.id()),
                        ))
                    }
                };
                let mut out = Vec::with_capacity(items.len());
                for item in items {
                    out.push(self.construct(item, depth + 1)?);
                }
                Ok(PyValue::List(out))
            }
            MAP => self.construct_mapping(id, depth),
            "tag:yaml.org,2002:binary"
            | "tag:yaml.org,2002:set"
            | "tag:yaml.org,2002:omap"
            | "tag:yaml.org,2002:pairs" => Err(self.fail(
                id,
                YamlErrorKind::Unsupported,
                format!(
                    "the tag '{tag}' is not supported by hyops-pve (no platform-vm input takes it)"
                ),
            )),
            other => Err(refused(
                self,
                format!(
                    "could not determine a constructor for the tag {}",
                    PyValue::str(other).py_repr()
                ),
            )),
        }
    }

    /// `SafeConstructor.flatten_mapping` of PyYAML 6.0.4, in place: the pairs of every merged
    /// mapping (`<<: *a` or `<<: [*a, *b]`) are put first, in order, then the mapping's own
    /// pairs, and the dict is built from that list (a later pair wins). A merged pair is
    /// skipped when a pair with the *same key object* was merged already: the same aliased
    /// node, or, because CPython caches one-character and empty strings, any key whose text
    /// is empty or one Latin-1 character. So `<<: [{a: 1}, {a: 2}]` gives `a: 1` but
    /// `<<: [{ab: 1}, {ab: 2}]` gives `ab: 2`, exactly as PyYAML does.
    fn flatten(&mut self, id: usize, depth: usize) -> Result<(), YamlError> {
        if depth > MAX_DEPTH {
            return Err(self.fail(
                id,
                YamlErrorKind::Bound,
                format!("merge keys nest deeper than {MAX_DEPTH} levels"),
            ));
        }
        let Kind::Map(pairs) = &self.nodes[id].kind else {
            return Ok(());
        };
        if !pairs.iter().any(|(k, _)| {
            matches!(
                self.nodes[*k].tag.as_str(),
                "tag:yaml.org,2002:merge" | "tag:yaml.org,2002:value"
            )
        }) {
            return Ok(());
        }
        let pairs = pairs.clone();
        let mut merge: Vec<(usize, usize)> = Vec::new();
        let mut seen: HashSet<KeyIdentity> = HashSet::new();
        let mut own: Vec<(usize, usize)> = Vec::new();
        for (k, v) in pairs {
            match self.nodes[k].tag.as_str() {
                "tag:yaml.org,2002:merge" => {
                    let sources: Vec<usize> = match &self.nodes[v].kind {
                        Kind::Map(_) => vec![v],
                        Kind::Seq(items) => items.clone(),
                        Kind::Scalar(_) => {
                            return Err(self.fail(
                                v,
                                YamlErrorKind::Refused,
                                "while constructing a mapping: expected a mapping or list of mappings for merging, but found scalar",
                            ))
                        }
                    };
                    for sub in sources {
                        if !matches!(self.nodes[sub].kind, Kind::Map(_)) {
                            let found = self.nodes[sub].kind.id();
                            return Err(self.fail(
                                sub,
                                YamlErrorKind::Refused,
                                format!(
                                    "while constructing a mapping: expected a mapping for merging, but found {found}"
                                ),
                            ));
                        }
                        self.flatten(sub, depth + 1)?;
                        if let Kind::Map(sub_pairs) = &self.nodes[sub].kind {
                            for pair in sub_pairs {
                                if seen.insert(self.key_identity(pair.0)) {
                                    merge.push(*pair);
                                }
                            }
                        }
                    }
                }
                "tag:yaml.org,2002:value" => {
                    self.nodes[k].tag = STR.to_string();
                    own.push((k, v));
                }
                _ => own.push((k, v)),
            }
        }
        merge.extend(own);
        self.nodes[id].kind = Kind::Map(merge);
        Ok(())
    }

    /// `id(key_node.value)` in PyYAML: the node itself, unless its text is one CPython keeps
    /// a single shared object for.
    fn key_identity(&self, key: usize) -> KeyIdentity {
        if let Kind::Scalar(text) = &self.nodes[key].kind {
            let mut chars = text.chars();
            let shared = match (chars.next(), chars.next()) {
                (None, _) => true,
                (Some(c), None) => (c as u32) < 0x100,
                _ => false,
            };
            if shared {
                return KeyIdentity::SharedText(text.clone());
            }
        }
        KeyIdentity::Node(key)
    }

    fn construct_mapping(&mut self, id: usize, depth: usize) -> Result<PyValue, YamlError> {
        if !matches!(self.nodes[id].kind, Kind::Map(_)) {
            let found = self.nodes[id].kind.id();
            return Err(self.fail(
                id,
                YamlErrorKind::Refused,
                format!("expected a mapping node, but found {found}"),
            ));
        }
        self.flatten(id, depth)?;
        let pairs = match &self.nodes[id].kind {
            Kind::Map(p) => p.clone(),
            _ => Vec::new(),
        };
        let mut dict = PyDict::new();
        for (k, v) in pairs {
            let key = self.construct(k, depth + 1)?;
            if !key.is_hashable() {
                return Err(self.fail(
                    k,
                    YamlErrorKind::Refused,
                    "while constructing a mapping: found unhashable key",
                ));
            }
            let value = self.construct(v, depth + 1)?;
            dict.insert(key, value);
        }
        Ok(PyValue::Dict(dict))
    }
}

/// The implicit tag PyYAML gives a plain scalar (re-exported for writers that must quote
/// whatever would not read back as a string).
pub fn plain_scalar_is_str(text: &str) -> bool {
    resolve_plain(text) == Implicit::Str
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(s: &str) -> PyValue {
        safe_load(s).unwrap_or_else(|e| panic!("{s:?}: {e}"))
    }

    fn repr(s: &str) -> String {
        load(s).py_repr()
    }

    #[test]
    fn scalars_resolve_as_yaml_1_1() {
        assert_eq!(
            repr("a: yes\nb: off\nc: 010\nd: 4_096\ne: 1:30\nf: .nan\ng: ~\nh: 2001-12-14\ni: '010'\n"),
            "{'a': True, 'b': False, 'c': 8, 'd': 4096, 'e': 90, 'f': nan, 'g': None, 'h': datetime.date(2001, 12, 14), 'i': '010'}"
        );
    }

    #[test]
    fn keys_keep_their_python_type() {
        assert_eq!(
            repr("2: a\nyes: b\nnull: c\n"),
            "{2: 'a', True: 'b', None: 'c'}"
        );
    }

    #[test]
    fn repeated_keys_keep_the_first_position_and_the_last_value() {
        assert_eq!(repr("a: 1\nb: 2\na: 3\n"), "{'a': 3, 'b': 2}");
        // 1 and True are the same dict key in Python.
        assert_eq!(repr("1: a\ntrue: b\n"), "{1: 'b'}");
    }

    #[test]
    fn merge_keys_follow_pyyaml_precedence() {
        let m = |doc: &str| load(doc).as_dict().unwrap().get("m").unwrap().py_repr();
        // PyYAML 6.0.4: one-character keys keep the first merged value, longer keys the last.
        assert_eq!(
            m("base: &b {x: 1, y: 2}\nother: &o {y: 3, z: 4}\nm:\n  <<: [*b, *o]\n  x: 9\n"),
            "{'x': 9, 'y': 2, 'z': 4}"
        );
        assert_eq!(
            m("base: &b {xx: 1, yy: 2}\nother: &o {yy: 3, zz: 4}\nm:\n  <<: [*b, *o]\n  xx: 9\n"),
            "{'xx': 9, 'yy': 3, 'zz': 4}"
        );
        let single = "nic: &n {bridge: vmbr0, model: virtio}\nv:\n  <<: *n\n  model: e1000\n";
        assert_eq!(
            load(single).as_dict().unwrap().get("v").unwrap().py_repr(),
            "{'bridge': 'vmbr0', 'model': 'e1000'}"
        );
    }

    #[test]
    fn a_leading_byte_order_mark_is_skipped() {
        assert_eq!(repr("\u{feff}a: 1\n"), "{'a': 1}");
    }

    #[test]
    fn carriage_returns_and_nel_are_line_breaks_as_in_pyyaml() {
        // Expected values: PyYAML 6 yaml.safe_load on the same text.
        assert_eq!(repr("a: 'x\r\n  y'\n"), "{'a': 'x y'}");
        assert_eq!(repr("a: \"x\r\n  y\"\r\n"), "{'a': 'x y'}");
        assert_eq!(repr("a: |\r\n  x\r\n  y\r\n"), "{'a': 'x\\ny\\n'}");
        assert_eq!(repr("a: \"x\u{85}  y\"\n"), "{'a': 'x y'}");
        assert_eq!(repr("a: x\u{85}b: y\n"), "{'a': 'x', 'b': 'y'}");
        assert_eq!(repr("a: 1\rb: 2\r"), "{'a': 1, 'b': 2}");
        // An escaped NEL is content, not a break.
        assert_eq!(repr("a: \"x\\Ny\"\n"), "{'a': 'x\\x85y'}");
        let e = safe_load("a: 1\r\nb: [\r\n").unwrap_err();
        assert_eq!(e.kind, YamlErrorKind::Refused, "{e}");
    }

    #[test]
    fn unicode_line_and_paragraph_separators_are_refused_with_their_position() {
        for (doc, line, column) in [
            ("a: x\u{2028}b: y\n", 1, 5),
            ("a: 1\r\nb: 'x\u{2029}'\n", 2, 6),
            ("a: |\n  x\u{2028}  y\n", 2, 4),
        ] {
            let e = safe_load(doc).unwrap_err();
            assert_eq!(e.kind, YamlErrorKind::Unsupported, "{doc:?}: {e}");
            assert_eq!((e.line, e.column), (line, column), "{doc:?}: {e}");
            assert!(e.message.contains("SEPARATOR"), "{e}");
        }
    }

    #[test]
    fn tabs_outside_quoted_and_block_scalars_and_comments_are_refused_as_pyyaml_does() {
        // Each refused by PyYAML 6 ("found character '\t' that cannot start any token");
        // saphyr read the first as 'x\ty' and skipped the others.
        for (doc, line, column) in [
            ("a: x\ty\n", 1, 5),
            ("a: 1\t\n", 1, 5),
            ("\ta: 1\n", 1, 1),
            ("a: [1,\t2]\n", 1, 7),
            ("a:\n  - 1\n\t\n", 3, 1),
            ("a: &x\t1\n", 1, 6),
        ] {
            let e = safe_load(doc).unwrap_err();
            assert_eq!((e.line, e.column), (line, column), "{doc:?}: {e}");
            assert!(e.message.contains("found character '\\t'"), "{e}");
        }
    }

    #[test]
    fn tabs_inside_quoted_and_block_scalars_and_comments_are_kept() {
        // Expected values: PyYAML 6 yaml.safe_load on the same text.
        assert_eq!(repr("a: 'x\ty'\n"), "{'a': 'x\\ty'}");
        assert_eq!(repr("a: \"x\ty\"\n"), "{'a': 'x\\ty'}");
        assert_eq!(repr("a: |\n  x\ty\n  \tz\n"), "{'a': 'x\\ty\\n\\tz\\n'}");
        assert_eq!(repr("a: >\n  x\ty\n"), "{'a': 'x\\ty\\n'}");
        assert_eq!(repr("# \tc\na: 1 # \td\n"), "{'a': 1}");
        assert_eq!(repr("a: 'x\n \ty'\n"), "{'a': 'x y'}");
    }

    #[test]
    fn a_second_byte_order_mark_is_refused_not_skipped() {
        let e = safe_load("\u{feff}\u{feff}a: 1\n").unwrap_err();
        assert!(e.message.contains("byte-order mark"), "{e}");
    }

    #[test]
    fn empty_stream_is_none_and_second_document_is_refused() {
        assert!(load("").is_none());
        assert!(load("# only a comment\n").is_none());
        assert!(safe_load("a: 1\n---\nb: 2\n").is_err());
    }

    #[test]
    fn control_characters_are_refused_as_pyyaml_does() {
        let e = safe_load("a: \u{1}\n").unwrap_err();
        assert!(
            e.message.starts_with("unacceptable character #x0001"),
            "{e}"
        );
        // An escaped one inside double quotes is fine.
        assert_eq!(repr("a: \"\\x01\"\n"), "{'a': '\\x01'}");
    }

    #[test]
    fn duplicate_anchors_and_bad_anchor_names_are_refused() {
        assert!(safe_load("a: &x 1\nb: &x 2\n").is_err());
        assert!(safe_load("a: &x.y 1\n").is_err());
        assert_eq!(repr("a: &x 1\nb: *x\n"), "{'a': 1, 'b': 1}");
    }

    #[test]
    fn unhashable_keys_and_unknown_tags_are_refused() {
        assert!(safe_load("? [a]\n: 1\n").is_err());
        assert!(safe_load("a: !foo x\n").is_err());
        assert_eq!(repr("a: !!str 010\nb: ! '12'\n"), "{'a': '010', 'b': 12}");
    }

    #[test]
    fn deep_nesting_fails_fast() {
        let deep = format!("a: {}", "[".repeat(100_000));
        let started = std::time::Instant::now();
        let e = safe_load(&deep).unwrap_err();
        assert_eq!(e.kind, YamlErrorKind::Bound, "{e}");
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
    }

    #[test]
    fn alias_bombs_are_bounded() {
        let mut doc = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..12 {
            let prev = i - 1;
            doc.push_str(&format!(
                "a{i}: &a{i} [*a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}]\n"
            ));
        }
        let e = safe_load(&doc).unwrap_err();
        assert_eq!(e.kind, YamlErrorKind::Bound, "{e}");
    }
}
