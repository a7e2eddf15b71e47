//! One `admission.k8s.io/v1` `AdmissionReview` answered (docs/kubernetes.md): the pod's
//! template injected by `pod::inject`, and the answer's `patch` the RFC 6902 JSON Patch
//! (`json_patch::diff`) from the pod as sent to the pod as `connd inject` prints it.
//!
//! The review's types are the few fields connd reads and writes, not a Kubernetes type
//! crate's: `k8s-openapi` (which `kube-core`'s admission types need) measured ~100 s more
//! compile on one core and ~0.9 MB more binary, and round-tripping a pod through typed
//! structs would drop the fields a newer API server sends. The pod stays untyped.
//!
//! Boundary: bytes of a review in, the answer's JSON out; HTTP and TLS are `server`'s.

use crate::inject::{pod, Object, Settings};
use base64::Engine;
use serde::Deserialize;
use serde_json::{json, Value};

/// Namespaces whose pods are never mutated, whatever the webhook's configuration sends.
pub const SKIPPED_NAMESPACES: [&str; 2] = ["kube-system", "kube-public"];

/// How a review ended, as `/metrics` counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Allowed with a patch: connd injected.
    Patched,
    /// Allowed untouched: not a Pod, not opted in, already injected, a skipped namespace.
    Allowed,
    /// `allowed: false`: a bad annotation or a pod connd cannot be added to.
    Denied,
    /// Not a review (HTTP 400).
    Malformed,
}

impl Verdict {
    /// Every verdict, in the order `/metrics` lists them.
    pub const ALL: [Verdict; 4] = [Verdict::Patched, Verdict::Allowed, Verdict::Denied, Verdict::Malformed];

    /// The `result` label of `connd_webhook_reviews_total`.
    pub fn label(self) -> &'static str {
        match self {
            Verdict::Patched => "patched",
            Verdict::Allowed => "allowed",
            Verdict::Denied => "denied",
            Verdict::Malformed => "malformed",
        }
    }
}

/// The fields of an `AdmissionReview` connd reads.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Review {
    api_version: String,
    kind: String,
    request: Option<Request>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Request {
    uid: String,
    kind: GroupVersionKind,
    #[serde(default)]
    namespace: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    operation: String,
    #[serde(default)]
    object: Option<Value>,
}

#[derive(Debug, Deserialize)]
struct GroupVersionKind {
    #[serde(default)]
    group: String,
    kind: String,
}

/// Answers the review in `body`: the verdict and the `AdmissionReview` to send back, or
/// why it is not a review (the HTTP 400 body).
pub fn answer(body: &[u8], settings: &Settings) -> Result<(Verdict, Value), String> {
    let review: Review = serde_json::from_slice(body).map_err(|e| format!("not an AdmissionReview: {e}"))?;
    if review.api_version != "admission.k8s.io/v1" || review.kind != "AdmissionReview" {
        return Err(format!(
            "expected apiVersion admission.k8s.io/v1, kind AdmissionReview; got {} {} \
             (set admissionReviewVersions: [v1] in the MutatingWebhookConfiguration)",
            review.api_version, review.kind
        ));
    }
    let request = review.request.ok_or("the AdmissionReview has no request")?;
    if request.uid.is_empty() {
        return Err("the AdmissionReview's request has no uid".into());
    }
    let (verdict, response) = decide(&request, settings)?;
    let mut response = response;
    response["uid"] = Value::String(request.uid);
    Ok((verdict, json!({ "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response })))
}

/// The verdict and the `response` (without its `uid`).
fn decide(request: &Request, settings: &Settings) -> Result<(Verdict, Value), String> {
    let allowed = json!({ "allowed": true });
    let is_pod = request.kind.group.is_empty() && request.kind.kind == "Pod";
    if !is_pod || request.operation != "CREATE" || SKIPPED_NAMESPACES.contains(&request.namespace.as_str()) {
        return Ok((Verdict::Allowed, allowed));
    }
    let pod = request.object.as_ref().filter(|o| o.is_object()).ok_or("the CREATE request of a Pod has no object")?;
    let template: serde_yaml::Value = serde_yaml::to_value(pod).map_err(|e| format!("the Pod cannot be read: {e}"))?;
    let object = Object { kind: "Pod".into(), namespace: request.namespace.clone(), name: pod_name(request, pod) };
    match pod::inject(template, &object, settings) {
        Ok(pod::Outcome::Unchanged) => Ok((Verdict::Allowed, allowed)),
        Ok(pod::Outcome::Injected(new)) => {
            let new: Value = serde_json::to_value(&new).map_err(|e| format!("the injected Pod is not JSON: {e}"))?;
            let patch = serde_json::to_vec(&json_patch::diff(pod, &new)).unwrap_or_default();
            let patch = base64::engine::general_purpose::STANDARD.encode(patch);
            Ok((Verdict::Patched, json!({ "allowed": true, "patchType": "JSONPatch", "patch": patch })))
        }
        Err(e) => {
            let status = json!({ "code": 400, "reason": "BadRequest", "message": e.to_string() });
            Ok((Verdict::Denied, json!({ "allowed": false, "status": status })))
        }
    }
}

/// The pod's name; a pod made by a controller has only `generateName` at admission.
fn pod_name(request: &Request, pod: &Value) -> String {
    if !request.name.is_empty() {
        return request.name.clone();
    }
    let meta = &pod["metadata"];
    match (meta["name"].as_str(), meta["generateName"].as_str()) {
        (Some(name), _) if !name.is_empty() => name.to_owned(),
        (_, Some(prefix)) => format!("{prefix}*"),
        _ => String::new(),
    }
}
