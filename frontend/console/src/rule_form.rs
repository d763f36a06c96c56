//! The console's rule form (plain HTML fields, so it works before the WebAssembly loads) turned into
//! a [`RuleInput`]. Only the shape is checked here; the control plane checks the meaning and names
//! the field.

use gatehouse_core::rules::{AnnotationMatch, Effect, Hint, ParamConstraint, RuleInput};
use serde_json::Value;

use crate::ConsoleError;

/// The fields of the form, as posted.
#[derive(Debug, Clone, Default)]
#[cfg_attr(not(feature = "ssr"), allow(dead_code))]
pub struct RuleForm {
    pub server: String,
    pub effect: String,
    pub tools: String,
    /// `""`, or `{hint}={true|false}` (e.g. `readOnlyHint=true`).
    pub annotation: String,
    pub description: String,
    /// Empty: the rule has no parameter constraint.
    pub param: String,
    /// Comma-separated JSON values; a bare word is a string.
    pub one_of: String,
    pub pattern: String,
    pub max_length: String,
    pub min: String,
    pub max: String,
    /// Comma-separated.
    pub path_prefixes: String,
    /// Comma-separated.
    pub url_hosts: String,
    pub optional: bool,
    /// A CEL condition; empty: the rule always applies.
    pub condition: String,
}

#[cfg_attr(not(feature = "ssr"), allow(dead_code))]
fn list(s: &str) -> Option<Vec<String>> {
    let items: Vec<String> = s.split(',').map(str::trim).filter(|i| !i.is_empty()).map(str::to_owned).collect();
    (!items.is_empty()).then_some(items)
}

#[cfg_attr(not(feature = "ssr"), allow(dead_code))]
/// A value as typed: JSON if it parses (`3`, `true`, `"x"`), else the text as a string.
fn value(s: &str) -> Value {
    serde_json::from_str(s).unwrap_or_else(|_| Value::String(s.to_owned()))
}

#[cfg_attr(not(feature = "ssr"), allow(dead_code))]
fn number<T: std::str::FromStr>(field: &str, s: &str) -> Result<Option<T>, ConsoleError> {
    let s = s.trim();
    if s.is_empty() {
        return Ok(None);
    }
    s.parse().map(Some).map_err(|_| ConsoleError::invalid(field, "must be a number"))
}

#[cfg_attr(not(feature = "ssr"), allow(dead_code))]
impl RuleForm {
    /// The rule the form describes.
    pub fn into_input(self) -> Result<RuleInput, ConsoleError> {
        let effect =
            Effect::parse(&self.effect).ok_or_else(|| ConsoleError::invalid("effect", "choose allow or deny"))?;
        let annotation = match self.annotation.split_once('=') {
            None if self.annotation.is_empty() => None,
            Some((hint, v)) => {
                let hint = [Hint::ReadOnly, Hint::Destructive, Hint::Idempotent, Hint::OpenWorld]
                    .into_iter()
                    .find(|h| h.field() == hint)
                    .ok_or_else(|| ConsoleError::invalid("annotation", "unknown annotation"))?;
                let value = v.parse().map_err(|_| ConsoleError::invalid("annotation", "must be true or false"))?;
                Some(AnnotationMatch { hint, value })
            }
            None => return Err(ConsoleError::invalid("annotation", "unknown annotation")),
        };
        let param = self.param.trim();
        let params = if param.is_empty() {
            vec![]
        } else {
            vec![ParamConstraint {
                param: param.to_owned(),
                optional: self.optional,
                equals: None,
                one_of: list(&self.one_of).map(|vs| vs.iter().map(|v| value(v)).collect()),
                pattern: Some(self.pattern.trim().to_owned()).filter(|p| !p.is_empty()),
                min: number("params[0].min", &self.min)?,
                max: number("params[0].max", &self.max)?,
                max_length: number("params[0].maxLength", &self.max_length)?,
                path_prefixes: list(&self.path_prefixes),
                url_hosts: list(&self.url_hosts),
            }]
        };
        Ok(RuleInput {
            server: self.server.trim().to_owned(),
            effect,
            tools: self.tools.trim().to_owned(),
            annotation,
            params,
            description: self.description.trim().to_owned(),
            condition: Some(self.condition.trim().to_owned()).filter(|c| !c.is_empty()),
        })
    }
}

