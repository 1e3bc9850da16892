//! Role-based access control decided by the bank's Cedar policies (`policies/rbac/`).
//!
//! Roles and grants are data (database rows) handed to Cedar per request as entities: a user is
//! a `User` entity whose parents are the `Role`s they currently hold. Deny by default: anything
//! no policy permits is refused, and `forbid` policies (separation of duties) win over permits.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::str::FromStr;
use std::sync::{Arc, PoisonError, RwLock};

use cedar_policy::{
    Context, Decision as CedarDecision, Entities, Entity, EntityId, EntityTypeName, EntityUid,
    PolicyId, PolicySet, Request, RestrictedExpression, Schema, ValidationMode, Validator,
};
use miette::Diagnostic;
use serde::Serialize;

use crate::policy::{PolicyFileError, RoleCatalog, line_of, read};

/// Who is calling, as loaded for this request from the session and the grants in force.
#[derive(Debug, Clone, Serialize)]
pub struct Principal {
    pub user_id: i64,
    pub username: String,
    pub display_name: String,
    pub department: String,
    pub email: String,
    pub roles: Vec<String>,
    #[serde(skip)]
    pub session_id: String,
    /// The API token a service account signed in with (its name), for the audit trail.
    #[serde(skip)]
    pub token: Option<String>,
    /// The policies that permitted the route being served (set by the gate): what the audit
    /// entry of the request's deed records as having decided, unless the deed decides itself.
    #[serde(skip)]
    pub permitted_by: Vec<String>,
    /// What the session may do: a temporary password's session only changes it.
    #[serde(skip)]
    pub scope: crate::db::users::SessionScope,
}

impl Principal {
    /// The name the audit trail records: the username, and for a machine the token it used
    /// (`gitlab-ci/token:deploy-main`), so that every token's use is attributable.
    pub fn actor_name(&self) -> String {
        match &self.token {
            Some(token) => format!("{}/token:{token}", self.username),
            None => self.username.clone(),
        }
    }
}

/// What an action is about.
#[derive(Debug, Clone)]
pub enum Resource<'a> {
    /// The service as a whole: the coarse "may this user use this permission at all" check.
    Api,
    /// A role being granted or revoked.
    Role(&'a str),
    /// A user being managed.
    User(i64),
    /// A change request.
    Change(ChangeFacts),
    /// A credential of the vault.
    Credential(CredentialFacts<'a>),
}

/// What the policies may know about a credential (never its secret).
#[derive(Debug, Clone, Copy)]
pub struct CredentialFacts<'a> {
    pub id: i64,
    pub system: &'a str,
    pub department: &'a str,
}

/// The change a reveal is made for, as the reveal policy sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowFacts {
    pub assignee: i64,
    pub in_progress: bool,
    /// Now is before the planned end (plus the grace of `policies/security.toml`).
    pub within_window: bool,
    pub touches_system: bool,
}

/// What the policies may know about a change request.
#[derive(Debug, Clone, Copy)]
pub struct ChangeFacts {
    pub id: i64,
    pub requester: i64,
    pub assignee: i64,
    pub emergency: bool,
}

/// Facts about the request that policies may look at.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    /// The user receiving or losing a role.
    pub grantee: Option<i64>,
    /// The operation removes a role rather than granting it.
    pub revoke: bool,
    /// The operation would leave no active admin.
    pub removes_last_admin: bool,
    /// Reveal: the change it is made for, if any.
    pub change: Option<WindowFacts>,
    /// Reveal: the caller holds an approved, unexpired standing grant for the credential.
    pub standing_grant: bool,
    /// A grant: the roles the grantee holds now.
    pub grantee_roles: Option<Vec<String>>,
    /// Approving a privileged grant: who asked for it.
    pub requested_by: Option<i64>,
}

/// The outcome of one decision and the policies that made it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    pub allowed: bool,
    pub policy_ids: Vec<String>,
}

#[derive(Clone)]
pub struct Authorizer {
    inner: Arc<Inner>,
}

