//! Every way a bearer token can be wrong is a 401, and only fully valid
//! tokens (ours, or a trusted external issuer's) identify a caller.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::ApiError;
use common::auth::Caller;
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

mod support;
use support::{ISSUER, KID, PREVIOUS_KID, config, fixture, gateway, state};

const SUPABASE: &str = "https://project.supabase.co/auth/v1";
const SUPABASE_SECRET: &str = "super-secret-jwt-token-with-at-least-32-characters";
const IDP: &str = "https://idp.example.test/";

fn now() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

fn sign(alg: Algorithm, kid: Option<&str>, key: &EncodingKey, claims: Value) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, &claims, key).unwrap()
}

fn own_key() -> EncodingKey {
    EncodingKey::from_ed_pem(fixture("test-ed25519.pem").as_bytes()).unwrap()
}

fn rsa_key() -> EncodingKey {
    EncodingKey::from_rsa_pem(fixture("test-rsa.pem").as_bytes()).unwrap()
}

fn own_claims(user: &str) -> Value {
    json!({"sub": user, "iss": ISSUER, "aud": "ragway", "iat": now(), "nbf": now(), "exp": now() + 600})
}

/// A JWKS endpoint on 127.0.0.1 serving the test RSA key as `rsa-1`, counting fetches.
async fn jwks_server() -> (String, Arc<AtomicUsize>) {
    let mut jwk = Jwk::from_encoding_key(&rsa_key(), Algorithm::RS256).unwrap();
    jwk.common.key_id = Some("rsa-1".into());
    let body = serde_json::to_string(&JwkSet { keys: vec![jwk] }).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "http://{}/.well-known/jwks.json",
        listener.local_addr().unwrap()
    );
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    tokio::spawn(async move {
        loop {
            let (mut socket, _) = listener.accept().await.unwrap();
            counter.fetch_add(1, Ordering::SeqCst);
            let mut buf = vec![0u8; 4096];
            let _ = socket.read(&mut buf).await;
            let response = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{}",
                body.len(),
                body
            );
            let _ = socket.write_all(response.as_bytes()).await;
        }
    });
    (url, hits)
}

async fn setup(pool: PgPool) -> (Arc<common::state::State>, Arc<AtomicUsize>) {
    let (jwks_url, hits) = jwks_server().await;
    let issuers = json!([
        {"issuer": SUPABASE, "audience": "authenticated", "hs256_secret": SUPABASE_SECRET},
        {"issuer": IDP, "audience": "ragway-api", "jwks_url": jwks_url, "algorithms": ["RS256"]}
    ]);
    let state = state(
        pool,
        config(&[
            ("AUTH_EXTERNAL_ISSUERS", &issuers.to_string()),
            ("JWKS_MIN_REFETCH_SECONDS", "1"),
        ]),
    );
    (state, hits)
}

async fn caller(state: &common::state::State, token: &str) -> Result<Caller, ApiError> {
    state
        .auth
        .caller(&state.db, Some(&format!("Bearer {token}")))
        .await
}

