//! CEL conditions on access rules (`docs/decisions/0012-groups-and-conditions.md`).
//!
//! A rule may carry a condition in the Common Expression Language (the `cel` crate). The control
//! plane checks it when the rule is saved ([`check_condition`]: syntax with line and column, the
//! variables and their fields, the functions, literal time zones, CIDRs and patterns, and that the
//! result is a boolean where that can be known); the worker compiles it once per bundle
//! ([`Condition::compile`], from `TenantPolicy::build`) and evaluates the compiled program per
//! request against the request's [`RequestFacts`].
//!
//! The variables, all typed:
//!
//! | variable | type |
//! |---|---|
//! | `user.id`, `user.email` | string |
//! | `user.groups` | list of string (group slugs) |
//! | `user.attributes` | map of string to string |
//! | `client.ip` | string (the TCP peer address; `""` when unknown) |
//! | `client.app` | string (`clientInfo.name` from `initialize`; `""` when unknown) |
//! | `request.time` | timestamp (UTC; `getHours('Europe/Berlin')`, `getDayOfWeek(tz)`: 0 = Sunday) |
//! | `tool.name`, `tool.server` | string (the upstream's tool name, the server slug) |
//!
//! and one function beyond CEL's standard library: `inCidr(ip, cidr)`, true when the address `ip`
//! (a string) is inside the network `cidr` (`'10.0.0.0/8'`, `'2001:db8::/32'`, or a single address).
//!
//! Evaluation errors (a missing attribute, an address that does not parse) are reported to the
//! caller, which fails closed: an allow rule does not allow, a deny rule denies.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, LazyLock, OnceLock};

use cel::common::ast::{Expr, LiteralValue};
use cel::common::types::{CelBool, CelString};
use cel::{Context, Env, ExecutionError, IdedExpr, Program, Value};

/// Longest condition accepted (characters).
pub const MAX_CONDITION_LEN: usize = 2000;
/// Deepest nesting of parentheses, brackets and braces accepted (the parser recurses).
const MAX_NESTING: usize = 32;

/// The variables a condition may use, with their fields and types.
const VARIABLES: &[(&str, &[(&str, Kind)])] = &[
    ("user", &[("id", Kind::String), ("email", Kind::String), ("groups", Kind::List), ("attributes", Kind::Map)]),
    ("client", &[("ip", Kind::String), ("app", Kind::String)]),
    ("request", &[("time", Kind::Timestamp)]),
    ("tool", &[("name", Kind::String), ("server", Kind::String)]),
];

/// Functions and methods a condition may call, with what they return. Operators (`_&&_`, `@in`,
/// ...) are CEL's own and always allowed.
const FUNCTIONS: &[(&str, Kind)] = &[
    ("inCidr", Kind::Bool),
    ("contains", Kind::Bool),
    ("startsWith", Kind::Bool),
    ("endsWith", Kind::Bool),
    ("matches", Kind::Bool),
    ("size", Kind::Number),
    ("int", Kind::Number),
    ("uint", Kind::Number),
    ("double", Kind::Number),
    ("string", Kind::String),
    ("bool", Kind::Bool),
    ("timestamp", Kind::Timestamp),
    ("duration", Kind::Other),
    ("getFullYear", Kind::Number),
    ("getMonth", Kind::Number),
    ("getDayOfYear", Kind::Number),
    ("getDayOfMonth", Kind::Number),
    ("getDate", Kind::Number),
    ("getDayOfWeek", Kind::Number),
    ("getHours", Kind::Number),
    ("getMinutes", Kind::Number),
    ("getSeconds", Kind::Number),
    ("getMilliseconds", Kind::Number),
];

/// What an expression is known to give, as far as the checker can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Bool,
    Number,
    String,
    List,
    Map,
    Timestamp,
    /// Bytes, durations, null.
    Other,
    /// One of the variables (`user`, ...), by index into [`VARIABLES`].
    Variable(usize),
    /// Not known before evaluation (an index, a comprehension variable, a conditional).
    Dynamic,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Bool => "bool",
            Kind::Number => "number",
            Kind::String => "string",
            Kind::List => "list",
            Kind::Map => "map",
            Kind::Timestamp => "timestamp",
            Kind::Other => "value",
            Kind::Variable(_) => "object",
            Kind::Dynamic => "dyn",
        }
    }
}

