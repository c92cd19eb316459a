//! The daemon's modules form layers: no module refers (through a `crate::`
//! path) to one that refers back to it, directly or through others. `start`
//! wires everything at the top; `inputs`, `data_dir`, `config` and `shared` sit
//! at the bottom.

use std::collections::{BTreeMap, BTreeSet};

fn references() -> BTreeMap<String, BTreeSet<String>> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/src");
    let mut modules = BTreeMap::new();
    for entry in std::fs::read_dir(dir).expect("src dir") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "rs") {
            let name = path.file_stem().expect("stem").to_string_lossy().into_owned();
            modules.insert(name, std::fs::read_to_string(&path).expect("source"));
        } else if path.is_dir() {
            // A module with submodules: its files together are the module.
            let name = path.file_name().expect("name").to_string_lossy().into_owned();
            let mut source = String::new();
            for file in std::fs::read_dir(&path).expect("module dir") {
                source += &std::fs::read_to_string(file.expect("entry").path()).expect("source");
            }
            modules.insert(name, source);
        }
    }
    let names: BTreeSet<String> = modules.keys().cloned().collect();
    modules
        .iter()
        .map(|(name, source)| {
            let refs = source
                .match_indices("crate::")
                .map(|(at, _)| {
                    source[at + 7..]
                        .chars()
                        .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                        .collect::<String>()
                })
                .filter(|target| target != name && names.contains(target))
                .collect();
            (name.clone(), refs)
        })
        .collect()
}

#[test]
fn no_module_refers_back_to_one_that_refers_to_it() {
    let graph = references();
    // Depth-first search with colours; a grey node reached again closes a cycle.
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<String, u8>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        state.insert(node.to_string(), 1);
        path.push(node.to_string());
        for next in &graph[node] {
            match state.get(next.as_str()).copied().unwrap_or(0) {
                1 => {
                    let start = path.iter().position(|p| p == next).expect("on the path");
                    let mut cycle = path[start..].to_vec();
                    cycle.push(next.clone());
                    return Some(cycle);
                }
                0 => {
                    if let Some(cycle) = visit(next, graph, state, path) {
                        return Some(cycle);
                    }
                }
                _ => {}
            }
        }
        path.pop();
        state.insert(node.to_string(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for node in graph.keys() {
        if state.get(node.as_str()).copied().unwrap_or(0) == 0 {
            if let Some(cycle) = visit(node, &graph, &mut state, &mut Vec::new()) {
                panic!(
                    "the daemon's modules refer to each other in a circle: {}",
                    cycle.join(" -> ")
                );
            }
        }
    }
    assert!(graph["start"].contains("server"), "the scan sees references");
}
