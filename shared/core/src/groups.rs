//! Local groups and user attributes (`docs/decisions/0012-groups-and-conditions.md`): the shapes
//! GraphQL, the console and config files share.

use serde::{Deserialize, Serialize};

#[cfg(feature = "graphql")]
use async_graphql::{InputObject, SimpleObject};

use crate::GatehouseError;

/// Most attributes one user may have.
pub const MAX_ATTRIBUTES: usize = 64;
/// Longest attribute value (characters).
pub const MAX_ATTRIBUTE_VALUE: usize = 256;

/// A local group of a tenant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "graphql", derive(SimpleObject))]
#[serde(rename_all = "camelCase")]
pub struct GroupView {
    /// Slug, unique in the tenant; conditions see it in `user.groups`.
    pub slug: String,
    /// Display name.
    pub name: String,
    /// E-mail addresses of the members, sorted.
    pub members: Vec<String>,
    /// Slugs of the access roles every member holds through the group, sorted.
    pub roles: Vec<String>,
}

/// One attribute of a user (`user.attributes.<key>` in conditions).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "graphql", derive(SimpleObject, InputObject), graphql(input_name = "UserAttributeInput"))]
#[serde(rename_all = "camelCase")]
pub struct UserAttribute {
    /// Key: a lowercase identifier (`department`, `cost_center`).
    pub key: String,
    /// Value.
    pub value: String,
}

/// Checks a user's attributes before they are saved; errors name the field (`attributes[1].key`).
pub fn validate_attributes(attrs: &[UserAttribute]) -> Result<(), GatehouseError> {
    if attrs.len() > MAX_ATTRIBUTES {
        return Err(GatehouseError::invalid("attributes", format!("at most {MAX_ATTRIBUTES} attributes per user")));
    }
    let mut seen = std::collections::HashSet::new();
    for (i, a) in attrs.iter().enumerate() {
        let field = |f: &str| format!("attributes[{i}].{f}");
        let k = a.key.as_bytes();
        let ok = !k.is_empty()
            && k.len() <= 63
            && k[0].is_ascii_lowercase()
            && k.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'_');
        if !ok {
            return Err(GatehouseError::invalid(
                &field("key"),
                format!(
                    "'{}' is not a valid key: use 1 to 63 characters a-z, 0-9 and '_', starting with a letter \
                     (conditions read it as user.attributes.<key>)",
                    a.key
                ),
            ));
        }
        if !seen.insert(a.key.as_str()) {
            return Err(GatehouseError::invalid(&field("key"), format!("'{}' is given twice", a.key)));
        }
        if a.value.chars().count() > MAX_ATTRIBUTE_VALUE {
            return Err(GatehouseError::invalid(&field("value"), format!("at most {MAX_ATTRIBUTE_VALUE} characters")));
        }
        if a.value.chars().any(char::is_control) {
            return Err(GatehouseError::invalid(&field("value"), "control characters are not allowed"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attr(k: &str, v: &str) -> UserAttribute {
        UserAttribute { key: k.into(), value: v.into() }
    }

    #[test]
    fn attribute_keys_are_identifiers_and_errors_name_the_field() {
        assert!(validate_attributes(&[attr("department", "payments"), attr("cost_center_2", "")]).is_ok());
        let e = validate_attributes(&[attr("ok", "x"), attr("Department", "x")]).unwrap_err();
        assert!(e.message.starts_with("attributes[1].key: 'Department' is not a valid key"), "{}", e.message);
        let e = validate_attributes(&[attr("a-b", "x")]).unwrap_err();
        assert!(e.message.starts_with("attributes[0].key: 'a-b' is not a valid key"), "{}", e.message);
        let e = validate_attributes(&[attr("a", "x"), attr("a", "y")]).unwrap_err();
        assert_eq!(e.message, "attributes[1].key: 'a' is given twice");
        let e = validate_attributes(&[attr("a", &"x".repeat(257))]).unwrap_err();
        assert_eq!(e.message, "attributes[0].value: at most 256 characters");
    }
}