/// A condition that cannot be saved: where and why. Displays as `line L, column C: message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConditionError {
    /// 1-based line.
    pub line: usize,
    /// 1-based column (characters).
    pub column: usize,
    /// What is wrong.
    pub message: String,
}

impl std::fmt::Display for ConditionError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}, column {}: {}", self.line, self.column, self.message)
    }
}

fn in_cidr(ip: &CelString, cidr: &CelString) -> Result<CelBool, ExecutionError> {
    let addr: IpAddr = ip
        .inner()
        .parse()
        .map_err(|_| ExecutionError::function_error("inCidr", format!("'{}' is not an IP address", ip.inner())))?;
    let net = Cidr::parse(cidr.inner())
        .map_err(|why| ExecutionError::function_error("inCidr", format!("'{}': {why}", cidr.inner())))?;
    Ok(CelBool::from(net.contains(addr)))
}

/// The environment every condition compiles and runs in: CEL's standard library and `inCidr`.
static ENV: LazyLock<Arc<Env>> = LazyLock::new(|| {
    let mut env = Env::stdlib();
    cel::add_overload!(&mut env, fn in_cidr: (CelString, CelString) -> Result<CelBool>, name = "inCidr", id = "in_cidr")
        .expect("inCidr is declared once");
    Arc::new(env)
});

/// An IP network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Parses `10.0.0.0/8`, `2001:db8::/32` or a single address; host bits must be zero.
    pub fn parse(s: &str) -> Result<Self, String> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| "not an IP network such as 10.0.0.0/8".to_owned())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => match p.parse::<u8>() {
                Ok(n) if n <= max && !p.starts_with('+') => n,
                _ => return Err(format!("the prefix length must be a number from 0 to {max}")),
            },
        };
        let net = Cidr { addr, prefix };
        if net.mask(addr) != addr {
            return Err(format!("host bits are set; the network is {}/{prefix}", net.mask(addr)));
        }
        Ok(net)
    }

    fn mask(&self, addr: IpAddr) -> IpAddr {
        match addr {
            IpAddr::V4(a) => {
                let m = if self.prefix == 0 { 0 } else { u32::MAX << (32 - u32::from(self.prefix)) };
                IpAddr::V4((u32::from(a) & m).into())
            }
            IpAddr::V6(a) => {
                let m = if self.prefix == 0 { 0 } else { u128::MAX << (128 - u32::from(self.prefix)) };
                IpAddr::V6((u128::from(a) & m).into())
            }
        }
    }

    /// Whether `ip` is in the network (an IPv4-mapped IPv6 address counts as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        ip.is_ipv4() == self.addr.is_ipv4() && self.mask(ip) == self.addr
    }
}

/// Checks a condition before it is saved; the error names the line and column.
pub fn check_condition(source: &str) -> Result<(), ConditionError> {
    Condition::compile(source).map(|_| ())
}

/// A compiled condition.
#[derive(Debug, Clone)]
pub struct Condition {
    source: String,
    program: Arc<Program>,
    /// Which of [`VARIABLES`] the expression names: only those are put in its context (turning a
    /// value into CEL's representation is most of an evaluation's cost).
    uses: [bool; 4],
}

impl Condition {
    /// Parses and checks a condition (see [`check_condition`]).
    pub fn compile(source: &str) -> Result<Self, ConditionError> {
        let at_start = |message: String| ConditionError { line: 1, column: 1, message };
        if source.trim().is_empty() {
            return Err(at_start("the condition is empty; leave it out for a rule that always applies".into()));
        }
        if source.chars().count() > MAX_CONDITION_LEN {
            return Err(at_start(format!("at most {MAX_CONDITION_LEN} characters")));
        }
        check_nesting(source)?;
        let program = ENV.compile(source).map_err(|e| {
            let first = e.errors.first();
            let (line, column) = first.map_or((1, 1), |e| (e.pos.0.max(1) as usize, e.pos.1.max(1) as usize));
            let msg = first.map_or_else(|| "syntax error".to_owned(), |e| e.msg.clone());
            let msg = msg.strip_prefix("Syntax error: ").map_or(msg.clone(), |m| format!("syntax error: {m}"));
            ConditionError { line, column, message: msg }
        })?;
        let checker = Checker { program: &program, source, uses: std::cell::Cell::new([false; 4]) };
        let mut scope = Vec::new();
        let kind = checker.walk(program.expression(), &mut scope)?;
        if !matches!(kind, Kind::Bool | Kind::Dynamic) {
            return Err(checker.error(
                program.expression(),
                format!("the condition must give a bool (true or false), but it gives a {}", kind.name()),
            ));
        }
        let uses = checker.uses.get();
        Ok(Self { source: source.to_owned(), program: Arc::new(program), uses })
    }

