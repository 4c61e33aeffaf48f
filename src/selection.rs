//! Which tables the daemon audits: `tables` (exact names and glob patterns),
//! `exclude_tables`, `[discovery] tags`, and the home region of a Global
//! Table. Pure: the listing itself is the daemon's (`daemon::discovery`).

use std::collections::BTreeMap;

use globset::{Glob, GlobBuilder, GlobSet, GlobSetBuilder};

/// Why a pattern is refused (the config names the key).
#[derive(Debug, thiserror::Error)]
#[error("{pattern:?} is not a glob pattern: {reason}")]
pub struct PatternError {
    pub pattern: String,
    pub reason: String,
}

/// Whether an entry of `tables` is a pattern rather than a name. `*`, `?`
/// and `[` cannot occur in a DynamoDB table name, so nothing is ambiguous.
pub fn is_pattern(entry: &str) -> bool {
    entry.contains(['*', '?', '['])
}

fn glob(pattern: &str) -> Result<Glob, PatternError> {
    // Table names have no path separators: `*` matches any run of characters.
    GlobBuilder::new(pattern)
        .literal_separator(false)
        .backslash_escape(false)
        .build()
        .map_err(|e| PatternError {
            pattern: pattern.to_string(),
            reason: e.kind().to_string(),
        })
}

fn glob_set<'a>(patterns: impl IntoIterator<Item = &'a String>) -> Result<GlobSet, PatternError> {
    let mut b = GlobSetBuilder::new();
    for p in patterns {
        b.add(glob(p)?);
    }
    b.build().map_err(|e| PatternError {
        pattern: String::new(),
        reason: e.to_string(),
    })
}

/// The compiled selection: what a table's name and tags must be to be
/// audited.
#[derive(Clone, Debug)]
pub struct TableSelection {
    /// Exact names: audited as they always were (reported failing with the
    /// fix when they cannot be), whatever their tags.
    exact: Vec<String>,
    patterns: GlobSet,
    has_patterns: bool,
    exclude: GlobSet,
    /// What `patterns` and `exclude` were compiled from (for equality).
    sources: (Vec<String>, Vec<String>),
    tags: BTreeMap<String, String>,
    /// The daemon's own tables: never audited.
    own: Vec<String>,
}

impl TableSelection {
    pub fn new(
        tables: &[String],
        exclude: &[String],
        tags: BTreeMap<String, String>,
        own: Vec<String>,
    ) -> Result<Self, PatternError> {
        let (patterns, exact): (Vec<&String>, Vec<&String>) =
            tables.iter().partition(|t| is_pattern(t));
        Ok(TableSelection {
            exact: exact.into_iter().cloned().collect(),
            has_patterns: !patterns.is_empty(),
            sources: (
                patterns.iter().map(|p| p.to_string()).collect(),
                exclude.to_vec(),
            ),
            patterns: glob_set(patterns)?,
            exclude: glob_set(exclude)?,
            tags,
            own,
        })
    }

    /// Checks one pattern alone (the config's message names the key).
    pub fn check_pattern(pattern: &str) -> Result<(), PatternError> {
        glob(pattern).map(|_| ())
    }

    /// The exact names, in config order.
    pub fn exact(&self) -> &[String] {
        &self.exact
    }

    /// Whether the region's tables must be listed: only patterns need it, so
    /// a config of names makes no ListTables call (and needs no permission
    /// for it).
    pub fn needs_listing(&self) -> bool {
        self.has_patterns
    }

    /// Whether tags must be read for a table that a pattern found.
    pub fn needs_tags(&self) -> bool {
        !self.tags.is_empty()
    }

    pub fn is_exact(&self, table: &str) -> bool {
        self.exact.iter().any(|t| t == table)
    }

    /// The name alone selects the table (tags not yet considered): an exact
    /// name, or a pattern's match that no `exclude_tables` entry matches,
    /// never one of our own tables.
    pub fn name_matches(&self, table: &str) -> bool {
        if self.own.iter().any(|t| t == table) {
            return false;
        }
        self.is_exact(table) || (self.patterns.is_match(table) && !self.exclude.is_match(table))
    }

    /// Whether an exclude pattern matches the name (a config error for an
    /// exact name: it cannot be both listed and excluded).
    pub fn is_excluded(&self, table: &str) -> bool {
        self.exclude.is_match(table)
    }

    /// Whether a table a pattern found carries every required tag.
    pub fn tags_match(&self, tags: &BTreeMap<String, String>) -> bool {
        self.tags.iter().all(|(k, v)| tags.get(k) == Some(v))
    }
}

