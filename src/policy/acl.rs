//! The compiled access list of a token's policies, and Vault's matching rules.
//!
//! Rules from several policies for the *same* pattern merge: their capabilities are joined,
//! and a `deny` in any of them leaves only `deny`. Rules for *different* patterns never merge:
//! a request path takes the capabilities of exactly one rule, chosen this way (Vault's order):
//!
//! 1. an exact pattern equal to the path;
//! 2. for a list, the exact pattern without the path's trailing `/`;
//! 3. otherwise the highest-priority pattern among the longest matching `*` prefix and every
//!    matching `+` pattern, where a pattern ranks lower when its first `+` or `*` comes earlier,
//!    when it ends in `*` and the other does not, when it has more `+` segments, when it is
//!    shorter, and finally when it sorts first.
//!
//! So `secret/data/app/admin` (exact) beats `secret/data/app/*`, which beats `secret/+/app/*`;
//! and a path that no rule matches is denied (policies are deny by default).

use std::collections::HashMap;

use super::{Capability, CapabilitySet, Policy};

/// A ready-to-query union of policies.
#[derive(Debug, Clone, Default)]
pub struct Acl {
    root: bool,
    exact: HashMap<String, CapabilitySet>,
    /// Keyed by the pattern without its trailing `*`.
    prefix: HashMap<String, CapabilitySet>,
    /// Patterns holding `+`, keyed by the full pattern (with any trailing `*`).
    segment: HashMap<String, CapabilitySet>,
}

/// A candidate non-exact match, with what Vault ranks it by.
struct Candidate<'a> {
    first_wildcard: usize,
    is_prefix: bool,
    wildcards: usize,
    pattern: &'a str,
    caps: CapabilitySet,
}

impl Candidate<'_> {
    /// Higher sorts later: the last candidate wins.
    fn rank(&self) -> (usize, bool, std::cmp::Reverse<usize>, usize, &str) {
        (
            self.first_wildcard,
            !self.is_prefix,
            std::cmp::Reverse(self.wildcards),
            self.pattern.len(),
            self.pattern,
        )
    }
}

impl Acl {
    /// Compiles `policies`. A policy named `root` makes the list allow everything.
    #[must_use]
    pub fn new(policies: &[Policy]) -> Self {
        let mut acl = Self::default();
        for policy in policies {
            if policy.name() == "root" {
                acl.root = true;
            }
            for rule in policy.rules() {
                let path = rule.path.as_str();
                let table = if path.contains('+') {
                    acl.segment.entry(path.to_owned())
                } else if let Some(stem) = path.strip_suffix('*') {
                    acl.prefix.entry(stem.to_owned())
                } else {
                    acl.exact.entry(path.to_owned())
                };
                let slot = table.or_insert(CapabilitySet::NONE);
                *slot = slot.merge(rule.capabilities);
            }
        }
        acl
    }

    /// Whether the `root` policy is among the policies.
    #[must_use]
    pub fn is_root(&self) -> bool {
        self.root
    }

    /// Whether `cap` on `path` is allowed. `path` is relative to `/v1/`, without a leading `/`;
    /// a list is checked on the path with a trailing `/` (added here when missing).
    #[must_use]
    pub fn allows(&self, path: &str, cap: Capability) -> bool {
        if self.root {
            return true;
        }
        let path = path.trim_start_matches('/');
        let caps = if cap == Capability::List {
            let with_slash = if path.ends_with('/') || path.is_empty() {
                path.to_owned()
            } else {
                format!("{path}/")
            };
            self.lookup(&with_slash, true)
        } else {
            self.lookup(path, false)
        };
        caps.is_some_and(|c| c.contains(cap))
    }

    /// Whether `cap` and `sudo` are both allowed on `path` (root-protected endpoints).
    #[must_use]
    pub fn allows_with_sudo(&self, path: &str, cap: Capability) -> bool {
        self.allows(path, cap) && self.allows(path, Capability::Sudo)
    }