async fn assert_rejected(state: &common::state::State, token: &str, why: &str) {
    match caller(state, token).await {
        Err(ApiError::Unauthorized(_)) => {}
        other => panic!("{why}: expected 401, got {other:?}"),
    }
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn own_tokens_verify_with_current_and_previous_keys(pool: PgPool) {
    let (state, _) = setup(pool.clone()).await;
    let user = uuid::Uuid::new_v4().to_string();
    // A correctly signed token speaks only for an account this database
    // holds (one of another deployment's users gets 401, not a 500 when
    // its id first reaches a foreign key).
    let stranger = sign(Algorithm::EdDSA, Some(KID), &own_key(), own_claims(&user));
    assert_rejected(&state, &stranger, "an account never stored").await;
    sqlx::query(
        "INSERT INTO users (id, email, password_hash) VALUES ($1::uuid, 'k@example.com', 'x')",
    )
    .bind(&user)
    .execute(&pool)
    .await
    .unwrap();
    let token = sign(Algorithm::EdDSA, Some(KID), &own_key(), own_claims(&user));
    assert_eq!(
        caller(&state, &token).await.unwrap().user_id.to_string(),
        user
    );

    let previous =
        EncodingKey::from_ed_pem(fixture("test-ed25519-previous.pem").as_bytes()).unwrap();
    let rotated = sign(
        Algorithm::EdDSA,
        Some(PREVIOUS_KID),
        &previous,
        own_claims(&user),
    );
    assert_eq!(
        caller(&state, &rotated).await.unwrap().user_id.to_string(),
        user
    );

    // Tokens we issue ourselves round-trip.
    let issued = state
        .auth
        .signer()
        .issue(user.parse().unwrap(), Some("k@example.com"))
        .unwrap();
    assert!(caller(&state, &issued).await.is_ok());
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn malformed_and_forged_own_tokens_are_rejected(pool: PgPool) {
    let (state, _) = setup(pool).await;
    let user = uuid::Uuid::new_v4().to_string();
    let b64 = |v: Value| {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    };

    for garbage in ["", "abc", "a.b.c", "....", "Bearer", &"x".repeat(5000)] {
        assert_rejected(&state, garbage, "garbage").await;
    }
    let none = format!(
        "{}.{}.",
        b64(json!({"alg": "none", "typ": "JWT"})),
        b64(own_claims(&user))
    );
    assert_rejected(&state, &none, "alg none").await;

    // HS/RS confusion: HMAC "signed" with our public key as the secret.
    let public_x = state.auth.signer().jwks().keys[0].clone();
    let public_bytes = serde_json::to_vec(&public_x).unwrap();
    let confused = sign(
        Algorithm::HS256,
        Some(KID),
        &EncodingKey::from_secret(&public_bytes),
        own_claims(&user),
    );
    assert_rejected(&state, &confused, "HS256 with public key as secret").await;

    let mut claims = own_claims(&user);
    claims["iss"] = json!("https://evil.example");
    assert_rejected(
        &state,
        &sign(Algorithm::EdDSA, Some(KID), &own_key(), claims),
        "wrong iss",
    )
    .await;

    let mut claims = own_claims(&user);
    claims["aud"] = json!("someone-else");
    assert_rejected(
        &state,
        &sign(Algorithm::EdDSA, Some(KID), &own_key(), claims),
        "wrong aud",
    )
    .await;

    let mut claims = own_claims(&user);
    claims["exp"] = json!(now() - 3600);
    assert_rejected(
        &state,
        &sign(Algorithm::EdDSA, Some(KID), &own_key(), claims),
        "expired",
    )
    .await;

    let mut claims = own_claims(&user);
    claims["nbf"] = json!(now() + 3600);
    claims["exp"] = json!(now() + 7200);
    assert_rejected(
        &state,
        &sign(Algorithm::EdDSA, Some(KID), &own_key(), claims),
        "not yet valid",
    )
    .await;

    let mut claims = own_claims(&user);
    claims.as_object_mut().unwrap().remove("exp");
    assert_rejected(
        &state,
        &sign(Algorithm::EdDSA, Some(KID), &own_key(), claims),
        "no exp",
    )
    .await;

    assert_rejected(
        &state,
        &sign(
            Algorithm::EdDSA,
            Some("unknown"),
            &own_key(),
            own_claims(&user),
        ),
        "unknown kid",
    )
    .await;
    assert_rejected(
        &state,
        &sign(Algorithm::EdDSA, None, &own_key(), own_claims(&user)),
        "no kid",
    )
    .await;

    // Right kid, wrong key: a forgery.
    let stranger =
        EncodingKey::from_ed_pem(fixture("test-ed25519-previous.pem").as_bytes()).unwrap();
    assert_rejected(
        &state,
        &sign(Algorithm::EdDSA, Some(KID), &stranger, own_claims(&user)),
        "wrong key",
    )
    .await;

    // Tampered payload with the original signature.
    let good = sign(Algorithm::EdDSA, Some(KID), &own_key(), own_claims(&user));
    let parts: Vec<&str> = good.split('.').collect();
    let mut claims = own_claims(&uuid::Uuid::new_v4().to_string());
    claims["iat"] = json!(now());
    let tampered = format!("{}.{}.{}", parts[0], b64(claims), parts[2]);
    assert_rejected(&state, &tampered, "tampered payload").await;
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn hs256_external_issuer_is_accepted_and_mapped_to_one_user(pool: PgPool) {
    let (state, _) = setup(pool).await;
    let secret = EncodingKey::from_secret(SUPABASE_SECRET.as_bytes());
    let claims = json!({"sub": "supabase-user-1", "iss": SUPABASE, "aud": "authenticated", "exp": now() + 600, "email": "Sup@Example.com"});
    let first = caller(
        &state,
        &sign(Algorithm::HS256, None, &secret, claims.clone()),
    )
    .await
    .unwrap();
    let second = caller(
        &state,
        &sign(Algorithm::HS256, None, &secret, claims.clone()),
    )
    .await
    .unwrap();
    assert_eq!(first, second);
    let profile = state.auth.profile(&state.db, first).await.unwrap();
    assert_eq!(profile.issuer.as_deref(), Some(SUPABASE));
    assert_eq!(profile.email.as_deref(), Some("sup@example.com"));

    let wrong = EncodingKey::from_secret(b"not-the-secret-not-the-secret-not-the-secret");
    assert_rejected(
        &state,
        &sign(Algorithm::HS256, None, &wrong, claims.clone()),
        "wrong secret",
    )
    .await;
    let mut bad_aud = claims.clone();
    bad_aud["aud"] = json!("anon");
    assert_rejected(
        &state,
        &sign(Algorithm::HS256, None, &secret, bad_aud),
        "wrong aud",
    )
    .await;
    // A subject Postgres could not store is a 401, not a 500.
    let mut nul_sub = claims.clone();
    nul_sub["sub"] = json!("user\u{0}one");
    assert_rejected(
        &state,
        &sign(Algorithm::HS256, None, &secret, nul_sub),
        "NUL in sub",
    )
    .await;
    // HS384 is not in this issuer's allow-list.
    assert_rejected(
        &state,
        &sign(Algorithm::HS384, None, &secret, claims),
        "alg not allowed",
    )
    .await;
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn jwks_issuer_is_cached_and_refetch_is_rate_limited(pool: PgPool) {
    let (state, hits) = setup(pool).await;
    let claims = json!({"sub": "idp|42", "iss": IDP, "aud": "ragway-api", "exp": now() + 600});
    let good = sign(Algorithm::RS256, Some("rsa-1"), &rsa_key(), claims.clone());
    let a = caller(&state, &good).await.unwrap();
    let b = caller(&state, &good).await.unwrap();
    assert_eq!(a, b);
    assert_eq!(hits.load(Ordering::SeqCst), 1, "JWKS is cached");

    // Unknown kids: at most one refetch per interval (1 s here), however many arrive.
    assert_rejected(
        &state,
        &sign(
            Algorithm::RS256,
            Some("rotated-0"),
            &rsa_key(),
            claims.clone(),
        ),
        "unknown kid",
    )
    .await;
    assert_eq!(
        hits.load(Ordering::SeqCst),
        1,
        "no refetch right after a fetch"
    );
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    for kid in ["rotated-1", "rotated-2", "rotated-3"] {
        assert_rejected(
            &state,
            &sign(Algorithm::RS256, Some(kid), &rsa_key(), claims.clone()),
            "unknown kid",
        )
        .await;
    }
    assert_eq!(
        hits.load(Ordering::SeqCst),
        2,
        "one refetch for unknown kids"
    );

    // HS/RS confusion against the JWKS issuer: HMAC keyed with the RSA public key.
    let public =
        serde_json::to_vec(&Jwk::from_encoding_key(&rsa_key(), Algorithm::RS256).unwrap()).unwrap();
    let confused = sign(
        Algorithm::HS256,
        Some("rsa-1"),
        &EncodingKey::from_secret(&public),
        claims.clone(),
    );
    assert_rejected(&state, &confused, "HS256 against an RS256 issuer").await;

    let mut expired = claims.clone();
    expired["exp"] = json!(now() - 3600);
    assert_rejected(
        &state,
        &sign(Algorithm::RS256, Some("rsa-1"), &rsa_key(), expired),
        "expired",
    )
    .await;
    let mut untrusted = claims;
    untrusted["iss"] = json!("https://idp.evil.test/");
    assert_rejected(
        &state,
        &sign(Algorithm::RS256, Some("rsa-1"), &rsa_key(), untrusted),
        "untrusted iss",
    )
    .await;
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn rejected_tokens_are_401_problems_over_http(pool: PgPool) {
    let (state, _) = setup(pool).await;
    let api = gateway(state).await;
    let mut claims = own_claims(&uuid::Uuid::new_v4().to_string());
    claims["exp"] = json!(now() - 3600);
    let expired = sign(Algorithm::EdDSA, Some(KID), &own_key(), claims);
    for token in [Some(expired.as_str()), Some("garbage"), None] {
        let reply = api.send("GET", "/auth/me", token, None).await;
        reply.problem(401);
        assert_eq!(reply.headers["www-authenticate"], "Bearer");
        assert!(
            reply.body["instance"].is_string(),
            "problem carries the request id"
        );
    }
    // External users reach their own (empty) workspace list.
    let secret = EncodingKey::from_secret(SUPABASE_SECRET.as_bytes());
    let claims = json!({"sub": "s-2", "iss": SUPABASE, "aud": "authenticated", "exp": now() + 600});
    let token = sign(Algorithm::HS256, None, &secret, claims);
    let ws = api.create_workspace(&token, "Mine").await;
    let list = api.send("GET", "/workspaces", Some(&token), None).await;
    assert_eq!(list.body["items"][0]["id"], ws.as_str());
}

/// A function given only the current public key (JWT_PUBLIC_KEY, as every
/// function but sign-up, login and refresh is deployed) verifies tokens
/// the issuers signed and serves the same JWKS, but cannot mint one.
#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn functions_with_only_the_public_key_verify_but_cannot_issue(pool: PgPool) {
    let issuer = gateway(state(pool.clone(), config(&[]))).await;
    let (token, _, id) = issuer.signup("public@example.com").await;

    let mut verify_only = config(&[("JWT_PUBLIC_KEY", &fixture("test-ed25519.pub.pem"))]);
    verify_only.jwt_signing_key = None;
    let verifier = gateway(state(pool, verify_only)).await;
    let me = verifier.send("GET", "/auth/me", Some(&token), None).await;
    assert_eq!(me.status, 200, "{}", me.body);
    assert_eq!(me.body["id"], id.as_str());
    let published = issuer
        .send("GET", "/.well-known/jwks.json", None, None)
        .await
        .body;
    let served = verifier
        .send("GET", "/.well-known/jwks.json", None, None)
        .await
        .body;
    assert_eq!(published, served);
    let login = verifier
        .send(
            "POST",
            "/auth/login",
            None,
            Some(json!({ "email": "public@example.com", "password": "correct horse battery" })),
        )
        .await;
    login.problem(500);
}

/// What API Gateway's JWT authorizer does with our discovery document:
/// fetch the key set it names and verify the token with the algorithm the
/// key was published for.
async fn verify_as_an_authorizer(api: &support::Api, token: &str) -> Value {
    let discovery = api
        .send("GET", "/.well-known/openid-configuration", None, None)
        .await;
    assert_eq!(discovery.status, 200);
    let jwks_uri = discovery.body["jwks_uri"].as_str().unwrap();
    let path = jwks_uri
        .strip_prefix(ISSUER)
        .expect("keys under the issuer");
    let jwks: JwkSet =
        serde_json::from_value(api.send("GET", path, None, None).await.body).unwrap();
    let header = jsonwebtoken::decode_header(token).unwrap();
    let jwk = jwks
        .find(header.kid.as_deref().unwrap())
        .expect("kid published");
    let alg: Algorithm = jwk
        .common
        .key_algorithm
        .unwrap()
        .to_string()
        .parse()
        .unwrap();
    assert_eq!(alg, header.alg);
    assert_eq!(
        discovery.body["id_token_signing_alg_values_supported"],
        json!([format!("{alg:?}")])
    );
    let mut validation = jsonwebtoken::Validation::new(alg);
    validation.set_issuer(&[ISSUER]);
    validation.set_audience(&["ragway"]);
    let key = jsonwebtoken::DecodingKey::from_jwk(jwk).unwrap();
    jsonwebtoken::decode::<Value>(token, &key, &validation)
        .unwrap()
        .claims
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn rs256_and_es256_tokens_verify_as_api_gateway_would(pool: PgPool) {
    let previous = json!([{
        "kid": PREVIOUS_KID,
        "public_key": fixture("test-ed25519-previous.pub.pem"),
        "alg": "EdDSA"
    }])
    .to_string();
    for (alg, pem) in [
        ("RS256", fixture("test-rsa.pem")),
        ("ES256", fixture("test-ec-p256.pem")),
    ] {
        let state = state(
            pool.clone(),
            config(&[
                ("JWT_ALGORITHM", alg),
                ("JWT_SIGNING_KEY", &pem),
                ("JWT_PREVIOUS_KEYS", &previous),
            ]),
        );
        let api = gateway(state.clone()).await;
        let (access, _, user) = api.signup(&format!("{alg}@example.com")).await;
        assert_eq!(
            format!("{:?}", jsonwebtoken::decode_header(&access).unwrap().alg),
            alg
        );
        // An authorizer holding only the discovery document verifies it...
        let claims = verify_as_an_authorizer(&api, &access).await;
        assert_eq!(claims["sub"], user);
        // ...and so do we, on every route.
        assert_eq!(
            api.send("GET", "/auth/me", Some(&access), None)
                .await
                .status,
            200
        );

        // The Ed25519 key rotated out still verifies its own tokens.
        let old =
            EncodingKey::from_ed_pem(fixture("test-ed25519-previous.pem").as_bytes()).unwrap();
        let rotated = sign(
            Algorithm::EdDSA,
            Some(PREVIOUS_KID),
            &old,
            own_claims(&user),
        );
        assert!(
            caller(&state, &rotated).await.is_ok(),
            "{alg}: previous key"
        );

        // A key verifies only the algorithm it was published for: an
        // EdDSA-signed token naming the current key's kid is refused.
        let confused = sign(Algorithm::EdDSA, Some(KID), &own_key(), own_claims(&user));
        assert_rejected(&state, &confused, "EdDSA token under an RS/ES kid").await;
        let hs = sign(
            Algorithm::HS256,
            Some(KID),
            &EncodingKey::from_secret(pem.as_bytes()),
            own_claims(&user),
        );
        assert_rejected(&state, &hs, "HS256 token under an RS/ES kid").await;
    }
}
