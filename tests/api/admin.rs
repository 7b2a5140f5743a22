//! The admin pages: over plain HTTP, what a request without a session or without the
//! CSRF token gets, the cookie, the security headers, escaping of what came from outside,
//! and that the pages are only on the internal listener; in headless Chromium, an
//! operator's round: log in, overview, find an instance, its timeline, a refused
//! callback, retry a parked job and see it run, and a POST without the token refused.

use crate::browser::Browser;
use crate::helpers::{
    API_TOKEN, Backend, Database, KEY, TestApp, eventually, new_instance, order_id,
};
use crate::mock_market::{self, MockServer, order};
use crate::on_both_backends;
use fantoccini::Locator;
use koogate::store::JobState;
use reqwest::StatusCode;
use reqwest::header::{CONTENT_SECURITY_POLICY, LOCATION, SET_COOKIE};
use serde_json::json;

on_both_backends!(
    a_parked_job_is_retried_only_with_the_csrf_token,
    the_buttons_refetch_an_order_and_resume_the_endpoint,
    what_came_from_outside_is_escaped_and_personal_data_masked,
    the_overview_shows_the_parked_work_and_the_dial_test,
    the_lists_search_filter_and_page,
    a_failing_new_instance_is_shown_with_the_time_left_until_the_refund,
);

/// A client that does not follow redirects, so that tests see them.
fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

fn admin_url(app: &TestApp, path: &str) -> String {
    format!("http://{}{path}", app.admin)
}

/// A logged-in operator: the session cookie and the session's CSRF token.
struct Operator {
    client: reqwest::Client,
    cookie: String,
    csrf: String,
}

impl Operator {
    async fn login(app: &TestApp) -> Self {
        let client = client();
        let answer = client
            .post(admin_url(app, "/admin/login"))
            .form(&[("token", API_TOKEN)])
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), StatusCode::SEE_OTHER);
        let cookie = answer.headers()[SET_COOKIE].to_str().unwrap().to_owned();
        let cookie = cookie.split(';').next().unwrap().to_owned();
        let mut operator = Self {
            client,
            cookie,
            csrf: String::new(),
        };
        let (status, page) = operator.get(app, "/admin").await;
        assert_eq!(status, StatusCode::OK, "{page}");
        let marker = r#"name="csrf" value=""#;
        let start = page.find(marker).expect("a form with the CSRF token") + marker.len();
        operator.csrf = page[start..start + 64].to_owned();
        operator
    }

    async fn get(&self, app: &TestApp, path: &str) -> (StatusCode, String) {
        let answer = self
            .client
            .get(admin_url(app, path))
            .header("cookie", &self.cookie)
            .send()
            .await
            .unwrap();
        (answer.status(), answer.text().await.unwrap())
    }

    /// POSTs a form with these fields (the CSRF token only if a test adds it).
    async fn post(&self, app: &TestApp, path: &str, form: &[(&str, &str)]) -> StatusCode {
        self.client
            .post(admin_url(app, path))
            .header("cookie", &self.cookie)
            .form(form)
            .send()
            .await
            .unwrap()
            .status()
    }
}

async fn notify(app: &TestApp, order_id: &str) {
    let body = format!(
        r#"{{"activity":"orderNotify","orderId":"{order_id}","orderLineId":"{order_id}-000001"}}"#
    );
    let answer = app
        .post_signed("/koogallery/order-notify", KEY, &body)
        .await;
    assert_eq!(answer.code(), "000000", "{}", answer.msg());
}

/// An order whose fetch job is parked (the marketplace failed every attempt), and the
/// job's id.
async fn parked_fetch(app: &TestApp, mock: &MockServer) -> (String, i64) {
    let order_id = order_id();
    mock.register(order(&order_id, "sku-admin", "20270101000000"))
        .await;
    mock.fail_next("mkt0999", 1_000).await;
    notify(app, &order_id).await;
    let job = eventually("the fetch to be parked", || async {
        let jobs = app.store.jobs_about(&order_id).await.unwrap();
        jobs.into_iter().find(|j| j.state == JobState::Failed)
    })
    .await;
    (order_id, job.id)
}

