//! The platform's grammars: connection names, UUIDs and `resourceRef`s.

use crate::config::model::{RefKind, ResourceRef};

/// The names the platform allows for connections: 3 to 50 characters, starting with a
/// letter, then letters, digits, spaces, `-` or `_`, not ending in a space, `-` or `_`.
pub fn valid_name(name: &str) -> bool {
    let n = name.chars().count();
    let mut chars = name.chars();
    (3..=50).contains(&n)
        && chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, ' ' | '-' | '_'))
        && name.chars().last().is_some_and(|c| c.is_ascii_alphanumeric())
}

pub const NAME_RULE: &str =
    "use 3 to 50 characters: a letter first, then letters, digits, spaces, '-' or '_', ending in a letter or digit";

/// A UUID in its 8-4-4-4-12 hex form; returns it lower-cased.
pub fn parse_uuid(text: &str) -> Option<String> {
    let groups: Vec<&str> = text.split('-').collect();
    let lens = [8, 4, 4, 4, 12];
    let ok = groups.len() == 5
        && groups.iter().zip(lens).all(|(g, len)| g.len() == len && g.bytes().all(|b| b.is_ascii_hexdigit()));
    ok.then(|| text.to_ascii_lowercase())
}

pub const RESOURCE_REF_GRAMMAR: &str =
    "write it as service:/Project/component/v1/endpoint/PUBLIC (or PROJECT, ORGANIZATION), \
     thirdparty:name/v1, database:server/db or storage:name";

/// Parses a `resourceRef` against its grammar.
pub fn parse_resource_ref(text: &str) -> Option<ResourceRef> {
    let segment = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    let (scheme, rest) = text.split_once(':')?;
    let parts: Vec<&str> = rest.split('/').collect();
    let kind = match scheme {
        "service" => {
            let ok = parts.len() == 6
                && parts[0].is_empty()
                && parts[1..].iter().all(|p| segment(p))
                && ["PUBLIC", "PROJECT", "ORGANIZATION"].contains(&parts[5].to_ascii_uppercase().as_str());
            ok.then_some(RefKind::Service)?
        }
        "thirdparty" => (parts.len() == 2 && parts.iter().all(|p| segment(p))).then_some(RefKind::ThirdParty)?,
        "database" => (parts.len() == 2 && parts.iter().all(|p| segment(p))).then_some(RefKind::Database)?,
        "storage" => (parts.len() == 1 && segment(parts[0])).then_some(RefKind::Storage)?,
        _ => return None,
    };
    Some(ResourceRef { kind, text: text.to_owned() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(valid_name("hr-connection"));
        assert!(valid_name("My DB_1"));
        for bad in ["hr", "-hr", "1db", "hr-", "x".repeat(51).as_str(), "hr/conn"] {
            assert!(!valid_name(bad), "{bad}");
        }
    }

    #[test]
    fn uuids() {
        assert_eq!(
            parse_uuid("19D2648B-d29c-4452-afdd-1b9311e81412").as_deref(),
            Some("19d2648b-d29c-4452-afdd-1b9311e81412")
        );
        assert!(parse_uuid("19d2648b-d29c-4452-afdd-1b9311e8141").is_none());
        assert!(parse_uuid("19d2648bd29c4452afdd1b9311e81412").is_none());
    }

    #[test]
    fn resource_refs() {
        for good in [
            "service:/HRProject/users/v1/ad088/PUBLIC",
            "thirdparty:stripe/v1",
            "database:pg-main/hr",
            "storage:bucket",
        ] {
            assert!(parse_resource_ref(good).is_some(), "{good}");
        }
        for bad in [
            "service:HRProject/users/v1/ad088/PUBLIC",
            "service:/a/b/v1/ep/SECRET",
            "thirdparty:stripe",
            "db:x/y",
            "storage:a b",
            "database:/x",
        ] {
            assert!(parse_resource_ref(bad).is_none(), "{bad}");
        }
    }
}
