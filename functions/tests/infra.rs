//! The AWS deployment (infra/template.yaml) against the code: every route of the route table is an
//! HttpApi event of exactly the function that serves it (and nothing else is), every function's
//! role grants exactly the actions infra/iam-actions.json lists for it, the six functions are
//! arm64/provided.al2023 with their cargo-lambda binary, the two schedules exist, and only the
//! functions that issue cursors read the cursor secret.
//!
//! The template uses long-form intrinsics (`Ref`, `Fn::Sub`, `Fn::GetAtt`), so it parses as plain
//! YAML; it is converted to JSON values to walk it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use dspy_storage_functions::{all_routes, Function};
use serde_json::{Map, Value};

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

fn template() -> Value {
    let path = repo_root().join("infra/template.yaml");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    let yaml: serde_yaml::Value = serde_yaml::from_str(&text).expect("template.yaml parses");
    serde_json::to_value(yaml).expect("template.yaml as JSON (long-form intrinsics only)")
}

fn iam_actions() -> Value {
    let path = repo_root().join("infra/iam-actions.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    serde_json::from_str(&text).expect("iam-actions.json parses")
}

fn resources(t: &Value) -> &Map<String, Value> {
    t["Resources"].as_object().expect("Resources")
}

fn resource<'a>(t: &'a Value, id: &str) -> &'a Value {
    resources(t)
        .get(id)
        .unwrap_or_else(|| panic!("resource {id} missing"))
}

/// Logical id of a function: `store` → `StoreFunction`.
fn logical_id(f: Function) -> String {
    let name = f.name();
    format!("{}{}Function", name[..1].to_uppercase(), &name[1..])
}

/// A function property, falling back to `Globals.Function`.
fn function_prop<'a>(t: &'a Value, id: &str, name: &str) -> &'a Value {
    let own = &resource(t, id)["Properties"][name];
    if own.is_null() {
        &t["Globals"]["Function"][name]
    } else {
        own
    }
}

fn strings(v: &Value) -> Vec<String> {
    match v {
        Value::String(s) => vec![s.clone()],
        Value::Array(items) => items
            .iter()
            .map(|i| i.as_str().expect("a string").to_owned())
            .collect(),
        other => panic!("expected a string or a list of strings, got {other}"),
    }
}

/// Every event of type `kind` of every serverless function: (function logical id, event name, properties).
fn events<'a>(t: &'a Value, kind: &str) -> Vec<(String, String, &'a Value)> {
    let mut out = Vec::new();
    for (id, res) in resources(t) {
        if res["Type"] != "AWS::Serverless::Function" {
            continue;
        }
        if let Some(evs) = res["Properties"]["Events"].as_object() {
            for (name, ev) in evs {
                if ev["Type"] == kind {
                    out.push((id.clone(), name.clone(), &ev["Properties"]));
                }
            }
        }
    }
    out
}

#[test]
fn six_functions_on_arm64_provided_al2023_with_their_binaries() {
    let t = template();
    let serverless: BTreeSet<&String> = resources(&t)
        .iter()
        .filter(|(_, r)| r["Type"] == "AWS::Serverless::Function")
        .map(|(id, _)| id)
        .collect();
    let expected: BTreeSet<String> = Function::ALL.iter().map(|f| logical_id(*f)).collect();
    assert_eq!(
        serverless.into_iter().cloned().collect::<BTreeSet<_>>(),
        expected
    );
    for f in Function::ALL {
        let id = logical_id(f);
        assert_eq!(function_prop(&t, &id, "Runtime"), "provided.al2023", "{id}");
        assert_eq!(function_prop(&t, &id, "Handler"), "bootstrap", "{id}");
        assert_eq!(
            function_prop(&t, &id, "Architectures"),
            &serde_json::json!(["arm64"]),
            "{id}"
        );
        assert_eq!(function_prop(&t, &id, "Tracing"), "Active", "{id}");
        assert_eq!(function_prop(&t, &id, "CodeUri"), "..", "{id}");
        let meta = &resource(&t, &id)["Metadata"];
        assert_eq!(meta["BuildMethod"], "rust-cargolambda", "{id}");
        assert_eq!(meta["BuildProperties"]["Binary"], f.name(), "{id}");
        let bin = repo_root().join(format!("functions/src/bin/{}.rs", f.name()));
        assert!(bin.is_file(), "{bin:?} (the binary {id} builds)");
    }
    let globals = &t["Globals"]["Function"]["Environment"]["Variables"];
    for var in [
        "DSPY_STORAGE_TABLE",
        "DSPY_STORAGE_BUCKET",
        "DSPY_STORAGE_COMPRESSION",
        "DSPY_STORAGE_ENCRYPTION_KEY",
    ] {
        assert!(!globals[var].is_null(), "{var} in Globals.Function");
    }
}

