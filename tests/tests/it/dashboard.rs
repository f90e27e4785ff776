//! The web dashboard (`/ui/`) through the router `dspy-storage serve` runs (the dashboard merged
//! with the API), on both backends: every page renders the stored data, escapes hostile text and
//! sends its Content-Security-Policy; forms need the CSRF token; a stale alias move is a conflict;
//! access follows the API's roles and projects. Also the API additions the dashboard reads:
//! `GET /projects` and `GET /signatures?sort=updated` (with the cleanup run's backfill of heads
//! written before that index).

use std::sync::Arc;

use axum::body::Body;
use dspy_storage_core::access::{Principal, Role, Scope};
use dspy_storage_core::backend::{Index, WriteOp};
use dspy_storage_functions::auth::{AccessControl, TokenTable};
use dspy_storage_functions::AppState;
use dspy_storage_tests::{backends, Answer, Client, Kind, TestStore};
use dspy_storage_ui::layout::enc;
use http::Method;
use serde_json::{json, Value};

/// The router of `serve`: the dashboard over the API, merged with the API.
fn dashboard(ts: &TestStore, access: AccessControl) -> Client {
    let sign_in = !access.is_off();
    let state = AppState::new(ts.storage.clone()).with_access(access);
    let api = dspy_storage_functions::app(state.clone());
    Client {
        router: dspy_storage_ui::router(api.clone(), sign_in).merge(api),
    }
}

const HOSTILE: &str = "<script>alert('pwned')</script>";

fn program(instructions: &str, demo_answer: &str) -> Value {
    json!({
        "predict": {
            "demos": [{"question": "Capital of France?", "answer": demo_answer}],
            "signature": {
                "instructions": instructions,
                "fields": [
                    {"prefix": "Question:", "description": "the question"},
                    {"prefix": "Answer:", "description": "a short answer"}
                ]
            },
            "lm": null
        },
        "metadata": {"dependency_versions": {"python": "3.11", "dspy": "3.0.0"}}
    })
}

/// Stores three versions of `qa.Answer` (hostile text in instructions, tags, description) with
/// metric records, and `production` → 1.0.1. Returns the ids.
async fn fill(client: &Client, k: Kind) -> Vec<String> {
    let mut ids = vec![];
    for (i, acc) in [0.81, 0.86, 0.9].iter().enumerate() {
        let body = json!({
            "program": program(&format!("Answer in one word. Step {i}. {HOSTILE}"), &format!("Paris {i}")),
            "metadata": {"signature": "qa.Answer", "optimization_method": "miprov2",
                          "performance": {"accuracy": acc}, "tags": ["exp", "<img src=x onerror=alert(1)>"],
                          "description": HOSTILE}
        });
        let a = client.post_json("/programs", &body).await;
        ids.push(a.expect(k, "store", 201)["id"].as_str().unwrap().to_owned());
    }
    client
        .request(
            Method::PUT,
            "/signatures/qa.Answer/aliases/production",
            &[("content-type", "application/json")],
            json!({"version": "1.0.1"}).to_string(),
        )
        .await
        .expect_status(k, "alias", 200);
    let records: Vec<Value> = (0..6)
        .map(|d| json!({"metrics": {"accuracy": 0.8 + d as f64 / 100.0, "latency": 1.5}, "environment": {"host": "<b>m</b>"}}))
        .collect();
    client
        .post_json(
            &format!("/programs/{}/metrics", ids[2]),
            &json!({ "records": records }),
        )
        .await
        .expect_status(k, "metrics", 201);
    ids
}

fn html(a: &Answer, k: Kind, what: &str, status: u16) -> String {
    a.expect_status(k, what, status);
    assert_eq!(
        a.headers["content-security-policy"],
        dspy_storage_ui::CSP,
        "{k:?}: {what}: CSP"
    );
    assert_eq!(
        a.headers["content-type"], "text/html; charset=utf-8",
        "{k:?}: {what}"
    );
    let body = String::from_utf8(a.body.to_vec()).unwrap();
    // No hostile value reaches the page unescaped; the page itself has no script at all.
    assert!(
        !body.contains("<script") && !body.contains("<img src=x") && !body.contains("<b>m</b>"),
        "{k:?}: {what}: unescaped user text in {body}"
    );
    body
}

