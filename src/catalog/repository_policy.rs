//! Who besides the registry's own account may pull a repository's images: the pull
//! grants (`ecr:BatchGetImage`) of its repository policy and of the registry's policy,
//! read through the [`RepositoryPolicies`] port ([`SdkRepositoryPolicies`] in production).
//!
//! The IAM documents are read leniently where IAM is lenient (a `Statement`, `Action`,
//! `Resource` or principal given as one string or a list; `Principal: "*"`; a bare
//! account id or an ARN) and strictly everywhere else: a document that cannot be read
//! with certainty is an error, which the caller treats as a grant to an unknown consumer
//! (the images are kept). Every reading errs toward "more is shared": `Deny` statements
//! never remove a grant, a `Resource` pattern that may match the repository applies, and
//! only conditions that name accounts or organisations narrow a grant to `*`.

use crate::catalog::workloads::arn_account_region;
use crate::catalog::ApiErrorKind;
use crate::registry::ecr::is_account_id;
use serde::Serialize;
use serde_json::Value;
use std::fmt;

/// The action that pulls an image manifest.
pub const PULL_ACTION: &str = "ecr:BatchGetImage";

/// Who a policy lets pull.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(tag = "kind", content = "id", rename_all = "kebab-case")]
pub enum Grantee {
    /// One account: its root, a role, user or session of it, or `aws:PrincipalAccount` /
    /// `aws:SourceAccount`.
    Account(String),
    /// The accounts of an organisation (`aws:PrincipalOrgID`) or of organisational units
    /// (`aws:PrincipalOrgPaths`).
    Organization(String),
    /// Anyone: `Principal: "*"` (or `NotPrincipal`) with no condition naming accounts.
    Anyone,
    /// A principal no account can be told from: a service without `aws:SourceAccount`,
    /// a federated identity, a principal id, an account pattern, or an unreadable policy.
    Unknown(String),
}

impl fmt::Display for Grantee {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Grantee::Account(a) => write!(f, "account {a}"),
            Grantee::Organization(o) => write!(f, "organization {o}"),
            Grantee::Anyone => f.write_str("anyone (Principal \"*\")"),
            Grantee::Unknown(what) => write!(f, "unknown principal ({what})"),
        }
    }
}

/// Why a policy document cannot be read with certainty.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PolicyParseError(pub String);

fn bad(message: impl Into<String>) -> PolicyParseError {
    PolicyParseError(message.into())
}

/// One string or a list of strings (IAM accepts both almost everywhere).
fn strings(what: &str, v: &Value) -> Result<Vec<String>, PolicyParseError> {
    match v {
        Value::String(s) => Ok(vec![s.clone()]),
        Value::Array(items) => items
            .iter()
            .map(|i| match i {
                Value::String(s) => Ok(s.clone()),
                other => Err(bad(format!("{what}: {other} is not a string"))),
            })
            .collect(),
        other => Err(bad(format!(
            "{what}: {other} is neither a string nor a list"
        ))),
    }
}

/// Condition values: strings, or numbers and booleans as IAM compares them (as text).
fn condition_values(what: &str, v: &Value) -> Result<Vec<String>, PolicyParseError> {
    let one = |v: &Value| match v {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        other => Err(bad(format!("{what}: {other} is not a value"))),
    };
    match v {
        Value::Array(items) => items.iter().map(one).collect(),
        other => Ok(vec![one(other)?]),
    }
}