struct Inner {
    policies: PolicySet,
    /// Every request and its entities are checked against it: what the schema does not allow
    /// is denied, never evaluated.
    schema: Schema,
    cedar: cedar_policy::Authorizer,
    roles: RoleCatalog,
    /// Every action (permission) the schema declares, sorted.
    actions: Vec<String>,
    /// role -> permissions it carries on its own, computed from the policies at load time.
    role_permissions: BTreeMap<String, Vec<String>>,
    user_type: EntityTypeName,
    role_type: EntityTypeName,
    change_type: EntityTypeName,
    credential_type: EntityTypeName,
    api_uid: EntityUid,
    action_uids: HashMap<String, EntityUid>,
    /// The role entities and the service entity, built once: they are policy, fixed until restart.
    fixed_entities: Vec<Entity>,
    /// Decisions on the service as a whole ([`Resource::Api`], no facts), per principal.
    api_cache: RwLock<HashMap<ApiKey, Arc<ApiDecisions>>>,
}

/// Everything a decision on [`Resource::Api`] without facts depends on: the principal entity
/// (identity, the attributes handed to Cedar, the roles in force). The policies and the role
/// catalogue are fixed until restart, so a cached answer is exactly what Cedar would answer
/// now; the roles come from the database on every request, so a revoked role or a disabled
/// user is a different key (or no principal at all) on the very next request.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct ApiKey {
    user_id: i64,
    username: String,
    department: String,
    roles: Vec<String>,
}

/// action -> decision, for every action of the schema.
type ApiDecisions = HashMap<String, Decision>;

/// More principals than this in the cache: start again (a bound on memory, not a policy).
const API_CACHE_MAX: usize = 10_000;

const SCHEMA_FILE: &str = "schema.cedarschema";