#[test]
fn every_route_is_an_http_api_event_of_its_function_and_nothing_else_is() {
    let t = template();
    let table: BTreeSet<(String, String, String)> = all_routes()
        .iter()
        .map(|r| {
            (
                r.method.as_str().to_owned(),
                r.path.to_owned(),
                logical_id(r.function),
            )
        })
        .collect();
    assert_eq!(table.len(), all_routes().len(), "duplicate routes");
    let mut template_routes = BTreeSet::new();
    for (id, name, props) in events(&t, "HttpApi") {
        assert_eq!(
            props["ApiId"],
            serde_json::json!({"Ref": "HttpApi"}),
            "{id}.{name}"
        );
        let method = props["Method"].as_str().expect("Method").to_uppercase();
        let path = props["Path"].as_str().expect("Path").to_owned();
        assert!(
            template_routes.insert((method.clone(), path.clone(), id.clone())),
            "{method} {path} twice on {id}"
        );
    }
    let missing: Vec<_> = table.difference(&template_routes).collect();
    let extra: Vec<_> = template_routes.difference(&table).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "routes missing from the template (method, path, function): {missing:?}\n\
         template events that are no route of the table: {extra:?}"
    );
    // One method + path is served by one function only.
    let mut owners: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for (m, p, f) in &template_routes {
        owners
            .entry((m.clone(), p.clone()))
            .or_default()
            .push(f.clone());
    }
    for (route, fs) in owners {
        assert_eq!(fs.len(), 1, "{route:?} on {fs:?}");
    }
}

#[test]
fn iam_actions_json_follows_from_the_sdk_calls() {
    let iam = iam_actions();
    let sdk_to_iam = iam["sdk_to_iam"].as_object().expect("sdk_to_iam");
    let functions = iam["functions"].as_object().expect("functions");
    let names: BTreeSet<&str> = functions.keys().map(String::as_str).collect();
    let expected: BTreeSet<&str> = Function::ALL.iter().map(|f| f.name()).collect();
    assert_eq!(names, expected);
    for (name, f) in functions {
        let mut derived = BTreeSet::new();
        for call in strings(&f["sdk_calls"]) {
            let actions = sdk_to_iam
                .get(&call)
                .unwrap_or_else(|| panic!("{name}: {call} has no entry in sdk_to_iam"));
            derived.extend(strings(actions));
        }
        let listed: BTreeSet<String> = strings(&f["actions"]).into_iter().collect();
        assert_eq!(
            listed, derived,
            "{name}: actions must be exactly what its sdk_calls need"
        );
    }
}

/// Checks a statement's resources: no bare `*` (except for X-Ray, which has no resource-level
/// permissions) and every intrinsic names a resource of the template.
fn check_resources(t: &Value, role: &str, actions: &[String], res: &Value) {
    let list = match res {
        Value::Array(items) => items.clone(),
        other => vec![other.clone()],
    };
    assert!(!list.is_empty(), "{role}: statement without resources");
    for r in &list {
        match r {
            Value::String(s) if s == "*" => assert!(
                actions.iter().all(|a| a.starts_with("xray:")),
                "{role}: bare * resource for {actions:?}"
            ),
            Value::String(s) => assert!(!s.ends_with(":*:*"), "{role}: wildcard resource {s}"),
            Value::Object(o) => {
                if let Some(get_att) = o.get("Fn::GetAtt") {
                    let target = get_att[0].as_str().expect("Fn::GetAtt target");
                    assert!(
                        resources(t).contains_key(target),
                        "{role}: GetAtt of unknown {target}"
                    );
                } else if let Some(sub) = o.get("Fn::Sub") {
                    let s = sub.as_str().expect("Fn::Sub string");
                    let target = s
                        .strip_prefix("${")
                        .and_then(|rest| rest.split(['.', '}']).next())
                        .unwrap_or_else(|| {
                            panic!("{role}: resource {s} starts with no ${{X.Arn}}")
                        });
                    assert!(
                        resources(t).contains_key(target),
                        "{role}: Sub of unknown {target}"
                    );
                } else {
                    panic!("{role}: unexpected resource {r}");
                }
            }
            other => panic!("{role}: unexpected resource {other}"),
        }
    }
}