#[tokio::test]
async fn without_a_session_pages_redirect_to_the_login_and_the_rest_is_401() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let client = client();
    for path in [
        "/admin",
        "/admin/orders",
        "/admin/orders/X/evidence",
        "/admin/callbacks/1",
    ] {
        for cookie in [None, Some("koogate_admin=0123456789abcdef")] {
            let mut request = client.get(admin_url(&app, path));
            if let Some(cookie) = cookie {
                request = request.header("cookie", cookie);
            }
            let answer = request.send().await.unwrap();
            assert_eq!(answer.status(), StatusCode::SEE_OTHER, "{path} {cookie:?}");
            assert_eq!(answer.headers()[LOCATION], "/admin/login");
        }
        let htmx = client
            .get(admin_url(&app, path))
            .header("hx-request", "true")
            .send()
            .await
            .unwrap();
        assert_eq!(
            htmx.status(),
            StatusCode::UNAUTHORIZED,
            "htmx asks for {path}"
        );
    }
    for path in [
        "/admin/jobs/1/retry",
        "/admin/endpoint/resume",
        "/admin/logout",
    ] {
        let answer = client.post(admin_url(&app, path)).send().await.unwrap();
        assert_eq!(answer.status(), StatusCode::UNAUTHORIZED, "{path}");
        assert_eq!(
            answer.text().await.unwrap(),
            "log in first\n",
            "nothing revealed"
        );
    }
    app.stop().await;
}

#[tokio::test]
async fn the_login_takes_only_the_api_token_and_sets_a_strict_cookie() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let client = client();
    let wrong = client
        .post(admin_url(&app, "/admin/login"))
        .form(&[("token", "not-the-token")])
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    assert!(wrong.headers().get(SET_COOKIE).is_none(), "no session");

    let plain = client
        .post(admin_url(&app, "/admin/login"))
        .form(&[("token", API_TOKEN)])
        .send()
        .await
        .unwrap();
    assert_eq!(plain.status(), StatusCode::SEE_OTHER);
    assert_eq!(plain.headers()[LOCATION], "/admin");
    let cookie = plain.headers()[SET_COOKIE].to_str().unwrap();
    for part in ["HttpOnly", "SameSite=Strict", "Path=/admin"] {
        assert!(cookie.contains(part), "{part} in {cookie}");
    }
    assert!(!cookie.contains("Secure"), "plain http: {cookie}");

    let proxied = client
        .post(admin_url(&app, "/admin/login"))
        .header("x-forwarded-proto", "https")
        .form(&[("token", API_TOKEN)])
        .send()
        .await
        .unwrap();
    let cookie = proxied.headers()[SET_COOKIE].to_str().unwrap();
    assert!(cookie.contains("; Secure"), "behind https: {cookie}");

    // Logging out ends the session on the server, not only in the browser.
    let operator = Operator::login(&app).await;
    let csrf = operator.csrf.clone();
    assert_eq!(
        operator
            .post(&app, "/admin/logout", &[("csrf", &csrf)])
            .await,
        StatusCode::SEE_OTHER
    );
    assert_eq!(operator.get(&app, "/admin").await.0, StatusCode::SEE_OTHER);
    app.stop().await;
}

