//! Configuration parsing, validation, permissions, ghost naming and the
//! appservice registration file.

use std::path::{Path, PathBuf};

use maxbridge::config::{
    Config, ConfigError, LogFormat, Permission, Registration, StatusNotices, WireFormat,
    generate_registration,
};

const MINIMAL: &str = "
homeserver:
  address: http://127.0.0.1:8008
  domain: example.org
appservice:
  address: http://127.0.0.1:29340
database:
  url: postgres://postgres@127.0.0.1:5432/maxbridge
";

fn example_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("config.yaml.example")
}

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, "test.yaml")
}

/// The minimal config with `extra` YAML appended (top-level sections).
fn minimal_with(extra: &str) -> Result<Config, ConfigError> {
    parse(&format!("{MINIMAL}{extra}"))
}

/// The minimal config with `lines` added to its `appservice` section.
fn with_appservice(lines: &str) -> String {
    let address = "  address: http://127.0.0.1:29340\n";
    MINIMAL.replace(address, &format!("{address}{lines}"))
}

fn invalid_key(result: Result<Config, ConfigError>) -> (String, String) {
    match result {
        Err(ConfigError::Invalid { key, message, .. }) => (key, message),
        Err(other) => panic!("expected an error naming a key, got {other}"),
        Ok(_) => panic!("expected the config to be rejected"),
    }
}

#[test]
fn example_config_parses_with_its_documented_values() {
    let config = Config::load(example_path()).expect("config.yaml.example must load");
    assert_eq!(config.homeserver.domain, "example.org");
    assert_eq!(config.appservice.port, 29340);
    assert_eq!(config.appservice.bot.username, "maxbot");
    assert_eq!(
        config.appservice.registration,
        PathBuf::from("registration.yaml")
    );
    assert_eq!(config.max.wire_format, WireFormat::Json);
    assert_eq!(
        config.max.endpoint.as_str(),
        "wss://ws-api.oneme.ru/websocket"
    );
    assert_eq!(config.max.device.app_version, "26.9.8");
    assert_eq!(config.bridge.command_prefix, "!max");
    assert_eq!(config.logging.format, LogFormat::Pretty);
    assert_eq!(config.runtime.worker_threads, 1);
    assert_eq!(config.backfill.max_initial_messages, 50);
    assert_eq!(config.homeserver.status_endpoint, None);
    assert_eq!(config.bridge.status_notices, StatusNotices::Errors);
    assert_eq!(
        config.permission_for("@admin:example.org"),
        Permission::Admin
    );
    assert_eq!(config.permission_for("@bob:example.org"), Permission::User);
    assert_eq!(
        config.permission_for("@eve:elsewhere.net"),
        Permission::None
    );
}

#[test]
fn minimal_config_gets_defaults() {
    let config = parse(MINIMAL).expect("minimal config");
    assert_eq!(config.appservice.hostname, "127.0.0.1");
    assert_eq!(config.appservice.id, "max");
    assert_eq!(config.appservice.bot.avatar, "");
    assert_eq!(config.database.max_connections, 10);
    assert_eq!(config.max.origin, "https://web.max.ru");
    assert!(config.max.user_agent.contains("Chrome"));
    assert_eq!(config.max.device.device_type, "WEB");
    assert_eq!(config.max.device.timezone, "Europe/Moscow");
    assert_eq!(config.bridge.username_template, "max_{userid}");
    assert_eq!(config.bridge.displayname_template, "{displayname} (MAX)");
    assert_eq!(config.logging.level, "info");
    assert_eq!(config.message_send_timeout().as_secs(), 30);
    // No permissions configured: nobody may use the bridge.
    assert_eq!(config.permission_for("@bob:example.org"), Permission::None);
}