#[test]
fn each_role_grants_exactly_the_actions_iam_actions_json_lists() {
    let t = template();
    let iam = iam_actions();
    let runtime: BTreeSet<String> = strings(&iam["runtime"]).into_iter().collect();
    let mut roles = BTreeSet::new();
    for f in Function::ALL {
        let id = logical_id(f);
        let props = &resource(&t, &id)["Properties"];
        assert!(
            props["Policies"].is_null(),
            "{id}: grant through its role only"
        );
        let role_id = props["Role"]["Fn::GetAtt"][0]
            .as_str()
            .unwrap_or_else(|| panic!("{id}: Role must be Fn::GetAtt [<its role>, Arn]"))
            .to_owned();
        assert!(
            roles.insert(role_id.clone()),
            "{role_id} shared by two functions"
        );
        let role = resource(&t, &role_id);
        assert_eq!(role["Type"], "AWS::IAM::Role");
        let rp = &role["Properties"];
        assert!(
            rp["ManagedPolicyArns"].is_null(),
            "{role_id}: no managed policies"
        );
        let mut granted = BTreeSet::new();
        for policy in rp["Policies"].as_array().expect("inline policies") {
            for st in policy["PolicyDocument"]["Statement"]
                .as_array()
                .expect("statements")
            {
                assert_eq!(st["Effect"], "Allow", "{role_id}");
                assert!(st["NotAction"].is_null() && st["NotResource"].is_null());
                let actions = strings(&st["Action"]);
                for a in &actions {
                    assert!(!a.contains('*'), "{role_id}: wildcard action {a}");
                }
                check_resources(&t, &role_id, &actions, &st["Resource"]);
                granted.extend(actions);
            }
        }
        let mut expected: BTreeSet<String> = strings(&iam["functions"][f.name()]["actions"])
            .into_iter()
            .collect();
        expected.extend(runtime.iter().cloned());
        assert_eq!(
            granted,
            expected,
            "{role_id}: granted vs infra/iam-actions.json ({})",
            f.name()
        );
    }
}

/// The cursor secret: a Secrets Manager secret of the stack, its ARN in
/// `DSPY_STORAGE_CURSOR_SECRET_ARN` of exactly the functions that issue or read cursors, each of
/// which may `GetSecretValue` on that secret and nothing else; no other function may read it.
#[test]
fn the_cursor_secret_is_read_by_the_functions_that_issue_cursors_only() {
    let t = template();
    let secret = resource(&t, "CursorSecret");
    assert_eq!(secret["Type"], "AWS::SecretsManager::Secret");
    let generated = &secret["Properties"]["GenerateSecretString"];
    assert!(
        generated["PasswordLength"].as_u64().unwrap_or(0) >= 32,
        "a long random secret: {generated}"
    );
    assert!(
        t["Globals"]["Function"]["Environment"]["Variables"]["DSPY_STORAGE_CURSOR_SECRET_ARN"]
            .is_null(),
        "not global: only the functions that issue cursors get it"
    );
    let readers = [
        Function::Load,
        Function::Query,
        Function::Trend,
        Function::Cleanup,
    ];
    for f in Function::ALL {
        let id = logical_id(f);
        let env = &resource(&t, &id)["Properties"]["Environment"]["Variables"]
            ["DSPY_STORAGE_CURSOR_SECRET_ARN"];
        let role_id = resource(&t, &id)["Properties"]["Role"]["Fn::GetAtt"][0]
            .as_str()
            .unwrap()
            .to_owned();
        let mut grants = Vec::new();
        for policy in resource(&t, &role_id)["Properties"]["Policies"]
            .as_array()
            .unwrap()
        {
            for st in policy["PolicyDocument"]["Statement"].as_array().unwrap() {
                if strings(&st["Action"])
                    .iter()
                    .any(|a| a.starts_with("secretsmanager:"))
                {
                    assert_eq!(
                        strings(&st["Action"]),
                        ["secretsmanager:GetSecretValue"],
                        "{role_id}: only GetSecretValue"
                    );
                    grants.push(st["Resource"].clone());
                }
            }
        }
        if readers.contains(&f) {
            assert_eq!(
                *env,
                serde_json::json!({"Ref": "CursorSecret"}),
                "{id}: DSPY_STORAGE_CURSOR_SECRET_ARN"
            );
            assert_eq!(
                grants,
                [serde_json::json!([{"Fn::Sub": "${CursorSecret}"}])],
                "{role_id}: GetSecretValue on the cursor secret only"
            );
        } else {
            assert!(env.is_null(), "{id} issues no cursors: no secret");
            assert!(grants.is_empty(), "{role_id} issues no cursors: no secret");
        }
    }
}

