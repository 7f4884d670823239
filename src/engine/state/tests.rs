use super::*;
use serde_json::json;

fn service(namespace: &str, name: &str, port: i32) -> Service {
    serde_json::from_value(json!({
        "metadata": {
            "name": name, "namespace": namespace, "uid": format!("uid-{name}"),
            "resourceVersion": "7",
            "managedFields": [{"manager": "kubectl", "operation": "Update", "fieldsType": "FieldsV1", "fieldsV1": {}}],
            "annotations": {LAST_APPLIED_ANNOTATION: "{}", "team": "a"},
        },
        "spec": {"ports": [{"name": "http", "port": port, "targetPort": 8080, "protocol": "TCP"}],
                 "clusterIP": "10.0.0.1", "selector": {"app": name}},
        "status": {"loadBalancer": {}},
    }))
    .expect("service")
}

fn upstream(namespace: &str, name: &str, owned: bool, service: &str) -> Upstream {
    let labels = if owned {
        json!({"discovered_by": "kubernetesplugin"})
    } else {
        json!({})
    };
    serde_json::from_value(json!({
        "apiVersion": "gloo.solo.io/v1", "kind": "Upstream",
        "metadata": {"name": name, "namespace": namespace, "uid": format!("uid-{name}"), "resourceVersion": "1", "labels": labels},
        "spec": {"kube": {"serviceName": service, "serviceNamespace": "shop", "servicePort": 80}},
    }))
    .expect("upstream")
}

fn key(name: &str) -> ServiceKey {
    ServiceKey {
        namespace: "shop".into(),
        name: name.into(),
    }
}

fn ukey(name: &str) -> UpstreamKey {
    UpstreamKey {
        namespace: "gloo-system".into(),
        name: name.into(),
    }
}

fn synced_state() -> State {
    let mut state = State::new(
        vec![None],
        vec![Some("gloo-system".into())],
        LabelSelector::default(),
    );
    for event in [watcher::Event::Init, watcher::Event::InitDone] {
        state.on_service_event(0, event);
    }
    for event in [watcher::Event::Init, watcher::Event::InitDone] {
        state.on_upstream_event(0, event);
    }
    state
}

#[test]
fn the_cache_keeps_only_what_translation_reads() {
    let compact = compact_service(service("shop", "web", 80));
    let value = serde_json::to_value(&compact).expect("json");
    assert_eq!(
        value,
        json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "web", "namespace": "shop", "uid": "uid-web", "annotations": {"team": "a"}},
            "spec": {"ports": [{"name": "http", "port": 80}], "selector": {"app": "web"}},
        })
    );
}

#[test]
fn service_events_touch_only_on_change() {
    let mut state = synced_state();
    assert_eq!(
        state.on_service_event(0, watcher::Event::Apply(service("shop", "web", 80))),
        [key("web")]
    );
    assert!(
        state
            .on_service_event(0, watcher::Event::Apply(service("shop", "web", 80)))
            .is_empty(),
        "same content"
    );
    assert_eq!(
        state.on_service_event(0, watcher::Event::Apply(service("shop", "web", 81))),
        [key("web")]
    );
    assert!(state.service_in_scope(&key("web")).is_some());
    assert_eq!(
        state.on_service_event(0, watcher::Event::Delete(service("shop", "web", 81))),
        [key("web")]
    );
    assert!(state.service_in_scope(&key("web")).is_none());
}

#[test]
fn synced_only_after_every_first_list() {
    let mut state = State::new(
        vec![Some("a".into()), Some("b".into())],
        vec![None],
        LabelSelector::default(),
    );
    assert!(!state.synced());
    for stream in 0..2 {
        state.on_service_event(stream, watcher::Event::Init);
        state.on_service_event(stream, watcher::Event::InitDone);
    }
    assert!(!state.synced(), "Upstreams not listed yet");
    state.on_upstream_event(0, watcher::Event::Init);
    state.on_upstream_event(0, watcher::Event::InitDone);
    assert!(state.synced());
}