/// A rule in words, for the role card.
pub fn describe(rule: &gatehouse_core::rules::RuleView) -> String {
    let verb = match rule.effect {
        Effect::Allow => "Allow",
        Effect::Deny => "Deny",
    };
    let mut out = format!("{verb} {} of {}", rule.tools, rule.server);
    if let Some(a) = &rule.annotation {
        out.push_str(&format!(" where {} is {}", a.hint.field(), a.value));
    }
    for c in &rule.params {
        let mut conds = Vec::new();
        if let Some(v) = &c.equals {
            conds.push(format!("equals {v}"));
        }
        if let Some(vs) = &c.one_of {
            conds.push(format!("one of {}", vs.iter().map(Value::to_string).collect::<Vec<_>>().join(", ")));
        }
        if let Some(p) = &c.pattern {
            conds.push(format!("matches {p}"));
        }
        if let Some(n) = c.min {
            conds.push(format!("≥ {n}"));
        }
        if let Some(n) = c.max {
            conds.push(format!("≤ {n}"));
        }
        if let Some(n) = c.max_length {
            conds.push(format!("at most {n} characters"));
        }
        if let Some(ps) = &c.path_prefixes {
            conds.push(format!("a path inside {}", ps.join(", ")));
        }
        if let Some(hs) = &c.url_hosts {
            conds.push(format!("a URL on {}", hs.join(", ")));
        }
        let optional = if c.optional { " (when given)" } else { "" };
        out.push_str(&format!("; {}{optional}: {}", c.param, conds.join(", ")));
    }
    if let Some(c) = &rule.condition {
        out.push_str(&format!("; only when {c}"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form() -> RuleForm {
        RuleForm { server: "fs".into(), effect: "allow".into(), tools: " read_* ".into(), ..Default::default() }
    }

    #[test]
    fn a_plain_rule_has_no_constraints() {
        let r = form().into_input().unwrap();
        assert_eq!((r.tools.as_str(), r.effect, r.params.len(), r.annotation), ("read_*", Effect::Allow, 0, None));
    }

    #[test]
    fn constraint_fields_are_parsed() {
        let r = RuleForm {
            annotation: "readOnlyHint=true".into(),
            param: "mode".into(),
            one_of: "fast, 3, \"full\"".into(),
            max_length: "12".into(),
            path_prefixes: "/srv, /tmp".into(),
            optional: true,
            ..form()
        }
        .into_input()
        .unwrap();
        assert_eq!(r.annotation, Some(AnnotationMatch { hint: Hint::ReadOnly, value: true }));
        let c = &r.params[0];
        assert_eq!(c.one_of, Some(vec![Value::from("fast"), Value::from(3), Value::from("full")]));
        assert_eq!(c.max_length, Some(12));
        assert_eq!(c.path_prefixes, Some(vec!["/srv".to_owned(), "/tmp".to_owned()]));
        assert!(c.optional && c.pattern.is_none() && c.url_hosts.is_none());
        assert_eq!(r.condition, None, "an empty condition is no condition");
        let r = RuleForm { condition: " inCidr(client.ip, '10.0.0.0/8') \n".into(), ..form() }.into_input().unwrap();
        assert_eq!(r.condition.as_deref(), Some("inCidr(client.ip, '10.0.0.0/8')"));
    }

    #[test]
    fn bad_fields_are_named() {
        let e = RuleForm { effect: "maybe".into(), ..form() }.into_input().unwrap_err();
        assert!(e.message.starts_with("effect:"), "{}", e.message);
        let e = RuleForm { param: "n".into(), max: "ten".into(), ..form() }.into_input().unwrap_err();
        assert!(e.message.starts_with("params[0].max:"), "{}", e.message);
        let e = RuleForm { annotation: "shinyHint=true".into(), ..form() }.into_input().unwrap_err();
        assert!(e.message.starts_with("annotation:"), "{}", e.message);
    }
}
