//! URL domain blocklist, the first step of FineWeb's pipeline (datatrove's `URLFilter`,
//! `datatrove/pipeline/filters/url_filter.py`, blocks listed domains and their subdomains).
//!
//! kiln ships no list: datatrove's built-in lists (adult domains, banned words and sub-words)
//! are not included; give your own domains inline or in a file. A document whose host is a
//! listed domain or a subdomain of one is dropped (`domain`); documents without a URL are kept.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::Fields;
use crate::{DataError, Document};

/// Settings of the URL blocklist. At least one domain (inline or in the file) is required.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UrlBlocklistConfig {
    /// Blocked domains, e.g. `example.com` (also blocks `www.example.com`, `a.b.example.com`).
    /// Case-insensitive; a leading `*.` or `.` and a full URL (its host is taken) are accepted.
    pub domains: Vec<String>,
    /// A file of blocked domains, one per line; blank lines and lines starting with `#` are
    /// skipped. Relative paths are relative to the working directory.
    pub file: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub(crate) struct UrlBlocklist {
    domains: HashSet<String>,
}

impl UrlBlocklist {
    pub(crate) fn new(cfg: &UrlBlocklistConfig, f: &Fields) -> Result<Self, DataError> {
        let mut domains = HashSet::new();
        for d in &cfg.domains {
            let norm = normalize_domain(d)
                .ok_or_else(|| f.err("domains", format!("{d:?} is not a domain name")))?;
            domains.insert(norm);
        }
        if let Some(path) = &cfg.file {
            read_domain_file(path, &mut domains)?;
        }
        if domains.is_empty() {
            return Err(f.err(
                "domains",
                "the blocklist is empty: list domains under `domains` or give a `file`",
            ));
        }
        Ok(UrlBlocklist { domains })
    }

    pub(crate) fn check(&self, doc: &Document) -> Result<(), &'static str> {
        let Some(host) = doc.url.as_deref().and_then(url_host) else {
            return Ok(());
        };
        let host = if host.bytes().any(|b| b.is_ascii_uppercase()) {
            std::borrow::Cow::Owned(host.to_ascii_lowercase())
        } else {
            std::borrow::Cow::Borrowed(host)
        };
        if self.blocked(&host) {
            Err("domain")
        } else {
            Ok(())
        }
    }

    /// Whether `host` (lower case) or one of its parent domains is listed.
    fn blocked(&self, host: &str) -> bool {
        let mut h = host;
        loop {
            if self.domains.contains(h) {
                return true;
            }
            match h.find('.') {
                Some(dot) => h = &h[dot + 1..],
                None => return false,
            }
        }
    }
}

fn read_domain_file(path: &Path, domains: &mut HashSet<String>) -> Result<(), DataError> {
    let text = std::fs::read_to_string(path).map_err(|e| DataError::io(path, e))?;
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let norm = normalize_domain(line).ok_or_else(|| DataError::BadInput {
            path: path.to_path_buf(),
            location: Some(format!("line {}", i + 1)),
            message: format!("{line:?} is not a domain name"),
        })?;
        domains.insert(norm);
    }
    Ok(())
}

/// Lower-cases a listed domain and strips `*.`, dots at the ends, and a URL around it.
fn normalize_domain(d: &str) -> Option<String> {
    let d = d.trim();
    let d = if d.contains('/') || d.contains(':') {
        url_host(d)?
    } else {
        d
    };
    let d = d.trim_start_matches("*.").trim_matches('.');
    if d.is_empty()
        || d.chars()
            .any(|c| c.is_whitespace() || matches!(c, '/' | '@' | '*'))
    {
        return None;
    }
    Some(d.to_ascii_lowercase())
}