    /// The condition as written.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Evaluates the condition for `user` (see [`user_value`]) calling `tool` of `server`.
    /// An error (or a result that is not a bool) is returned as words; callers fail closed.
    pub fn eval(&self, user: &Value, facts: &RequestFacts, server: &str, tool: &str) -> Result<bool, String> {
        let [uses_user, uses_client, uses_request, uses_tool] = self.uses;
        let mut ctx = Context::with_env(ENV.clone());
        if uses_user {
            ctx.add_variable_from_value("user", user.clone());
        }
        if uses_client || uses_request {
            let (client, request) = facts.values();
            ctx.add_variable_from_value("client", client.clone());
            ctx.add_variable_from_value("request", request.clone());
        }
        if uses_tool {
            let mut t = HashMap::with_capacity(2);
            t.insert("name".to_owned(), Value::String(Arc::new(tool.to_owned())));
            t.insert("server".to_owned(), Value::String(Arc::new(server.to_owned())));
            ctx.add_variable_from_value("tool", Value::from(t));
        }
        match self.program.execute(&ctx) {
            Ok(Value::Bool(b)) => Ok(b),
            Ok(other) => Err(format!("the condition gave {:?}, not a bool", other.type_of())),
            Err(e) => Err(e.to_string()),
        }
    }
}

/// The `user` variable of a user: id, e-mail, group slugs, attributes. Built once per bundle.
pub fn user_value(
    id: &str,
    email: &str,
    groups: &[String],
    attributes: &std::collections::BTreeMap<String, String>,
) -> Value {
    let s = |v: &str| Value::String(Arc::new(v.to_owned()));
    let mut user = HashMap::with_capacity(4);
    user.insert("id".to_owned(), s(id));
    user.insert("email".to_owned(), s(email));
    user.insert("groups".to_owned(), Value::List(Arc::new(groups.iter().map(|g| s(g)).collect())));
    let attrs: HashMap<String, Value> = attributes.iter().map(|(k, v)| (k.clone(), s(v))).collect();
    user.insert("attributes".to_owned(), Value::from(attrs));
    Value::from(user)
}

/// What a request tells conditions beyond the user: the client's address and application, and the
/// time. Nothing is allocated or read (not even the clock) until the first condition is evaluated,
/// so a request that meets no condition pays nothing.
#[derive(Debug)]
pub struct RequestFacts<'a> {
    /// The client's IP address (the TCP peer), if known.
    pub client_ip: Option<IpAddr>,
    /// The client's application (`clientInfo.name` from `initialize`), if known.
    pub client_app: Option<&'a str>,
    /// Unix milliseconds of the request; `None`: the time of the first condition evaluated.
    pub time_ms: Option<i64>,
    values: OnceLock<(Value, Value)>,
}

impl RequestFacts<'_> {
    /// A request about which nothing but the current time is known (conditions on the client then
    /// fail closed).
    pub fn unknown() -> Self {
        RequestFacts::new(None, None, None)
    }
}

impl<'a> RequestFacts<'a> {
    /// Facts of a request.
    pub fn new(client_ip: Option<IpAddr>, client_app: Option<&'a str>, time_ms: Option<i64>) -> Self {
        Self { client_ip, client_app, time_ms, values: OnceLock::new() }
    }

