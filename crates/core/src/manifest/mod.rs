//! YAML manifests: files of `---`-separated documents, one object per document.
//!
//! Parsing is purely syntactic plus per-object checks (names, types, durations); cross-object
//! checks happen in [`crate::plan`], when declared objects are resolved into versions. Every
//! problem names the file, the object and the field. The `monitoring:` and `logging:`
//! blocks are parsed in `blocks.rs`.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use serde::Deserialize;

use crate::error::{Error, Problem, Result};
use crate::model::{
    Declared, EntitySpec, Feature, FeatureServiceSpec, FeatureViewSpec, JoinKey, Kind, Metadata,
    ServiceItem, SourceSpec, Spec, valid_name,
};
use crate::monitoring::MonitoringSpec;
use crate::types::{KeyType, ValueType, parse_duration};

mod blocks;

use blocks::{RawLogging, RawMonitoring};

/// One manifest file: its path (absolute, used to resolve relative Parquet paths) and text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestFile {
    pub path: String,
    pub content: String,
}

/// Reads every `*.yaml` / `*.yml` file under `path` (a file or a directory, recursively), in
/// sorted order, with absolute paths.
pub fn read_manifests(path: &Path) -> std::io::Result<Vec<ManifestFile>> {
    let root = std::path::absolute(path)?;
    let mut paths = Vec::new();
    if root.is_dir() {
        collect_yaml(&root, &mut paths)?;
    } else {
        paths.push(root);
    }
    paths.sort();
    paths
        .into_iter()
        .map(|p| {
            Ok(ManifestFile {
                content: std::fs::read_to_string(&p)?,
                path: p.to_string_lossy().into_owned(),
            })
        })
        .collect()
}

fn collect_yaml(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            collect_yaml(&path, out)?;
        } else if matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml")
        ) {
            out.push(path);
        }
    }
    Ok(())
}

/// Parses every document of every file. Returns all problems at once.
pub fn parse_manifests(files: &[ManifestFile]) -> Result<Vec<Declared>> {
    let mut declared = Vec::new();
    let mut problems = Vec::new();
    for file in files {
        for (index, document) in serde_norway::Deserializer::from_str(&file.content).enumerate() {
            let value = match serde_norway::Value::deserialize(document) {
                Ok(value) => value,
                Err(err) => {
                    problems.push(problem(&file.path, "", "", format!("invalid YAML: {err}")));
                    break;
                }
            };
            if value.is_null() {
                continue;
            }
            match parse_document(&file.path, value) {
                Ok(object) => declared.push(object),
                Err(mut found) => {
                    if let Some(first) = found.first_mut().filter(|p| p.object.is_empty()) {
                        first.message = format!("document {}: {}", index + 1, first.message);
                    }
                    problems.append(&mut found);
                }
            }
        }
    }
    if problems.is_empty() {
        Ok(declared)
    } else {
        Err(Error::Invalid(problems))
    }
}