/// The CSRF cookie a page set (`dspy_csrf=…`), as a `Cookie` header value.
fn csrf_cookie(a: &Answer) -> (String, String) {
    let set = a
        .headers
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .find(|v| v.starts_with("dspy_csrf="))
        .expect("the page sets the CSRF cookie");
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Strict"),
        "{set}"
    );
    let value = set["dspy_csrf=".len()..]
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    (format!("dspy_csrf={value}"), value)
}

fn form(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={}", enc(v)))
        .collect::<Vec<_>>()
        .join("&")
}

async fn post_form(client: &Client, uri: &str, cookie: &str, pairs: &[(&str, &str)]) -> Answer {
    client
        .request(
            Method::POST,
            uri,
            &[
                ("content-type", "application/x-www-form-urlencoded"),
                ("cookie", cookie),
            ],
            form(pairs),
        )
        .await
}

async fn alias_target(client: &Client, k: Kind, alias: &str) -> String {
    client
        .get(&format!("/signatures/qa.Answer/aliases/{alias}"))
        .await
        .expect(k, "alias target", 200)["version"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn every_page_shows_the_stored_data_escaped_under_a_strict_csp() {
    for ts in backends().await {
        let k = ts.kind;
        let ui = dashboard(&ts, AccessControl::Off);
        let ids = fill(&ui, k).await;

        let a = ui.get("/").await;
        assert_eq!(a.status.as_u16(), 303, "{k:?}: / redirects");
        assert_eq!(a.headers["location"], "/ui/");

        let page = html(&ui.get("/ui/").await, k, "signatures", 200);
        for want in [
            "qa.Answer",
            "1.0.2",
            "0.9",
            "production → 1.0.1",
            "Access control is OFF",
        ] {
            assert!(page.contains(want), "{k:?}: signatures page lacks {want:?}");
        }
        let page = html(&ui.get("/ui/?sort=updated").await, k, "by update", 200);
        assert!(page.contains("qa.Answer") && page.contains("<strong>recently updated</strong>"));

        let page = html(
            &ui.get("/ui/signatures/qa.Answer").await,
            k,
            "signature",
            200,
        );
        for want in [
            "1.0.0",
            "1.0.1",
            "1.0.2",
            "miprov2",
            "production",
            "exp",
            "&lt;img src=x onerror=alert(1)&gt;",
            "/ui/signatures/qa.Answer/trends.svg?project=default&amp;days=90",
            "name=\"expected_version\" value=\"1.0.1\"",
            "name=\"csrf\"",
        ] {
            assert!(page.contains(want), "{k:?}: signature page lacks {want:?}");
        }

        let p = format!("/ui/programs/{}", ids[2]);
        let page = html(&ui.get(&p).await, k, "program", 200);
        for want in [
            "Answer in one word. Step 2. &lt;script&gt;alert('pwned')&lt;/script&gt;",
            "Paris 2",
            "Question:",
            "a short answer",
            "✓ verified",
            "active",
            "&lt;b&gt;m&lt;/b&gt;",
            "0.85",
        ] {
            assert!(page.contains(want), "{k:?}: program page lacks {want:?}");
        }
        let sha = ui
            .get(&format!("/programs/{}/metadata", ids[2]))
            .await
            .json()["sha256"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(page.contains(&sha), "{k:?}: the page shows the sha256");

        let page = html(
            &ui.get(&format!("{p}?with=1.0.0")).await,
            k,
            "compatibility",
            200,
        );
        assert!(page.contains("Compatible"), "{k:?}: compatibility");
        assert!(page.contains("Find similar programs") && !page.contains(">qa.Answer 1.0.1</a>"));
        let page = html(&ui.get(&format!("{p}?similar=1")).await, k, "similar", 200);
        assert!(
            page.contains(">qa.Answer 1.0.1</a>") && page.contains(">qa.Answer 1.0.0</a>"),
            "{k:?}: similar programs"
        );

        let svg = ui.get(&format!("{p}/trends.svg?days=90")).await;
        svg.expect_status(k, "chart", 200);
        assert_eq!(svg.headers["content-type"], "image/svg+xml; charset=utf-8");
        assert!(String::from_utf8_lossy(&svg.body).contains("<svg"));
        assert!(!String::from_utf8_lossy(&svg.body).contains("<b>m</b>"));

        let download = ui.get(&format!("{p}/download")).await;
        download.expect_status(k, "download", 200);
        let exact = ui.get(&format!("/programs/{}/program", ids[2])).await;
        assert_eq!(download.body, exact.body, "{k:?}: the exact stored bytes");
        assert_eq!(
            download.headers["content-disposition"],
            "attachment; filename=\"qa.Answer-1.0.2.json\""
        );

        let page = html(
            &ui.get("/ui/diff/qa.Answer?from=1.0.0&to=1.0.2").await,
            k,
            "diff",
            200,
        );
        for want in [
            "class=\"del\"><pre>Answer in one word. Step 0. &lt;script&gt;",
            "class=\"add\"><pre>Answer in one word. Step 2. &lt;script&gt;",
            "Paris 0",
            "Paris 2",
            "changed",
        ] {
            assert!(
                page.contains(want),
                "{k:?}: diff page lacks {want:?}: {page}"
            );
        }

        let page = html(
            &ui.get("/ui/search?q=miprov2%20performance%3E0.85").await,
            k,
            "search",
            200,
        );
        assert!(
            page.contains("1.0.2") && !page.contains(">1.0.0<"),
            "{k:?}: search results"
        );
        let page = html(
            &ui.get("/ui/search?q=performance%3E").await,
            k,
            "bad query",
            400,
        );
        assert!(
            page.contains("position 12") && page.contains("<mark>"),
            "{k:?}: {page}"
        );

        let page = html(
            &ui.get("/ui/monitoring?preview=cleanup").await,
            k,
            "monitoring",
            200,
        );
        assert!(
            page.contains("total programs") && page.contains("Would archive"),
            "{k:?}"
        );

        let page = html(
            &ui.get("/ui/programs/00000000-0000-7000-8000-000000000000")
                .await,
            k,
            "missing",
            404,
        );
        assert!(page.contains("not_found"), "{k:?}");
    }
}

#[tokio::test]
async fn forms_need_the_csrf_token_and_a_stale_alias_move_is_a_conflict() {
    for ts in backends().await {
        let k = ts.kind;
        let ui = dashboard(&ts, AccessControl::Off);
        fill(&ui, k).await;
        let page = ui.get("/ui/signatures/qa.Answer").await;
        let (cookie, csrf) = csrf_cookie(&page);
        let uri = "/ui/signatures/qa.Answer/alias";
        let mv = |token: &'static str| {
            vec![
                ("project", "default"),
                ("alias", "production"),
                ("expected_version", "1.0.1"),
                ("version", "1.0.2"),
                ("csrf", token),
            ]
        };
        // No CSRF cookie, a wrong field, no field: 403, nothing moves.
        let a = post_form(
            &ui,
            uri,
            "",
            &[
                ("alias", "production"),
                ("version", "1.0.2"),
                ("csrf", &csrf),
            ],
        )
        .await;
        a.expect_status(k, "no cookie", 403);
        let a = post_form(
            &ui,
            uri,
            &cookie,
            &mv("0000000000000000000000000000000000000000000000000000000000000000"),
        )
        .await;
        a.expect_status(k, "wrong token", 403);
        let a = post_form(
            &ui,
            uri,
            &cookie,
            &[("alias", "production"), ("version", "1.0.2")],
        )
        .await;
        a.expect_status(k, "no token", 403);
        assert_eq!(alias_target(&ui, k, "production").await, "1.0.1");

        // With it: the move lands (303 back to the page, with its notice).
        let mut pairs = mv("x");
        pairs[4] = ("csrf", &csrf);
        let a = post_form(&ui, uri, &cookie, &pairs).await;
        a.expect_status(k, "move", 303);
        let back = a.headers["location"].to_str().unwrap().to_owned();
        assert!(
            back.starts_with("/ui/signatures/qa.Answer?project=default&done=moved"),
            "{back}"
        );
        assert_eq!(alias_target(&ui, k, "production").await, "1.0.2");
        let page = html(&ui.get(&back).await, k, "after the move", 200);
        assert!(page.contains("Alias production now points at 1.0.2."));

        // The same form again: its expected version (1.0.1) is stale now: 409, nothing moves.
        pairs[3] = ("version", "1.0.0");
        let page = html(
            &post_form(&ui, uri, &cookie, &pairs).await,
            k,
            "stale move",
            409,
        );
        assert!(page.contains("409 conflict"), "{k:?}: {page}");
        assert_eq!(alias_target(&ui, k, "production").await, "1.0.2");

        // A new alias must not exist yet (expected_version empty).
        let new = [
            ("project", "default"),
            ("alias", "staging"),
            ("expected_version", ""),
            ("version", "1.0.0"),
            ("csrf", csrf.as_str()),
        ];
        post_form(&ui, uri, &cookie, &new)
            .await
            .expect_status(k, "new alias", 303);
        assert_eq!(alias_target(&ui, k, "staging").await, "1.0.0");
        html(
            &post_form(&ui, uri, &cookie, &new).await,
            k,
            "exists already",
            409,
        );

        // Remove, roll back, tags, delete with the alias-target protection.
        post_form(
            &ui,
            "/ui/signatures/qa.Answer/alias/remove",
            &cookie,
            &[
                ("project", "default"),
                ("alias", "staging"),
                ("csrf", &csrf),
            ],
        )
        .await
        .expect_status(k, "remove", 303);
        ui.get("/signatures/qa.Answer/aliases/staging")
            .await
            .expect_status(k, "removed", 404);
        let a = post_form(
            &ui,
            "/ui/signatures/qa.Answer/rollback",
            &cookie,
            &[
                ("project", "default"),
                ("to_version", "1.0.0"),
                ("csrf", &csrf),
            ],
        )
        .await;
        a.expect_status(k, "rollback", 303);
        assert!(a.headers["location"]
            .to_str()
            .unwrap()
            .contains("version=1.0.3"));
        let target = ui
            .get("/signatures/qa.Answer/aliases/production")
            .await
            .json();
        let id = target["id"].as_str().unwrap().to_owned();
        let updated = target["updated_at"].as_str().unwrap().to_owned();
        let a = post_form(
            &ui,
            &format!("/ui/programs/{id}/tags"),
            &cookie,
            &[
                ("add", "golden, reviewed"),
                ("expected_updated_at", &updated),
                ("csrf", &csrf),
            ],
        )
        .await;
        a.expect_status(k, "tags", 303);
        let tags =
            ui.get(&format!("/programs/{id}/metadata")).await.json()["metadata"]["tags"].clone();
        assert_eq!(
            tags,
            json!(["exp", "<img src=x onerror=alert(1)>", "golden", "reviewed"])
        );
        let listing = ui.get("/signatures/qa.Answer/versions").await.json();
        assert_eq!(
            listing["versions"][2]["tags"], tags,
            "{k:?}: the version listing has the new tags"
        );
        assert_eq!(listing["aliases"], json!({"production": "1.0.2"}));
        // The page's expected_updated_at is stale now: 409.
        html(
            &post_form(
                &ui,
                &format!("/ui/programs/{id}/tags"),
                &cookie,
                &[
                    ("remove", "golden"),
                    ("expected_updated_at", &updated),
                    ("csrf", &csrf),
                ],
            )
            .await,
            k,
            "stale tags",
            409,
        );
        let del = |force: &'static str| {
            vec![
                ("project", "default"),
                ("signature", "qa.Answer"),
                ("version", "1.0.2"),
                ("force", force),
            ]
        };
        let mut d = del("");
        d.push(("csrf", &csrf));
        let page = html(
            &post_form(&ui, &format!("/ui/programs/{id}/delete"), &cookie, &d).await,
            k,
            "delete an alias target",
            409,
        );
        assert!(page.contains("409 conflict"));
        let mut d = del("true");
        d.push(("csrf", &csrf));
        post_form(&ui, &format!("/ui/programs/{id}/delete"), &cookie, &d)
            .await
            .expect_status(k, "forced delete", 303);
        ui.get(&format!("/programs/{id}"))
            .await
            .expect_status(k, "deleted", 404);
    }
}

fn tokens() -> AccessControl {
    let p = |id: &str, scope: Scope, role| Principal::new(id, scope, role);
    let only_a = || Scope::from_names(["team-a"]).unwrap();
    AccessControl::Tokens(Arc::new(
        TokenTable::default()
            .with_token("reader-a", p("reader-a", only_a(), Role::Reader))
            .with_token("writer-a", p("writer-a", only_a(), Role::Writer))
            .with_token("admin", p("admin", Scope::All, Role::Admin)),
    ))
}

/// Signs in with `token`: the cookie header to send afterwards.
async fn sign_in(ui: &Client, k: Kind, token: &str) -> (String, String) {
    let login = ui.get("/ui/login?next=/ui/search").await;
    html(&login, k, "sign-in form", 200);
    let (cookie, csrf) = csrf_cookie(&login);
    let a = post_form(
        ui,
        "/ui/login",
        &cookie,
        &[("token", token), ("next", "/ui/search"), ("csrf", &csrf)],
    )
    .await;
    a.expect_status(k, "sign in", 303);
    assert_eq!(a.headers["location"], "/ui/search");
    let set = a.headers["set-cookie"].to_str().unwrap().to_owned();
    assert!(
        set.starts_with("dspy_token=")
            && set.contains("HttpOnly")
            && set.contains("SameSite=Strict"),
        "{set}"
    );
    let token_cookie = set.split(';').next().unwrap().to_owned();
    (format!("{cookie}; {token_cookie}"), csrf)
}

async fn get_as(ui: &Client, uri: &str, cookie: &str) -> Answer {
    ui.request(Method::GET, uri, &[("cookie", cookie)], Body::empty())
        .await
}

#[tokio::test]
async fn pages_and_actions_follow_the_api_roles_and_projects() {
    for ts in backends().await {
        let k = ts.kind;
        let api = ts.client();
        for (project, sig) in [("team-a", "a.Sig"), ("team-b", "b.Secret")] {
            for _ in 0..2 {
                api.post_json(
                    "/programs",
                    &json!({"program": program("Be brief.", "x"),
                    "metadata": {"signature": sig, "project": project, "performance": 0.5}}),
                )
                .await
                .expect_status(k, "store", 201);
            }
        }
        let ui = dashboard(&ts, tokens());

        // Signed out: every page sends to the sign-in form; a bad token is refused.
        let a = ui.get("/ui/?project=team-a").await;
        a.expect_status(k, "signed out", 303);
        assert_eq!(
            a.headers["location"],
            "/ui/login?next=%2Fui%2F%3Fproject%3Dteam-a"
        );
        let login = ui.get("/ui/login").await;
        let (cookie, csrf) = csrf_cookie(&login);
        let page = html(
            &post_form(
                &ui,
                "/ui/login",
                &cookie,
                &[("token", "nope"), ("csrf", &csrf)],
            )
            .await,
            k,
            "bad token",
            401,
        );
        assert!(page.contains("unknown token"));
        post_form(&ui, "/ui/login", &cookie, &[("token", "admin")])
            .await
            .expect_status(k, "login without csrf", 403);

        // A reader of team-a sees team-a only; team-b is "not found" like a missing project.
        let (reader, rcsrf) = sign_in(&ui, k, "reader-a").await;
        let page = html(&get_as(&ui, "/ui/", &reader).await, k, "reader home", 200);
        assert!(
            page.contains("a.Sig") && page.contains("<option value=\"team-a\" selected>"),
            "{k:?}: {page}"
        );
        assert!(!page.contains("team-b") && !page.contains("Access control is OFF"));
        let page = html(
            &get_as(&ui, "/ui/?project=team-b", &reader).await,
            k,
            "other project",
            404,
        );
        assert!(!page.contains("b.Secret"));
        html(
            &get_as(&ui, "/ui/signatures/b.Secret?project=team-b", &reader).await,
            k,
            "other signature",
            404,
        );
        let page = html(
            &get_as(&ui, "/ui/search?q=Secret", &reader).await,
            k,
            "reader search",
            200,
        );
        assert!(!page.contains("b.Secret"));
        // ... and may not write: the API's 403, nothing moves.
        let mv = [
            ("project", "team-a"),
            ("alias", "production"),
            ("version", "1.0.0"),
            ("csrf", rcsrf.as_str()),
        ];
        let page = html(
            &post_form(&ui, "/ui/signatures/a.Sig/alias", &reader, &mv).await,
            k,
            "reader moves",
            403,
        );
        assert!(page.contains("needs the writer role"), "{k:?}: {page}");
        api.get("/signatures/a.Sig/aliases/production?project=team-a")
            .await
            .expect_status(k, "no alias", 404);

        // A writer may move aliases but not archive (admin) nor preview cleanup (admin).
        let (writer, wcsrf) = sign_in(&ui, k, "writer-a").await;
        let mv = [
            ("project", "team-a"),
            ("alias", "production"),
            ("version", "1.0.0"),
            ("csrf", wcsrf.as_str()),
        ];
        post_form(&ui, "/ui/signatures/a.Sig/alias", &writer, &mv)
            .await
            .expect_status(k, "writer moves", 303);
        let id = api
            .get("/signatures/a.Sig/aliases/production?project=team-a")
            .await
            .expect(k, "moved", 200)["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let page = html(
            &post_form(
                &ui,
                &format!("/ui/programs/{id}/archive"),
                &writer,
                &[("csrf", &wcsrf)],
            )
            .await,
            k,
            "writer archives",
            403,
        );
        assert!(page.contains("needs the admin role"));
        assert_eq!(
            api.get(&format!("/programs/{id}/metadata")).await.json()["status"],
            "active"
        );
        let page = html(
            &get_as(&ui, "/ui/monitoring?preview=cleanup", &writer).await,
            k,
            "writer cleanup preview",
            403,
        );
        assert!(page.contains("needs the admin role"));
        // A writer's forms do not reach team-b either.
        let b_id = api
            .get("/signatures/b.Secret/versions/latest?project=team-b")
            .await
            .json()["id"]
            .as_str()
            .unwrap()
            .to_owned();
        html(
            &post_form(
                &ui,
                &format!("/ui/programs/{b_id}/archive"),
                &writer,
                &[("csrf", &wcsrf)],
            )
            .await,
            k,
            "writer on team-b",
            403,
        );
        html(
            &get_as(&ui, &format!("/ui/programs/{b_id}"), &writer).await,
            k,
            "writer reads team-b",
            404,
        );
        let a = get_as(&ui, &format!("/ui/programs/{b_id}/download"), &writer).await;
        a.expect_status(k, "writer downloads team-b", 404);

        // The admin sees both projects and may archive.
        let (admin, acsrf) = sign_in(&ui, k, "admin").await;
        let page = html(
            &get_as(&ui, "/ui/?project=team-b", &admin).await,
            k,
            "admin",
            200,
        );
        assert!(page.contains("b.Secret") && page.contains("<option value=\"team-a\">"));
        post_form(
            &ui,
            &format!("/ui/programs/{id}/archive"),
            &admin,
            &[("csrf", &acsrf)],
        )
        .await
        .expect_status(k, "admin archives", 303);
        assert_eq!(
            api.get(&format!("/programs/{id}/metadata")).await.json()["status"],
            "archived"
        );
        let page = html(
            &get_as(&ui, &format!("/ui/programs/{id}"), &admin).await,
            k,
            "archived program",
            200,
        );
        assert!(page.contains("not read (archived)") && page.contains("Restore"));

        // Signing out forgets the token.
        let a = post_form(&ui, "/ui/logout", &admin, &[("csrf", &acsrf)]).await;
        a.expect_status(k, "sign out", 303);
        assert!(a.headers["set-cookie"]
            .to_str()
            .unwrap()
            .starts_with("dspy_token=;"));
    }
}

#[tokio::test]
async fn projects_and_signatures_by_last_update() {
    for ts in backends().await {
        let k = ts.kind;
        let api = ts.client();
        for (project, sig) in [
            ("p-one", "s.b"),
            ("p-one", "s.a"),
            ("p-two", "s.c"),
            ("p-one", "s.b"),
        ] {
            api.post_json(
                "/programs",
                &json!({"program": {"x": 1}, "metadata": {"signature": sig, "project": project}}),
            )
            .await
            .expect_status(k, "store", 201);
        }
        if let Some(c) = &ts.counter {
            c.reset();
        }
        let projects = api.get("/projects").await.expect(k, "projects", 200);
        assert_eq!(projects, json!({"projects": ["p-one", "p-two"]}));
        if let Some(c) = &ts.counter {
            // One single-item index read per project, and one that finds none after the last.
            assert_eq!(
                c.snapshot(),
                [("DynamoDB.Query".to_owned(), 3)].into_iter().collect(),
                "{k:?}"
            );
        }
        let names = |v: &Value| -> Vec<String> {
            v["signatures"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s["signature"].as_str().unwrap().to_owned())
                .collect()
        };
        let by_name = api
            .get("/signatures?project=p-one")
            .await
            .expect(k, "by name", 200);
        assert_eq!(names(&by_name), ["s.a", "s.b"]);
        let by_update = api
            .get("/signatures?project=p-one&sort=updated")
            .await
            .expect(k, "by update", 200);
        assert_eq!(
            names(&by_update),
            ["s.b", "s.a"],
            "{k:?}: s.b was stored last"
        );
        // Paging by update, and a cursor of one order refused by the other.
        let page1 = api
            .get("/signatures?project=p-one&sort=updated&limit=1")
            .await
            .json();
        assert_eq!(names(&page1), ["s.b"]);
        let cursor = page1["next_cursor"].as_str().unwrap();
        let page2 = api
            .get(&format!(
                "/signatures?project=p-one&sort=updated&limit=1&cursor={cursor}"
            ))
            .await
            .json();
        assert_eq!(names(&page2), ["s.a"]);
        api.get(&format!(
            "/signatures?project=p-one&sort=name&limit=1&cursor={cursor}"
        ))
        .await
        .expect_error(k, "cursor of another order", 400, "invalid_request");
        let e = api
            .get("/signatures?project=p-one&sort=size")
            .await
            .expect_error(k, "bad sort", 400, "invalid_request");
        assert_eq!(e["error"]["field"], "sort");

        // A head written before the index (no GSI3 keys) is missing from the by-update order
        // until a real cleanup run writes it again with them.
        let head = ts
            .storage
            .items()
            .get("SIG#p-one#s.a", "HEAD")
            .await
            .unwrap()
            .unwrap();
        let mut old = head.clone();
        old.attrs.remove(Index::Gsi3.pk_attr());
        old.attrs.remove(Index::Gsi3.sk_attr());
        ts.storage
            .items()
            .transact(vec![WriteOp::put(
                old,
                dspy_storage_core::backend::Condition::None,
            )])
            .await
            .unwrap();
        assert_eq!(
            names(
                &api.get("/signatures?project=p-one&sort=updated")
                    .await
                    .json()
            ),
            ["s.b"]
        );
        api.post_json("/maintenance/cleanup", &json!({"dry_run": true}))
            .await
            .expect_status(k, "dry run", 200);
        assert_eq!(
            names(
                &api.get("/signatures?project=p-one&sort=updated")
                    .await
                    .json()
            ),
            ["s.b"],
            "a dry run changes nothing"
        );
        api.post_json("/maintenance/cleanup", &json!({"dry_run": false}))
            .await
            .expect_status(k, "cleanup", 200);
        assert_eq!(
            names(
                &api.get("/signatures?project=p-one&sort=updated")
                    .await
                    .json()
            ),
            ["s.b", "s.a"]
        );
        assert_eq!(
            ts.storage
                .items()
                .get("SIG#p-one#s.a", "HEAD")
                .await
                .unwrap()
                .unwrap(),
            head,
            "{k:?}: the head as it was"
        );

        // A caller restricted to some projects gets exactly those.
        let client = ts.client_with_access(tokens());
        let a = client
            .request(
                Method::GET,
                "/projects",
                &[("authorization", "Bearer reader-a")],
                Body::empty(),
            )
            .await;
        assert_eq!(
            a.expect(k, "restricted projects", 200),
            json!({"projects": ["team-a"]})
        );
    }
}

/// The signature page shows each alias's policy; a move the policy refuses shows the API's
/// `policy_violation` message (the failed requirement with its measured value) with status 409
/// and moves nothing; an override reason moves it; the history page lists what happened.
#[tokio::test]
async fn policies_refused_moves_overrides_and_the_alias_history() {
    for ts in backends().await {
        let k = ts.kind;
        let ui = dashboard(&ts, AccessControl::Off);
        fill(&ui, k).await;
        ui.request(
            Method::PUT,
            "/signatures/qa.Answer/aliases/production/policy",
            &[("content-type", "application/json")],
            json!({"protected": true, "require": {"metric": "accuracy", "min": 0.9, "min_records": 3}})
                .to_string(),
        )
        .await
        .expect_status(k, "policy", 200);
        let page = ui.get("/ui/signatures/qa.Answer").await;
        let (cookie, csrf) = csrf_cookie(&page);
        let body = html(&page, k, "signature page", 200);
        assert!(
            body.contains("protected (admin); gate: accuracy mean ≥ 0.9, ≥ 3 records"),
            "{k:?}: the policy is shown: {body}"
        );
        // 1.0.0 has no metric records: refused, and the page says why.
        let refused = post_form(
            &ui,
            "/ui/signatures/qa.Answer/alias",
            &cookie,
            &[
                ("project", "default"),
                ("alias", "production"),
                ("expected_version", "1.0.1"),
                ("version", "1.0.0"),
                ("csrf", &csrf),
            ],
        )
        .await;
        let body = html(&refused, k, "refused move", 409);
        assert!(
            body.contains("accuracy has 0 records &lt; min_records 3")
                || body.contains("accuracy has 0 records < min_records 3"),
            "{k:?}: the failed requirement is shown: {body}"
        );
        assert_eq!(alias_target(&ui, k, "production").await, "1.0.1");
        // 1.0.2 has 6 records with mean 0.825: refused on the mean; with a reason it moves.
        let over = post_form(
            &ui,
            "/ui/signatures/qa.Answer/alias",
            &cookie,
            &[
                ("project", "default"),
                ("alias", "production"),
                ("expected_version", "1.0.1"),
                ("version", "1.0.2"),
                ("override_reason", "demo day"),
                ("csrf", &csrf),
            ],
        )
        .await;
        over.expect_status(k, "override", 303);
        assert_eq!(alias_target(&ui, k, "production").await, "1.0.2");
        let hist = html(
            &ui.get("/ui/signatures/qa.Answer/aliases/production/history?project=default")
                .await,
            k,
            "history page",
            200,
        );
        let rows: Vec<&str> = hist
            .split("<tr data-action=\"")
            .skip(1)
            .map(|r| r.split('"').next().unwrap())
            .collect();
        assert_eq!(
            rows,
            ["override", "refused", "policy_set", "move"],
            "{k:?}: {hist}"
        );
        assert!(hist.contains("demo day"), "{k:?}: the override reason");
        assert!(
            hist.contains("failed: accuracy mean 0.825 over 6 records &lt; min 0.9"),
            "{k:?}: {hist}"
        );
    }
}
