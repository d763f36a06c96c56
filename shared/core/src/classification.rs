//! Data-classification rule shapes: what a tenant's rules look for and what they do. The scanner
//! lives in `gatehouse_bundle::classify`; these enums are here so the console and GraphQL share them.

use serde::{Deserialize, Serialize};

#[cfg(feature = "graphql")]
use async_graphql::{Enum, InputObject, SimpleObject};

/// What a rule looks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "graphql", derive(Enum))]
#[serde(rename_all = "snake_case")]
pub enum Detector {
    /// Payment card numbers (PAN), Luhn-checked.
    CardNumber,
    /// US social security numbers in the dashed form.
    UsSsn,
    /// E-mail addresses.
    Email,
    /// Phone numbers: international (`+`) and North American forms.
    Phone,
    /// International bank account numbers, mod-97-checked.
    Iban,
    /// Well-known API key and token formats.
    ApiKey,
    /// PEM and OpenSSH private key blocks.
    PrivateKey,
    /// A tenant-defined regular expression (the rule's `pattern`).
    Pattern,
}

impl Detector {
    /// Every built-in detector (all but [`Detector::Pattern`]).
    pub const BUILT_IN: [Detector; 7] = [
        Detector::CardNumber,
        Detector::UsSsn,
        Detector::Email,
        Detector::Phone,
        Detector::Iban,
        Detector::ApiKey,
        Detector::PrivateKey,
    ];

    /// The wire name, e.g. `card_number`; also the label in redacted text.
    pub fn as_str(self) -> &'static str {
        match self {
            Detector::CardNumber => "card_number",
            Detector::UsSsn => "us_ssn",
            Detector::Email => "email",
            Detector::Phone => "phone",
            Detector::Iban => "iban",
            Detector::ApiKey => "api_key",
            Detector::PrivateKey => "private_key",
            Detector::Pattern => "pattern",
        }
    }
}

/// What happens when a rule matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "graphql", derive(Enum))]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Refuse the whole call or response.
    Block,
    /// Replace each match with `[REDACTED:<detector>]` and let it through.
    Redact,
    /// Let it through unchanged; the finding is audited.
    Log,
}

/// Which side of a tool call a rule looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "graphql", derive(Enum))]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// Tool-call parameters (`tools/call` arguments) only.
    Params,
    /// Tool responses only.
    Responses,
    /// Both.
    Both,
}

macro_rules! wire_names {
    ($($t:ty),*) => {$(
        impl $t {
            /// The wire name (snake_case), as stored and as the bundle carries it.
            pub fn wire(self) -> String {
                serde_json::to_value(self).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
            }

            /// Parses the wire name.
            pub fn from_wire(s: &str) -> Option<Self> {
                serde_json::from_value(serde_json::Value::String(s.to_owned())).ok()
            }
        }
    )*};
}
wire_names!(Detector, Action, Scope);

/// A data-classification rule as an administrator writes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "graphql", derive(InputObject))]
#[serde(rename_all = "camelCase")]
pub struct ClassificationRuleInput {
    /// Name shown to administrators and in audit.
    pub name: String,
    /// What to look for.
    pub detector: Detector,
    /// For the `pattern` detector only: a regular expression (Rust `regex` syntax) matched anywhere
    /// in each string.
    #[serde(default)]
    pub pattern: Option<String>,
    /// What to do with a match.
    pub action: Action,
    /// Parameters, responses, or both.
    pub scope: Scope,
    /// Server slugs the rule applies to.
    #[serde(default)]
    #[cfg_attr(feature = "graphql", graphql(default))]
    pub servers: Vec<String>,
    /// Server labels (e.g. `PCI`): the rule also applies to every server carrying one of them. With
    /// neither servers nor labels, it applies to every server.
    #[serde(default)]
    #[cfg_attr(feature = "graphql", graphql(default))]
    pub labels: Vec<String>,
}

/// A stored data-classification rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "graphql", derive(SimpleObject))]
#[serde(rename_all = "camelCase")]
pub struct ClassificationRuleView {
    /// Stable id, named by every finding.
    pub id: String,
    /// Name.
    pub name: String,
    /// What it looks for.
    pub detector: Detector,
    /// The pattern of a `pattern` rule.
    pub pattern: Option<String>,
    /// What it does with a match.
    pub action: Action,
    /// Parameters, responses, or both.
    pub scope: Scope,
    /// Server slugs it names.
    pub servers: Vec<String>,
    /// Server labels it names.
    pub labels: Vec<String>,
    /// Created at.
    pub created_at_ms: i64,
}

/// One finding of a data-classification rule in a request or response, as audited: where, never
/// what.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "graphql", derive(SimpleObject))]
#[serde(rename_all = "camelCase")]
pub struct AuditFinding {
    /// The rule that found it.
    pub rule_id: String,
    /// Its detector.
    pub detector: Detector,
    /// What the rule did.
    pub action: Action,
    /// `params` or `response`.
    pub direction: String,
    /// JSON pointer of the string, inside the arguments or the result.
    pub path: String,
    /// How many matches in that string.
    pub count: u32,
}
