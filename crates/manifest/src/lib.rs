//! Kubernetes Pod manifest files, read as a kubelet reads static pods.
//!
//! [`load_dir`] reads a directory of YAML or JSON files (the kubelet's
//! `--pod-manifest-path`), [`parse_file`] one file's text. Every document is
//! decoded into a typed object with the path of any bad field, Pods get the API
//! server's defaults and a static pod's identity (suffixed name, uid, config
//! annotations) and are then validated; ConfigMaps and Secrets beside them are
//! collected for the pods to use. One bad document never hides the others.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

pub use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};

mod defaults;
mod quantity;
mod references;
mod validation;

pub use defaults::{
    apply_config_map_defaults, apply_pod_defaults, apply_secret_defaults,
    apply_static_pod_identity, default_pull_policy, rfc3339_nano_now, static_pod_name,
    static_pod_uid, CONFIG_HASH_ANNOTATION, CONFIG_SEEN_ANNOTATION, CONFIG_SOURCE_ANNOTATION,
};
pub use quantity::{bytes, cpu_millis, parse_quantity, QuantityError, QUANTITY_PATTERN};
pub use references::{references, References};
pub use validation::{
    dns1123_label_errors, dns1123_subdomain_errors, label_value_errors, qualified_name_errors,
    validate_config_map, validate_pod, validate_secret, FieldError,
};

/// The largest manifest file the kubelet reads (10 MiB); larger files are rejected.
pub const MAX_FILE_SIZE: u64 = 10 << 20;

/// Where a document came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// The file, as found in the directory (directory joined with the file name).
    pub file: PathBuf,
    /// 0-based index of the YAML document in the file (all items of one `List`
    /// share their document's index).
    pub document: usize,
}

/// One valid Pod, ready to run: defaulted, with its static-pod identity, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Manifest {
    /// The pod, named `<name>-<node name>`, with uid and config annotations.
    pub pod: Pod,
    /// Where it was read from.
    pub source: Source,
}

/// Why a document (or a whole file) was rejected.
///
/// Displays as `<file>: document <n>: <field path>: <reason>`, e.g.
/// `web.yaml: document 2: spec.containers[1].image: Required value`, where `n`
/// counts from 1 (it is `document + 1`). Without a document (the file itself could
/// not be read) the part is left out, and so is an empty field path.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub struct ManifestError {
    /// The file the problem is in.
    pub file: PathBuf,
    /// 0-based document index, `None` for a problem with the whole file.
    pub document: Option<usize>,
    /// The field path (`spec.containers[0].image`), empty when it is the document as a whole.
    pub field: String,
    /// What is wrong, in the API server's wording where there is one.
    pub reason: String,
}

impl fmt::Display for ManifestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(d) = self.document {
            write!(f, ": document {}", d + 1)?;
        }
        if !self.field.is_empty() {
            write!(f, ": {}", self.field)?;
        }
        write!(f, ": {}", self.reason)
    }
}

/// Everything read from a directory or file.
#[derive(Debug, Clone, Default)]
pub struct Objects {
    /// Valid pods, in file-name order and then document order.
    pub pods: Vec<Manifest>,
    /// ConfigMaps by (namespace, name).
    pub config_maps: BTreeMap<(String, String), ConfigMap>,
    /// Secrets by (namespace, name).
    pub secrets: BTreeMap<(String, String), Secret>,
    /// Documents (or files) that were rejected.
    pub errors: Vec<ManifestError>,
    /// Things accepted but worth telling the user, e.g. fields this API version
    /// does not know (the kubelet's decoder ignores them too).
    pub warnings: Vec<ManifestError>,
}

/// How manifests are read.
#[derive(Debug, Clone)]
pub struct Options {
    /// This node's name. Lowercased, it becomes the pods' `spec.nodeName` and
    /// their name suffix (a kubelet's node name is always lowercase).
    pub node_name: String,
}