impl PartialEq for TableSelection {
    fn eq(&self, other: &Self) -> bool {
        (&self.exact, &self.sources, &self.tags, &self.own)
            == (&other.exact, &other.sources, &other.tags, &other.own)
    }
}

/// The region where a Global Table is audited, computed the same way by
/// every region's daemon: `configured` when it is one of the table's
/// regions, else the region that sorts first. `own` is the region asking,
/// `replicas` what DescribeTable lists (which may or may not include `own`).
pub fn home_region<'a>(
    own: &'a str,
    replicas: &'a [String],
    configured: Option<&'a str>,
) -> &'a str {
    let mut regions: Vec<&str> = replicas.iter().map(String::as_str).collect();
    regions.push(own);
    if let Some(c) = configured.filter(|c| regions.contains(c)) {
        return c;
    }
    regions.into_iter().min().unwrap_or(own)
}

/// The region of a DynamoDB ARN (`arn:aws:dynamodb:REGION:ACCOUNT:table/T`).
pub fn arn_region(arn: &str) -> Option<&str> {
    arn.split(':').nth(3).filter(|r| !r.is_empty())
}

/// A selection from literals, the daemon's own tables being
/// `ddb-audit-entries` and `ddb-audit-streams`.
#[cfg(test)]
pub(crate) fn test_selection(
    tables: &[&str],
    exclude: &[&str],
    tags: &[(&str, &str)],
) -> TableSelection {
    let strings = |x: &[&str]| x.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let tags = tags.iter().map(|(k, v)| (k.to_string(), v.to_string()));
    let own = strings(&["ddb-audit-entries", "ddb-audit-streams"]);
    TableSelection::new(&strings(tables), &strings(exclude), tags.collect(), own)
        .expect("test patterns are valid")
}

#[cfg(test)]
mod tests {
    use super::*;

    use test_selection as sel;

    #[test]
    fn names_patterns_excludes_and_own_tables() {
        let s = sel(&["orders", "billing-*"], &["*-tmp"], &[]);
        assert!(s.needs_listing() && !s.needs_tags());
        assert!(s.name_matches("orders"));
        assert!(s.name_matches("billing-eu"));
        assert!(!s.name_matches("billing-eu-tmp"));
        assert!(!s.name_matches("ordersx"));
        let all = sel(&["*"], &[], &[]);
        assert!(all.name_matches("anything.at_all-1"));
        assert!(!all.name_matches("ddb-audit-entries"));
        let names = sel(&["orders"], &[], &[]);
        assert!(!names.needs_listing());
        assert_eq!(names.exact(), ["orders"]);
    }

    #[test]
    fn tags_must_all_be_carried() {
        let s = sel(&["*"], &[], &[("audit", "on"), ("team", "a")]);
        let tags = |x: &[(&str, &str)]| {
            x.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>()
        };
        assert!(s.tags_match(&tags(&[("audit", "on"), ("team", "a"), ("x", "y")])));
        assert!(!s.tags_match(&tags(&[("audit", "on")])));
        assert!(!s.tags_match(&tags(&[("audit", "off"), ("team", "a")])));
    }

    #[test]
    fn bad_patterns_are_refused() {
        assert!(TableSelection::check_pattern("billing-[").is_err());
        assert!(TableSelection::check_pattern("billing-{a,b}").is_ok());
    }

    #[test]
    fn every_region_computes_the_same_home() {
        let r = |x: &[&str]| x.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        // Whether or not DescribeTable lists the asking region itself.
        assert_eq!(
            home_region("us-east-1", &r(&["eu-west-1"]), None),
            "eu-west-1"
        );
        assert_eq!(
            home_region("eu-west-1", &r(&["us-east-1"]), None),
            "eu-west-1"
        );
        assert_eq!(
            home_region("eu-west-1", &r(&["eu-west-1", "us-east-1"]), None),
            "eu-west-1"
        );
        assert_eq!(
            home_region("eu-west-1", &r(&["us-east-1"]), Some("us-east-1")),
            "us-east-1"
        );
        // A configured region that holds no replica does not count.
        assert_eq!(
            home_region("us-east-1", &r(&["us-west-2"]), Some("ap-south-1")),
            "us-east-1"
        );
        assert_eq!(home_region("us-east-1", &[], None), "us-east-1");
        assert_eq!(
            arn_region("arn:aws:dynamodb:eu-west-1:123456789012:table/orders"),
            Some("eu-west-1")
        );
    }
}