/// Keys come from the environment too (`MAXBRIDGE_<SECTION>__<KEY>`, or
/// `…_FILE` for a secret in a file), typed as the key wants; variables
/// without `__` are no keys, and a bad override names its key.
#[test]
fn environment_overrides_keys_and_secrets_come_from_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let secret = dir.path().join("db-url");
    std::fs::write(&secret, "postgres://bridge:s3cret@db/max\n").expect("secret written");
    let vars = [
        (
            "MAXBRIDGE_DATABASE__URL_FILE",
            secret.to_str().expect("utf-8 path"),
        ),
        ("MAXBRIDGE_APPSERVICE__PORT", "8999"),
        ("MAXBRIDGE_BACKFILL__MAX_INITIAL_MESSAGES", "7"),
        ("MAXBRIDGE_METRICS__ENABLED", "true"),
        ("MAXBRIDGE_HOMESERVER__DOMAIN", "12345.example"),
        // No `__`: the test harness's own variables, not keys.
        ("MAXBRIDGE_TEST_PG_URL", "postgres://elsewhere"),
        ("PATH", "/bin"),
    ]
    .map(|(k, v)| (k.to_owned(), v.to_owned()));
    let config = Config::parse_with_env(MINIMAL, "test.yaml", vars).expect("overridden config");
    assert_eq!(
        config.database.url.as_str(),
        "postgres://bridge:s3cret@db/max"
    );
    assert_eq!(config.appservice.port, 8999);
    assert_eq!(config.backfill.max_initial_messages, 7);
    assert!(config.metrics.enabled);
    assert_eq!(config.homeserver.domain, "12345.example");

    let bad = [("MAXBRIDGE_APPSERVICE__PORT".to_owned(), "lots".to_owned())];
    let (key, message) = invalid_key(Config::parse_with_env(MINIMAL, "test.yaml", bad));
    assert_eq!(key, "appservice.port", "{message}");
    let missing = [(
        "MAXBRIDGE_DATABASE__URL_FILE".to_owned(),
        "/nonexistent/x".to_owned(),
    )];
    let (key, message) = invalid_key(Config::parse_with_env(MINIMAL, "test.yaml", missing));
    assert_eq!(key, "database.url");
    assert!(
        message.contains("MAXBRIDGE_DATABASE__URL_FILE"),
        "{message}"
    );
}

/// `maxbridge -e` prints the documented example, which is a valid config.
#[test]
fn the_binary_prints_the_example_config() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_maxbridge"))
        .arg("-e")
        .output()
        .expect("maxbridge runs");
    assert!(output.status.success());
    let printed = String::from_utf8(output.stdout).expect("utf-8");
    let example = std::fs::read_to_string(example_path()).expect("example readable");
    assert_eq!(printed, example);
    Config::parse_with_env(&printed, "printed", []).expect("the printed example parses");
}

/// A startup error is one clean message, each cause said once, without a
/// backtrace even when RUST_BACKTRACE asks for one.
#[test]
fn startup_errors_are_said_once() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config_path = dir.path().join("config.yaml");
    let text = std::fs::read_to_string(example_path())
        .expect("example readable")
        .replace("domain: example.org", "domain: matrix.test");
    std::fs::write(&config_path, text).expect("config written");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_maxbridge"))
        .arg("-c")
        .arg(&config_path)
        .current_dir(dir.path())
        .env("RUST_BACKTRACE", "1")
        .output()
        .expect("maxbridge runs");
    assert!(!output.status.success());
    let said = String::from_utf8_lossy(&output.stderr);
    assert!(said.starts_with("Error: "), "{said}");
    assert!(said.contains("registration.yaml"), "{said}");
    assert!(said.contains("maxbridge -g"), "how to fix it: {said}");
    assert_eq!(said.matches("No such file").count(), 1, "{said}");
    assert!(!said.contains("backtrace"), "{said}");
    assert_eq!(said.trim_end().lines().count(), 1, "{said}");
}

