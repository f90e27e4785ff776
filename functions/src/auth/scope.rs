//! Project scopes from authorizer claims: the shapes API Gateway passes a `dspy_projects` claim in.

use serde_json::Value;

use super::Scope;

/// A scope from a claim value as API Gateway passes it: `*`, `a,b`, `a b`, `[a b]` (how an HTTP
/// API JWT authorizer flattens an array claim) or a JSON array `["a","b"]`.
pub fn scope_from_claim(text: &str) -> Result<Scope, String> {
    let t = text.trim();
    if t.starts_with('[') {
        if let Ok(list) = serde_json::from_str::<Vec<String>>(t) {
            return Scope::from_names(list);
        }
    }
    let t = t.trim_start_matches('[').trim_end_matches(']');
    Scope::from_names(t.split(|c: char| c == ',' || c.is_whitespace()))
}

/// A scope from a claim that is a string (see [`scope_from_claim`]) or an array of strings.
pub(super) fn scope_from_value(v: &Value) -> Result<Scope, String> {
    match v {
        Value::String(s) => scope_from_claim(s),
        Value::Array(items) => Scope::from_names(
            items
                .iter()
                .map(|i| i.as_str().ok_or("dspy_projects must hold strings"))
                .collect::<Result<Vec<_>, _>>()?,
        ),
        _ => Err("dspy_projects must be a string or an array of strings".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn project_claims_parse_in_every_shape() {
        let ab = Scope::Only(["a".to_string(), "b".to_string()].into());
        assert_eq!(scope_from_claim("a,b").unwrap(), ab);
        assert_eq!(scope_from_claim("a b").unwrap(), ab);
        assert_eq!(scope_from_claim("[a b]").unwrap(), ab);
        assert_eq!(scope_from_claim(r#"["a","b"]"#).unwrap(), ab);
        assert_eq!(scope_from_claim("*").unwrap(), Scope::All);
        assert_eq!(scope_from_claim("[a *]").unwrap(), Scope::All);
        assert!(scope_from_claim("a/../b").is_err());
    }
}
