//! Where every node of a YAML document sits, for errors found after deserialization.
//!
//! serde_yaml attaches a line and column to the errors it raises itself (syntax, types,
//! unknown keys), but a [`super::Plan`] is validated against the whole scenario afterwards
//! (is `tm5` a node of this cluster?), when serde's positions are gone. So the text is parsed
//! a second time with `saphyr-parser`, whose events carry spans, into a small tree of
//! positions that a key path (`faults[1].target`) can be looked up in.

use saphyr_parser::{Event, Parser, Span};

/// A 1-based line and column (columns count characters, as serde_yaml's do).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pos {
    pub line: usize,
    pub column: usize,
}

impl Pos {
    /// The start of the file: where errors about the document as a whole point.
    pub const START: Pos = Pos { line: 1, column: 1 };

    fn of(span: Span) -> Pos {
        // saphyr lines are 1-based, columns 0-based.
        Pos { line: span.start.line().max(1), column: span.start.col() + 1 }
    }
}

/// One step of a key path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seg {
    Key(String),
    Index(usize),
}

impl From<&str> for Seg {
    fn from(k: &str) -> Seg {
        Seg::Key(k.to_string())
    }
}

impl From<usize> for Seg {
    fn from(i: usize) -> Seg {
        Seg::Index(i)
    }
}

