//! `upstream-discovery render`: Services from YAML in, the Upstreams the daemon would write out,
//! with no cluster involved.

use k8s_openapi::api::core::v1::Service;
use serde_json::Value;
use serde_saphyr::granit_parser::{Event, Parser};
use serde_saphyr::{Spanned, UserMessageFormatter};

use crate::crd::{yaml_document, ReferenceGrant, Upstream};
use crate::selector::LabelSelector;
use crate::translate::{
    desired_grant, route_namespaces, translate_service, GrantSettings, TranslateSettings,
    TranslateWarning, WriteNamespace,
};

/// Input that cannot be turned into Services. Each names the document (1-based) and the field.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("document {document}: invalid YAML: {message}")]
    Syntax { document: usize, message: String },
    #[error("document {document}{item}: field {field}: {message}")]
    Field {
        document: usize,
        item: String,
        field: String,
        message: String,
    },
    #[error("cannot write YAML: {0}")]
    Output(#[from] serde_saphyr::SerializeError),
}

/// An object of the input that is not a Service, left out of the translation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedObject {
    pub document: usize,
    pub kind: String,
    pub name: String,
}

/// The Services found in the input, and what else it held.
#[derive(Debug, Default)]
pub struct ParsedInput {
    pub services: Vec<Service>,
    pub skipped: Vec<SkippedObject>,
}

/// The result of translating the input.
#[derive(Debug, Default)]
pub struct Rendered {
    pub upstreams: Vec<Upstream>,
    /// With `--reference-grants` (and a fixed write namespace): the grant kept beside each.
    pub grants: Vec<ReferenceGrant>,
    /// `(namespace/name of the Service, warning)`.
    pub warnings: Vec<(String, TranslateWarning)>,
}

/// Reads Services from YAML: several documents, each a Service or a `List` of objects.
pub fn parse_services(yaml: &str) -> Result<ParsedInput, RenderError> {
    let mut input = ParsedInput::default();
    for (document_number, value) in documents(yaml)? {
        match &value {
            Value::Null => {}
            Value::Object(map) if is_list(map) => {
                let items = match map.get("items") {
                    None | Some(Value::Null) => Vec::new(),
                    Some(Value::Array(items)) => items.clone(),
                    Some(_) => {
                        return Err(RenderError::Field {
                            document: document_number,
                            item: String::new(),
                            field: "items".to_string(),
                            message: "expected a list of objects".to_string(),
                        })
                    }
                };
                for (item_index, item) in items.into_iter().enumerate() {
                    let label = format!(", items[{item_index}]");
                    read_object(item, document_number, &label, "items", &mut input)?;
                }
            }
            _ => read_object(value, document_number, "", "", &mut input)?,
        }
    }
    Ok(input)
}

/// The documents of a YAML stream that hold something, each with its number (1-based). Every
/// document counts, empty ones too, so the numbers are those a reader counts in the input.
fn documents(yaml: &str) -> Result<Vec<(usize, Value)>, RenderError> {
    // Where each document starts; the parser's own errors are in the document it was reading.
    let mut starts = Vec::new();
    let mut ended = false;
    for event in Parser::new_from_str(yaml) {
        match event {
            Ok((Event::DocumentStart(..), span)) => {
                starts.push(span.start.line() as u64);
                ended = false;
            }
            Ok((Event::DocumentEnd, _)) => ended = true,
            Ok(_) => {}
            Err(error) => {
                return Err(RenderError::Syntax {
                    document: (starts.len() + usize::from(ended)).max(1),
                    message: error.to_string(),
                })
            }
        }
    }
    let document_at = |line: u64| starts.partition_point(|&start| start <= line).max(1);
    // Empty and null documents are left out here.
    let values: Vec<Spanned<Value>> = serde_saphyr::from_multiple_with_options(
        yaml,
        serde_saphyr::options! { with_snippet: false },
    )
    .map_err(|error| RenderError::Syntax {
        document: error
            .location()
            .map_or(starts.len().max(1), |at| document_at(at.line())),
        message: error.render_with_formatter(&UserMessageFormatter),
    })?;
    Ok(values
        .into_iter()
        .map(|value| (document_at(value.referenced.line()), value.value))
        .collect())
}

