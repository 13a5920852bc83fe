//! A series' labels: what its resource, scope and point attributes contribute, sanitised, joined on collision and
//! sorted.

use std::collections::BTreeMap;

use opentelemetry_proto::tonic::common::v1::KeyValue;
use tailgate_proto::prometheus::Label;

use super::translate::Translation;
use crate::attributes::{sanitize_label, value_string};

/// What a resource contributes to its series.
pub struct ResourceLabels {
    /// Labels every series of the resource carries: job, instance, external labels, and with
    /// `resource_to_telemetry_conversion` every resource attribute.
    pub base: BTreeMap<String, String>,
    /// `target_info`'s labels, when the resource has attributes beyond job and instance.
    pub target_info: Option<BTreeMap<String, String>>,
}

impl ResourceLabels {
    pub fn new(attributes: &[KeyValue], config: &Translation) -> ResourceLabels {
        let get = |key: &str| attributes.iter().find(|kv| kv.key == key).map(|kv| value_string(kv.value.as_ref()));
        let name = get("service.name").unwrap_or_default();
        let job = match get("service.namespace") {
            Some(namespace) if !namespace.is_empty() && !name.is_empty() => format!("{namespace}/{name}"),
            _ => name,
        };
        let instance = get("service.instance.id").unwrap_or_default();
        let identity = ["service.name", "service.namespace", "service.instance.id"];
        let mut base = BTreeMap::new();
        if config.resource_to_telemetry_conversion {
            // Every attribute, `service.name` too (as `service_name`), as the Collector's conversion does.
            add_attributes(&mut base, attributes.iter());
        }
        insert_over(&mut base, "job", &job);
        insert_over(&mut base, "instance", &instance);
        for (name, value) in &config.labels {
            base.entry(name.clone()).or_insert_with(|| value.clone());
        }
        let others: Vec<&KeyValue> = attributes.iter().filter(|kv| !identity.contains(&kv.key.as_str())).collect();
        let target_info = (!others.is_empty()).then(|| {
            let mut labels = BTreeMap::new();
            add_attributes(&mut labels, others.into_iter());
            insert_over(&mut labels, "job", &job);
            insert_over(&mut labels, "instance", &instance);
            labels
        });
        ResourceLabels { base, target_info }
    }
}

/// Adds attributes as labels; values of keys that sanitize to the same name are joined with `;` in key order.
fn add_attributes<'a>(labels: &mut BTreeMap<String, String>, attributes: impl Iterator<Item = &'a KeyValue>) {
    let mut sorted: Vec<&KeyValue> = attributes.collect();
    sorted.sort_by(|a, b| a.key.cmp(&b.key));
    for kv in sorted {
        let value = value_string(kv.value.as_ref());
        if value.is_empty() || kv.key.is_empty() {
            continue;
        }
        let name = sanitize_label(&kv.key);
        if name.starts_with("__") {
            continue;
        }
        labels
            .entry(name)
            .and_modify(|v| {
                v.push(';');
                v.push_str(&value);
            })
            .or_insert(value);
    }
}

pub fn insert(labels: &mut BTreeMap<String, String>, name: &str, value: &str) {
    if !value.is_empty() {
        labels.entry(name.to_owned()).or_insert_with(|| value.to_owned());
    }
}

fn insert_over(labels: &mut BTreeMap<String, String>, name: &str, value: &str) {
    if !value.is_empty() {
        labels.insert(name.to_owned(), value.to_owned());
    }
}

/// A point's labels, sorted: the resource's and scope's, then the point's attributes (which don't override job,
/// instance or the scope). Built once per point and shared by its series (buckets, sum, count, quantiles).
pub fn point_labels(base: &BTreeMap<String, String>, attributes: &[KeyValue]) -> Vec<Label> {
    if attributes.is_empty() {
        return base.iter().map(|(name, value)| Label { name: name.clone(), value: value.clone() }).collect();
    }
    let mut point = BTreeMap::new();
    add_attributes(&mut point, attributes.iter());
    let mut labels = base.clone();
    for (key, value) in point {
        labels.entry(key).or_insert(value);
    }
    label_vec(labels)
}

/// One series of a point: its labels plus `__name__` and an extra label (`le`, `quantile`), kept sorted.
pub fn series(point: &[Label], name: &str, extra: Option<(&str, String)>) -> Vec<Label> {
    let mut labels = Vec::with_capacity(point.len() + 2);
    labels.extend_from_slice(point);
    insert_sorted(&mut labels, "__name__", name.to_owned());
    if let Some((key, value)) = extra {
        insert_sorted(&mut labels, key, value);
    }
    labels
}

fn insert_sorted(labels: &mut Vec<Label>, name: &str, value: String) {
    match labels.binary_search_by(|label| label.name.as_str().cmp(name)) {
        Ok(at) => labels[at].value = value,
        Err(at) => labels.insert(at, Label { name: name.to_owned(), value }),
    }
}

pub fn label_vec(labels: BTreeMap<String, String>) -> Vec<Label> {
    labels.into_iter().map(|(name, value)| Label { name, value }).collect()
}