async fn a_parked_job_is_retried_only_with_the_csrf_token(backend: Backend) {
    let mock = MockServer::start().await;
    let app =
        TestApp::spawn_with(Database::fresh(backend).await, mock_market::options(&mock)).await;
    let (order_id, job) = parked_fetch(&app, &mock).await;
    mock.fail_next("mkt0999", 0).await;
    let operator = Operator::login(&app).await;
    let path = format!("/admin/jobs/{job}/retry");

    let other_session = Operator::login(&app).await;
    for (form, why) in [
        (vec![], "no token"),
        (vec![("csrf", "0".repeat(64))], "a wrong token"),
        (
            vec![("csrf", other_session.csrf.clone())],
            "another session's token",
        ),
    ] {
        let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
        assert_eq!(
            operator.post(&app, &path, &form).await,
            StatusCode::FORBIDDEN,
            "{why}"
        );
    }
    let job_now = app.store.job(job).await.unwrap().unwrap();
    assert_eq!(job_now.state, JobState::Failed, "nothing changed");

    // With the token in the header, as htmx sends it, the job runs again and succeeds.
    let answer = operator
        .client
        .post(admin_url(&app, &path))
        .header("cookie", &operator.cookie)
        .header("x-csrf-token", &operator.csrf)
        .header("hx-request", "true")
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::OK);
    assert_eq!(
        answer.text().await.unwrap().trim(),
        format!(r#"<span class="done">job #{job}: queued again</span>"#),
        "the fragment htmx swaps in"
    );
    eventually("the retried fetch to succeed", || async {
        let job = app.store.job(job).await.unwrap().unwrap();
        (job.state == JobState::Done).then_some(())
    })
    .await;
    let (_, timeline) = operator
        .get(&app, &format!("/admin/orders/{order_id}"))
        .await;
    assert!(
        timeline.contains(&format!("job #{job} order.fetch done")),
        "{timeline}"
    );
    assert!(timeline.contains("查询订单 answered"), "the fetched order");
    app.stop().await;
}

async fn the_buttons_refetch_an_order_and_resume_the_endpoint(backend: Backend) {
    let mock = MockServer::start().await;
    let app =
        TestApp::spawn_with(Database::fresh(backend).await, mock_market::options(&mock)).await;
    let (order_id, _) = parked_fetch(&app, &mock).await;
    mock.fail_next("mkt0999", 0).await;
    let operator = Operator::login(&app).await;
    let csrf = operator.csrf.clone();

    // Re-fetch: a new fetch job, besides the parked one, that runs and stores the answer.
    let path = format!("/admin/orders/{order_id}/refetch");
    assert_eq!(operator.post(&app, &path, &[]).await, StatusCode::FORBIDDEN);
    assert_eq!(
        app.store.jobs_about(&order_id).await.unwrap().len(),
        1,
        "nothing queued"
    );
    let answer = operator
        .client
        .post(admin_url(&app, &path))
        .header("cookie", &operator.cookie)
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::OK);
    let page = answer.text().await.unwrap();
    assert!(
        page.contains(&format!("order {order_id}: 1 fetches queued")),
        "{page}"
    );
    assert!(page.contains("<html"), "without htmx, a whole page");
    eventually("the order to be fetched", || async {
        let lines = app.store.order_lines(&order_id).await.unwrap();
        lines[0].fetched_ms.map(|_| ())
    })
    .await;
    let jobs = app.store.jobs_about(&order_id).await.unwrap();
    assert_eq!(jobs.len(), 2);
    assert_eq!(
        jobs[0].state,
        JobState::Failed,
        "the parked one is left as it was"
    );

    // Resume, with no pause, and retry every parked job: the parked fetch goes back in
    // the queue and now succeeds.
    assert_eq!(
        operator
            .post(&app, "/admin/endpoint/resume", &[("csrf", &csrf)])
            .await,
        StatusCode::OK
    );
    assert_eq!(
        operator
            .post(&app, "/admin/jobs/retry-failed", &[("csrf", &csrf)])
            .await,
        StatusCode::OK
    );
    eventually("the parked fetch to succeed", || async {
        let job = app.store.job(jobs[0].id).await.unwrap().unwrap();
        (job.state == JobState::Done).then_some(())
    })
    .await;
    app.stop().await;
}