/// IAM's wildcard match: `*` any run of characters, `?` one; `case_insensitive` for
/// actions (IAM compares action names without case).
pub fn wildcard_match(pattern: &str, text: &str, case_insensitive: bool) -> bool {
    let fold = |s: &str| {
        if case_insensitive {
            s.to_ascii_lowercase().chars().collect::<Vec<_>>()
        } else {
            s.chars().collect::<Vec<_>>()
        }
    };
    let (p, t) = (fold(pattern), fold(text));
    // Iterative glob with backtracking to the last `*`.
    let (mut pi, mut ti) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

/// The account of an `AWS` principal: a bare account id, or an IAM or STS ARN
/// (`arn:aws:iam::123456789012:root|role/…|user/…`, `arn:aws:sts::…:assumed-role/…`).
fn aws_principal(p: &str) -> Grantee {
    if p == "*" {
        return Grantee::Anyone;
    }
    if is_account_id(p) {
        return Grantee::Account(p.to_string());
    }
    let service = p.split(':').nth(2);
    if let (Some("iam" | "sts"), Some((account, _))) = (service, arn_account_region(p)) {
        if is_account_id(account) {
            return Grantee::Account(account.to_string());
        }
    }
    Grantee::Unknown(format!("AWS {p}"))
}

/// The condition operators that restrict a key to the values given. Negated operators
/// (`StringNotEquals`, ...) and `…IfExists` (which holds when the key is absent) narrow nothing.
fn positive_operator(op: &str) -> Option<bool> {
    let base = op
        .strip_prefix("ForAnyValue:")
        .or_else(|| op.strip_prefix("ForAllValues:"))
        .unwrap_or(op);
    if base.ends_with("IfExists") || base.contains("Not") {
        return None;
    }
    match base {
        "StringEquals" | "StringEqualsIgnoreCase" | "ArnEquals" => Some(false),
        "StringLike" | "ArnLike" => Some(true),
        _ => None,
    }
}

/// The values a statement's condition requires of `key` (all its positive operators
/// together), and whether any of them is a pattern. `None` when no positive operator
/// names the key.
fn required_values(
    conditions: &serde_json::Map<String, Value>,
    key: &str,
) -> Result<Option<(Vec<String>, bool)>, PolicyParseError> {
    let mut found: Option<(Vec<String>, bool)> = None;
    for (op, block) in conditions {
        let Some(like) = positive_operator(op) else {
            continue;
        };
        let Value::Object(block) = block else {
            return Err(bad(format!("Condition.{op} is not an object")));
        };
        for (k, v) in block {
            if !k.eq_ignore_ascii_case(key) {
                continue;
            }
            let values = condition_values(&format!("Condition.{op}.{k}"), v)?;
            let pattern = like && values.iter().any(|v| v.contains(['*', '?']));
            // Two operators on one key must both hold: the narrower one is enough to
            // know, and keeping the first is as safe as any (each names every grantee
            // it lets in).
            if found.is_none() {
                found = Some((values, pattern));
            }
        }
    }
    Ok(found)
}

/// Accounts from ARN patterns (`aws:SourceArn`), when each names a literal account.
fn accounts_of_arns(values: &[String]) -> Option<Vec<Grantee>> {
    values
        .iter()
        .map(|arn| {
            let (account, _) = arn_account_region(arn)?;
            is_account_id(account).then(|| Grantee::Account(account.to_string()))
        })
        .collect()
}

/// Who a statement that grants pulls to `Principal: "*"` lets in, after its conditions.
fn narrowed_anyone(
    conditions: &serde_json::Map<String, Value>,
) -> Result<Vec<Grantee>, PolicyParseError> {
    if let Some((values, pattern)) = required_values(conditions, "aws:PrincipalAccount")? {
        return Ok(values
            .into_iter()
            .map(|v| {
                if !pattern && is_account_id(&v) {
                    Grantee::Account(v)
                } else {
                    Grantee::Unknown(format!("aws:PrincipalAccount {v}"))
                }
            })
            .collect());
    }
    for key in ["aws:PrincipalOrgID", "aws:PrincipalOrgPaths"] {
        if let Some((values, _)) = required_values(conditions, key)? {
            return Ok(values.into_iter().map(Grantee::Organization).collect());
        }
    }
    if let Some((values, pattern)) = required_values(conditions, "aws:SourceAccount")? {
        if !pattern && values.iter().all(|v| is_account_id(v)) {
            return Ok(values.into_iter().map(Grantee::Account).collect());
        }
    }
    Ok(vec![Grantee::Anyone])
}

/// Who a service principal acts for: the accounts `aws:SourceAccount` or `aws:SourceArn`
/// name (as Lambda's cross-account pulls are granted), else nobody we can tell.
fn service_grantees(
    service: &str,
    conditions: &serde_json::Map<String, Value>,
) -> Result<Vec<Grantee>, PolicyParseError> {
    if let Some((values, false)) = required_values(conditions, "aws:SourceAccount")? {
        if values.iter().all(|v| is_account_id(v)) {
            return Ok(values.into_iter().map(Grantee::Account).collect());
        }
    }
    if let Some((values, _)) = required_values(conditions, "aws:SourceArn")? {
        if let Some(accounts) = accounts_of_arns(&values) {
            return Ok(accounts);
        }
    }
    Ok(vec![Grantee::Unknown(format!(
        "service {service} without aws:SourceAccount"
    ))])
}

/// The grantees of one statement's `Principal` (or `NotPrincipal`).
fn principal_grantees(
    statement: &serde_json::Map<String, Value>,
    conditions: &serde_json::Map<String, Value>,
) -> Result<Vec<Grantee>, PolicyParseError> {
    if statement.contains_key("NotPrincipal") {
        // Everyone but the principals named.
        return narrowed_anyone(conditions);
    }
    let principal = statement
        .get("Principal")
        .ok_or_else(|| bad("a statement has no Principal"))?;
    let mut out = Vec::new();
    match principal {
        Value::String(s) if s == "*" => out.extend(narrowed_anyone(conditions)?),
        Value::Object(kinds) => {
            for (kind, v) in kinds {
                for p in strings(&format!("Principal.{kind}"), v)? {
                    match kind.as_str() {
                        "AWS" => match aws_principal(&p) {
                            Grantee::Anyone => out.extend(narrowed_anyone(conditions)?),
                            g => out.push(g),
                        },
                        "Service" => out.extend(service_grantees(&p, conditions)?),
                        other => out.push(Grantee::Unknown(format!("{other} {p}"))),
                    }
                }
            }
        }
        other => return Err(bad(format!("Principal {other} is not \"*\" or an object"))),
    }
    Ok(out)
}

/// True when the statement's `Action` (or `NotAction`) lets `action` through.
fn allows_action(
    statement: &serde_json::Map<String, Value>,
    action: &str,
) -> Result<bool, PolicyParseError> {
    match (statement.get("Action"), statement.get("NotAction")) {
        (Some(a), None) => Ok(strings("Action", a)?
            .iter()
            .any(|p| wildcard_match(p, action, true))),
        (None, Some(a)) => Ok(!strings("NotAction", a)?
            .iter()
            .any(|p| wildcard_match(p, action, true))),
        _ => Err(bad("a statement needs exactly one of Action and NotAction")),
    }
}

/// True when a registry policy statement may apply to `repository_arn`: its `Resource`
/// matches it, its `NotResource` does not, or it names neither.
fn applies_to(
    statement: &serde_json::Map<String, Value>,
    repository_arn: &str,
) -> Result<bool, PolicyParseError> {
    match (statement.get("Resource"), statement.get("NotResource")) {
        (Some(r), _) => Ok(strings("Resource", r)?
            .iter()
            .any(|p| wildcard_match(p, repository_arn, false))),
        (None, Some(r)) => Ok(!strings("NotResource", r)?
            .iter()
            .any(|p| wildcard_match(p, repository_arn, false))),
        (None, None) => Ok(true),
    }
}

/// The grantees a policy document lets pull. `repository_arn`: for a registry policy,
/// the repository its statements are matched against by `Resource`; `None` for a
/// repository's own policy (every statement applies to it).
pub fn pull_grantees(
    document: &str,
    repository_arn: Option<&str>,
) -> Result<Vec<Grantee>, PolicyParseError> {
    let doc: Value = serde_json::from_str(document).map_err(|e| bad(format!("not JSON: {e}")))?;
    let statements = match doc.get("Statement") {
        Some(Value::Array(list)) => list.clone(),
        Some(one @ Value::Object(_)) => vec![one.clone()],
        Some(other) => return Err(bad(format!("Statement {other} is not a list or an object"))),
        None => return Err(bad("no Statement")),
    };
    let mut out = Vec::new();
    for (i, s) in statements.iter().enumerate() {
        let at = |e: PolicyParseError| bad(format!("Statement[{i}]: {}", e.0));
        let Value::Object(s) = s else {
            return Err(bad(format!("Statement[{i}] is not an object")));
        };
        match s.get("Effect").and_then(Value::as_str) {
            Some("Allow") => {}
            // A Deny only ever takes access away: ignoring it overstates what is shared.
            Some("Deny") => continue,
            other => return Err(at(bad(format!("Effect {other:?} is not Allow or Deny")))),
        }
        if !allows_action(s, PULL_ACTION).map_err(at)? {
            continue;
        }
        if let Some(arn) = repository_arn {
            if !applies_to(s, arn).map_err(at)? {
                continue;
            }
        }
        let empty = serde_json::Map::new();
        let conditions = match s.get("Condition") {
            None => &empty,
            Some(Value::Object(c)) => c,
            Some(other) => return Err(at(bad(format!("Condition {other} is not an object")))),
        };
        out.extend(principal_grantees(s, conditions).map_err(at)?);
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// A policy read that failed (other than "there is none").
#[derive(Debug, Clone, thiserror::Error)]
#[error("{operation} failed: {message}")]
pub struct PolicyReadError {
    /// `GetRepositoryPolicy` or `GetRegistryPolicy`.
    pub operation: &'static str,
    /// The SDK's error with its context.
    pub message: String,
    /// What the call failed with.
    pub kind: ApiErrorKind,
}

/// A policy document and the registry (account id) it belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyText {
    /// `registryId`: the account that owns the registry.
    pub registry_id: String,
    /// `policyText`.
    pub text: String,
}

/// The two ECR calls that say who may pull.
#[async_trait::async_trait]
pub trait RepositoryPolicies: Send + Sync {
    /// The registry's region (for repository ARNs).
    fn region(&self) -> String;
    /// GetRepositoryPolicy; `None` when the repository has none.
    async fn repository_policy(
        &self,
        repository: &str,
    ) -> Result<Option<PolicyText>, PolicyReadError>;
    /// GetRegistryPolicy; `None` when the registry has none.
    async fn registry_policy(&self) -> Result<Option<PolicyText>, PolicyReadError>;
    /// The accounts, besides the registry's own, whose workloads the in-use listing
    /// sees (`CONSUMER_ACCOUNTS`): a grant to one of them is covered.
    fn consumer_accounts(&self) -> Vec<String>;
}

/// [`RepositoryPolicies`] over aws-sdk-ecr.
#[derive(Clone)]
pub struct SdkRepositoryPolicies {
    client: aws_sdk_ecr::Client,
    region: String,
    consumers: Vec<String>,
}

impl SdkRepositoryPolicies {
    /// The policies of the registry `client` reaches, in `region`, with the consumer
    /// accounts the in-use listing covers.
    pub fn new(client: aws_sdk_ecr::Client, region: String, consumers: Vec<String>) -> Self {
        Self {
            client,
            region,
            consumers,
        }
    }

    /// The client from the catalog's one client home, the region from `config`.
    pub fn from_sdk_config(
        config: &aws_config::SdkConfig,
        settings: &crate::aws_clients::ClientSettings,
        consumers: Vec<String>,
    ) -> Self {
        let region = config.region().map(|r| r.to_string()).unwrap_or_default();
        Self::new(settings.ecr(config), region, consumers)
    }
}

fn read_error<E>(operation: &'static str, err: aws_sdk_ecr::error::SdkError<E>) -> PolicyReadError
where
    E: aws_sdk_ecr::error::ProvideErrorMetadata
        + aws_config::retry::ProvideErrorKind
        + std::error::Error
        + Send
        + Sync
        + 'static,
{
    let failure = crate::catalog::aws_error::SdkFailure::of(&err);
    PolicyReadError {
        operation,
        kind: failure.kind,
        message: failure.message,
    }
}

#[async_trait::async_trait]
impl RepositoryPolicies for SdkRepositoryPolicies {
    fn region(&self) -> String {
        self.region.clone()
    }

    async fn repository_policy(
        &self,
        repository: &str,
    ) -> Result<Option<PolicyText>, PolicyReadError> {
        match self
            .client
            .get_repository_policy()
            .repository_name(repository)
            .send()
            .await
        {
            Ok(out) => Ok(out.policy_text().map(|text| PolicyText {
                registry_id: out.registry_id().unwrap_or_default().to_string(),
                text: text.to_string(),
            })),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_repository_policy_not_found_exception()) =>
            {
                Ok(None)
            }
            Err(e) => Err(read_error("GetRepositoryPolicy", e)),
        }
    }

    async fn registry_policy(&self) -> Result<Option<PolicyText>, PolicyReadError> {
        match self.client.get_registry_policy().send().await {
            Ok(out) => Ok(out.policy_text().map(|text| PolicyText {
                registry_id: out.registry_id().unwrap_or_default().to_string(),
                text: text.to_string(),
            })),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_registry_policy_not_found_exception()) =>
            {
                Ok(None)
            }
            Err(e) => Err(read_error("GetRegistryPolicy", e)),
        }
    }

    fn consumer_accounts(&self) -> Vec<String> {
        self.consumers.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Grantee::*;

    const REPO_ARN: &str = "arn:aws:ecr:us-east-1:111111111111:repository/team/app";

    fn grantees(doc: &str) -> Vec<Grantee> {
        pull_grantees(doc, None).unwrap()
    }

    fn acct(a: &str) -> Grantee {
        Account(a.into())
    }

    #[test]
    fn principals_in_every_shape_name_their_accounts() {
        let doc = r#"{"Version":"2012-10-17","Statement":[
            {"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::222222222222:root"},"Action":"ecr:BatchGetImage"},
            {"Effect":"Allow","Principal":{"AWS":["333333333333","arn:aws:iam::444444444444:role/deploy/ci",
                "arn:aws:sts::555555555555:assumed-role/r/s","AROAEXAMPLEID"]},
             "Action":["ecr:GetDownloadUrlForLayer","ecr:BatchGet*"]}]}"#;
        assert_eq!(
            grantees(doc),
            [
                acct("222222222222"),
                acct("333333333333"),
                acct("444444444444"),
                acct("555555555555"),
                Unknown("AWS AROAEXAMPLEID".into()),
            ]
        );
        // One statement as an object, not a list.
        let one = r#"{"Statement":{"Effect":"Allow","Principal":{"AWS":"222222222222"},"Action":"ecr:*"}}"#;
        assert_eq!(grantees(one), [acct("222222222222")]);
    }

    #[test]
    fn only_allowed_pulls_count() {
        // Push only, a Deny, and a NotAction that excludes the pull: none of them share.
        let doc = r#"{"Statement":[
            {"Effect":"Allow","Principal":{"AWS":"222222222222"},"Action":["ecr:PutImage","ecr:InitiateLayerUpload"]},
            {"Effect":"Deny","Principal":"*","Action":"*"},
            {"Effect":"Allow","Principal":{"AWS":"333333333333"},"NotAction":"ecr:Batch*"}]}"#;
        assert!(grantees(doc).is_empty());
        for action in [
            "*",
            "ecr:*",
            "ECR:batchgetimage",
            "ecr:BatchGet?mage",
            "ecr:*Image",
        ] {
            let doc = format!(
                r#"{{"Statement":[{{"Effect":"Allow","Principal":{{"AWS":"222222222222"}},"Action":"{action}"}}]}}"#
            );
            assert_eq!(grantees(&doc), [acct("222222222222")], "{action}");
        }
        let not_action = r#"{"Statement":[{"Effect":"Allow","Principal":{"AWS":"222222222222"},"NotAction":"ecr:PutImage"}]}"#;
        assert_eq!(grantees(not_action), [acct("222222222222")]);
    }

    #[test]
    fn star_is_narrowed_only_by_account_and_organization_conditions() {
        let star = |cond: &str| {
            grantees(&format!(
                r#"{{"Statement":[{{"Effect":"Allow","Principal":"*","Action":"ecr:BatchGetImage"{cond}}}]}}"#
            ))
        };
        assert_eq!(star(""), [Anyone]);
        assert_eq!(
            star(r#","Condition":{"StringEquals":{"aws:PrincipalOrgID":"o-abc123"}}"#),
            [Organization("o-abc123".into())]
        );
        assert_eq!(
            star(
                r#","Condition":{"ForAnyValue:StringLike":{"aws:PrincipalOrgPaths":["o-abc123/r-ab12/ou-ab12-11111111/*"]}}"#
            ),
            [Organization("o-abc123/r-ab12/ou-ab12-11111111/*".into())]
        );
        assert_eq!(
            star(
                r#","Condition":{"StringEquals":{"aws:PrincipalAccount":["222222222222","333333333333"],"aws:PrincipalOrgID":"o-abc123"}}"#
            ),
            [acct("222222222222"), acct("333333333333")]
        );
        // A pattern or a negation does not say which accounts.
        assert_eq!(
            star(r#","Condition":{"StringLike":{"aws:PrincipalAccount":"2222*"}}"#),
            [Unknown("aws:PrincipalAccount 2222*".into())]
        );
        assert_eq!(
            star(r#","Condition":{"StringNotEquals":{"aws:PrincipalOrgID":"o-abc123"}}"#),
            [Anyone]
        );
        assert_eq!(
            star(r#","Condition":{"StringEqualsIfExists":{"aws:PrincipalOrgID":"o-abc123"}}"#),
            [Anyone]
        );
        assert_eq!(
            star(r#","Condition":{"Bool":{"aws:SecureTransport":true}}"#),
            [Anyone]
        );
        // {"AWS": "*"} is the same as "*"; NotPrincipal lets in everyone else.
        let doc = r#"{"Statement":[{"Effect":"Allow","Principal":{"AWS":["*"]},"Action":"ecr:*"},
            {"Effect":"Allow","NotPrincipal":{"AWS":"222222222222"},"Action":"ecr:*"}]}"#;
        assert_eq!(grantees(doc), [Anyone]);
    }

    #[test]
    fn service_principals_name_the_accounts_they_act_for() {
        let doc = r#"{"Statement":[{"Effect":"Allow","Principal":{"Service":"lambda.amazonaws.com"},
            "Action":["ecr:BatchGetImage","ecr:GetDownloadUrlForLayer"],
            "Condition":{"StringLike":{"aws:sourceArn":"arn:aws:lambda:us-east-1:666666666666:function:*"}}}]}"#;
        assert_eq!(grantees(doc), [acct("666666666666")]);
        let bare = r#"{"Statement":[{"Effect":"Allow","Principal":{"Service":"lambda.amazonaws.com"},"Action":"ecr:BatchGetImage"}]}"#;
        assert_eq!(
            grantees(bare),
            [Unknown(
                "service lambda.amazonaws.com without aws:SourceAccount".into()
            )]
        );
        let federated = r#"{"Statement":[{"Effect":"Allow","Principal":{"Federated":"cognito-identity.amazonaws.com"},"Action":"ecr:BatchGetImage"}]}"#;
        assert_eq!(
            grantees(federated),
            [Unknown("Federated cognito-identity.amazonaws.com".into())]
        );
    }

    #[test]
    fn registry_statements_apply_by_resource() {
        let doc = |resource: &str| {
            format!(
                r#"{{"Statement":[{{"Effect":"Allow","Principal":{{"AWS":"222222222222"}},"Action":"ecr:BatchGetImage"{resource}}}]}}"#
            )
        };
        let on = |resource: &str| pull_grantees(&doc(resource), Some(REPO_ARN)).unwrap();
        assert_eq!(on(""), [acct("222222222222")]);
        assert_eq!(
            on(r#","Resource":"arn:aws:ecr:us-east-1:111111111111:repository/*""#),
            [acct("222222222222")]
        );
        assert_eq!(
            on(r#","Resource":["arn:aws:ecr:*:111111111111:repository/team/*"]"#),
            [acct("222222222222")]
        );
        assert!(
            on(r#","Resource":"arn:aws:ecr:us-east-1:111111111111:repository/other-*""#).is_empty()
        );
        assert!(
            on(r#","NotResource":"arn:aws:ecr:us-east-1:111111111111:repository/team/*""#)
                .is_empty()
        );
        // Replication grants (registry policy V1) are not pulls.
        let replication = r#"{"Statement":[{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::222222222222:root"},
            "Action":["ecr:CreateRepository","ecr:ReplicateImage"],"Resource":"arn:aws:ecr:us-east-1:111111111111:repository/*"}]}"#;
        assert!(pull_grantees(replication, Some(REPO_ARN))
            .unwrap()
            .is_empty());
    }

    #[test]
    fn unreadable_documents_are_errors() {
        for doc in [
            "not json",
            "{}",
            r#"{"Statement":"x"}"#,
            r#"{"Statement":[{"Principal":"*","Action":"ecr:*"}]}"#,
            r#"{"Statement":[{"Effect":"Allow","Principal":"*"}]}"#,
            r#"{"Statement":[{"Effect":"Allow","Action":"ecr:*"}]}"#,
            r#"{"Statement":[{"Effect":"Allow","Principal":{"AWS":7},"Action":"ecr:*"}]}"#,
            r#"{"Statement":[{"Effect":"Allow","Principal":"someone","Action":"ecr:*"}]}"#,
            r#"{"Statement":[{"Effect":"Allow","Principal":"*","Action":"ecr:*","Condition":[]}]}"#,
        ] {
            assert!(pull_grantees(doc, None).is_err(), "{doc}");
        }
        // Statements that grant no pull are not read further.
        let push_only =
            r#"{"Statement":[{"Effect":"Allow","Principal":"odd","Action":"ecr:PutImage"}]}"#;
        assert!(grantees(push_only).is_empty());
    }

    #[test]
    fn wildcards() {
        assert!(wildcard_match("a*c", "abbbc", false));
        assert!(wildcard_match("*", "", false));
        assert!(wildcard_match("a?c", "abc", false));
        assert!(!wildcard_match("a?c", "ac", false));
        assert!(!wildcard_match("A*", "abc", false));
        assert!(wildcard_match("A*", "abc", true));
        assert!(wildcard_match("*b*b", "abab", false));
    }
}