/// A container's first runs (`--generate-missing`): the config is written
/// (listening on all interfaces) and the bridge exits; unedited, it is
/// refused by the key to edit; edited, the registration is written and the
/// bridge exits again.
#[test]
fn first_runs_write_the_config_then_the_registration_and_refuse_the_placeholder() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config_path = dir.path().join("config.yaml");
    let run = |args: &[&str]| {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_maxbridge"))
            .arg("-c")
            .arg(&config_path)
            .args(args)
            .current_dir(dir.path())
            .env_remove("NOTIFY_SOCKET")
            .output()
            .expect("maxbridge runs");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        (output.status.success(), text)
    };

    let (ok, said) = run(&["--generate-missing"]);
    assert!(ok, "{said}");
    assert!(said.contains("Edit it"), "{said}");
    let written = Config::parse_with_env(
        &std::fs::read_to_string(&config_path).expect("config written"),
        &config_path,
        [],
    )
    .expect("the written config parses");
    assert_eq!(written.appservice.hostname, "0.0.0.0");
    let registration_path = dir.path().join("registration.yaml");
    assert!(!registration_path.exists());

    for args in [&["--generate-missing"][..], &["-g"], &[]] {
        let (ok, said) = run(args);
        assert!(!ok, "{args:?} ran on the placeholder domain: {said}");
        assert!(said.contains("homeserver.domain"), "{said}");
        assert!(!registration_path.exists());
    }

    let edited = std::fs::read_to_string(&config_path)
        .expect("config readable")
        .replace("domain: example.org", "domain: matrix.test");
    std::fs::write(&config_path, edited).expect("config edited");
    let (ok, said) = run(&["--generate-missing"]);
    assert!(ok, "{said}");
    assert!(said.contains("start the bridge again"), "{said}");
    let registration = Registration::load(&registration_path).expect("registration written");
    assert!(
        registration.namespaces.users[0]
            .regex
            .contains("matrix\\.test"),
        "{:?}",
        registration.namespaces.users
    );
}

#[test]
fn missing_required_key_is_named() {
    let (key, message) = invalid_key(parse(
        "homeserver: {address: http://127.0.0.1:8008, domain: example.org}\n\
         database: {url: postgres://localhost/db}\n",
    ));
    assert_eq!(key, ".", "top-level missing field: {message}");
    assert!(message.contains("appservice"), "{message}");
}

#[test]
fn typo_in_a_key_is_named() {
    let (key, message) = invalid_key(parse(&MINIMAL.replace("domain:", "domian:")));
    assert_eq!(key, "homeserver.domian", "{message}");
    assert!(message.contains("domian"), "{message}");
}

#[test]
fn wrong_type_names_the_key_path() {
    let (key, message) = invalid_key(minimal_with("max:\n  device:\n    locale: [ru]\n"));
    assert_eq!(key, "max.device.locale", "{message}");

    let (key, _) = invalid_key(parse(&with_appservice("  port: many\n")));
    assert_eq!(key, "appservice.port");
}

#[test]
fn unknown_enum_value_names_the_key_and_the_choices() {
    let (key, message) = invalid_key(minimal_with(
        "bridge:\n  permissions:\n    example.org: owner\n",
    ));
    assert_eq!(key, "bridge.permissions.example.org");
    assert!(message.contains("owner"), "{message}");
    assert!(message.contains("admin"), "{message}");

    let (key, _) = invalid_key(minimal_with("max:\n  wire_format: xml\n"));
    assert_eq!(key, "max.wire_format");

    let (key, message) = invalid_key(minimal_with("logging:\n  level: verbose\n"));
    assert_eq!(key, "logging.level");
    assert!(message.contains("verbose"), "{message}");
    minimal_with("logging:\n  level: info,maxbridge=debug,sqlx=OFF\n")
        .expect("levels per target are levels");

    let (key, message) = invalid_key(minimal_with("bridge:\n  status_notices: some\n"));
    assert_eq!(key, "bridge.status_notices");
    assert!(message.contains("errors"), "{message}");
}

#[test]
fn error_display_includes_file_and_key() {
    let error = minimal_with("logging:\n  format: fancy\n").unwrap_err();
    let shown = error.to_string();
    assert!(shown.starts_with("test.yaml: logging.format: "), "{shown}");
    assert_eq!(error.key(), Some("logging.format"));
}