impl Authorizer {
    /// Loads the schema and every `*.cedar` file of `dir`, validating the policies strictly.
    pub fn load(dir: &Path, roles: &RoleCatalog) -> Result<Authorizer, PolicyFileError> {
        let schema_path = dir.join(SCHEMA_FILE);
        let schema_src = read(&schema_path)?;
        let (schema, _warnings) = Schema::from_cedarschema_str(&schema_src)
            .map_err(|e| diag_error(&schema_path, &schema_src, &e))?;

        let mut files: Vec<_> = std::fs::read_dir(dir)
            .map_err(|e| PolicyFileError::at(dir, None, e.to_string()))?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "cedar"))
            .collect();
        files.sort();
        if files.is_empty() {
            return Err(PolicyFileError::at(dir, None, "no *.cedar policy files"));
        }

        let mut policies = PolicySet::new();
        // policy id -> (file, source) for error positions
        let mut origin: HashMap<String, (std::path::PathBuf, Arc<str>)> = HashMap::new();
        for path in files {
            let src: Arc<str> = read(&path)?.into();
            let parsed = PolicySet::from_str(&src).map_err(|e| diag_error(&path, &src, &e))?;
            for policy in parsed.policies() {
                let line = policy_line(&src, policy);
                let Some(id) = policy.annotation("id") else {
                    return Err(PolicyFileError::at(
                        &path,
                        line,
                        "every policy needs an @id(\"…\") annotation (audit entries name it)",
                    ));
                };
                if origin.contains_key(id) {
                    return Err(PolicyFileError::at(
                        &path,
                        line,
                        format!("policy id `{id}` is used twice"),
                    ));
                }
                origin.insert(id.to_string(), (path.clone(), src.clone()));
                policies
                    .add(policy.new_id(PolicyId::new(id)))
                    .map_err(|e| PolicyFileError::at(&path, line, e.to_string()))?;
            }
        }

        let result = Validator::new(schema.clone()).validate(&policies, ValidationMode::Strict);
        if let Some(err) = result.validation_errors().next() {
            let id = err.policy_id().to_string();
            let (file, src) = origin
                .get(&id)
                .cloned()
                .unwrap_or_else(|| (dir.to_path_buf(), Arc::from("")));
            return Err(diag_error(&file, &src, err));
        }

        let mut actions: Vec<String> = schema
            .actions()
            .map(|a| a.id().unescaped().to_string())
            .collect();
        actions.sort();
        actions.dedup();

        let type_name = |s: &str| {
            EntityTypeName::from_str(s)
                .map_err(|e| PolicyFileError::at(&schema_path, None, e.to_string()))
        };
        let user_type = type_name("User")?;
        let role_type = type_name("Role")?;
        let api_type = type_name("Api")?;
        let change_type = type_name("Change")?;
        let credential_type = type_name("Credential")?;
        let action_type = type_name("Action")?;
        let api_uid = EntityUid::from_type_name_and_id(api_type, EntityId::new("changeguard"));
        let action_uids = actions
            .iter()
            .map(|a| {
                (
                    a.clone(),
                    EntityUid::from_type_name_and_id(action_type.clone(), EntityId::new(a)),
                )
            })
            .collect();

        let role_uid =
            |r: &str| EntityUid::from_type_name_and_id(role_type.clone(), EntityId::new(r));
        let mut fixed_entities: Vec<Entity> = roles
            .names()
            .map(|r| {
                let incompatible = RestrictedExpression::new_set(
                    roles
                        .incompatible_with(r)
                        .map(|x| RestrictedExpression::new_entity_uid(role_uid(x))),
                );
                Entity::new(
                    role_uid(r),
                    HashMap::from([("incompatible".to_string(), incompatible)]),
                    HashSet::new(),
                )
                .map_err(|e| PolicyFileError::at(&schema_path, None, e.to_string()))
            })
            .collect::<Result<_, _>>()?;
        fixed_entities.push(Entity::new_no_attrs(api_uid.clone(), HashSet::new()));

        let mut authz = Authorizer {
            inner: Arc::new(Inner {
                policies,
                schema,
                cedar: cedar_policy::Authorizer::new(),
                roles: roles.clone(),
                actions,
                role_permissions: BTreeMap::new(),
                user_type,
                role_type,
                change_type,
                credential_type,
                api_uid,
                action_uids,
                fixed_entities,
                api_cache: RwLock::new(HashMap::new()),
            }),
        };
        // What each role carries on its own, from the same policies that decide.
        let mut role_permissions = BTreeMap::new();
        for role in roles.names() {
            let probe = Principal {
                user_id: 0,
                username: String::new(),
                display_name: String::new(),
                department: String::new(),
                email: String::new(),
                roles: vec![role.to_string()],
                session_id: String::new(),
                token: None,
                permitted_by: Vec::new(),
                scope: crate::db::users::SessionScope::Full,
            };
            let perms = authz.permissions(&probe);
            role_permissions.insert(role.to_string(), perms);
        }
        if let Some(inner) = Arc::get_mut(&mut authz.inner) {
            inner.role_permissions = role_permissions;
        }
        Ok(authz)
    }

    /// Every permission the schema declares.
    pub fn actions(&self) -> &[String] {
        &self.inner.actions
    }

    pub fn is_action(&self, action: &str) -> bool {
        self.inner.action_uids.contains_key(action)
    }

    /// Permissions each role carries.
    pub fn role_permissions(&self) -> &BTreeMap<String, Vec<String>> {
        &self.inner.role_permissions
    }

    /// The roles (by themselves) that carry `permission`.
    pub fn roles_with(&self, permission: &str) -> Vec<String> {
        self.inner
            .role_permissions
            .iter()
            .filter(|(_, perms)| perms.iter().any(|p| p == permission))
            .map(|(r, _)| r.clone())
            .collect()
    }

    /// What `principal` may do on the service as a whole.
    pub fn permissions(&self, principal: &Principal) -> Vec<String> {
        let table = self.api_decisions(principal);
        self.inner
            .actions
            .iter()
            .filter(|a| table.get(*a).is_some_and(|d| d.allowed))
            .cloned()
            .collect()
    }

    /// Every decision on the service as a whole for `principal`, from the cache or asked of
    /// Cedar once per action and kept.
    fn api_decisions(&self, principal: &Principal) -> Arc<ApiDecisions> {
        let key = ApiKey {
            user_id: principal.user_id,
            username: principal.username.clone(),
            department: principal.department.clone(),
            roles: principal.roles.clone(),
        };
        let cache = &self.inner.api_cache;
        if let Some(found) = cache
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&key)
        {
            return found.clone();
        }
        let table: Arc<ApiDecisions> = Arc::new(
            self.inner
                .actions
                .iter()
                .map(|a| {
                    let d = self.decide_uncached(principal, a, &Resource::Api, &Facts::default());
                    (a.clone(), d)
                })
                .collect(),
        );
        let mut w = cache.write().unwrap_or_else(PoisonError::into_inner);
        if w.len() >= API_CACHE_MAX {
            w.clear();
        }
        w.insert(key, table.clone());
        table
    }

    /// The one place where access is decided.
    pub fn decide(
        &self,
        principal: &Principal,
        action: &str,
        resource: &Resource<'_>,
        facts: &Facts,
    ) -> Decision {
        let no_facts = facts.grantee.is_none()
            && !facts.revoke
            && !facts.removes_last_admin
            && facts.grantee_roles.is_none()
            && facts.requested_by.is_none();
        if matches!(resource, Resource::Api)
            && no_facts
            && let Some(d) = self.api_decisions(principal).get(action)
        {
            return d.clone();
        }
        self.decide_uncached(principal, action, resource, facts)
    }

    fn decide_uncached(
        &self,
        principal: &Principal,
        action: &str,
        resource: &Resource<'_>,
        facts: &Facts,
    ) -> Decision {
        match self.try_decide(principal, action, resource, facts) {
            Ok(d) => d,
            Err(reason) => {
                tracing::error!(action, %reason, "authorization request could not be built; denied");
                Decision {
                    allowed: false,
                    policy_ids: vec![],
                }
            }
        }
    }

    fn try_decide(
        &self,
        principal: &Principal,
        action: &str,
        resource: &Resource<'_>,
        facts: &Facts,
    ) -> Result<Decision, String> {
        let inner = &*self.inner;
        let Some(action_uid) = inner.action_uids.get(action) else {
            return Err(format!("unknown action `{action}`"));
        };
        let user_uid = |id: i64| {
            EntityUid::from_type_name_and_id(inner.user_type.clone(), EntityId::new(id.to_string()))
        };
        let role_uid =
            |r: &str| EntityUid::from_type_name_and_id(inner.role_type.clone(), EntityId::new(r));

        let principal_uid = user_uid(principal.user_id);
        let parents: HashSet<EntityUid> = principal.roles.iter().map(|r| role_uid(r)).collect();
        let grantable = RestrictedExpression::new_set(
            inner
                .roles
                .grantable_by(&principal.roles)
                .map(|r| RestrictedExpression::new_entity_uid(role_uid(r))),
        );
        let attrs = HashMap::from([
            (
                "username".to_string(),
                RestrictedExpression::new_string(principal.username.clone()),
            ),
            (
                "department".to_string(),
                RestrictedExpression::new_string(principal.department.clone()),
            ),
            ("grantable".to_string(), grantable),
        ]);
        let principal_entity =
            Entity::new(principal_uid.clone(), attrs, parents).map_err(|e| e.to_string())?;

        let mut entities = Vec::with_capacity(inner.fixed_entities.len() + 2);
        entities.push(principal_entity);
        entities.extend(inner.fixed_entities.iter().cloned());
        // Only the principal and the resource need to be in the store: policies read no
        // attributes of other users (the grantee is compared by identity only).
        let resource_uid = match resource {
            Resource::Api => inner.api_uid.clone(),
            Resource::Role(r) => role_uid(r),
            Resource::User(id) => user_uid(*id),
            Resource::Change(c) => {
                let uid = EntityUid::from_type_name_and_id(
                    inner.change_type.clone(),
                    EntityId::new(c.id.to_string()),
                );
                let attrs = HashMap::from([
                    (
                        "requester".to_string(),
                        RestrictedExpression::new_entity_uid(user_uid(c.requester)),
                    ),
                    (
                        "assignee".to_string(),
                        RestrictedExpression::new_entity_uid(user_uid(c.assignee)),
                    ),
                    (
                        "emergency".to_string(),
                        RestrictedExpression::new_bool(c.emergency),
                    ),
                ]);
                entities.push(
                    Entity::new(uid.clone(), attrs, HashSet::new()).map_err(|e| e.to_string())?,
                );
                uid
            }
            Resource::Credential(c) => {
                let uid = EntityUid::from_type_name_and_id(
                    inner.credential_type.clone(),
                    EntityId::new(c.id.to_string()),
                );
                let attrs = HashMap::from([
                    (
                        "system".to_string(),
                        RestrictedExpression::new_string(c.system.to_string()),
                    ),
                    (
                        "department".to_string(),
                        RestrictedExpression::new_string(c.department.to_string()),
                    ),
                ]);
                entities.push(
                    Entity::new(uid.clone(), attrs, HashSet::new()).map_err(|e| e.to_string())?,
                );
                uid
            }
        };

        let mut ctx: Vec<(String, RestrictedExpression)> = Vec::new();
        if let Some(g) = facts.grantee {
            ctx.push((
                "grantee".into(),
                RestrictedExpression::new_entity_uid(user_uid(g)),
            ));
        }
        if facts.revoke {
            ctx.push(("revoke".into(), RestrictedExpression::new_bool(true)));
        }
        if let Some(held) = &facts.grantee_roles {
            ctx.push((
                "grantee_roles".into(),
                RestrictedExpression::new_set(
                    held.iter()
                        .map(|r| RestrictedExpression::new_entity_uid(role_uid(r))),
                ),
            ));
        }
        if let Some(by) = facts.requested_by {
            ctx.push((
                "requested_by".into(),
                RestrictedExpression::new_entity_uid(user_uid(by)),
            ));
        }
        if facts.removes_last_admin {
            ctx.push((
                "removes_last_admin".into(),
                RestrictedExpression::new_bool(true),
            ));
        }
        if let Some(w) = facts.change {
            let record = RestrictedExpression::new_record([
                (
                    "assignee".to_string(),
                    RestrictedExpression::new_entity_uid(user_uid(w.assignee)),
                ),
                (
                    "in_progress".to_string(),
                    RestrictedExpression::new_bool(w.in_progress),
                ),
                (
                    "within_window".to_string(),
                    RestrictedExpression::new_bool(w.within_window),
                ),
                (
                    "touches_system".to_string(),
                    RestrictedExpression::new_bool(w.touches_system),
                ),
            ])
            .map_err(|e| e.to_string())?;
            ctx.push(("change".into(), record));
        }
        if facts.standing_grant {
            ctx.push((
                "standing_grant".into(),
                RestrictedExpression::new_bool(true),
            ));
        }
        let context = Context::from_pairs(ctx).map_err(|e| e.to_string())?;
        let entities = Entities::from_entities(entities, Some(&inner.schema))
            .map_err(|e| format!("entities outside the schema: {e}"))?;
        let request = Request::new(
            principal_uid,
            action_uid.clone(),
            resource_uid,
            context,
            Some(&inner.schema),
        )
        .map_err(|e| format!("request outside the schema: {e}"))?;
        let response = inner
            .cedar
            .is_authorized(&request, &inner.policies, &entities);
        // A policy that fails to evaluate would be skipped by Cedar (an erroring `forbid` lets
        // the `permit`s through): here any evaluation error is a deny.
        let mut failed = false;
        let mut policy_ids: Vec<String> = Vec::new();
        for err in response.diagnostics().errors() {
            failed = true;
            let cedar_policy::AuthorizationError::PolicyEvaluationError(e) = err;
            let id = e.policy_id().to_string();
            tracing::error!(action, policy = %id, error = %err, "a policy failed to evaluate: denied");
            policy_ids.push(id);
        }
        // A denial names the policies that failed, not the permits it overrode.
        if !failed {
            policy_ids.extend(response.diagnostics().reason().map(|id| id.to_string()));
        }
        policy_ids.sort();
        policy_ids.dedup();
        Ok(Decision {
            allowed: !failed && response.decision() == CedarDecision::Allow,
            policy_ids,
        })
    }
}

