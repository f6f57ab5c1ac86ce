//! Dependencies run one way: a module of the host may use only modules of
//! lower layers. The layer order is the one written in
//! docs/ARCHITECTURE.md (between the `layers` markers), so the docs and
//! this check cannot disagree. Test modules are exempt.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// Module name → layer number, from docs/ARCHITECTURE.md.
fn layers() -> BTreeMap<String, usize> {
    let doc = std::fs::read_to_string(root().join("docs/ARCHITECTURE.md")).unwrap();
    let start = doc.find("<!-- layers -->").expect("docs/ARCHITECTURE.md has a <!-- layers --> block");
    let end = doc.find("<!-- /layers -->").expect("... closed by <!-- /layers -->");
    let mut out = BTreeMap::new();
    for line in doc[start..end].lines() {
        let mut words = line.split_whitespace();
        let Some(Ok(n)) = words.next().map(str::parse::<usize>) else { continue };
        for module in words.take_while(|w| !w.starts_with('(')) {
            out.insert(module.to_string(), n);
        }
    }
    out
}

/// The top-level modules a source text names through `crate::`.
fn uses(text: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for line in text.lines().map(str::trim).filter(|l| !l.starts_with("//")) {
        let mut rest = line;
        while let Some(i) = rest.find("crate::") {
            rest = &rest[i + "crate::".len()..];
            if let Some(group) = rest.strip_prefix('{') {
                // `use crate::{a::X, b}`: the first word of each item.
                let inner = &group[..group.find('}').unwrap_or(group.len())];
                found.extend(inner.split(',').filter_map(|item| first_ident(item.trim())));
            } else if let Some(m) = first_ident(rest) {
                found.insert(m);
            }
        }
    }
    found
}

fn first_ident(s: &str) -> Option<String> {
    let id: String = s.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
    (!id.is_empty()).then_some(id)
}

/// A file's text without its inline test module (by house convention the
/// last item: `#[cfg(test)]` then `mod tests {`).
fn without_tests(text: &str) -> &str {
    let mut offset = 0;
    let mut lines = text.split_inclusive('\n').peekable();
    while let Some(line) = lines.next() {
        if line.trim() == "#[cfg(test)]"
            && lines.peek().is_some_and(|next| next.trim_start().starts_with("mod tests {"))
        {
            return &text[..offset];
        }
        offset += line.len();
    }
    text
}

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        if p.is_dir() {
            if p.file_name().unwrap() != "tests" {
                sources(&p, out);
            }
        } else if p.extension().is_some_and(|e| e == "rs") && p.file_name().unwrap() != "tests.rs" {
            out.push(p);
        }
    }
}

#[test]
fn lower_layers_never_use_higher_ones() {
    let layers = layers();
    let src = root().join("host/src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let mut wrong = Vec::new();
    let mut seen = BTreeSet::new();
    for file in &files {
        let rel = file.strip_prefix(&src).unwrap();
        let top = rel.components().next().unwrap().as_os_str().to_string_lossy().trim_end_matches(".rs").to_string();
        if top == "lib" || top == "main" {
            continue;
        }
        let Some(&own) = layers.get(&top) else {
            wrong.push(format!("module `{top}` ({}) has no layer in docs/ARCHITECTURE.md", rel.display()));
            continue;
        };
        seen.insert(top.clone());
        let text = std::fs::read_to_string(file).unwrap();
        for used in uses(without_tests(&text)) {
            match layers.get(&used) {
                Some(&theirs) if used != top && theirs >= own => {
                    wrong.push(format!("{}: `{top}` (layer {own}) uses `{used}` (layer {theirs})", rel.display()))
                }
                None if used != top && !matches!(used.as_str(), "self" | "super") => {
                    wrong.push(format!("{}: uses `{used}`, which has no layer", rel.display()))
                }
                _ => {}
            }
        }
    }
    assert!(wrong.is_empty(), "layering broken:\n{}", wrong.join("\n"));
    for module in layers.keys() {
        assert!(seen.contains(module), "docs/ARCHITECTURE.md lists `{module}`, which is no module of host/src");
    }
}

/// The generated WIT bindings stay inside `policy/`: past the boundary the
/// host speaks its own types (a WIT change must not ripple into the §16
/// core). The world's name is the one thing others may read.
#[test]
fn wit_bindings_stay_inside_the_policy_module() {
    let src = root().join("host/src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    files.push(src.join("main.rs"));
    let policy = src.join("policy");
    let wrong: Vec<String> = files
        .iter()
        .filter(|f| !f.starts_with(&policy) && !f.ends_with("policy.rs"))
        .filter(|f| {
            let text = std::fs::read_to_string(f).unwrap();
            without_tests(&text).replace("bindings::WIT_WORLD", "").contains("bindings::")
        })
        .map(|f| f.strip_prefix(&src).unwrap().display().to_string())
        .collect();
    assert!(wrong.is_empty(), "generated bindings used outside policy/: {wrong:?}");
}

#[test]
fn the_check_sees_grouped_and_nested_paths() {
    let text = "use crate::{proxy::X, sip};\nlet h = crate::hash::fnv1a(&[crate::clock::Clock::now()]);\n// crate::server in a comment\n";
    let found: Vec<String> = uses(text).into_iter().collect();
    assert_eq!(found, ["clock", "hash", "proxy", "sip"]);
    let cut = without_tests("use crate::a;\n#[cfg(test)]\nmod tests {\n    use crate::z;\n}\n");
    assert_eq!(uses(cut).into_iter().collect::<Vec<_>>(), ["a"]);
}