#[test]
fn semantic_errors_name_the_key() {
    let cases = [
        (
            MINIMAL.replace("domain: example.org", "domain: \"\""),
            "homeserver.domain",
        ),
        (
            MINIMAL.replace("http://127.0.0.1:8008", "not a url"),
            "homeserver.address",
        ),
        (
            MINIMAL.replace("http://127.0.0.1:29340", "ftp://127.0.0.1"),
            "appservice.address",
        ),
        (
            MINIMAL.replace("postgres://postgres@", "mysql://root@"),
            "database.url",
        ),
        (
            format!("{MINIMAL}bridge:\n  username_template: max_user\n"),
            "bridge.username_template",
        ),
        (
            format!("{MINIMAL}bridge:\n  username_template: \"MAX {{userid}}\"\n"),
            "bridge.username_template",
        ),
        (
            format!("{MINIMAL}bridge:\n  displayname_template: \"{{name}}\"\n"),
            "bridge.displayname_template",
        ),
        (
            format!("{MINIMAL}bridge:\n  permissions:\n    \"@bad\": user\n"),
            "bridge.permissions",
        ),
        (
            format!("{MINIMAL}max:\n  endpoint: https://ws-api.oneme.ru/websocket\n"),
            "max.endpoint",
        ),
        (
            with_appservice("  bot:\n    avatar: http://x/y.png\n"),
            "appservice.bot.avatar",
        ),
        (
            format!("{MINIMAL}logging:\n  level: \"info,[[[\"\n"),
            "logging.level",
        ),
        (
            format!("{MINIMAL}runtime:\n  worker_threads: 0\n"),
            "runtime.worker_threads",
        ),
        (
            format!("{MINIMAL}max:\n  frame_max_depth: 500\n"),
            "max.frame_max_depth",
        ),
        (
            format!("{MINIMAL}backfill:\n  max_initial_messages: 5000\n"),
            "backfill.max_initial_messages",
        ),
    ];
    for (text, expected) in cases {
        match parse(&text) {
            Err(ConfigError::Invalid { key, message, .. }) => {
                assert_eq!(key, expected, "{message}\n--- config ---\n{text}");
            }
            other => panic!("expected an error on {expected}, got {other:?}"),
        }
    }
}

#[test]
fn invalid_yaml_is_reported() {
    let error = parse("homeserver: [unclosed").unwrap_err();
    assert!(matches!(error, ConfigError::Yaml { .. }), "{error}");
}

#[test]
fn missing_file_is_reported_with_its_path() {
    let error = Config::load("/nonexistent/maxbridge.yaml").unwrap_err();
    assert!(matches!(error, ConfigError::Read { .. }));
    assert!(error.to_string().contains("/nonexistent/maxbridge.yaml"));
}

#[test]
fn most_specific_permission_wins() {
    let config = minimal_with(
        "bridge:\n  permissions:\n    \"*\": user\n    example.org: admin\n    \
         \"@mallory:example.org\": none\n    \"@carol:other.net\": admin\n    \
         \"matrix.org:8448\": none\n",
    )
    .expect("config");
    assert_eq!(
        config.permission_for("@alice:example.org"),
        Permission::Admin
    );
    assert_eq!(
        config.permission_for("@mallory:example.org"),
        Permission::None
    );
    assert_eq!(config.permission_for("@carol:other.net"), Permission::Admin);
    assert_eq!(config.permission_for("@dave:other.net"), Permission::User);
    assert_eq!(
        config.permission_for("@erin:matrix.org:8448"),
        Permission::None
    );
    assert_eq!(config.permission_for("@erin:matrix.org"), Permission::User);
    assert!(Permission::Admin > Permission::User && Permission::User > Permission::None);
}

#[test]
fn ghost_and_bot_naming() {
    let config = parse(MINIMAL).expect("config");
    assert_eq!(config.ghost_localpart(42), "max_42");
    assert_eq!(config.ghost_user_id(42), "@max_42:example.org");
    assert_eq!(config.ghost_displayname("Ivan"), "Ivan (MAX)");
    assert_eq!(config.bot_user_id(), "@maxbot:example.org");

    assert_eq!(
        config.max_user_id_from_ghost("@max_123456789012:example.org"),
        Some(123456789012)
    );
    assert_eq!(config.max_user_id_from_ghost("@max_42:other.org"), None);
    assert_eq!(config.max_user_id_from_ghost("@max_abc:example.org"), None);
    assert_eq!(config.max_user_id_from_ghost("@max_042:example.org"), None);
    assert_eq!(config.max_user_id_from_ghost("@alice:example.org"), None);
    assert!(config.is_bridge_user("@maxbot:example.org"));
    assert!(config.is_bridge_user("@max_7:example.org"));
    assert!(!config.is_bridge_user("@alice:example.org"));
}