/// Renders a path the way serde_yaml does in its messages: `faults[1].target`.
pub fn render_path(path: &[Seg]) -> String {
    let mut out = String::new();
    for seg in path {
        match seg {
            Seg::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(k);
            }
            Seg::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

#[derive(Debug)]
enum Node {
    Leaf,
    Seq(Vec<Located>),
    /// Entries in document order: key text, key position, value.
    Map(Vec<(String, Pos, Located)>),
}

#[derive(Debug)]
struct Located {
    pos: Pos,
    node: Node,
}

/// Positions of the first document of a YAML text.
#[derive(Debug, Default)]
pub struct PosIndex {
    root: Option<Located>,
}

enum Frame {
    Seq(Pos, Vec<Located>),
    Map(Pos, Vec<(String, Pos, Located)>, Option<(String, Pos)>),
}

impl PosIndex {
    /// Indexes `text`, or says why it is not YAML (position, saphyr's message).
    pub fn parse(text: &str) -> Result<PosIndex, (Pos, String)> {
        let mut parser = Parser::new_from_str(text);
        let mut stack: Vec<Frame> = Vec::new();
        // Bounded by the input: every event consumes text, and the parser ends with StreamEnd.
        while let Some(ev) = parser.next_event() {
            let (event, span) = ev.map_err(|e| {
                let m = e.marker();
                (Pos { line: m.line().max(1), column: m.col() + 1 }, e.info().to_string())
            })?;
            let done = match event {
                Event::MappingStart(..) => {
                    stack.push(Frame::Map(Pos::of(span), Vec::new(), None));
                    None
                }
                Event::SequenceStart(..) => {
                    stack.push(Frame::Seq(Pos::of(span), Vec::new()));
                    None
                }
                Event::MappingEnd | Event::SequenceEnd => match stack.pop() {
                    Some(Frame::Map(pos, entries, _)) => Some(Located { pos, node: Node::Map(entries) }),
                    Some(Frame::Seq(pos, items)) => Some(Located { pos, node: Node::Seq(items) }),
                    None => return Ok(PosIndex::default()),
                },
                Event::Scalar(ref value, ..) => {
                    // A scalar in key position becomes the pending key of its mapping.
                    if let Some(Frame::Map(_, _, pending @ None)) = stack.last_mut() {
                        *pending = Some((value.to_string(), Pos::of(span)));
                        None
                    } else {
                        Some(Located { pos: Pos::of(span), node: Node::Leaf })
                    }
                }
                Event::Alias(_) => Some(Located { pos: Pos::of(span), node: Node::Leaf }),
                Event::DocumentEnd | Event::StreamEnd => break,
                _ => None,
            };
            if let Some(located) = done {
                match stack.last_mut() {
                    None => return Ok(PosIndex { root: Some(located) }),
                    Some(Frame::Seq(_, items)) => items.push(located),
                    Some(Frame::Map(_, entries, pending)) => match pending.take() {
                        Some((key, key_pos)) => entries.push((key, key_pos, located)),
                        // A complex (non-scalar) key: remember it under a name no path uses.
                        None => *pending = Some((String::from("\u{0}complex"), located.pos)),
                    },
                }
            }
        }
        Ok(PosIndex::default())
    }

    /// Walks `path` as far as it exists; returns the last node found and, when the last
    /// step was a mapping key, that key's position.
    fn walk(&self, path: &[Seg]) -> (Pos, Option<Pos>, usize) {
        let Some(mut cur) = self.root.as_ref() else {
            return (Pos::START, None, 0);
        };
        let mut key_pos = None;
        for (depth, seg) in path.iter().enumerate() {
            let next = match (&cur.node, seg) {
                (Node::Map(entries), Seg::Key(k)) => {
                    entries.iter().find(|(key, _, _)| key == k).map(|(_, kp, v)| (Some(*kp), v))
                }
                (Node::Seq(items), Seg::Index(i)) => items.get(*i).map(|v| (None, v)),
                _ => None,
            };
            match next {
                Some((kp, v)) => {
                    key_pos = kp;
                    cur = v;
                }
                None => return (cur.pos, None, depth),
            }
        }
        (cur.pos, key_pos, path.len())
    }

    /// Position of the value at `path`, or of the deepest node on the way there that exists
    /// (a missing field is reported at the mapping that lacks it).
    pub fn value(&self, path: &[Seg]) -> Pos {
        self.walk(path).0
    }

    /// Position of the first repeated occurrence of `key` in any mapping, in document order.
    pub fn duplicate_key(&self, key: &str) -> Option<Pos> {
        fn visit(node: &Located, key: &str) -> Option<Pos> {
            match &node.node {
                Node::Leaf => None,
                Node::Seq(items) => items.iter().find_map(|i| visit(i, key)),
                Node::Map(entries) => {
                    let mut seen = false;
                    for (k, kp, v) in entries {
                        if k == key {
                            if seen {
                                return Some(*kp);
                            }
                            seen = true;
                        }
                        if let Some(p) = visit(v, key) {
                            return Some(p);
                        }
                    }
                    None
                }
            }
        }
        self.root.as_ref().and_then(|r| visit(r, key))
    }

    /// Position of the key that ends `path` (`for` in `faults[0].for`), falling back to
    /// [`PosIndex::value`] when the path does not end at a mapping key.
    pub fn key(&self, path: &[Seg]) -> Pos {
        let (value, key, found) = self.walk(path);
        if found == path.len() {
            key.unwrap_or(value)
        } else {
            value
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(segs: &[Seg]) -> Vec<Seg> {
        segs.to_vec()
    }

    #[test]
    fn finds_block_and_flow_positions() {
        let text = "name: x\nfaults:\n  - at: 4s\n    target: tm2\n  - at: { checkpoint: 3 }\n    target: { role: taskmanager, pick: one }\n";
        let idx = PosIndex::parse(text).unwrap();
        let k = |s: &str| Seg::Key(s.into());
        assert_eq!(idx.value(&p(&[k("name")])), Pos { line: 1, column: 7 });
        assert_eq!(idx.key(&p(&[k("faults"), Seg::Index(0), k("target")])), Pos { line: 4, column: 5 });
        assert_eq!(idx.value(&p(&[k("faults"), Seg::Index(0), k("target")])), Pos { line: 4, column: 13 });
        assert_eq!(idx.value(&p(&[k("faults"), Seg::Index(1), k("at"), k("checkpoint")])), Pos { line: 5, column: 23 });
        assert_eq!(idx.value(&p(&[k("faults"), Seg::Index(1), k("target"), k("pick")])), Pos { line: 6, column: 40 });
        // Missing steps fall back to the deepest node that exists.
        assert_eq!(idx.value(&p(&[k("faults"), Seg::Index(0), k("nope")])), Pos { line: 3, column: 5 });
        assert_eq!(idx.key(&p(&[k("faults"), Seg::Index(7)])), idx.value(&p(&[k("faults")])));
        assert_eq!(render_path(&p(&[k("faults"), Seg::Index(1), k("target")])), "faults[1].target");
    }

    #[test]
    fn unparsable_text_gives_the_start() {
        assert!(PosIndex::parse("a: [1, 2\nb: }").is_err());
        let idx = PosIndex::default();
        assert_eq!(idx.value(&[Seg::Key("a".into())]), Pos::START);
    }
}