/// Reads every regular, non-hidden file of `dir`, in file-name order, whatever
/// its extension, as the kubelet's file source does (`extractFromDir`):
/// subdirectories are not entered; files that cannot be read or are larger than
/// [`MAX_FILE_SIZE`] become errors. A pod name (namespace/name) already taken by
/// an earlier document is an error naming the earlier file; the same holds for
/// ConfigMaps and Secrets.
///
/// This does blocking file I/O: call it from `tokio::task::spawn_blocking` in async code.
pub fn load_dir(dir: &Path, options: &Options) -> Objects {
    let mut out = Objects::default();
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) => {
            out.errors.push(ManifestError {
                file: dir.to_path_buf(),
                document: None,
                field: String::new(),
                reason: format!("cannot read the manifest directory: {e}"),
            });
            return out;
        }
    };
    let mut names: Vec<String> = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with('.') {
            names.push(name);
        }
    }
    names.sort();
    let mut seen = Seen::default();
    for name in names {
        let path = dir.join(&name);
        let file_error = |reason: String| ManifestError {
            file: path.clone(),
            document: None,
            field: String::new(),
            reason,
        };
        // Follows symlinks, as the kubelet's os.Stat does.
        let meta = match std::fs::metadata(&path) {
            Ok(m) => m,
            Err(e) => {
                out.errors
                    .push(file_error(format!("cannot read file metadata: {e}")));
                continue;
            }
        };
        if meta.is_dir() {
            tracing::debug!(path = %path.display(), "not recursing into a directory in the manifest directory");
            continue;
        }
        if !meta.is_file() {
            tracing::debug!(path = %path.display(), "skipping a manifest path that is not a regular file");
            continue;
        }
        if meta.len() > MAX_FILE_SIZE {
            out.errors.push(file_error(format!(
                "file is {} bytes, larger than the {MAX_FILE_SIZE} bytes a manifest may have",
                meta.len()
            )));
            continue;
        }
        let text = match std::fs::read(&path) {
            Ok(bytes) => match String::from_utf8(bytes) {
                Ok(t) => t,
                Err(_) => {
                    out.errors
                        .push(file_error("file is not valid UTF-8 text".to_string()));
                    continue;
                }
            },
            Err(e) => {
                out.errors
                    .push(file_error(format!("cannot read file: {e}")));
                continue;
            }
        };
        let (parsed, sources) = parse_file_with_sources(&path, &text, options);
        seen.merge(&mut out, parsed, sources);
    }
    out
}

/// Remembers which file defined each object first, to reject later duplicates.
#[derive(Default)]
struct Seen {
    pods: BTreeMap<(String, String), Source>,
    config_maps: BTreeMap<(String, String), Source>,
    secrets: BTreeMap<(String, String), Source>,
}

fn duplicate_error(
    kind: &str,
    key: &(String, String),
    first: &Source,
    now: &Source,
) -> ManifestError {
    ManifestError {
        file: now.file.clone(),
        document: Some(now.document),
        field: "metadata.name".to_string(),
        reason: format!(
            "Duplicate value: {:?}: {kind} {}/{} is already defined in {} document {}",
            key.1,
            key.0,
            key.1,
            first.file.display(),
            first.document + 1
        ),
    }
}

impl Seen {
    /// Adds one file's objects to `out`, turning names taken by an earlier file into errors.
    fn merge(&mut self, out: &mut Objects, parsed: Objects, sources: Seen) {
        out.errors.extend(parsed.errors);
        out.warnings.extend(parsed.warnings);
        for m in parsed.pods {
            let key = pod_key(&m.pod);
            match self.pods.get(&key) {
                Some(first) => out
                    .errors
                    .push(duplicate_error("pod", &key, first, &m.source)),
                None => {
                    self.pods.insert(key, m.source.clone());
                    out.pods.push(m);
                }
            }
        }
        for (key, cm) in parsed.config_maps {
            let Some(now) = sources.config_maps.get(&key) else {
                continue;
            };
            match self.config_maps.get(&key) {
                Some(first) => out
                    .errors
                    .push(duplicate_error("configmap", &key, first, now)),
                None => {
                    self.config_maps.insert(key.clone(), now.clone());
                    out.config_maps.insert(key, cm);
                }
            }
        }
        for (key, secret) in parsed.secrets {
            let Some(now) = sources.secrets.get(&key) else {
                continue;
            };
            match self.secrets.get(&key) {
                Some(first) => out.errors.push(duplicate_error("secret", &key, first, now)),
                None => {
                    self.secrets.insert(key.clone(), now.clone());
                    out.secrets.insert(key, secret);
                }
            }
        }
    }
}

