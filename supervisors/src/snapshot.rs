//! Introspection results: `which_children`, `count_children` and whole-tree snapshots.
//!
//! Plain data with a hand-written JSON rendering, so a service can expose a tree without this
//! crate depending on serde.

use std::fmt::Write as _;

use crate::{ChildKind, ChildState, ExitReason, Intensity};

/// One row of `which_children`.
#[derive(Debug, Clone, PartialEq)]
pub struct ChildInfo {
    /// The child's id (for dynamic children: its key).
    pub id: String,
    /// Worker or supervisor.
    pub kind: ChildKind,
    /// Running, restarting or stopped.
    pub state: ChildState,
    /// Restarts so far.
    pub restarts: u32,
    /// Why the latest incarnation exited.
    pub last_exit: Option<ExitReason>,
}

/// OTP's `count_children`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ChildCounts {
    /// Child specs known to the supervisor.
    pub specs: usize,
    /// Children with a running incarnation.
    pub active: usize,
    /// Children that are supervisors.
    pub supervisors: usize,
    /// Children that are workers.
    pub workers: usize,
}

/// One child in a tree snapshot, with its own subtree if it is a supervisor.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeSnapshot {
    /// The child's row.
    pub info: ChildInfo,
    /// The child's own tree, when it is a running supervisor.
    pub subtree: Option<TreeSnapshot>,
}

/// A whole supervision tree at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct TreeSnapshot {
    /// The supervisor's name.
    pub name: String,
    /// `one_for_one`, `one_for_all`, `rest_for_one` or `simple_one_for_one`.
    pub strategy: &'static str,
    /// Its restart intensity.
    pub intensity: Intensity,
    /// Its child counts.
    pub counts: ChildCounts,
    /// Its children in start order (dynamic supervisors list at most the requested number).
    pub children: Vec<NodeSnapshot>,
    /// `true` when `children` was cut short.
    pub truncated: bool,
}

fn escape(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

impl TreeSnapshot {
    /// Renders the snapshot as a JSON object.
    ///
    /// ```
    /// use supervisors::{ChildCounts, Intensity, TreeSnapshot};
    /// let t = TreeSnapshot { name: "root".into(), strategy: "one_for_one", intensity: Intensity::default(),
    ///     counts: ChildCounts::default(), children: vec![], truncated: false };
    /// assert!(t.to_json().starts_with(r#"{"name":"root","strategy":"one_for_one""#));
    /// ```
    pub fn to_json(&self) -> String {
        let mut out = String::with_capacity(256);
        self.write_json(&mut out);
        out
    }

    fn write_json(&self, out: &mut String) {
        out.push_str("{\"name\":");
        escape(out, &self.name);
        let _ = write!(
            out,
            ",\"strategy\":\"{}\",\"intensity\":{},\"period_ms\":{},\"counts\":{{\"specs\":{},\"active\":{},\"supervisors\":{},\"workers\":{}}},\"truncated\":{},\"children\":[",
            self.strategy,
            self.intensity.max_restarts,
            self.intensity.period.as_millis(),
            self.counts.specs,
            self.counts.active,
            self.counts.supervisors,
            self.counts.workers,
            self.truncated
        );
        for (i, node) in self.children.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str("{\"id\":");
            escape(out, &node.info.id);
            let _ = write!(
                out,
                ",\"kind\":\"{}\",\"state\":\"{}\",\"restarts\":{},\"last_exit\":",
                node.info.kind.as_str(),
                node.info.state.as_str(),
                node.info.restarts
            );
            match &node.info.last_exit {
                Some(r) => escape(out, &r.to_string()),
                None => out.push_str("null"),
            }
            if let Some(sub) = &node.subtree {
                out.push_str(",\"supervisor\":");
                sub.write_json(out);
            }
            out.push('}');
        }
        out.push_str("]}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_escapes_ids_and_nests_subtrees() {
        let leaf = TreeSnapshot {
            name: "inner".into(),
            strategy: "one_for_all",
            intensity: Intensity::default(),
            counts: ChildCounts::default(),
            children: vec![],
            truncated: false,
        };
        let t = TreeSnapshot {
            name: "ro\"ot".into(),
            strategy: "one_for_one",
            intensity: Intensity::default(),
            counts: ChildCounts {
                specs: 1,
                active: 1,
                supervisors: 1,
                workers: 0,
            },
            children: vec![NodeSnapshot {
                info: ChildInfo {
                    id: "a\nb".into(),
                    kind: ChildKind::Supervisor,
                    state: ChildState::Running,
                    restarts: 2,
                    last_exit: Some(ExitReason::Panic("x".into())),
                },
                subtree: Some(leaf),
            }],
            truncated: false,
        };
        let j = t.to_json();
        assert!(j.contains(r#""name":"ro\"ot""#), "{j}");
        assert!(j.contains(r#""id":"a\nb""#), "{j}");
        assert!(j.contains(r#""last_exit":"panic(x)""#), "{j}");
        assert!(j.contains(r#""supervisor":{"name":"inner""#), "{j}");
    }
}