fn is_list(map: &serde_json::Map<String, Value>) -> bool {
    map.get("kind")
        .and_then(Value::as_str)
        .is_some_and(|kind| kind == "List" || kind.ends_with("List"))
}

fn read_object(
    value: Value,
    document: usize,
    item: &str,
    path_prefix: &str,
    input: &mut ParsedInput,
) -> Result<(), RenderError> {
    let field_error = |field: &str, message: String| RenderError::Field {
        document,
        item: item.to_string(),
        field: if path_prefix.is_empty() {
            field.to_string()
        } else {
            format!("{path_prefix}[..].{field}")
        },
        message,
    };
    let Value::Object(map) = &value else {
        return Err(field_error(".", "expected an object".to_string()));
    };
    let kind = match map.get("kind") {
        Some(Value::String(kind)) => kind.clone(),
        Some(_) => return Err(field_error("kind", "expected a string".to_string())),
        None => return Err(field_error("kind", "missing".to_string())),
    };
    if kind != "Service" {
        let name = map
            .get("metadata")
            .and_then(|m| m.get("name"))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        input.skipped.push(SkippedObject {
            document,
            kind,
            name,
        });
        return Ok(());
    }
    let service: Service = serde_path_to_error::deserialize(value).map_err(|e| {
        let field = e.path().to_string();
        field_error(&field, e.into_inner().to_string())
    })?;
    if service
        .metadata
        .name
        .as_deref()
        .unwrap_or_default()
        .is_empty()
    {
        return Err(field_error("metadata.name", "missing".to_string()));
    }
    input.services.push(service);
    Ok(())
}

/// Translates every selected Service, in input order.
pub fn render(
    services: &[Service],
    settings: &TranslateSettings,
    selector: &LabelSelector,
) -> Rendered {
    let mut rendered = Rendered::default();
    let no_labels = Default::default();
    for service in services {
        if !selector.matches(service.metadata.labels.as_ref().unwrap_or(&no_labels)) {
            continue;
        }
        let translation = translate_service(service, settings);
        let service_id = format!(
            "{}/{}",
            service.metadata.namespace.as_deref().unwrap_or("default"),
            service.metadata.name.as_deref().unwrap_or_default()
        );
        rendered.warnings.extend(
            translation
                .warnings
                .into_iter()
                .map(|w| (service_id.clone(), w)),
        );
        rendered.upstreams.extend(translation.upstreams);
    }
    rendered
}

/// [`render`], and the grants `run --reference-grants` keeps beside the Upstreams; none with
/// `--write-namespace-mode=service` (each Upstream sits beside its Service), as in `run`.
pub fn render_with_grants(
    services: &[Service],
    settings: &TranslateSettings,
    selector: &LabelSelector,
    grants: &GrantSettings,
) -> Rendered {
    let mut rendered = render(services, settings, selector);
    if settings.write_namespace == WriteNamespace::ServiceNamespace {
        return rendered;
    }
    let no_labels = Default::default();
    let mut upstreams = rendered.upstreams.iter();
    for service in services {
        if !selector.matches(service.metadata.labels.as_ref().unwrap_or(&no_labels)) {
            continue;
        }
        let (namespaces, problems) = route_namespaces(service, grants);
        let service_id = format!(
            "{}/{}",
            service.metadata.namespace.as_deref().unwrap_or("default"),
            service.metadata.name.as_deref().unwrap_or_default()
        );
        rendered
            .warnings
            .extend(problems.into_iter().map(|w| (service_id.clone(), w)));
        // The Upstreams of this Service, in the order `render` put them.
        let count = translate_service(service, settings).upstreams.len();
        for upstream in upstreams.by_ref().take(count) {
            rendered
                .grants
                .push(desired_grant(upstream, None, &namespaces, grants));
        }
    }
    rendered
}