#[tokio::test]
async fn every_admin_answer_carries_the_security_headers() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let operator = Operator::login(&app).await;
    let client = client();
    let answers = [
        client
            .get(admin_url(&app, "/admin/login"))
            .send()
            .await
            .unwrap(),
        client.get(admin_url(&app, "/admin")).send().await.unwrap(),
        client
            .post(admin_url(&app, "/admin/jobs/1/retry"))
            .send()
            .await
            .unwrap(),
        client
            .get(admin_url(&app, "/admin/assets/htmx.min.js"))
            .send()
            .await
            .unwrap(),
        client
            .get(admin_url(&app, "/admin/nowhere"))
            .send()
            .await
            .unwrap(),
        client
            .get(admin_url(&app, "/admin/orders"))
            .header("cookie", &operator.cookie)
            .send()
            .await
            .unwrap(),
    ];
    for answer in answers {
        let headers = answer.headers();
        let csp = headers[CONTENT_SECURITY_POLICY].to_str().unwrap();
        assert!(csp.starts_with("default-src 'self'"), "{csp}");
        for directive in [
            "script-src 'self'",
            "frame-ancestors 'none'",
            "form-action 'self'",
        ] {
            assert!(csp.contains(directive), "{directive} in {csp}");
        }
        assert!(!csp.contains("unsafe"), "{csp}");
        for (name, value) in [
            ("x-content-type-options", "nosniff"),
            ("x-frame-options", "DENY"),
            ("referrer-policy", "no-referrer"),
            ("cache-control", "no-store"),
        ] {
            assert_eq!(headers[name], value, "{name} on {}", answer.url());
        }
    }

    // htmx is served from the binary, with its licence; no page loads anything else.
    let htmx = client
        .get(admin_url(&app, "/admin/assets/htmx.min.js"))
        .send()
        .await
        .unwrap();
    assert!(
        htmx.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/javascript")
    );
    let js = htmx.text().await.unwrap();
    assert!(js.starts_with("/*! htmx 2."), "licence header");
    let (_, page) = operator.get(&app, "/admin").await;
    assert!(
        !page.contains("http://") && !page.contains("https://"),
        "no CDN: {page}"
    );
    for inline in [
        "onclick=",
        "onload=",
        "onsubmit=",
        "onchange=",
        "oninput=",
        "hx-on",
        "style=",
    ] {
        assert!(
            !page.contains(inline),
            "nothing inline for the CSP to block: {inline}"
        );
    }
    assert_eq!(page.matches("<script").count(), 1, "only htmx, from a file");
    assert!(page.contains(r#"<script src="/admin/assets/htmx.min.js""#));
    app.stop().await;
}

#[tokio::test]
async fn the_admin_pages_are_not_on_the_public_listener() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    for path in ["/admin", "/admin/login", "/admin/assets/htmx.min.js"] {
        let answer = client().get(app.url(path)).send().await.unwrap();
        assert_eq!(answer.status(), StatusCode::NOT_FOUND, "{path}");
    }
    let login = client()
        .post(app.url("/admin/login"))
        .form(&[("token", API_TOKEN)])
        .send()
        .await
        .unwrap();
    assert!(login.headers().get(SET_COOKIE).is_none());
    app.stop().await;
}