/// The host of a URL (`https://user@Sub.Example.com:8080/path?q` → `Sub.Example.com`), also for
/// URLs without a scheme (`example.com/page`). `None` when there is no host.
pub(crate) fn url_host(url: &str) -> Option<&str> {
    let s = url.trim();
    let rest = match s.find("://") {
        Some(p)
            if s[..p]
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b)) =>
        {
            &s[p + 3..]
        }
        _ => s.strip_prefix("//").unwrap_or(s),
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..end];
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = if let Some(v6) = host_port.strip_prefix('[') {
        v6.split(']').next().unwrap_or("")
    } else {
        host_port.split(':').next().unwrap_or("")
    };
    let host = host.trim_end_matches('.');
    (!host.is_empty()).then_some(host)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(domains: &[&str]) -> UrlBlocklist {
        let cfg = UrlBlocklistConfig {
            domains: domains.iter().map(|s| s.to_string()).collect(),
            file: None,
        };
        UrlBlocklist::new(&cfg, &Fields::new("test", "url_blocklist")).unwrap()
    }

    fn doc(url: Option<&str>) -> Document {
        Document {
            url: url.map(String::from),
            ..Document::from_text("text")
        }
    }

    #[test]
    fn host_and_subdomains_are_blocked() {
        let f = filter(&["spam.example", "*.casino.test", "https://Ads.Tracker.net/x"]);
        for url in [
            "http://spam.example/page",
            "https://www.spam.example/a?b=c",
            "https://a.b.SPAM.example:8443/",
            "spam.example/no-scheme",
            "http://user:pw@shop.casino.test/",
            "http://ads.tracker.net",
        ] {
            assert_eq!(f.check(&doc(Some(url))), Err("domain"), "{url}");
        }
        for url in [
            "https://notspam.example/",  // not a subdomain: a different name
            "https://spam.example.org/", // a different registered domain
            "https://tracker.net/",      // the parent of a listed subdomain
            "https://news.test/?u=http://spam.example/", // only in the query
        ] {
            assert_eq!(f.check(&doc(Some(url))), Ok(()), "{url}");
        }
        assert_eq!(
            f.check(&doc(None)),
            Ok(()),
            "documents without a URL are kept"
        );
    }

    #[test]
    fn file_is_read_and_errors_name_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("block.txt");
        std::fs::write(
            &path,
            "# adult and spam domains\n\nbad.example\n  Worse.Example  \n",
        )
        .unwrap();
        let cfg = UrlBlocklistConfig {
            domains: vec![],
            file: Some(path.clone()),
        };
        let f = UrlBlocklist::new(&cfg, &Fields::new("test", "url_blocklist")).unwrap();
        assert_eq!(
            f.check(&doc(Some("https://m.worse.example/"))),
            Err("domain")
        );
        assert_eq!(f.check(&doc(Some("https://good.example/"))), Ok(()));

        let missing = UrlBlocklistConfig {
            domains: vec![],
            file: Some(dir.path().join("nope.txt")),
        };
        let e = UrlBlocklist::new(&missing, &Fields::new("test", "url_blocklist")).unwrap_err();
        assert!(
            matches!(&e, DataError::Io { path, .. } if path.ends_with("nope.txt")),
            "{e}"
        );

        std::fs::write(&path, "ok.example\nnot a domain\n").unwrap();
        let e = UrlBlocklist::new(&cfg, &Fields::new("test", "url_blocklist"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("block.txt") && e.contains("line 2"), "{e}");
    }

    #[test]
    fn empty_list_is_a_config_error() {
        let e = UrlBlocklist::new(
            &UrlBlocklistConfig::default(),
            &Fields::new("data.sources[0].filters", "url_blocklist"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("data.sources[0].filters.url_blocklist.domains"),
            "{e}"
        );
    }

    #[test]
    fn hosts() {
        assert_eq!(
            url_host("https://user@Sub.Example.com:8080/path?q"),
            Some("Sub.Example.com")
        );
        assert_eq!(url_host("http://[::1]:80/"), Some("::1"));
        assert_eq!(url_host("example.com."), Some("example.com"));
        assert_eq!(url_host(""), None);
    }
}