fn pod_key(pod: &Pod) -> (String, String) {
    (
        pod.metadata.namespace.clone().unwrap_or_default(),
        pod.metadata.name.clone().unwrap_or_default(),
    )
}

/// Parses one file's text: YAML documents separated by `---` (empty ones
/// skipped) or JSON; each document a Pod, ConfigMap, Secret or a `List` of them.
/// `path` is used in error messages, in the uid hash and in the Sources.
pub fn parse_file(path: &Path, text: &str, options: &Options) -> Objects {
    parse_file_with_sources(path, text, options).0
}

/// [`parse_file`], also returning where each object was defined.
fn parse_file_with_sources(path: &Path, text: &str, options: &Options) -> (Objects, Seen) {
    let mut out = Objects::default();
    let documents = split_documents(text);
    let seen_at = rfc3339_nano_now();
    let mut file = FileParse {
        path,
        options,
        seen_at: &seen_at,
        out: &mut out,
        seen: Seen::default(),
    };
    for (index, doc) in documents {
        match doc {
            Ok(value) => file.document(index, value),
            Err(reason) => file.error(index, "", reason),
        }
    }
    let seen = file.seen;
    (out, seen)
}

type Documents = Vec<(usize, Result<serde_json::Value, String>)>;

/// Splits a file into documents (JSON values, or one error message each). After
/// a YAML syntax error the parser cannot go on, so that error ends the file.
fn split_documents(text: &str) -> Documents {
    let trimmed = text.trim_start_matches('\u{feff}').trim_start();
    if trimmed.starts_with('{') || trimmed.starts_with('[') {
        let json = split_json(trimmed);
        if json.iter().all(|(_, d)| d.is_ok()) {
            return json;
        }
        // Maybe YAML flow style; if that fails too, the JSON error says more.
        let yaml = split_yaml(text);
        if yaml.iter().all(|(_, d)| d.is_ok()) {
            return yaml;
        }
        return json;
    }
    split_yaml(text)
}

/// JSON values one after the other; a syntax error ends the file.
fn split_json(text: &str) -> Documents {
    let mut docs = Vec::new();
    let stream = serde_json::Deserializer::from_str(text).into_iter::<serde_json::Value>();
    for (i, item) in stream.enumerate() {
        match item {
            Ok(v) => docs.push((i, Ok(v))),
            Err(e) => {
                docs.push((i, Err(format!("invalid JSON: {e}"))));
                break;
            }
        }
    }
    docs
}

/// YAML documents separated by `---`.
fn split_yaml(text: &str) -> Documents {
    let mut docs: Documents = Vec::new();
    for (i, de) in serde_norway::Deserializer::from_str(text).enumerate() {
        match <serde_json::Value as serde::Deserialize>::deserialize(de) {
            Ok(v) => docs.push((i, Ok(v))),
            Err(e) => {
                let message = format!("invalid YAML: {e}");
                // After a syntax error the parser repeats the same error for
                // ever; a different error means it could go on.
                if let Some((_, Err(last))) = docs.last() {
                    if *last == message {
                        break;
                    }
                }
                docs.push((i, Err(message)));
            }
        }
    }
    docs
}

struct FileParse<'a> {
    path: &'a Path,
    options: &'a Options,
    seen_at: &'a str,
    out: &'a mut Objects,
    seen: Seen,
}

