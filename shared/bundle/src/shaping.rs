//! Virtual-server shaping at run time: the override tables of one virtual server, built once when a
//! bundle is loaded (never per request). The naming and the checks themselves are
//! `gatehouse_core::shaping`'s, shared with the control plane.

use std::collections::HashMap;

use gatehouse_core::shaping::{ConflictStrategy, ToolOverride, expose};

use crate::format::VirtualServer;

/// How one virtual server names and reshapes its upstreams' tools.
#[derive(Debug, Clone, Default)]
pub struct Shaping {
    /// How a name several upstreams use is resolved.
    pub strategy: ConflictStrategy,
    /// Prefix by server slug, where it is not the slug.
    prefixes: HashMap<String, String>,
    /// Override by server slug, then upstream tool name.
    overrides: HashMap<String, HashMap<String, ToolOverride>>,
}

impl Shaping {
    /// The tables of `vs`.
    pub fn new(vs: &VirtualServer) -> Self {
        let mut overrides: HashMap<String, HashMap<String, ToolOverride>> = HashMap::new();
        for o in &vs.overrides {
            overrides.entry(o.server.clone()).or_default().insert(o.tool.clone(), o.clone());
        }
        Self {
            strategy: vs.conflict_strategy,
            prefixes: vs.prefixes.iter().map(|p| (p.server.clone(), p.prefix.clone())).collect(),
            overrides,
        }
    }

    /// The prefix of `server`'s tools: the configured one, else the slug.
    pub fn prefix(&self, server: &str) -> String {
        self.prefixes.get(server).cloned().unwrap_or_else(|| server.to_owned())
    }

    /// The override of `server`'s tool `tool`, if any (one empty-map check when the virtual server
    /// has none, so unshaped calls pay nothing).
    pub fn tool(&self, server: &str, tool: &str) -> Option<&ToolOverride> {
        if self.overrides.is_empty() {
            return None;
        }
        self.overrides.get(server)?.get(tool)
    }

    /// The new name of `server`'s tool `tool`, if it is renamed.
    pub fn rename(&self, server: &str, tool: &str) -> Option<String> {
        self.tool(server, tool)?.rename.clone()
    }

    /// The exposed names of tools (`renames` true) or prompts (`false`: no overrides, only the
    /// strategy and prefixes) listed per upstream in order; see [`expose`].
    pub fn names<S: AsRef<str>, T: AsRef<str>>(
        &self,
        lists: &[(S, Vec<T>)],
        renames: bool,
    ) -> (Vec<Vec<String>>, Vec<String>) {
        let prefix_of = |s: &str| self.prefix(s);
        let rename_of = |s: &str, t: &str| if renames { self.rename(s, t) } else { None };
        expose(self.strategy, &prefix_of, &rename_of, lists)
    }
}
