//! "Did you mean ...?": the nearest known name to a misspelled one, by edit distance
//! (`strsim`'s optimal string alignment, which counts a swap of two neighbours as one
//! edit). Used for unknown references, keys, kinds and fields, and for the typo warnings
//! on `component.yaml` keys (docs/config.md).

/// The candidate nearest to `word`, if it is near enough to be the one meant: at most
/// one edit for short names, about one edit in four for longer ones. Case is ignored
/// for the distance, so `Servicename` finds `ServiceName`.
pub fn nearest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let folded = word.to_lowercase();
    let limit = (word.chars().count() / 4).max(1);
    candidates
        .into_iter()
        .filter(|c| *c != word)
        .map(|c| (strsim::osa_distance(&folded, &c.to_lowercase()), c))
        .filter(|(d, _)| *d <= limit)
        // Equally near candidates: the first in byte order, so that the answer does not
        // depend on the order they come in (a hash map's, for some callers).
        .min_by_key(|&(d, c)| (d, c))
        .map(|(_, c)| c)
}

/// Whether `word` is one edit (insertion, deletion, substitution or swap of neighbours)
/// away from `known`: the test for the typo warnings.
pub fn one_edit(word: &str, known: &str) -> bool {
    word != known && strsim::osa_distance(word, known) == 1
}

/// ` (did you mean `x`?)` or nothing, to append to a message.
pub fn did_you_mean<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> String {
    nearest(word, candidates).map(|c| format!(" (did you mean `{c}`?)")).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equally_near_names_give_the_first_in_byte_order_whatever_their_order() {
        let names = ["svc-c", "svc-a", "svc-b"];
        assert_eq!(nearest("svc-x", names), Some("svc-a"));
        assert_eq!(nearest("svc-x", names.iter().rev().copied()), Some("svc-a"));
    }

    #[test]
    fn nearest_names() {
        let names = ["inventory-service", "hr-connection", "orders-db"];
        assert_eq!(nearest("inventory-servce", names), Some("inventory-service"));
        assert_eq!(nearest("hr-conection", names), Some("hr-connection"));
        assert_eq!(nearest("payments", names), None);
        assert_eq!(nearest("visiblity", ["visibility", "id"]), Some("visibility"));
        assert_eq!(nearest("Conection", ["Connection", "Component"]), Some("Connection"));
        assert_eq!(nearest("ab", ["xy"]), None);
    }

    #[test]
    fn one_edit_away() {
        assert!(one_edit("envs", "env"));
        assert!(one_edit("dependancies", "dependencies"));
        assert!(one_edit("connectionReference", "connectionReferences"));
        assert!(one_edit("vlaue", "value"));
        assert!(!one_edit("env", "env"));
        assert!(!one_edit("endpoints", "env"));
    }
}