impl FileParse<'_> {
    fn error(&mut self, document: usize, field: &str, reason: String) {
        self.out.errors.push(ManifestError {
            file: self.path.to_path_buf(),
            document: Some(document),
            field: field.to_string(),
            reason,
        });
    }

    fn warn(&mut self, document: usize, field: &str, reason: String) {
        tracing::warn!(file = %self.path.display(), document = document + 1, field, "{reason}");
        self.out.warnings.push(ManifestError {
            file: self.path.to_path_buf(),
            document: Some(document),
            field: field.to_string(),
            reason,
        });
    }

    fn document(&mut self, index: usize, value: serde_json::Value) {
        if value.is_null() {
            return;
        }
        let Some(obj) = value.as_object() else {
            self.error(
                index,
                "",
                "a manifest document must be an object with apiVersion and kind".to_string(),
            );
            return;
        };
        let kind = obj.get("kind").and_then(|k| k.as_str()).unwrap_or("");
        if kind.is_empty() {
            self.error(index, "kind", "Required value".to_string());
            return;
        }
        if matches!(kind, "List" | "PodList" | "ConfigMapList" | "SecretList") {
            match obj.get("items") {
                None | Some(serde_json::Value::Null) => {}
                Some(serde_json::Value::Array(items)) => {
                    for (i, item) in items.iter().enumerate() {
                        self.object(index, &format!("items[{i}]."), item.clone());
                    }
                }
                Some(_) => self.error(index, "items", "must be a list of objects".to_string()),
            }
            return;
        }
        self.object(index, "", value);
    }

    /// One object (a document, or an item of a List, `prefix` being `items[i].`).
    fn object(&mut self, index: usize, prefix: &str, value: serde_json::Value) {
        let kind = value
            .get("kind")
            .and_then(|k| k.as_str())
            .unwrap_or("")
            .to_string();
        let api_version = value
            .get("apiVersion")
            .and_then(|k| k.as_str())
            .unwrap_or("")
            .to_string();
        if kind.is_empty() {
            self.error(
                index,
                &format!("{prefix}kind"),
                "Required value".to_string(),
            );
            return;
        }
        if !matches!(kind.as_str(), "Pod" | "ConfigMap" | "Secret") {
            self.error(
                index,
                &format!("{prefix}kind"),
                format!(
                    "Unsupported value: {:?}: supported values: \"Pod\", \"ConfigMap\", \"Secret\"",
                    kind
                ),
            );
            return;
        }
        if api_version.is_empty() {
            self.error(
                index,
                &format!("{prefix}apiVersion"),
                "Required value".to_string(),
            );
            return;
        }
        if api_version != "v1" {
            self.error(
                index,
                &format!("{prefix}apiVersion"),
                format!("Unsupported value: {api_version:?}: supported values: \"v1\""),
            );
            return;
        }
        match kind.as_str() {
            "Pod" => {
                if let Some(pod) = self.decode::<Pod>(index, prefix, &value) {
                    self.pod(index, prefix, pod);
                }
            }
            "ConfigMap" => {
                if let Some(mut cm) = self.decode::<ConfigMap>(index, prefix, &value) {
                    apply_config_map_defaults(&mut cm);
                    let errs = validate_config_map(&cm);
                    if self.report(index, prefix, errs) {
                        self.config_map(index, cm);
                    }
                }
            }
            _ => {
                if let Some(mut s) = self.decode::<Secret>(index, prefix, &value) {
                    apply_secret_defaults(&mut s);
                    let errs = validate_secret(&s);
                    if self.report(index, prefix, errs) {
                        self.secret(index, s);
                    }
                }
            }
        }
    }

    /// Decodes into a typed object; a type error names its field path. Fields
    /// the type does not know are warnings, as the kubelet's decoder ignores them.
    fn decode<T>(&mut self, index: usize, prefix: &str, value: &serde_json::Value) -> Option<T>
    where
        T: serde::de::DeserializeOwned + serde::Serialize,
    {
        match serde_path_to_error::deserialize::<_, T>(value.clone()) {
            Ok(obj) => {
                let round_trip = serde_json::to_value(&obj).unwrap_or(serde_json::Value::Null);
                let mut unknown = Vec::new();
                unknown_fields(value, &round_trip, String::new(), &mut unknown);
                for field in unknown {
                    self.warn(
                        index,
                        &format!("{prefix}{field}"),
                        "unknown field, ignored".to_string(),
                    );
                }
                Some(obj)
            }
            Err(e) => {
                let field = e.path().to_string();
                let field = if field == "." { String::new() } else { field };
                self.error(
                    index,
                    &format!("{prefix}{field}"),
                    e.into_inner().to_string(),
                );
                None
            }
        }
    }

    /// Reports validation errors; true when there were none.
    fn report(&mut self, index: usize, prefix: &str, errs: Vec<FieldError>) -> bool {
        let ok = errs.is_empty();
        for e in errs {
            self.error(index, &format!("{prefix}{}", e.field), e.reason);
        }
        ok
    }

    fn pod(&mut self, index: usize, prefix: &str, mut pod: Pod) {
        if pod.metadata.name.as_deref().unwrap_or("").is_empty() {
            self.error(
                index,
                &format!("{prefix}metadata.name"),
                "Required value: name is needed for the pod".to_string(),
            );
            return;
        }
        apply_pod_defaults(&mut pod);
        let file = self.path.to_string_lossy().into_owned();
        apply_static_pod_identity(&mut pod, &self.options.node_name, &file, self.seen_at);
        let errs = validate_pod(&pod);
        if !self.report(index, prefix, errs) {
            return;
        }
        let source = Source {
            file: self.path.to_path_buf(),
            document: index,
        };
        let key = pod_key(&pod);
        if let Some(first) = self.seen.pods.get(&key) {
            let e = duplicate_error("pod", &key, first, &source);
            self.out.errors.push(e);
            return;
        }
        self.seen.pods.insert(key, source.clone());
        self.out.pods.push(Manifest { pod, source });
    }

    fn config_map(&mut self, index: usize, cm: ConfigMap) {
        let key = object_key(&cm.metadata);
        let source = Source {
            file: self.path.to_path_buf(),
            document: index,
        };
        if let Some(first) = self.seen.config_maps.get(&key) {
            let e = duplicate_error("configmap", &key, first, &source);
            self.out.errors.push(e);
            return;
        }
        self.seen.config_maps.insert(key.clone(), source);
        self.out.config_maps.insert(key, cm);
    }

    fn secret(&mut self, index: usize, s: Secret) {
        let key = object_key(&s.metadata);
        let source = Source {
            file: self.path.to_path_buf(),
            document: index,
        };
        if let Some(first) = self.seen.secrets.get(&key) {
            let e = duplicate_error("secret", &key, first, &source);
            self.out.errors.push(e);
            return;
        }
        self.seen.secrets.insert(key.clone(), source);
        self.out.secrets.insert(key, s);
    }
}

fn object_key(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> (String, String) {
    (
        meta.namespace.clone().unwrap_or_default(),
        meta.name.clone().unwrap_or_default(),
    )
}

/// Collects paths present (and not null) in `original` but missing from `known`.
fn unknown_fields(
    original: &serde_json::Value,
    known: &serde_json::Value,
    path: String,
    out: &mut Vec<String>,
) {
    match (original, known) {
        (serde_json::Value::Object(o), serde_json::Value::Object(k)) => {
            for (key, value) in o {
                if value.is_null() {
                    continue;
                }
                let child = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                match k.get(key) {
                    Some(kv) => unknown_fields(value, kv, child, out),
                    None => out.push(child),
                }
            }
        }
        (serde_json::Value::Array(o), serde_json::Value::Array(k)) => {
            for (i, (ov, kv)) in o.iter().zip(k.iter()).enumerate() {
                unknown_fields(ov, kv, format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests;