#[test]
fn cleanup_and_backup_run_on_daily_schedules() {
    let t = template();
    let schedules = events(&t, "ScheduleV2");
    assert_eq!(schedules.len(), 2, "{schedules:?}");
    for (f, cron) in [
        (Function::Cleanup, "cron(0 2 * * ? *)"),
        (Function::Backup, "cron(0 3 * * ? *)"),
    ] {
        let id = logical_id(f);
        let (_, name, props) = schedules
            .iter()
            .find(|(fid, _, _)| *fid == id)
            .unwrap_or_else(|| panic!("{id} has no ScheduleV2 event"));
        assert_eq!(props["ScheduleExpression"], cron, "{id}.{name}");
        assert_eq!(props["ScheduleExpressionTimezone"], "UTC", "{id}.{name}");
        let input = props["Input"]["Fn::Sub"]
            .as_str()
            .expect("Input is Fn::Sub");
        let mut resolved = String::new();
        let mut rest = input;
        while let Some(start) = rest.find("${") {
            resolved.push_str(&rest[..start]);
            let end = rest[start..].find('}').expect("closing }") + start;
            resolved.push('1');
            rest = &rest[end + 1..];
        }
        resolved.push_str(rest);
        let event: Value = serde_json::from_str(&resolved).expect("Input is JSON");
        // Both functions dispatch scheduled events themselves (lambda::run_with_schedule): the
        // configured job, resumable across runs — not an HTTP call with API Gateway's budget.
        assert!(
            dspy_storage_functions::lambda::is_scheduled_event(&event),
            "{id}.{name}: schedule input {event} is no scheduled event"
        );
    }
}