#[test]
fn a_relist_notices_services_deleted_while_the_watch_was_down() {
    let mut state = State::new(
        vec![Some("shop".into()), Some("other".into())],
        vec![None],
        LabelSelector::default(),
    );
    state.on_service_event(0, watcher::Event::Init);
    state.on_service_event(0, watcher::Event::InitApply(service("shop", "web", 80)));
    state.on_service_event(0, watcher::Event::InitApply(service("shop", "api", 80)));
    state.on_service_event(0, watcher::Event::InitDone);
    state.on_service_event(1, watcher::Event::Init);
    state.on_service_event(1, watcher::Event::InitApply(service("other", "db", 80)));
    state.on_service_event(1, watcher::Event::InitDone);

    // The "shop" watch restarts and its list no longer has "api".
    state.on_service_event(0, watcher::Event::Init);
    state.on_service_event(0, watcher::Event::InitApply(service("shop", "web", 80)));
    let gone = state.on_service_event(0, watcher::Event::InitDone);
    assert_eq!(gone, [key("api")]);
    let other = ServiceKey {
        namespace: "other".into(),
        name: "db".into(),
    };
    assert!(
        state.service_in_scope(&other).is_some(),
        "another stream's objects stay"
    );
}

#[test]
fn owned_upstreams_are_indexed_by_their_service_and_foreign_ones_only_block_names() {
    let mut state = synced_state();
    let touched = state.on_upstream_event(
        0,
        watcher::Event::Apply(upstream("gloo-system", "shop-web-80", true, "web")),
    );
    assert_eq!(touched, [key("web")]);
    assert_eq!(state.observed_for(&key("web")).len(), 1);
    assert_eq!(state.owner_of(&ukey("shop-web-80")), Some(key("web")));
    assert_eq!(state.owned_upstream_count(), 1);

    let touched = state.on_upstream_event(
        0,
        watcher::Event::Apply(upstream("gloo-system", "shop-api-80", false, "api")),
    );
    assert!(touched.is_empty(), "nobody wanted that name yet");
    assert!(state.is_foreign(&ukey("shop-api-80")));
    assert!(
        state.observed_for(&key("api")).is_empty(),
        "never planned against"
    );
    state.wants(ukey("shop-api-80"), key("api"));
    let touched = state.on_upstream_event(
        0,
        watcher::Event::Delete(upstream("gloo-system", "shop-api-80", false, "api")),
    );
    assert_eq!(
        touched,
        [key("api")],
        "the Service that wanted the name is re-planned"
    );

    // Someone replaces our object with an unlabelled one of the same name.
    let touched = state.on_upstream_event(
        0,
        watcher::Event::Apply(upstream("gloo-system", "shop-web-80", false, "web")),
    );
    assert_eq!(touched, [key("web")]);
    assert!(state.is_foreign(&ukey("shop-web-80")));
    assert!(state.observed_for(&key("web")).is_empty());
}

#[test]
fn an_upstream_relist_drops_what_is_gone() {
    let mut state = synced_state();
    state.on_upstream_event(
        0,
        watcher::Event::Apply(upstream("gloo-system", "shop-web-80", true, "web")),
    );
    state.on_upstream_event(0, watcher::Event::Init);
    let touched = state.on_upstream_event(0, watcher::Event::InitDone);
    assert_eq!(touched, [key("web")]);
    assert_eq!(state.owned_upstream_count(), 0);
}

#[test]
fn namespace_selector_scopes_services() {
    let mut state = State::new(vec![None], vec![None], "team=a".parse().expect("selector"));
    let namespace = |labels: serde_json::Value| -> Namespace {
        serde_json::from_value(json!({"metadata": {"name": "shop", "labels": labels}})).expect("ns")
    };
    state.on_service_event(0, watcher::Event::Apply(service("shop", "web", 80)));
    assert!(
        state.service_in_scope(&key("web")).is_none(),
        "namespace not seen yet"
    );
    state.on_namespace_event(watcher::Event::Init);
    state.on_namespace_event(watcher::Event::InitApply(namespace(json!({"team": "a"}))));
    let touched = state.on_namespace_event(watcher::Event::InitDone);
    assert_eq!(touched, [key("web")]);
    assert!(state.service_in_scope(&key("web")).is_some());
    let touched = state.on_namespace_event(watcher::Event::Apply(namespace(json!({"team": "b"}))));
    assert_eq!(touched, [key("web")]);
    assert!(state.service_in_scope(&key("web")).is_none());
}