    fn values(&self) -> &(Value, Value) {
        self.values.get_or_init(|| {
            let mut client = HashMap::with_capacity(2);
            let ip = self.client_ip.map(|ip| ip.to_canonical().to_string()).unwrap_or_default();
            client.insert("ip".to_owned(), Value::String(Arc::new(ip)));
            client.insert("app".to_owned(), Value::String(Arc::new(self.client_app.unwrap_or_default().to_owned())));
            let time = match self.time_ms {
                Some(ms) => chrono::DateTime::from_timestamp_millis(ms).unwrap_or_default(),
                None => chrono::Utc::now(),
            }
            .fixed_offset();
            let mut request = HashMap::with_capacity(1);
            request.insert("time".to_owned(), Value::Timestamp(time));
            (Value::from(client), Value::from(request))
        })
    }
}

/// Refuses deeper nesting than the parser should recurse into, before parsing.
fn check_nesting(source: &str) -> Result<(), ConditionError> {
    let (mut depth, mut line, mut column) = (0usize, 1usize, 0usize);
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for c in source.chars() {
        column += 1;
        if c == '\n' {
            line += 1;
            column = 0;
        }
        if let Some(q) = quote {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == q {
                quote = None;
            }
            continue;
        }
        match c {
            '"' | '\'' => quote = Some(c),
            '(' | '[' | '{' => {
                depth += 1;
                if depth > MAX_NESTING {
                    return Err(ConditionError {
                        line,
                        column,
                        message: format!("nested more than {MAX_NESTING} levels deep"),
                    });
                }
            }
            ')' | ']' | '}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

struct Checker<'a> {
    program: &'a Program,
    source: &'a str,
    /// Which of [`VARIABLES`] the expression names.
    uses: std::cell::Cell<[bool; 4]>,
}

impl Checker<'_> {
    fn error(&self, expr: &IdedExpr, message: String) -> ConditionError {
        let start = self.program.source_info().offset_for(expr.id).map_or(0, |(s, _)| s as usize);
        let (mut line, mut column) = (1, 1);
        for c in self.source.chars().take(start) {
            if c == '\n' {
                line += 1;
                column = 1;
            } else {
                column += 1;
            }
        }
        ConditionError { line, column, message }
    }

    fn literal_str(expr: &IdedExpr) -> Option<&str> {
        match &expr.expr {
            Expr::Literal(LiteralValue::String(s)) => Some(s.inner()),
            _ => None,
        }
    }

    fn walk(&self, expr: &IdedExpr, scope: &mut Vec<String>) -> Result<Kind, ConditionError> {
        match &expr.expr {
            Expr::Literal(l) => Ok(match l {
                LiteralValue::Boolean(_) => Kind::Bool,
                LiteralValue::Int(_) | LiteralValue::UInt(_) | LiteralValue::Double(_) => Kind::Number,
                LiteralValue::String(_) => Kind::String,
                _ => Kind::Other,
            }),
            Expr::Ident(name) => {
                if scope.iter().any(|v| v == name) {
                    return Ok(Kind::Dynamic);
                }
                match VARIABLES.iter().position(|(v, _)| v == name) {
                    Some(i) => {
                        let mut uses = self.uses.get();
                        uses[i] = true;
                        self.uses.set(uses);
                        Ok(Kind::Variable(i))
                    }
                    None => Err(self.error(
                        expr,
                        format!("unknown variable '{name}'; the variables are user, client, request and tool"),
                    )),
                }
            }
            Expr::Select(sel) => {
                let operand = self.walk(&sel.operand, scope)?;
                let kind = match operand {
                    Kind::Variable(i) => {
                        let (var, fields) = VARIABLES[i];
                        match fields.iter().find(|(f, _)| *f == sel.field) {
                            Some((_, k)) => *k,
                            None => {
                                let names: Vec<&str> = fields.iter().map(|(f, _)| *f).collect();
                                return Err(self.error(
                                    expr,
                                    format!(
                                        "'{var}' has no field '{}'; its fields are {}",
                                        sel.field,
                                        names.join(", ")
                                    ),
                                ));
                            }
                        }
                    }
                    // An attribute: a string when the user has it, an evaluation error otherwise.
                    Kind::Map => Kind::String,
                    Kind::Dynamic => Kind::Dynamic,
                    other => {
                        return Err(self.error(
                            expr,
                            format!("a {} has no fields, so '.{}' selects nothing", other.name(), sel.field),
                        ));
                    }
                };
                Ok(if sel.test { Kind::Bool } else { kind })
            }
            Expr::Call(call) => {
                let target = match &call.target {
                    Some(t) => Some(self.walk(t, scope)?),
                    None => None,
                };
                let mut args = Vec::with_capacity(call.args.len());
                for a in &call.args {
                    args.push(self.walk(a, scope)?);
                }
                for k in target.iter().chain(&args) {
                    if let Kind::Variable(i) = k {
                        return Err(
                            self.error(expr, format!("'{}' is an object; use one of its fields", VARIABLES[*i].0))
                        );
                    }
                }
                let name = call.func_name.as_str();
                let kind = match name {
                    "_&&_"
                    | "_||_"
                    | "!_"
                    | "_==_"
                    | "_!=_"
                    | "_<_"
                    | "_<=_"
                    | "_>_"
                    | "_>=_"
                    | "@in"
                    | "@not_strictly_false" => Kind::Bool,
                    "_+_" | "_-_" | "_*_" | "_/_" | "_%_" | "-_" => match (args.first(), args.get(1)) {
                        (Some(Kind::String), _) => Kind::String,
                        (Some(Kind::Number), _) => Kind::Number,
                        _ => Kind::Dynamic,
                    },
                    "_[_]" | "_?_:_" => Kind::Dynamic,
                    _ => match FUNCTIONS.iter().find(|(f, _)| *f == name) {
                        Some((_, k)) => *k,
                        None => {
                            return Err(self.error(
                                expr,
                                format!(
                                    "unknown function '{name}'; conditions may use CEL's standard functions and inCidr(ip, cidr)"
                                ),
                            ));
                        }
                    },
                };
                self.check_literals(expr, name, target.is_some(), &call.args)?;
                Ok(kind)
            }
            Expr::Comprehension(c) => {
                self.walk(&c.iter_range, scope)?;
                let pushed = 2 + usize::from(c.iter_var2.is_some());
                scope.push(c.iter_var.clone());
                scope.extend(c.iter_var2.clone());
                scope.push(c.accu_var.clone());
                let init = self.walk(&c.accu_init, scope);
                let rest = [&c.loop_cond, &c.loop_step, &c.result]
                    .into_iter()
                    .try_for_each(|e| self.walk(e, scope).map(|_| ()));
                scope.truncate(scope.len() - pushed);
                rest?;
                Ok(if init? == Kind::Bool { Kind::Bool } else { Kind::Dynamic })
            }
            Expr::List(list) => {
                for e in &list.elements {
                    self.walk(e, scope)?;
                }
                Ok(Kind::List)
            }
            Expr::Map(map) => {
                for e in &map.entries {
                    if let cel::common::ast::EntryExpr::MapEntry(entry) = &e.expr {
                        self.walk(&entry.key, scope)?;
                        self.walk(&entry.value, scope)?;
                    }
                }
                Ok(Kind::Map)
            }
            Expr::Struct(_) | Expr::Unspecified => {
                Err(self.error(expr, "message literals are not supported in conditions".to_owned()))
            }
        }
    }

    /// Checks literal arguments whose meaning is known: CIDRs, time zones, patterns.
    fn check_literals(
        &self,
        expr: &IdedExpr,
        name: &str,
        method: bool,
        args: &[IdedExpr],
    ) -> Result<(), ConditionError> {
        match name {
            "inCidr" => {
                if method || args.len() != 2 {
                    return Err(self.error(expr, "inCidr takes two arguments: inCidr(client.ip, '10.0.0.0/8')".into()));
                }
                for a in args {
                    if let Some(lit) = Self::literal_str(a) {
                        let is_net = std::ptr::eq(a, &args[1]);
                        let ok = if is_net {
                            Cidr::parse(lit).map(|_| ())
                        } else {
                            lit.parse::<IpAddr>().map(|_| ()).map_err(|_| "not an IP address".to_owned())
                        };
                        if let Err(why) = ok {
                            return Err(self.error(a, format!("'{lit}': {why}")));
                        }
                    }
                }
            }
            n if n.starts_with("get") && method => {
                if let Some(tz) = args.first().and_then(Self::literal_str) {
                    let probe =
                        format!("timestamp('2000-01-01T00:00:00Z').getHours('{}')", tz.replace(['\'', '\\'], ""));
                    let ok =
                        ENV.compile(&probe).ok().is_some_and(|p| p.execute(&Context::with_env(ENV.clone())).is_ok());
                    if !ok || tz.contains(['\'', '\\']) {
                        return Err(self.error(
                            &args[0],
                            format!("unknown time zone '{tz}'; use an IANA name such as 'Europe/Berlin' or an offset such as '+01:00'"),
                        ));
                    }
                }
            }
            "matches" => {
                if let Some(p) = args.last().and_then(Self::literal_str)
                    && let Err(e) = regex::Regex::new(p)
                {
                    return Err(self.error(args.last().unwrap_or(expr), format!("invalid pattern: {e}")));
                }
            }
            "timestamp" => {
                if let Some(t) = args.first().and_then(Self::literal_str)
                    && chrono::DateTime::parse_from_rfc3339(t).is_err()
                {
                    return Err(self.error(&args[0], format!("'{t}' is not an RFC 3339 timestamp")));
                }
            }
            _ => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn err(source: &str) -> String {
        check_condition(source).unwrap_err().to_string()
    }

    fn alice() -> Value {
        let mut attrs = BTreeMap::new();
        attrs.insert("department".to_owned(), "payments".to_owned());
        user_value("u1", "alice@acme.test", &["oncall".to_owned()], &attrs)
    }

    // 2026-11-27 (a Friday) 20:30 UTC = 21:30 in Berlin.
    const FRIDAY_EVENING: i64 = 1_795_811_400_000;

    fn eval(source: &str, facts: &RequestFacts) -> Result<bool, String> {
        Condition::compile(source).unwrap().eval(&alice(), facts, "fs", "read_file")
    }

    fn facts<'a>(ip: &str, app: &'a str, time_ms: i64) -> RequestFacts<'a> {
        RequestFacts::new(ip.parse().ok(), Some(app), Some(time_ms))
    }

    #[test]
    fn validation_points_at_the_problem() {
        assert_eq!(
            err("user.id == 'x' &&"),
            "line 1, column 18: syntax error: mismatched input '<EOF>' expecting {'[', '{', '(', '.', '-', '!', 'true', 'false', 'null', NUM_FLOAT, NUM_INT, NUM_UINT, STRING, BYTES, IDENTIFIER}"
        );
        assert_eq!(
            err("usr.id == 'x'"),
            "line 1, column 1: unknown variable 'usr'; the variables are user, client, request and tool"
        );
        assert_eq!(
            err("user.id == 'a' &&\n  user.name == 'b'"),
            "line 2, column 7: 'user' has no field 'name'; its fields are id, email, groups, attributes"
        );
        assert_eq!(
            err("frobnicate(user.id)"),
            "line 1, column 11: unknown function 'frobnicate'; conditions may use CEL's standard functions and inCidr(ip, cidr)"
        );
        assert_eq!(
            err("user.email"),
            "line 1, column 5: the condition must give a bool (true or false), but it gives a string"
        );
        assert_eq!(
            err("request.time.getHours('Mars/Base') < 9"),
            "line 1, column 23: unknown time zone 'Mars/Base'; use an IANA name such as 'Europe/Berlin' or an offset such as '+01:00'"
        );
        assert_eq!(
            err("inCidr(client.ip, '10.0.0.1/8')"),
            "line 1, column 19: '10.0.0.1/8': host bits are set; the network is 10.0.0.0/8"
        );
        assert_eq!(
            err("inCidr(client.ip, '10.0.0.0/33')"),
            "line 1, column 19: '10.0.0.0/33': the prefix length must be a number from 0 to 32"
        );
        assert_eq!(err("inCidr(client.ip, 'corp')"), "line 1, column 19: 'corp': not an IP network such as 10.0.0.0/8");
        assert_eq!(
            err("client.ip.size() > 1 && user"),
            "line 1, column 22: 'user' is an object; use one of its fields"
        );
        assert_eq!(err("user.email.matches('(')").split(": ").next(), Some("line 1, column 20"));
        assert_eq!(err(""), "line 1, column 1: the condition is empty; leave it out for a rule that always applies");
        assert!(err(&"(".repeat(40)).contains("nested more than 32 levels deep"));
        for ok in [
            "inCidr(client.ip, '10.0.0.0/8')",
            "'oncall' in user.groups",
            "user.groups.exists(g, g.startsWith('on'))",
            "has(user.attributes.department) && user.attributes.department == 'payments'",
            "request.time.getDayOfWeek('Europe/Berlin') in [1, 2, 3, 4, 5]",
            "client.app == 'claude-code' || tool.name.startsWith('read_')",
            "user.attributes['clearance'] == 'high'",
        ] {
            check_condition(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
    }

    #[test]
    fn time_of_day_and_weekday_in_a_zone() {
        let f = facts("10.1.2.3", "app", FRIDAY_EVENING);
        assert_eq!(eval("request.time.getHours('Europe/Berlin') == 21", &f), Ok(true));
        assert_eq!(eval("request.time.getHours() == 20", &f), Ok(true));
        let office = "request.time.getDayOfWeek('Europe/Berlin') >= 1 && request.time.getDayOfWeek('Europe/Berlin') <= 5 \
                      && request.time.getHours('Europe/Berlin') >= 8 && request.time.getHours('Europe/Berlin') < 18";
        assert_eq!(eval(office, &f), Ok(false), "21:30 is after hours");
        assert_eq!(eval(office, &facts("10.1.2.3", "app", FRIDAY_EVENING - 8 * 3_600_000)), Ok(true), "13:30 Friday");
        // Saturday 10:30 in Berlin: a weekday rule refuses it.
        assert_eq!(eval(office, &facts("10.1.2.3", "app", FRIDAY_EVENING + 13 * 3_600_000)), Ok(false));
        // Just after midnight UTC on Saturday is still Friday in New York.
        let sat_utc = FRIDAY_EVENING + 4 * 3_600_000;
        assert_eq!(eval("request.time.getDayOfWeek('America/New_York') == 5", &facts("", "", sat_utc)), Ok(true));
        assert_eq!(eval("request.time.getDayOfWeek() == 6", &facts("", "", sat_utc)), Ok(true));
    }

    #[test]
    fn networks_groups_attributes_and_apps() {
        let inside = facts("10.1.2.3", "claude-code", FRIDAY_EVENING);
        let outside = facts("192.168.1.9", "other", FRIDAY_EVENING);
        let corp = "inCidr(client.ip, '10.0.0.0/8')";
        assert_eq!(eval(corp, &inside), Ok(true));
        assert_eq!(eval(corp, &outside), Ok(false));
        assert_eq!(eval("inCidr(client.ip, '::1')", &facts("::1", "", 0)), Ok(true));
        assert_eq!(eval("inCidr(client.ip, '127.0.0.0/8')", &facts("::ffff:127.0.0.1", "", 0)), Ok(true));
        assert_eq!(eval("'oncall' in user.groups", &inside), Ok(true));
        assert_eq!(eval("'admins' in user.groups", &inside), Ok(false));
        assert_eq!(eval("user.attributes.department == 'payments'", &inside), Ok(true));
        assert_eq!(eval("client.app == 'claude-code'", &inside), Ok(true));
        assert_eq!(eval("client.app == 'claude-code'", &outside), Ok(false));
        assert_eq!(eval("tool.name == 'read_file' && tool.server == 'fs' && user.id == 'u1'", &inside), Ok(true));
    }

    #[test]
    fn runtime_errors_are_reported_not_guessed() {
        let unknown = RequestFacts::new(None, None, Some(FRIDAY_EVENING));
        let e = eval("inCidr(client.ip, '10.0.0.0/8')", &unknown).unwrap_err();
        assert!(e.contains("'' is not an IP address"), "{e}");
        let e = eval("user.attributes.clearance == 'high'", &unknown).unwrap_err();
        assert!(e.contains("clearance"), "{e}");
        let e = eval("user.attributes['department'] == 'payments' ? 1 : 2", &unknown).unwrap_err();
        assert!(e.contains("not a bool"), "{e}");
    }

    #[test]
    fn cidr_parsing() {
        assert!(Cidr::parse("0.0.0.0/0").unwrap().contains("8.8.8.8".parse().unwrap()));
        assert!(!Cidr::parse("0.0.0.0/0").unwrap().contains("::1".parse().unwrap()));
        assert!(Cidr::parse("2001:db8::/32").unwrap().contains("2001:db8:1::5".parse().unwrap()));
        assert!(Cidr::parse("10.0.0.0/+8").is_err());
    }
}