#[test]
fn table_has_the_keys_and_indexes_of_core() {
    let t = template();
    let table = resource(&t, "Table");
    assert_eq!(table["Type"], "AWS::DynamoDB::Table");
    let p = &table["Properties"];
    assert_eq!(p["BillingMode"], "PAY_PER_REQUEST");
    assert_eq!(
        p["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"],
        true
    );
    assert_eq!(p["SSESpecification"]["SSEEnabled"], true);
    let keys = |v: &Value| -> Vec<(String, String)> {
        v.as_array()
            .expect("KeySchema")
            .iter()
            .map(|k| {
                (
                    k["AttributeName"].as_str().expect("name").to_owned(),
                    k["KeyType"].as_str().expect("type").to_owned(),
                )
            })
            .collect()
    };
    let pair = |pk: &str, sk: &str| vec![(pk.into(), "HASH".into()), (sk.into(), "RANGE".into())];
    assert_eq!(keys(&p["KeySchema"]), pair("PK", "SK"));
    // Each index is `Fn::If: [condition, definition, AWS::NoValue]` (IndexMigrationStep): the
    // keys-only indexes of core under their names, then the old ones (every attribute).
    use dspy_storage_core::backend::Index;
    let gsis = p["GlobalSecondaryIndexes"].as_array().expect("GSIs");
    assert_eq!(gsis.len(), 8);
    let mut conditional = Vec::new();
    for (i, gsi) in gsis.iter().enumerate() {
        let index = Index::GSIS[i % 4];
        let branches = gsi["Fn::If"].as_array().expect("Fn::If");
        assert_eq!(branches[2], serde_json::json!({"Ref": "AWS::NoValue"}));
        let def = &branches[1];
        assert_eq!(
            keys(&def["KeySchema"]),
            pair(index.pk_attr(), index.sk_attr())
        );
        if i < 4 {
            assert_eq!(def["IndexName"], index.name());
            let extra: Vec<&str> = index.projected().to_vec();
            if extra.is_empty() {
                assert_eq!(
                    def["Projection"],
                    serde_json::json!({"ProjectionType": "KEYS_ONLY"})
                );
            } else {
                assert_eq!(
                    def["Projection"],
                    serde_json::json!({"ProjectionType": "INCLUDE", "NonKeyAttributes": extra})
                );
            }
        } else {
            assert_eq!(def["IndexName"], index.legacy_name());
            assert_eq!(
                def["Projection"],
                serde_json::json!({"ProjectionType": "ALL"})
            );
        }
        let name = def["IndexName"].as_str().unwrap().to_owned();
        conditional.push((branches[0].as_str().expect("a condition").to_owned(), name));
    }
    // The steps: 0 = the old indexes, 8 (the default) = the new ones, and each step adds or
    // removes exactly one index (CloudFormation's limit per update).
    let step = &t["Parameters"]["IndexMigrationStep"];
    assert_eq!(step["Default"], "8");
    let present = |s: &str| -> BTreeSet<String> {
        conditional
            .iter()
            .filter(|(c, _)| condition_holds(&t["Conditions"][c.as_str()], "IndexMigrationStep", s))
            .map(|(_, n)| n.clone())
            .collect()
    };
    let names = |f: fn(Index) -> &'static str| -> BTreeSet<String> {
        Index::GSIS.iter().map(|i| f(*i).to_owned()).collect()
    };
    assert_eq!(present("0"), names(Index::legacy_name));
    assert_eq!(present("8"), names(Index::name));
    for s in 0..8 {
        let (a, b) = (present(&s.to_string()), present(&(s + 1).to_string()));
        assert_eq!(
            a.symmetric_difference(&b).count(),
            1,
            "step {s} -> {}: {a:?} -> {b:?}",
            s + 1
        );
    }
    for attr in p["AttributeDefinitions"].as_array().expect("attributes") {
        assert_eq!(attr["AttributeType"], "S", "{attr}");
    }
}

/// Evaluates a template condition built of `Fn::Equals` (a `Ref` to `param` and a string),
/// `Fn::Or` and `Fn::Not`, with `param` = `value`.
fn condition_holds(c: &Value, param: &str, value: &str) -> bool {
    if let Some(args) = c["Fn::Equals"].as_array() {
        assert_eq!(args[0], serde_json::json!({ "Ref": param }), "{c}");
        return args[1].as_str() == Some(value);
    }
    if let Some(args) = c["Fn::Or"].as_array() {
        return args.iter().any(|a| condition_holds(a, param, value));
    }
    if let Some(args) = c["Fn::Not"].as_array() {
        return !condition_holds(&args[0], param, value);
    }
    panic!("unexpected condition {c}");
}

/// `cargo lambda watch` (the local Lambda loop) routes like API Gateway: the router in the
/// workspace `Cargo.toml` (`[workspace.metadata.lambda.watch.router]`) sends every route of the route
/// table to its function, and nothing else.
#[test]
fn cargo_lambda_watch_router_is_the_route_table() {
    let text = std::fs::read_to_string(repo_root().join("Cargo.toml")).expect("Cargo.toml");
    let manifest: toml::Value = toml::from_str(&text).expect("Cargo.toml parses");
    let lambda = &manifest["workspace"]["metadata"]["lambda"];
    let router = lambda["watch"]["router"]
        .as_table()
        .expect("[workspace.metadata.lambda.watch.router]");
    let mut listed = BTreeSet::new();
    for (path, routes) in router {
        for r in routes.as_array().expect("a list of {method, function}") {
            let method = r["method"].as_str().expect("method").to_owned();
            let function = r["function"].as_str().expect("function").to_owned();
            assert!(
                listed.insert((method.clone(), path.clone(), function)),
                "{method} {path} listed twice"
            );
        }
    }
    let expected: BTreeSet<(String, String, String)> = all_routes()
        .iter()
        .map(|r| {
            (
                r.method.as_str().to_owned(),
                r.path.to_owned(),
                r.function.name().to_owned(),
            )
        })
        .collect();
    assert_eq!(listed, expected);
    let env = lambda["env"]
        .as_table()
        .expect("[workspace.metadata.lambda.env]");
    for key in ["DSPY_STORAGE_TABLE", "DSPY_STORAGE_BUCKET"] {
        assert!(env.contains_key(key), "the local loop sets {key}");
    }
}