    /// The capabilities on `path`, as `sys/capabilities` reports them: looked up as a list
    /// would be, so that rules written with and without a trailing `/` both count.
    #[must_use]
    pub fn capabilities(&self, path: &str) -> Vec<&'static str> {
        if self.root {
            return vec!["root"];
        }
        self.lookup(path.trim_start_matches('/'), true)
            .unwrap_or_default()
            .names()
    }

    fn lookup(&self, path: &str, list: bool) -> Option<CapabilitySet> {
        if let Some(caps) = self.exact.get(path) {
            return Some(*caps);
        }
        if list {
            if let Some(caps) = path.strip_suffix('/').and_then(|p| self.exact.get(p)) {
                return Some(*caps);
            }
            if let Some(bare) = path.strip_suffix('/')
                && let Some(caps) = self.non_exact(bare)
            {
                return Some(caps);
            }
        }
        self.non_exact(path)
    }

    fn non_exact(&self, path: &str) -> Option<CapabilitySet> {
        let mut candidates = Vec::new();
        // The longest `*` prefix of the path.
        let longest = (0..=path.len())
            .rev()
            .filter(|&i| path.is_char_boundary(i))
            .find_map(|i| self.prefix.get_key_value(&path[..i]));
        if let Some((stem, caps)) = longest {
            if self.segment.is_empty() {
                return Some(*caps);
            }
            candidates.push(Candidate {
                first_wildcard: stem.len(),
                is_prefix: true,
                wildcards: 0,
                pattern: stem,
                caps: *caps,
            });
        }
        let parts: Vec<&str> = path.split('/').collect();
        for (full, caps) in &self.segment {
            let (pattern, is_prefix) = match full.strip_suffix('*') {
                Some(stem) => (stem, true),
                None => (full.as_str(), false),
            };
            let pattern_parts: Vec<&str> = pattern.split('/').collect();
            if parts.len() < pattern_parts.len()
                || (!is_prefix && parts.len() != pattern_parts.len())
            {
                continue;
            }
            let mut wildcards = 0;
            let last = pattern_parts.len() - 1;
            let matched = pattern_parts.iter().enumerate().all(|(i, want)| {
                if *want == "+" {
                    wildcards += 1;
                    true
                } else {
                    *want == parts[i] || (is_prefix && i == last && parts[i].starts_with(want))
                }
            });
            if matched {
                candidates.push(Candidate {
                    first_wildcard: full.find('+').unwrap_or(full.len()),
                    is_prefix,
                    wildcards,
                    pattern,
                    caps: *caps,
                });
            }
        }
        candidates
            .into_iter()
            .max_by(|a, b| a.rank().cmp(&b.rank()))
            .map(|c| c.caps)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::policy::PathRule;

    fn policy(name: &str, text: &str) -> Policy {
        Policy::parse(name, text).unwrap()
    }

    const C: Capability = Capability::Create;
    const R: Capability = Capability::Read;
    const U: Capability = Capability::Update;
    const P: Capability = Capability::Patch;
    const D: Capability = Capability::Delete;
    const L: Capability = Capability::List;
    const S: Capability = Capability::Sudo;

    /// A table of policies × paths × the capabilities expected to be granted (all others must
    /// be refused).
    #[test]
    fn matching_table() {
        let app = policy(
            "app",
            r#"
            path "secret/data/app/*"        { capabilities = ["create", "read", "update", "patch"] }
            path "secret/data/app/admin"    { capabilities = ["deny"] }
            path "secret/metadata/app/*"    { capabilities = ["list", "delete"] }
            path "secret/data/+/shared"     { capabilities = ["read"] }
            path "secret/data/+/+/deep"     { capabilities = ["read", "list"] }
            path "secret/data/team/+/x*"    { capabilities = ["update"] }
            path "sys/policies/acl"         { capabilities = ["list"] }
            path "sys/policies/acl/app-*"   { capabilities = ["read", "update", "sudo"] }
            path "auth/token/lookup-self"   { capabilities = ["read"] }
            "#,
        );
        let other = policy(
            "other",
            r#"
            path "secret/data/app/*"      { capabilities = ["delete"] }
            path "secret/data/app/ro"     { capabilities = ["read"] }
            path "secret/data/app/locked" { capabilities = ["read"] }
            path "secret/data/shared/*"   { capabilities = ["list"] }
            "#,
        );
        let locker = policy(
            "locker",
            r#"path "secret/data/app/locked" { capabilities = ["deny"] }"#,
        );
        let acl = Acl::new(&[app, other, locker]);
        let table: &[(&str, &[Capability])] = &[
            // A glob from two policies merges (app's four + other's delete).
            ("secret/data/app/db", &[C, R, U, P, D]),
            ("secret/data/app/nested/deeper", &[C, R, U, P, D]),
            ("secret/data/app/", &[C, R, U, P, D]),
            // The exact path wins over the glob, even though it grants less.
            ("secret/data/app/ro", &[R]),
            // deny in one policy beats read in another for the same path.
            ("secret/data/app/locked", &[]),
            ("secret/data/app/admin", &[]),
            // `*` does not match a shorter path; nothing matching means denied.
            ("secret/data/app", &[]),
            ("secret/data/other", &[]),
            // `+` matches exactly one segment and beats an earlier glob; the later wildcard wins.
            ("secret/data/team/shared", &[R]),
            ("secret/data/team/extra/shared", &[]),
            ("secret/data/a/b/deep", &[R, L]),
            // The first wildcard of "secret/data/+/shared" is at 12, the glob
            // "secret/data/shared/*" starts at 19: the later one, the glob, wins.
            ("secret/data/shared/shared", &[L]),
            ("secret/data/team/q/xyz", &[U]),
            ("secret/data/team/q/y", &[]),
            ("secret/metadata/app/db", &[L, D]),
            ("sys/policies/acl", &[L]),
            ("sys/policies/acl/app-1", &[R, U, S]),
            ("sys/policies/acl/root", &[]),
            ("auth/token/lookup-self", &[R]),
            ("auth/token/create", &[]),
        ];
        for (path, want) in table {
            for cap in Capability::ALL {
                let allowed = acl.allows(path, cap);
                assert_eq!(
                    allowed,
                    want.contains(&cap),
                    "{cap} on {path}: got {allowed}"
                );
            }
        }
        // List checks use the trailing-slash path; a rule without the slash counts too.
        assert!(acl.allows("sys/policies/acl/", L));
        assert!(acl.allows("secret/metadata/app/", L));
        assert!(acl.allows("secret/metadata/app", L));
        assert_eq!(acl.capabilities("secret/data/app/ro"), vec!["read"]);
        assert_eq!(acl.capabilities("secret/data/app/admin"), vec!["deny"]);
        assert_eq!(acl.capabilities("nowhere"), vec!["deny"]);
    }

    #[test]
    fn a_top_level_glob_catches_what_nothing_else_matches() {
        let acl = Acl::new(&[policy(
            "p",
            r#"
            path "*"              { capabilities = ["read"] }
            path "secret/*"       { capabilities = ["list"] }
            path "secret/private" { capabilities = ["deny"] }
            "#,
        )]);
        assert!(acl.allows("anything", R) && acl.allows("", R));
        assert!(acl.allows("secret/x", L) && !acl.allows("secret/x", R));
        assert!(!acl.allows("secret/private", R));
        // Vault checks a list without its trailing slash first, so "secret" (matched by "*")
        // takes "*"'s capabilities, not those of "secret/*".
        assert!(!acl.allows("secret/", L));
    }

    #[test]
    fn priority_follows_vaults_order() {
        let acl = Acl::new(&[policy(
            "p",
            r#"
            path "foo/+"          { capabilities = ["read"] }
            path "foo/*"          { capabilities = ["update"] }
            path "foo/a*"         { capabilities = ["list"] }
            path "foo/+/bar/baz"  { capabilities = ["create"] }
            path "foo/+/+/baz"    { capabilities = ["delete"] }
            path "foo/bar/+/baz"  { capabilities = ["patch"] }
            path "zed/+/bar/ba*"  { capabilities = ["sudo"] }
            path "zed/+/bar/b*"   { capabilities = ["read", "update"] }
            "#,
        )]);
        // foo/+ beats foo/* (a prefix loses to a non-prefix at the same position).
        assert!(acl.allows("foo/x", R) && !acl.allows("foo/x", U));
        // foo/a* (glob at 5) beats foo/+ (wildcard at 4).
        assert!(acl.allows("foo/abc", L) && !acl.allows("foo/abc", R));
        // foo/bar/+/baz (wildcard at 8) beats foo/+/bar/baz and foo/+/+/baz (at 4).
        assert!(acl.allows("foo/bar/bar/baz", P) && !acl.allows("foo/bar/bar/baz", C));
        // Same position, no prefix, fewer wildcards wins: foo/+/bar/baz over foo/+/+/baz.
        assert!(acl.allows("foo/q/bar/baz", C) && !acl.allows("foo/q/bar/baz", D));
        // Same position, both prefixes, same wildcards: the longer one wins.
        assert!(acl.allows("zed/q/bar/bat", S) && !acl.allows("zed/q/bar/bat", U));
        assert!(acl.allows("zed/q/bar/bx", U));
        // Same position (4) as "foo/*"'s glob, both prefixes: fewer wildcards wins, so the
        // plain glob beats "foo/+/+/baz"-like patterns with a `+` there.
        assert!(acl.allows("foo/q/r/baz/x", U));
        // Deeper than foo/+ and no other match: the foo/* glob applies.
        assert!(acl.allows("foo/x/y", U) && !acl.allows("foo/x/y", R));
    }

    #[test]
    fn root_allows_everything_and_empty_allows_nothing() {
        let root = Acl::new(&[Policy::from_rules("root", Vec::new())]);
        assert!(root.is_root());
        assert!(root.allows("anything/at/all", S));
        assert_eq!(root.capabilities("x"), vec!["root"]);
        let empty = Acl::new(&[]);
        assert!(!empty.allows("", R));
        assert!(!empty.allows("sys/policies/acl", L));
    }

    fn arb_path() -> impl Strategy<Value = String> {
        proptest::collection::vec("[a-z+*]{0,4}", 0..6).prop_map(|parts| parts.join("/"))
    }

    fn arb_cap() -> impl Strategy<Value = Capability> {
        proptest::sample::select(Capability::ALL.to_vec())
    }

    proptest! {
        /// A policy granting nothing (every rule empty or deny) denies every request.
        #[test]
        fn a_policy_granting_nothing_denies_everything(
            patterns in proptest::collection::vec((arb_path(), any::<bool>()), 0..12),
            request in "[a-z/+*]{0,24}",
            cap in arb_cap(),
        ) {
            let rules = patterns
                .into_iter()
                .map(|(path, deny)| PathRule {
                    path,
                    capabilities: if deny { CapabilitySet::DENY } else { CapabilitySet::NONE },
                })
                .collect();
            let acl = Acl::new(&[Policy::from_rules("nothing", rules)]);
            prop_assert!(!acl.allows(&request, cap));
            prop_assert_eq!(acl.capabilities(&request), vec!["deny"]);
        }

        /// Adding a deny rule for a path can only take capabilities away from it.
        #[test]
        fn deny_only_removes(path in "[a-z]{1,4}(/[a-z]{1,4}){0,3}", cap in arb_cap()) {
            let grant = PathRule {
                path: path.clone(),
                capabilities: CapabilitySet::NONE.with(cap),
            };
            let deny = PathRule { path: path.clone(), capabilities: CapabilitySet::DENY };
            let granted = Acl::new(&[Policy::from_rules("a", vec![grant.clone()])]);
            prop_assert!(granted.allows(&path, cap));
            let both = Acl::new(&[
                Policy::from_rules("a", vec![grant]),
                Policy::from_rules("b", vec![deny]),
            ]);
            prop_assert!(!both.allows(&path, cap));
        }
    }
}