#[test]
fn ghost_template_with_suffix_round_trips() {
    let config = minimal_with("bridge:\n  username_template: \"m.{userid}.x\"\n").expect("config");
    assert_eq!(config.ghost_user_id(5), "@m.5.x:example.org");
    assert_eq!(config.max_user_id_from_ghost("@m.5.x:example.org"), Some(5));
    assert_eq!(config.max_user_id_from_ghost("@m.5:example.org"), None);
}

#[test]
fn debug_of_config_hides_the_database_password() {
    let config = parse(&MINIMAL.replace("postgres@", "postgres:hunter2@")).expect("config");
    let shown = format!("{config:?}");
    assert!(!shown.contains("hunter2"), "{shown}");
    assert!(shown.contains("127.0.0.1"), "{shown}");
}

/// A config whose registration file lives in `dir`.
fn config_in(dir: &Path) -> Config {
    let path = dir.join("registration.yaml");
    parse(&with_appservice(&format!(
        "  registration: {}\n",
        path.display()
    )))
    .expect("config")
}

#[test]
fn registration_fields_follow_the_config() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config_in(dir.path());
    let registration = generate_registration(&config).expect("generate");
    assert_eq!(registration.id, "max");
    // No trailing slash: homeservers append `/_matrix/app/...` to it.
    assert_eq!(registration.url, "http://127.0.0.1:29340");
    assert_eq!(registration.sender_localpart, "maxbot");
    assert!(!registration.rate_limited);
    assert!(registration.receive_ephemeral);
    assert!(registration.push_ephemeral);
    assert_eq!(registration.as_token.expose().len(), 64);
    assert_eq!(registration.hs_token.expose().len(), 64);
    assert_ne!(registration.as_token, registration.hs_token);
    assert!(registration.namespaces.users.iter().all(|ns| ns.exclusive));
    assert!(
        registration
            .namespaces
            .aliases
            .iter()
            .all(|ns| ns.exclusive)
    );
}

#[test]
fn regenerating_the_registration_keeps_tokens() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config_in(dir.path());
    let path = &config.appservice.registration;

    let first = generate_registration(&config).expect("generate");
    first.save(path).expect("save");
    let second = generate_registration(&config).expect("regenerate");
    assert_eq!(second.as_token, first.as_token);
    assert_eq!(second.hs_token, first.hs_token);

    // A registration for a fresh location gets new tokens.
    let elsewhere = tempfile::tempdir().expect("tempdir");
    let fresh = generate_registration(&config_in(elsewhere.path())).expect("generate");
    assert_ne!(fresh.as_token, first.as_token);
    assert_ne!(fresh.hs_token, first.hs_token);

    let loaded = Registration::load(path).expect("load");
    assert_eq!(loaded.as_token, first.as_token);
    assert_eq!(loaded.hs_token, first.hs_token);
    assert_eq!(loaded.namespaces, first.namespaces);
    assert!(loaded.push_ephemeral);
}

#[test]
fn saved_registration_is_what_synapse_expects() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config_in(dir.path());
    let registration = generate_registration(&config).expect("generate");
    registration
        .save(&config.appservice.registration)
        .expect("save");
    let text = std::fs::read_to_string(&config.appservice.registration).expect("read");
    for key in [
        "id:",
        "url:",
        "as_token:",
        "hs_token:",
        "sender_localpart:",
        "namespaces:",
        "rate_limited: false",
        "receive_ephemeral: true",
        "de.sorunome.msc2409.push_ephemeral: true",
    ] {
        assert!(text.contains(key), "{key} missing from\n{text}");
    }
    assert!(text.contains(registration.as_token.expose()));

    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&config.appservice.registration)
            .expect("metadata")
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "registration readable by others: {mode:o}");
    }
}

#[test]
fn corrupt_registration_is_an_error_not_new_tokens() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config_in(dir.path());
    std::fs::write(&config.appservice.registration, "id: [").expect("write");
    assert!(generate_registration(&config).is_err());
}

#[test]
fn debug_of_registration_hides_tokens() {
    let dir = tempfile::tempdir().expect("tempdir");
    let registration = generate_registration(&config_in(dir.path())).expect("generate");
    let shown = format!("{registration:?} {}", registration.as_token);
    assert!(!shown.contains(registration.as_token.expose()), "{shown}");
    assert!(!shown.contains(registration.hs_token.expose()), "{shown}");
    assert!(
        registration
            .hs_token
            .matches(registration.hs_token.expose())
    );
    assert!(
        !registration
            .hs_token
            .matches(registration.as_token.expose())
    );
}