/// `infra/template-jwt.yaml` is `infra/template.yaml` with the JWT authorizer attached to every
/// route (SAM takes `DefaultAuthorizer` only as a literal, so a parameter cannot switch it): this
/// test derives it and compares; `UPDATE_TEMPLATES=1` writes it.
#[test]
fn jwt_template_is_the_iam_template_with_the_jwt_authorizer_on_every_route() {
    let root = repo_root();
    let iam = std::fs::read_to_string(root.join("infra/template.yaml")).unwrap();
    let want = jwt_template(&iam);
    let path = root.join("infra/template-jwt.yaml");
    if std::env::var("UPDATE_TEMPLATES").is_ok_and(|v| v == "1") {
        std::fs::write(&path, &want).unwrap();
    }
    let have = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        have == want,
        "infra/template-jwt.yaml is out of date: UPDATE_TEMPLATES=1 cargo test -p \
         dspy-storage-functions --test infra"
    );
    // The derived template: JWT on every route by default, everything else the same.
    let yaml: serde_yaml::Value = serde_yaml::from_str(&want).expect("template-jwt.yaml parses");
    let jwt = serde_json::to_value(yaml).unwrap();
    let auth = &resource(&jwt, "HttpApi")["Properties"]["Auth"];
    assert_eq!(auth["DefaultAuthorizer"], "JwtAuthorizer");
    let config = &auth["Authorizers"]["JwtAuthorizer"]["JwtConfiguration"];
    assert_eq!(config["issuer"], serde_json::json!({"Ref": "JwtIssuer"}));
    assert_eq!(
        config["audience"],
        serde_json::json!({"Ref": "JwtAudience"})
    );
    assert!(jwt["Parameters"]["JwtIssuer"].get("Default").is_none());
    let original = template();
    let (a, b) = (resources(&original), resources(&jwt));
    assert_eq!(
        a.keys().collect::<Vec<_>>(),
        b.keys().collect::<Vec<_>>(),
        "same resources"
    );
    for (id, r) in b {
        if id != "HttpApi" {
            assert_eq!(r, &a[id], "{id} is the same in both templates");
        }
    }
}

/// Replaces `old` (which must occur exactly once) by `new`.
fn replace_once(text: &str, old: &str, new: &str) -> String {
    assert_eq!(
        text.matches(old).count(),
        1,
        "template.yaml no longer has exactly one {old:?}: update jwt_template"
    );
    text.replacen(old, new, 1)
}

fn jwt_template(iam: &str) -> String {
    let mut t = replace_once(
        iam,
        "# dspy-storage on AWS:",
        "# GENERATED from infra/template.yaml by functions/tests/infra.rs (UPDATE_TEMPLATES=1 cargo\n\
         # test -p dspy-storage-functions --test infra): edit template.yaml, never this file.\n\
         # The same stack with the JWT authorizer on every route: callers send\n\
         # `Authorization: Bearer <JWT>` whose claims dspy_projects and dspy_role decide access.\n\
         #\n\
         # dspy-storage on AWS:",
    );
    t = replace_once(
        &t,
        "        DefaultAuthorizer: AWS_IAM\n",
        "        DefaultAuthorizer: JwtAuthorizer\n        \
         Authorizers:\n          \
         JwtAuthorizer:\n            \
         IdentitySource: $request.header.Authorization\n            \
         JwtConfiguration:\n              \
         issuer: {Ref: JwtIssuer}\n              \
         audience: {Ref: JwtAudience}\n",
    );
    t = replace_once(
        &t,
        "  IamCallerRole:\n",
        "  JwtIssuer:\n    Type: String\n    MinLength: 1\n    \
         ConstraintDescription: the JWT template needs the issuer URL of the tokens.\n    \
         Description: Issuer URL of the tokens (the JWT authorizer checks their signature, issuer, \
         audience and expiry).\n  \
         JwtAudience:\n    Type: CommaDelimitedList\n    \
         Description: Audiences the JWT authorizer accepts (the aud claim).\n  \
         IamCallerRole:\n",
    );
    t
}