/// The line where `policy` starts: its `@id` annotation, else the n-th `permit`/`forbid`
/// (the parser names unannotated policies policy0, policy1, … in order).
fn policy_line(src: &str, policy: &cedar_policy::Policy) -> Option<usize> {
    if let Some(id) = policy.annotation("id") {
        let needle = format!("@id(\"{id}\")");
        return src.find(&needle).map(|off| line_of(src, off));
    }
    let n: usize = policy
        .id()
        .to_string()
        .strip_prefix("policy")?
        .parse()
        .ok()?;
    src.lines()
        .enumerate()
        .filter(|(_, l)| {
            let t = l.trim_start();
            t.starts_with("permit") || t.starts_with("forbid")
        })
        .nth(n)
        .map(|(i, _)| i + 1)
}

/// file:line: reason from a miette diagnostic whose labels point into `src`.
fn diag_error(path: &Path, src: &str, e: &(dyn Diagnostic + '_)) -> PolicyFileError {
    let line = e
        .labels()
        .and_then(|mut labels| labels.next())
        .map(|l| line_of(src, l.offset()));
    let mut reason = e.to_string();
    if let Some(help) = e.help() {
        reason.push_str(&format!(" ({help})"));
    }
    PolicyFileError::at(path, line, reason.replace('\n', " "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Policies;

    fn shipped() -> Policies {
        Policies::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("policies")).unwrap()
    }

    #[test]
    fn requests_outside_the_schema_are_denied() {
        let p = shipped();
        let op = user(7, &["tech_operator"]);
        let decide = |resource: &Resource<'_>, facts: &Facts| {
            p.authorizer
                .decide(&op, "change.create", resource, facts)
                .allowed
        };
        assert!(decide(&Resource::Api, &Facts::default()));
        // A context the action does not declare, and a resource type it does not apply to.
        let odd = Facts {
            revoke: true,
            ..Facts::default()
        };
        assert!(!decide(&Resource::Api, &odd));
        let credential = Resource::Credential(CredentialFacts {
            id: 1,
            system: "cs-platform",
            department: "科技部",
        });
        assert!(!decide(&credential, &Facts::default()));
    }

    fn user(id: i64, roles: &[&str]) -> Principal {
        Principal {
            user_id: id,
            username: format!("u{id}"),
            display_name: String::new(),
            department: String::new(),
            email: String::new(),
            roles: roles.iter().map(|r| r.to_string()).collect(),
            session_id: String::new(),
            token: None,
            permitted_by: Vec::new(),
            scope: crate::db::users::SessionScope::Full,
        }
    }

    #[test]
    fn deny_by_default() {
        let p = shipped();
        let nobody = user(1, &[]);
        for a in p.authorizer.actions() {
            assert!(
                !p.authorizer
                    .decide(&nobody, a, &Resource::Api, &Facts::default())
                    .allowed,
                "{a}"
            );
        }
    }

    #[test]
    fn cached_api_decisions_equal_cedar_and_follow_the_roles() {
        let p = shipped();
        let a = &p.authorizer;
        let names: Vec<&str> = p.roles.names().collect();
        // Every role alone, every pair, and no role: the cache answers exactly what Cedar does,
        // asked twice (the second time from the cache).
        let mut sets: Vec<Vec<&str>> = vec![vec![]];
        for (i, r) in names.iter().enumerate() {
            sets.push(vec![r]);
            for s in &names[i + 1..] {
                sets.push(vec![r, s]);
            }
        }
        for roles in &sets {
            let who = user(7, roles);
            for _ in 0..2 {
                for action in a.actions() {
                    let fresh = a.decide_uncached(&who, action, &Resource::Api, &Facts::default());
                    let cached = a.decide(&who, action, &Resource::Api, &Facts::default());
                    assert_eq!(fresh, cached, "{roles:?} {action}");
                }
            }
        }
        // The same user loses a role: the very next decision follows.
        let before = user(8, &["admin", "viewer"]);
        let after = user(8, &["viewer"]);
        assert!(
            a.decide(&before, "user.manage", &Resource::Api, &Facts::default())
                .allowed
        );
        assert!(
            !a.decide(&after, "user.manage", &Resource::Api, &Facts::default())
                .allowed
        );
        assert!(!a.permissions(&after).contains(&"user.manage".to_string()));
        // Facts are never answered from the cache.
        let last_admin = Facts {
            removes_last_admin: true,
            ..Facts::default()
        };
        assert!(
            !a.decide(&before, "user.manage", &Resource::Api, &last_admin)
                .allowed
        );
        // Unknown actions are still refused.
        assert!(
            !a.decide(&before, "no.such", &Resource::Api, &Facts::default())
                .allowed
        );
    }

    #[test]
    fn admin_grants_but_not_to_self() {
        let p = shipped();
        let admin = user(1, &["admin"]);
        let to_other = Facts {
            grantee: Some(2),
            ..Facts::default()
        };
        let d = p.authorizer.decide(
            &admin,
            "role.grant",
            &Resource::Role("tech_operator"),
            &to_other,
        );
        assert!(d.allowed);
        assert!(!d.policy_ids.is_empty());
        let to_self = Facts {
            grantee: Some(1),
            ..Facts::default()
        };
        let d = p
            .authorizer
            .decide(&admin, "role.grant", &Resource::Role("manager"), &to_self);
        assert!(!d.allowed);
        assert_eq!(d.policy_ids, vec!["sod.no_self_grant".to_string()]);
    }

    #[test]
    fn incompatible_roles_and_the_second_person_are_forbidden() {
        let p = shipped();
        let admin = user(1, &["admin"]);
        let grant = |role: &str, held: &[&str], requested_by: Option<i64>| {
            let facts = Facts {
                grantee: Some(2),
                grantee_roles: Some(held.iter().map(|r| r.to_string()).collect()),
                requested_by,
                ..Facts::default()
            };
            p.authorizer
                .decide(&admin, "role.grant", &Resource::Role(role), &facts)
        };
        assert!(grant("manager", &["viewer"], Some(3)).allowed);
        for (role, held) in [
            ("manager", "admin"),
            ("admin", "manager"),
            ("admin", "tech_operator"),
            ("tech_operator", "manager"),
        ] {
            let d = grant(role, &[held], None);
            assert!(!d.allowed, "{role} with {held}");
            assert_eq!(d.policy_ids, vec!["sod.incompatible_roles".to_string()]);
        }
        let d = grant("manager", &[], Some(1));
        assert!(!d.allowed);
        assert_eq!(d.policy_ids, vec!["sod.second_person".to_string()]);
    }

    #[test]
    fn last_admin_is_protected() {
        let p = shipped();
        let admin = user(1, &["admin"]);
        let facts = Facts {
            grantee: Some(2),
            revoke: true,
            removes_last_admin: true,
            ..Facts::default()
        };
        let d = p
            .authorizer
            .decide(&admin, "role.grant", &Resource::Role("admin"), &facts);
        assert!(!d.allowed);
    }

    #[test]
    fn role_permissions_come_from_the_policies() {
        let p = shipped();
        let perms = p.authorizer.role_permissions();
        assert!(perms["tech_operator"].contains(&"change.create".to_string()));
        assert!(!perms["tech_operator"].contains(&"change.approve".to_string()));
        assert!(perms["manager"].contains(&"change.approve".to_string()));
        assert!(!perms["admin"].contains(&"change.approve".to_string()));
    }

    #[test]
    fn a_policy_without_id_names_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let shipped_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies/rbac");
        std::fs::copy(shipped_dir.join(SCHEMA_FILE), dir.path().join(SCHEMA_FILE)).unwrap();
        std::fs::write(
            dir.path().join("x.cedar"),
            "// comment\n\npermit (principal, action, resource);\n",
        )
        .unwrap();
        let err = Authorizer::load(dir.path(), &shipped().roles)
            .err()
            .unwrap();
        assert_eq!(err.line, Some(3), "{err}");
        std::fs::write(
            dir.path().join("x.cedar"),
            "@id(\"a\")\npermit (principal, action == Action::\"nope\", resource);\n",
        )
        .unwrap();
        let err = Authorizer::load(dir.path(), &shipped().roles)
            .err()
            .unwrap();
        assert!(err.reason.contains("nope"), "{err}");
        assert_eq!(err.line, Some(2), "{err}");
        std::fs::write(
            dir.path().join("x.cedar"),
            "@id(\"a\")\npermit (principal,\n action ==, resource);\n",
        )
        .unwrap();
        let err = Authorizer::load(dir.path(), &shipped().roles)
            .err()
            .unwrap();
        assert_eq!(err.line, Some(3), "{err}");
    }
}