fn problem(file: &str, object: &str, field: &str, message: impl Into<String>) -> Problem {
    Problem {
        file: file.to_string(),
        object: object.to_string(),
        field: field.to_string(),
        message: message.into(),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEntity {
    name: String,
    join_keys: Vec<RawTyped>,
    #[serde(default)]
    description: String,
    #[serde(default)]
    owner: String,
    #[serde(default)]
    tags: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTyped {
    name: String,
    #[serde(rename = "type")]
    type_name: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSource {
    name: String,
    #[serde(default)]
    parquet: Option<String>,
    #[serde(default)]
    push: bool,
    event_time: String,
    #[serde(default)]
    created_time: Option<String>,
    #[serde(default)]
    renames: BTreeMap<String, String>,
    #[serde(default)]
    description: String,
    #[serde(default)]
    owner: String,
    #[serde(default)]
    tags: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawView {
    name: String,
    #[serde(default)]
    entities: Vec<String>,
    source: String,
    #[serde(default)]
    ttl: Option<serde_norway::Value>,
    #[serde(default)]
    online: Option<bool>,
    features: Vec<RawTyped>,
    #[serde(default)]
    monitoring: Option<RawMonitoring>,
    #[serde(default)]
    description: String,
    #[serde(default)]
    owner: String,
    #[serde(default)]
    tags: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawService {
    name: String,
    features: Vec<RawItem>,
    #[serde(default)]
    monitoring: Option<RawMonitoring>,
    #[serde(default)]
    logging: Option<RawLogging>,
    #[serde(default)]
    description: String,
    #[serde(default)]
    owner: String,
    #[serde(default)]
    tags: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawItem {
    view: String,
    #[serde(default)]
    features: Option<Vec<String>>,
    #[serde(default)]
    alias: Option<String>,
}

fn parse_document(
    file: &str,
    mut value: serde_norway::Value,
) -> std::result::Result<Declared, Vec<Problem>> {
    let Some(mapping) = value.as_mapping_mut() else {
        return Err(vec![problem(
            file,
            "",
            "",
            "a document must be a mapping with `kind` and `name`",
        )]);
    };
    let kind = document_kind(file, mapping)?;
    let name_hint = mapping
        .get("name")
        .and_then(|n| n.as_str())
        .unwrap_or("?")
        .to_string();
    let mut doc = Document {
        file,
        object: format!("{kind}/{name_hint}"),
        problems: Vec::new(),
    };
    let (name, spec, metadata) = match kind {
        Kind::Entity => doc.entity(value)?,
        Kind::Source => doc.source(value)?,
        Kind::FeatureView => doc.view(value)?,
        Kind::FeatureService => doc.service(value)?,
    };
    doc.object = format!("{kind}/{name}");
    doc.check_name("name", &name);
    let Document {
        object,
        mut problems,
        ..
    } = doc;
    for p in &mut problems {
        p.object = object.clone();
    }
    if problems.is_empty() {
        Ok(Declared {
            name,
            spec,
            metadata,
            origin: file.to_string(),
        })
    } else {
        Err(problems)
    }
}

/// Removes and parses the document's `kind`.
fn document_kind(
    file: &str,
    mapping: &mut serde_norway::Mapping,
) -> std::result::Result<Kind, Vec<Problem>> {
    let kind_text = match mapping.remove("kind") {
        Some(serde_norway::Value::String(text)) => text,
        _ => {
            return Err(vec![problem(
                file,
                "",
                "kind",
                "missing or not a string; use one of Entity, Source, FeatureView, FeatureService",
            )]);
        }
    };
    match kind_text.as_str() {
        "Entity" => Ok(Kind::Entity),
        "Source" => Ok(Kind::Source),
        "FeatureView" => Ok(Kind::FeatureView),
        "FeatureService" => Ok(Kind::FeatureService),
        other => Err(vec![problem(
            file,
            "",
            "kind",
            format!(
                "unknown kind `{other}`; use one of Entity, Source, FeatureView, FeatureService"
            ),
        )]),
    }
}

/// One document being parsed: where it is and the problems found so far.
struct Document<'a> {
    file: &'a str,
    object: String,
    problems: Vec<Problem>,
}

/// A parsed document's name, spec and metadata, or the problem that stopped parsing.
type Parsed = std::result::Result<(String, Spec, Metadata), Vec<Problem>>;

impl Document<'_> {
    fn push(&mut self, field: &str, message: impl Into<String>) {
        self.problems
            .push(problem(self.file, &self.object, field, message));
    }

    fn check_name(&mut self, field: &str, name: &str) {
        if !valid_name(name) {
            self.push(
                field,
                format!(
                    "`{name}` is not a valid name; use letters, digits and `_`, starting with a letter"
                ),
            );
        }
    }

    /// Deserializes the document's shape; a wrong shape stops parsing with one problem.
    fn shape<T: serde::de::DeserializeOwned>(
        &self,
        value: serde_norway::Value,
    ) -> std::result::Result<T, Vec<Problem>> {
        serde_norway::from_value(value)
            .map_err(|err| vec![problem(self.file, &self.object, "", format!("{err}"))])
    }

    fn entity(&mut self, value: serde_norway::Value) -> Parsed {
        let raw: RawEntity = self.shape(value)?;
        if raw.join_keys.is_empty() {
            self.push(
                "join_keys",
                "an entity needs at least one join key, like `[{name: driver_id, type: int64}]`",
            );
        }
        let mut join_keys = Vec::new();
        for (i, key) in raw.join_keys.iter().enumerate() {
            self.check_name(&format!("join_keys[{i}].name"), &key.name);
            match KeyType::parse(&key.type_name) {
                Some(key_type) => join_keys.push(JoinKey {
                    name: key.name.clone(),
                    key_type,
                }),
                None => self.push(
                    &format!("join_keys[{i}].type"),
                    format!(
                        "unknown key type `{}`; use int64, int32, string or bytes",
                        key.type_name
                    ),
                ),
            }
        }
        let metadata = metadata(raw.description, raw.owner, raw.tags);
        Ok((raw.name, Spec::Entity(EntitySpec { join_keys }), metadata))
    }

    fn source(&mut self, value: serde_norway::Value) -> Parsed {
        let raw: RawSource = self.shape(value)?;
        let parquet = raw.parquet.map(|p| resolve_relative(self.file, &p));
        if parquet.is_none() && !raw.push {
            self.push(
                "parquet",
                "a source needs `parquet: <file, directory or glob>` or `push: true`",
            );
        }
        let metadata = metadata(raw.description, raw.owner, raw.tags);
        let spec = SourceSpec {
            parquet,
            push: raw.push,
            event_time: raw.event_time,
            created_time: raw.created_time,
            renames: raw.renames,
        };
        Ok((raw.name, Spec::Source(spec), metadata))
    }

    fn view(&mut self, value: serde_norway::Value) -> Parsed {
        let raw: RawView = self.shape(value)?;
        let ttl = self.ttl(raw.ttl.as_ref());
        if raw.features.is_empty() {
            self.push("features", "a feature view needs at least one feature");
        }
        let mut features = Vec::new();
        for (i, feature) in raw.features.iter().enumerate() {
            self.check_name(&format!("features[{i}].name"), &feature.name);
            match ValueType::parse(&feature.type_name) {
                Some(value_type) => features.push(Feature {
                    name: feature.name.clone(),
                    value_type,
                }),
                None => self.push(
                    &format!("features[{i}].type"),
                    format!(
                        "unknown type `{}`; use bool, int32, int64, float32, float64, string, bytes, timestamp or list<...> of these",
                        feature.type_name
                    ),
                ),
            }
        }
        let mut metadata = metadata(raw.description, raw.owner, raw.tags);
        metadata.monitoring = self.monitoring(raw.monitoring, Some(&features));
        let spec = FeatureViewSpec {
            entities: raw.entities,
            source: raw.source,
            ttl,
            online: raw.online.unwrap_or(true),
            features,
        };
        Ok((raw.name, Spec::FeatureView(spec), metadata))
    }

    /// A view's `ttl` (a duration like `2h`, or a number of seconds); absent = 0, unbounded.
    fn ttl(&mut self, ttl: Option<&serde_norway::Value>) -> i64 {
        self.duration("ttl", ttl, "0 (unbounded)")
    }

    fn duration(&mut self, field: &str, value: Option<&serde_norway::Value>, zero: &str) -> i64 {
        let text = match value {
            None => "0".to_string(),
            Some(serde_norway::Value::Number(n)) => n.to_string(),
            Some(serde_norway::Value::String(s)) => s.clone(),
            Some(other) => format!("{other:?}"),
        };
        parse_duration(&text).unwrap_or_else(|| {
            self.push(
                field,
                format!("invalid duration `{text}`; write it like `2h`, `30m`, `7d` or `{zero}`"),
            );
            0
        })
    }

    fn service(&mut self, value: serde_norway::Value) -> Parsed {
        let raw: RawService = self.shape(value)?;
        if raw.features.is_empty() {
            self.push(
                "features",
                "a feature service needs at least one item, like `[{view: driver_stats}]`",
            );
        }
        let items = raw
            .features
            .into_iter()
            .map(|item| ServiceItem {
                view: item.view,
                features: item.features,
                alias: item.alias,
            })
            .collect();
        let mut metadata = metadata(raw.description, raw.owner, raw.tags);
        metadata.monitoring = self.monitoring(raw.monitoring, None);
        metadata.logging = raw.logging.map(|raw| self.logging(raw));
        Ok((
            raw.name,
            Spec::FeatureService(FeatureServiceSpec { items }),
            metadata,
        ))
    }
}

fn metadata(description: String, owner: String, tags: BTreeMap<String, String>) -> Metadata {
    Metadata {
        description,
        owner,
        tags,
        monitoring: MonitoringSpec::default(),
        logging: None,
    }
}

/// Resolves `target` against the directory of `manifest`, lexically (globs stay globs).
fn resolve_relative(manifest: &str, target: &str) -> String {
    let target_path = Path::new(target);
    if target_path.is_absolute() || target.contains("://") {
        return target.to_string();
    }
    let base = Path::new(manifest).parent().unwrap_or(Path::new(""));
    let mut out = PathBuf::new();
    for component in base.join(target_path).components() {
        match component {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out.to_string_lossy().into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses `text` as the one manifest file `/repo/features/a.yaml`.
    pub(super) fn parse(text: &str) -> Result<Vec<Declared>> {
        parse_manifests(&[ManifestFile {
            path: "/repo/features/a.yaml".into(),
            content: text.into(),
        }])
    }

    #[test]
    fn the_documented_example_parses() {
        let objects = parse(crate::testdata::EXAMPLE).expect("example parses");
        assert_eq!(objects.len(), 4);
        let Spec::Source(source) = &objects[1].spec else {
            panic!("second document is the source")
        };
        assert_eq!(
            source.parquet.as_deref(),
            Some("/repo/features/data/driver_stats.parquet")
        );
        let Spec::FeatureView(view) = &objects[2].spec else {
            panic!("third document is the view")
        };
        assert_eq!(view.ttl, 7_200_000_000);
        assert!(view.online);
    }

    #[test]
    fn invalid_documents_name_file_object_and_field() {
        let table = [
            ("kind: Table\nname: x\n", "kind", "unknown kind `Table`"),
            ("name: x\n", "kind", "missing"),
            (
                "kind: Entity\nname: e\njoin_keys: [{name: id, type: uuid}]\n",
                "join_keys[0].type",
                "unknown key type `uuid`",
            ),
            (
                "kind: FeatureView\nname: v\nsource: s\nttl: 2 hours\nfeatures: [{name: f, type: int64}]\n",
                "ttl",
                "invalid duration",
            ),
            (
                "kind: FeatureView\nname: v\nsource: s\nfeatures: [{name: f, type: float}]\n",
                "features[0].type",
                "unknown type `float`",
            ),
            (
                "kind: FeatureView\nname: v-1\nsource: s\nfeatures: [{name: f, type: int64}]\n",
                "name",
                "not a valid name",
            ),
            (
                "kind: Source\nname: s\nevent_time: ts\n",
                "parquet",
                "needs `parquet",
            ),
            (
                "kind: Source\nname: s\nevent_time: ts\nparquet: x\ncolour: red\n",
                "",
                "unknown field `colour`",
            ),
            (
                "kind: Entity\nname: e\njoin_keys: []\n",
                "join_keys",
                "at least one",
            ),
        ];
        for (text, field, needle) in table {
            let Err(Error::Invalid(problems)) = parse(text) else {
                panic!("expected a problem for {text}")
            };
            assert_eq!(problems[0].file, "/repo/features/a.yaml", "{text}");
            assert_eq!(problems[0].field, field, "{text}: {problems:?}");
            assert!(problems[0].message.contains(needle), "{text}: {problems:?}");
        }
    }

    #[test]
    fn relative_paths_resolve_lexically() {
        assert_eq!(
            resolve_relative("/a/b/m.yaml", "../d/x.parquet"),
            "/a/d/x.parquet"
        );
        assert_eq!(
            resolve_relative("/a/b/m.yaml", "./d/*.parquet"),
            "/a/b/d/*.parquet"
        );
        assert_eq!(
            resolve_relative("/a/b/m.yaml", "/abs.parquet"),
            "/abs.parquet"
        );
    }
}