#[test]
fn namespace_regexes_match_ghosts_and_bot_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config_in(dir.path());
    let registration = generate_registration(&config).expect("generate");
    // Homeservers anchor namespace regexes at the start; anchor both ends to be strict.
    let users: Vec<regex::Regex> = registration
        .namespaces
        .users
        .iter()
        .map(|ns| regex::Regex::new(&format!("^(?:{})$", ns.regex)).expect("valid regex"))
        .collect();
    let claimed = |mxid: &str| users.iter().any(|re| re.is_match(mxid));

    assert!(claimed(&config.ghost_user_id(1)));
    assert!(claimed(&config.ghost_user_id(9_007_199_254_740_993)));
    assert!(claimed(&config.bot_user_id()));
    assert!(!claimed("@alice:example.org"));
    assert!(!claimed("@max_1:example.com"));
    assert!(
        !claimed("@max_1:exampleXorg"),
        "dots in the domain must be escaped"
    );
    assert!(!claimed("@maxbot2:example.org"));

    let aliases: Vec<regex::Regex> = registration
        .namespaces
        .aliases
        .iter()
        .map(|ns| regex::Regex::new(&format!("^(?:{})$", ns.regex)).expect("valid regex"))
        .collect();
    assert!(aliases.iter().any(|re| re.is_match("#max_123:example.org")));
    assert!(!aliases.iter().any(|re| re.is_match("#general:example.org")));
}

/// SQLite unless told otherwise; `type` and the URL's scheme must agree; a
/// bare path is a file with `type: sqlite`.
#[test]
fn the_database_is_sqlite_unless_the_config_names_postgres() {
    let without = "
homeserver:
  address: http://127.0.0.1:8008
  domain: example.org
appservice:
  address: http://127.0.0.1:29340
";
    let config = parse(without).expect("no database section");
    assert_eq!(
        config.database.connect_url().as_deref(),
        Ok("sqlite:maxbridge.db")
    );
    let config = parse(&MINIMAL.replace("database:\n", "database:\n  type: postgres\n")).unwrap();
    assert_eq!(
        config.database.connect_url().as_deref(),
        Ok("postgres://postgres@127.0.0.1:5432/maxbridge")
    );
    let path = format!("{without}database:\n  type: sqlite\n  url: /var/lib/maxbridge/bridge.db\n");
    assert_eq!(
        parse(&path).unwrap().database.connect_url().as_deref(),
        Ok("sqlite:/var/lib/maxbridge/bridge.db")
    );

    let clash = MINIMAL.replace("database:\n", "database:\n  type: sqlite\n");
    let (key, message) = invalid_key(parse(&clash));
    assert_eq!(key, "database.url");
    assert!(message.contains("postgres"), "{message}");
    let untyped_path = format!("{without}database:\n  url: bridge.db\n");
    let (key, message) = invalid_key(parse(&untyped_path));
    assert_eq!(key, "database.url");
    assert!(message.contains("database.type: sqlite"), "{message}");
    let (key, _) = invalid_key(parse(
        &MINIMAL.replace("database:\n", "database:\n  type: mysql\n"),
    ));
    assert_eq!(key, "database.type");
}

/// Double puppeting takes an `as_token:` secret, for the bridge's own
/// homeserver only.
#[test]
fn double_puppet_secrets_are_as_tokens_of_this_homeserver() {
    let config = minimal_with("double_puppet:\n  secrets:\n    example.org: as_token:abc\n")
        .expect("a secret for this homeserver");
    assert_eq!(
        config
            .double_puppet
            .as_token("example.org")
            .map(|t| t.expose().to_owned()),
        Some("abc".to_owned())
    );
    assert!(config.double_puppet.as_token("other.org").is_none());
    for bad in [
        "double_puppet:\n  secrets:\n    other.org: as_token:abc\n",
        "double_puppet:\n  secrets:\n    example.org: abc\n",
    ] {
        let (key, _) = invalid_key(minimal_with(bad));
        assert_eq!(key, "double_puppet.secrets", "{bad}");
    }
}