/// Multi-document YAML: the Upstreams, then the grants.
pub fn to_yaml_with_grants(rendered: &Rendered) -> Result<String, RenderError> {
    let mut out = to_yaml(&rendered.upstreams)?;
    for grant in &rendered.grants {
        out.push_str("---\n");
        out.push_str(&yaml_document(grant)?);
    }
    Ok(out)
}

/// Multi-document YAML, one Upstream per document.
pub fn to_yaml(upstreams: &[Upstream]) -> Result<String, RenderError> {
    let mut out = String::new();
    for upstream in upstreams {
        out.push_str("---\n");
        out.push_str(&yaml_document(upstream)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TWO_DOCS: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop, labels: {app: web}}
spec: {ports: [{name: http, port: 80}]}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: shop}
---
apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: Service
  metadata: {name: api, namespace: shop, labels: {app: api}}
  spec: {ports: [{name: grpc, port: 9000}, {name: http, port: 8080}]}
"#;

    #[test]
    fn reads_documents_and_lists_and_skips_other_kinds() {
        let input = parse_services(TWO_DOCS).expect("valid");
        let names: Vec<_> = input
            .services
            .iter()
            .map(|s| s.metadata.name.clone().unwrap_or_default())
            .collect();
        assert_eq!(names, ["web", "api"]);
        assert_eq!(
            input.skipped,
            [SkippedObject {
                document: 2,
                kind: "Deployment".into(),
                name: "web".into()
            }]
        );
    }

    #[test]
    fn selector_filters_services() {
        let input = parse_services(TWO_DOCS).expect("valid");
        let settings = TranslateSettings::new("gloo-system");
        let all = render(&input.services, &settings, &LabelSelector::default());
        assert_eq!(all.upstreams.len(), 3);
        let only_api = render(
            &input.services,
            &settings,
            &"app=api".parse().expect("valid"),
        );
        let names: Vec<_> = only_api
            .upstreams
            .iter()
            .map(|u| u.metadata.name.clone().unwrap_or_default())
            .collect();
        assert_eq!(names, ["shop-api-9000", "shop-api-8080"]);
    }

    #[test]
    fn output_round_trips_as_multi_document_yaml() {
        let input = parse_services(TWO_DOCS).expect("valid");
        let rendered = render(
            &input.services,
            &TranslateSettings::new("gloo-system"),
            &LabelSelector::default(),
        );
        let yaml = to_yaml(&rendered.upstreams).expect("yaml");
        let back: Vec<Upstream> = serde_saphyr::from_multiple(&yaml).expect("Upstreams");
        assert_eq!(back, rendered.upstreams);
    }

    #[test]
    fn errors_name_the_document_and_the_field() {
        let cases = [
            ("kind: Service\nmetadata: {name: a}\nspec: {ports: [{port: eighty}]}\n", "document 1: field spec.ports[0].port:"),
            ("---\nkind: Service\nmetadata: {name: ok}\n---\nkind: Service\nmetadata: {name: [x]}\n", "document 2: field metadata.name:"),
            ("kind: List\nitems:\n- kind: Service\n  metadata: {name: a}\n  spec: {ports: 3}\n", "document 1, items[0]: field items[..].spec.ports:"),
            ("metadata: {name: a}\n", "document 1: field kind: missing"),
            ("kind: Service\nmetadata: {namespace: a}\n", "document 1: field metadata.name: missing"),
            ("kind: Service\nmetadata: {name: a\n", "document 1: invalid YAML"),
            ("kind: List\nitems: 4\n", "document 1: field items: expected a list"),
        ];
        for (yaml, want) in cases {
            let error = parse_services(yaml).expect_err(yaml).to_string();
            assert!(
                error.starts_with(want),
                "{yaml:?}\n got: {error}\nwant: {want}"
            );
            assert!(!error.contains('\n'), "one line: {error}");
        }
    }
}