async fn what_came_from_outside_is_escaped_and_personal_data_masked(backend: Backend) {
    let mock = MockServer::start().await;
    let app =
        TestApp::spawn_with(Database::fresh(backend).await, mock_market::options(&mock)).await;
    let order = order_id();
    let instance = format!("esc-{}", &order[2..10]);
    // The buyer comes from the order's details (查询订单), the memo from the callback.
    let mut details = mock_market::order(&order, "sku-esc", "20270101000000");
    details["buyerInfo"] = serde_json::json!({
        "customerId": "cust-<i>1</i>",
        "customerName": "<b>Zhang & \"San\"</b>",
        "mobilePhone": "13800138000",
    });
    mock.register(details).await;
    let created = new_instance(&order, &instance).replace(
        r#""testFlag":"0""#,
        r#""testFlag":"0","mobilePhone":"13800138000","memo":"<script>alert('x')</script>""#,
    );
    assert_eq!(app.saas(&created).await.code(), "000000");
    eventually("the buyer to be fetched", || async {
        let found = app.store.instance(&instance).await.unwrap().unwrap();
        found.customer_name.map(|_| ())
    })
    .await;
    let operator = Operator::login(&app).await;

    // A search with odd characters is shown back escaped, and finds by the customer id.
    let odd = r#"<i>"'&"#;
    let encoded: String = form_urlencoded::byte_serialize(odd.as_bytes()).collect();
    let (status, page) = operator
        .get(&app, &format!("/admin/instances?q={encoded}"))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(!page.contains(odd), "the search is escaped");
    assert!(
        page.contains(r#"value="&#60;i&#62;&#34;&#39;&#38;""#),
        "{page}"
    );
    let (_, found) = operator.get(&app, "/admin/instances?q=CUST-%3Ci%3E1").await;
    assert!(
        found.contains(&format!(">{instance}</a>")),
        "case-insensitive: {found}"
    );
    let (_, none) = operator.get(&app, "/admin/instances?q=%25").await;
    assert!(none.contains("No instance matches"), "% is literal: {none}");

    // The customer is named (masked) and escaped in the lists, the order and the instance.
    for path in [
        "/admin/instances".to_owned(),
        format!("/admin/orders/{order}"),
        format!("/admin/instances/{instance}"),
    ] {
        let (status, page) = operator.get(&app, &path).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        assert!(
            !page.contains("<b>") && !page.contains("<i>1"),
            "{path}: {page}"
        );
        assert!(
            page.contains("cust-&#60;i&#62;1&#60;/i&#62;"),
            "{path}: {page}"
        );
        assert!(!page.contains("Zhang"), "the name masked on {path}");
        assert!(page.contains("&#60;••••••&#62;"), "{path}: {page}");
    }

    // The callback's detail shows its body escaped, with the phone and the name masked.
    let (_, timeline) = operator.get(&app, &format!("/admin/orders/{order}")).await;
    let start = timeline
        .find("/admin/callbacks/")
        .expect("a link to the callback");
    let link: String = timeline[start..]
        .chars()
        .take_while(|c| *c != '"')
        .collect();
    let (status, detail) = operator.get(&app, &link).await;
    assert_eq!(status, StatusCode::OK);
    assert!(!detail.contains("<script>alert"), "{detail}");
    assert!(
        detail.contains("&#60;script&#62;alert(&#39;x&#39;)&#60;/script&#62;"),
        "{detail}"
    );
    assert!(!detail.contains("13800138000"), "{detail}");
    assert!(detail.contains("1••••••0"), "{detail}");
    let record = &app.records(10).await[0];
    assert!(
        detail.contains(&koogate::protocol::crypto::sha256_hex(&record.raw_body)),
        "the hash of the exact bytes"
    );
    assert!(detail.contains("ok:"), "the signature verdict");

    // The evidence file is offered on the order's page.
    assert!(timeline.contains(&format!("/admin/orders/{order}/evidence")));
    let answer = operator
        .client
        .get(admin_url(&app, &format!("/admin/orders/{order}/evidence")))
        .header("cookie", &operator.cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::OK);
    assert!(
        answer.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .starts_with("attachment")
    );
    assert!(answer.text().await.unwrap().contains(&sha_of(record)));
    app.stop().await;
}

fn sha_of(record: &koogate::store::CallbackRecord) -> String {
    koogate::protocol::crypto::sha256_hex(&record.raw_body)
}

async fn the_overview_shows_the_parked_work_and_the_dial_test(backend: Backend) {
    let mock = MockServer::start().await;
    let app =
        TestApp::spawn_with(Database::fresh(backend).await, mock_market::options(&mock)).await;
    let test =
        new_instance(&order_id(), "dial-ov").replace(r#""testFlag":"0""#, r#""testFlag":"1""#);
    assert_eq!(app.saas(&test).await.code(), "000000");
    let (parked_order, job) = parked_fetch(&app, &mock).await;
    let operator = Operator::login(&app).await;
    let (_, page) = operator.get(&app, "/admin").await;
    assert!(page.contains(&format!(r#"id="job-{job}""#)), "{page}");
    assert!(
        page.contains(&format!("/admin/orders/{parked_order}")),
        "linked to its order"
    );
    assert!(
        page.contains(&format!("/admin/jobs/{job}/retry")),
        "a retry button"
    );
    assert!(
        page.contains(r#"<td>saas_v2</td><td>000000</td><td class="num">1</td>"#),
        "the callbacks by family and code: {page}"
    );
    assert!(
        page.contains(r#"<td class="health ok">ok</td>"#),
        "a successful test callback: {page}"
    );
    app.stop().await;
}

/// Where the browser test saves its screenshots when `KOOGATE_SCREENSHOTS` names a
/// folder (`KOOGATE_SCREENSHOTS=docs cargo test --test api in_a_browser` makes the
/// README's).
fn screenshot_dir() -> Option<std::path::PathBuf> {
    std::env::var_os("KOOGATE_SCREENSHOTS").map(std::path::PathBuf::from)
}

async fn screenshot(browser: &Browser, name: &str) {
    if let Some(dir) = screenshot_dir() {
        let png = browser.client.screenshot().await.expect("a screenshot");
        std::fs::write(dir.join(name), png).expect("the screenshot is written");
    }
}

/// Waits until the page shows `text` (htmx swaps and search results arrive a moment
/// after the click or the keystroke).
async fn shows(browser: &Browser, text: &str) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let page = browser.client.source().await.expect("the page");
        if page.contains(text) {
            return page;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{text:?} never shown in:\n{page}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Clicks what `css` finds, again if htmx replaced it between the find and the click.
async fn click(browser: &Browser, locator: Locator<'_>) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let clicked = match browser.client.find(locator).await {
            Ok(element) => element.click().await,
            Err(error) => Err(error),
        };
        match clicked {
            Ok(()) => return,
            Err(error) if std::time::Instant::now() > deadline => {
                panic!("cannot click {locator:?}: {error}")
            }
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(50)).await,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_browser_an_operator_finds_an_order_and_retries_its_parked_job() {
    let mock = MockServer::start().await;
    let app = TestApp::spawn_with(
        Database::fresh(Backend::Sqlite).await,
        mock_market::options(&mock),
    )
    .await;
    // An order whose details cannot be fetched (its job parks), and whose instance was
    // released and then asked to freeze: refused with 000003.
    let order = order_id();
    let instance = format!("web-{}", &order[2..10]);
    mock.register(mock_market::order(&order, "sku-web", "20270101000000"))
        .await;
    mock.fail_next("mkt0999", 1_000).await;
    assert_eq!(
        app.saas(&new_instance(&order, &instance)).await.code(),
        "000000"
    );
    let job = eventually("the fetch to be parked", || async {
        let jobs = app.store.jobs_about(&order).await.unwrap();
        jobs.into_iter().find(|j| j.state == JobState::Failed)
    })
    .await
    .id;
    let release = format!(
        r#"{{"activity":"releaseInstance","instanceId":"{instance}","orderId":"{order}","orderLineId":"{order}-000001"}}"#
    );
    assert_eq!(app.saas(&release).await.code(), "000000");
    let freeze = format!(
        r#"{{"activity":"updateInstanceStatus","instanceId":"{instance}","status":"FREEZE"}}"#
    );
    assert_eq!(app.saas(&freeze).await.code(), "000003");
    // Other traffic of the day: a dial test, another order, a forged request.
    let dial =
        new_instance(&order_id(), "dial-web").replace(r#""testFlag":"0""#, r#""testFlag":"1""#);
    assert_eq!(app.saas(&dial).await.code(), "000000");
    let forged = app
        .post_signed(
            "/koogallery/saas",
            "not-the-key",
            &new_instance(&order_id(), "forged"),
        )
        .await;
    assert_eq!(forged.code(), "000001");

    let browser = Browser::start().await;
    let web = &browser.client;
    let base = format!("http://{}", app.admin);

    // Log in with the API token.
    web.goto(&format!("{base}/admin")).await.unwrap();
    assert!(
        web.current_url()
            .await
            .unwrap()
            .path()
            .ends_with("/admin/login")
    );
    web.find(Locator::Css("#token"))
        .await
        .unwrap()
        .send_keys(API_TOKEN)
        .await
        .unwrap();
    click(&browser, Locator::Css("#login")).await;
    let overview = shows(&browser, "Parked jobs and failed deliveries").await;
    assert!(
        overview.contains(&format!(r#"id="job-{job}""#)),
        "the parked job is listed"
    );
    screenshot(&browser, "admin-overview.png").await;

    // Find the instance by its order id, typing into the search.
    click(&browser, Locator::LinkText("Instances")).await;
    shows(&browser, "<h1>Instances</h1>").await;
    web.find(Locator::Css("#q"))
        .await
        .unwrap()
        .send_keys(&order)
        .await
        .unwrap();
    shows(&browser, &format!(">{instance}</a>")).await;
    click(&browser, Locator::LinkText(&instance)).await;

    // Its timeline: the callbacks, the state changes, the parked job.
    let timeline = shows(&browser, "Timeline").await;
    for expected in [
        "saas_v2 newInstance → 000000",
        "instance.created",
        "instance.released",
        "order.fetch failed",
    ] {
        assert!(timeline.contains(expected), "{expected} in the timeline");
    }
    click(&browser, Locator::LinkText(&order)).await;
    shows(&browser, "Download the evidence file").await;
    screenshot(&browser, "admin-timeline.png").await;

    // The refused callback's detail.
    click(&browser, Locator::Css(".entry.refused .title a")).await;
    let detail = shows(&browser, "Signature verdict").await;
    assert!(detail.contains("resultCode 000003"), "the refusal's answer");
    assert!(detail.contains("updateInstanceStatus"));

    // The forged request names no order: the overview lists it among the refused.
    click(&browser, Locator::LinkText("Overview")).await;
    shows(&browser, "Refused callbacks of the last 24 hours").await;
    click(&browser, Locator::Css("#refused tr.refused a")).await;
    let forged = shows(&browser, "Signature verdict").await;
    assert!(
        forged.contains("resultCode 000001"),
        "the forged request's answer"
    );
    assert!(forged.contains("newInstance"), "its body is shown");

    // A POST without the CSRF token is refused, and the job stays parked.
    let status = web
        .execute(
            &format!(
                "return fetch('/admin/jobs/{job}/retry', {{method: 'POST'}}).then(r => r.status)"
            ),
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(status, json!(403));
    assert_eq!(
        app.store.job(job).await.unwrap().unwrap().state,
        JobState::Failed
    );

    // The cause fixed, "Retry" on the overview runs the job again, and it succeeds.
    mock.fail_next("mkt0999", 0).await;
    click(&browser, Locator::LinkText("Overview")).await;
    shows(&browser, &format!(r#"id="job-{job}""#)).await;
    click(&browser, Locator::Css(&format!("#job-{job} button"))).await;
    shows(&browser, &format!("job #{job}: queued again")).await;
    eventually("the retried job to run", || async {
        let job = app.store.job(job).await.unwrap().unwrap();
        (job.state == JobState::Done).then_some(())
    })
    .await;
    web.goto(&format!("{base}/admin/orders/{order}"))
        .await
        .unwrap();
    shows(&browser, &format!("job #{job} order.fetch done")).await;
    browser.close().await;
    app.stop().await;
}

/// The links of a list page to the rows it shows (`/admin/{what}/ID`).
fn listed(page: &str, what: &str) -> Vec<String> {
    let marker = format!(r#"<tr><td><a href="/admin/{what}/"#);
    page.split(&marker)
        .skip(1)
        .map(|rest| rest.chars().take_while(|c| *c != '"').collect())
        .collect()
}

async fn the_lists_search_filter_and_page(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    // 52 orders of one instance each; the last one frozen.
    let prefix = format!("pg{}", &order_id()[2..8]).to_uppercase();
    let mut orders = Vec::new();
    for n in 0..52 {
        let order = format!("CS{prefix}{n:03}");
        let instance = format!("list-{prefix}-{n:03}");
        assert_eq!(
            app.saas(&new_instance(&order, &instance)).await.code(),
            "000000"
        );
        orders.push((order, instance));
    }
    let (frozen_order, frozen) = orders.last().unwrap().clone();
    let freeze = format!(
        r#"{{"activity":"updateInstanceStatus","instanceId":"{frozen}","status":"FREEZE"}}"#
    );
    assert_eq!(app.saas(&freeze).await.code(), "000000");
    let operator = Operator::login(&app).await;

    // Newest first, 50 a page, and the rest on the next.
    let (_, first) = operator.get(&app, "/admin/orders").await;
    let first_page = listed(&first, "orders");
    assert_eq!(first_page.len(), 50, "{first}");
    assert_eq!(first_page[0], frozen_order);
    assert!(first.contains("page=1"), "a link to the next page");
    let (_, second) = operator.get(&app, "/admin/orders?page=1").await;
    let second_page = listed(&second, "orders");
    assert_eq!(second_page, vec![orders[1].0.clone(), orders[0].0.clone()]);
    assert!(!second.contains("page=2"), "the last page");

    // Search by order id (any case), by instance id; filter by state and family.
    let (_, by_order) = operator
        .get(
            &app,
            &format!("/admin/orders?q={}", orders[7].0.to_lowercase()),
        )
        .await;
    assert_eq!(listed(&by_order, "orders"), vec![orders[7].0.clone()]);
    let (_, by_instance) = operator
        .get(&app, &format!("/admin/orders?q={}", orders[8].1))
        .await;
    assert_eq!(listed(&by_instance, "orders"), vec![orders[8].0.clone()]);
    let (_, frozen_orders) = operator.get(&app, "/admin/orders?state=frozen").await;
    assert_eq!(listed(&frozen_orders, "orders"), vec![frozen_order.clone()]);
    let (_, frozen_instances) = operator
        .get(
            &app,
            &format!("/admin/instances?q={prefix}&state=frozen&family=saas_v2"),
        )
        .await;
    assert_eq!(listed(&frozen_instances, "instances"), vec![frozen.clone()]);
    let (_, v1) = operator.get(&app, "/admin/instances?family=saas_v1").await;
    assert!(listed(&v1, "instances").is_empty(), "no SaaS 1.0 instance");
    let (_, underscore) = operator.get(&app, "/admin/instances?q=list_").await;
    assert!(listed(&underscore, "instances").is_empty(), "_ is literal");
    app.stop().await;
}

async fn a_failing_new_instance_is_shown_with_the_time_left_until_the_refund(backend: Backend) {
    let (app, mock, receiver) = crate::provisioning::app_mode(backend, "2000").await;
    receiver.provision_with(Some(
        r#"{"failed":{"resultCode":"000101","message":"mobile number already exists"}}"#,
    ));
    let failing = order_id();
    mock.register(mock_market::order(&failing, "sku-risk", "20270101000000"))
        .await;
    let instance = format!("risk-{}", &failing[2..10]);
    assert_eq!(
        app.saas(&new_instance(&failing, &instance)).await.code(),
        "000101"
    );
    let operator = Operator::login(&app).await;

    let (_, page) = operator.get(&app, "/admin").await;
    let row = page
        .split(r#"<tr class="risk">"#)
        .nth(1)
        .unwrap_or_else(|| panic!("no order at risk: {page}"));
    assert!(row.contains(&format!(">{failing}</a>")), "{row}");
    assert!(
        row.contains(r#"<td class="left">2h 59m</td>"#)
            || row.contains(r#"<td class="left">3h 00m</td>"#),
        "3 hours from the first failure: {row}"
    );

    // Once KooGallery's retry succeeds, the order is no longer at risk.
    receiver.provision_with(Some(crate::provisioning::APP_INFO));
    assert_eq!(
        app.saas(&new_instance(&failing, &instance)).await.code(),
        "000000"
    );
    let (_, page) = operator.get(&app, "/admin").await;
    assert!(page.contains("No order is failing."), "{page}");
    app.stop().await;
}
