//! Resource enrichment, as the Collector's `resource` processor does it: each action is applied in order to
//! every resource before it is written to Kafka.

use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use serde::{Deserialize, Serialize};
use tailgate_config::Problems;

/// One change to resource attributes.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct ResourceAction {
    /// Attribute key.
    pub key: String,
    /// Value to set. Strings, integers, floats and booleans keep their type.
    pub value: Option<serde_yaml::Value>,
    /// `upsert` (set), `insert` (set if absent), `update` (set if present) or `delete`.
    pub action: Action,
}

impl Default for ResourceAction {
    fn default() -> Self {
        ResourceAction { key: String::new(), value: None, action: Action::Upsert }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Upsert,
    Insert,
    Update,
    Delete,
}

impl ResourceAction {
    pub fn validate(&self, path: &str, problems: &mut Problems) {
        if self.key.is_empty() {
            problems.push(format!("{path}.key"), "must not be empty");
        }
        match (&self.value, self.action) {
            (None, Action::Upsert | Action::Insert | Action::Update) => {
                problems.push(format!("{path}.value"), "is required for this action")
            }
            (Some(value), _) if any_value(value).is_none() => {
                problems.push(format!("{path}.value"), "must be a string, number or boolean")
            }
            _ => {}
        }
    }
}

fn any_value(value: &serde_yaml::Value) -> Option<AnyValue> {
    let value = match value {
        serde_yaml::Value::String(s) => any_value::Value::StringValue(s.clone()),
        serde_yaml::Value::Bool(b) => any_value::Value::BoolValue(*b),
        serde_yaml::Value::Number(n) => match n.as_i64() {
            Some(i) => any_value::Value::IntValue(i),
            None => any_value::Value::DoubleValue(n.as_f64()?),
        },
        _ => return None,
    };
    Some(AnyValue { value: Some(value) })
}

/// The validated actions, ready to apply.
#[derive(Clone, Debug, Default)]
pub struct ResourceProcessor {
    actions: Vec<(String, Option<AnyValue>, Action)>,
}

impl ResourceProcessor {
    pub fn new(actions: &[ResourceAction]) -> Self {
        let actions = actions.iter().map(|a| (a.key.clone(), a.value.as_ref().and_then(any_value), a.action)).collect();
        ResourceProcessor { actions }
    }

    pub fn is_empty(&self) -> bool {
        self.actions.is_empty()
    }

    pub fn apply(&self, resource: &mut Option<Resource>) {
        if self.actions.is_empty() {
            return;
        }
        let resource = resource.get_or_insert_with(Resource::default);
        for (key, value, action) in &self.actions {
            let position = resource.attributes.iter().position(|kv| &kv.key == key);
            match (action, position) {
                (Action::Delete, Some(i)) => {
                    resource.attributes.remove(i);
                }
                (Action::Upsert | Action::Update, Some(i)) => resource.attributes[i].value = value.clone(),
                (Action::Upsert | Action::Insert, None) => {
                    resource.attributes.push(KeyValue { key: key.clone(), value: value.clone() })
                }
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn action(yaml: &str) -> ResourceAction {
        serde_yaml::from_str(yaml).unwrap()
    }

    fn get<'a>(resource: &'a Option<Resource>, key: &str) -> Option<&'a any_value::Value> {
        resource.as_ref()?.attributes.iter().find(|kv| kv.key == key)?.value.as_ref()?.value.as_ref()
    }

    #[test]
    fn actions_follow_the_collector() {
        let processor = ResourceProcessor::new(&[
            action("{ key: env, value: production, action: upsert }"),
            action("{ key: team, value: checkout, action: insert }"),
            action("{ key: region, value: eu, action: update }"),
            action("{ key: secret, action: delete }"),
            action("{ key: replicas, value: 3 }"),
        ]);
        let mut resource = Some(Resource {
            attributes: vec![
                KeyValue { key: "env".into(), value: any_value(&"staging".into()) },
                KeyValue { key: "team".into(), value: any_value(&"payments".into()) },
                KeyValue { key: "secret".into(), value: any_value(&"hunter2".into()) },
            ],
            ..Default::default()
        });
        processor.apply(&mut resource);
        assert_eq!(get(&resource, "env"), Some(&any_value::Value::StringValue("production".into())));
        assert_eq!(get(&resource, "team"), Some(&any_value::Value::StringValue("payments".into())), "insert keeps");
        assert_eq!(get(&resource, "region"), None, "update does not add");
        assert_eq!(get(&resource, "secret"), None);
        assert_eq!(get(&resource, "replicas"), Some(&any_value::Value::IntValue(3)));

        let mut missing = None;
        processor.apply(&mut missing);
        assert_eq!(get(&missing, "env"), Some(&any_value::Value::StringValue("production".into())));
    }

    #[test]
    fn validation_names_the_field() {
        let mut problems = Problems::default();
        action("{ key: '', action: upsert }").validate("ingest.resource[0]", &mut problems);
        let paths: Vec<_> = problems.iter().map(|p| p.path.clone()).collect();
        assert_eq!(paths, ["ingest.resource[0].key", "ingest.resource[0].value"]);
    }
}
