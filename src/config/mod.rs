//! The bridge's YAML configuration: parsing with key-naming errors, defaults,
//! semantic validation, permission resolution and ghost naming. The appservice
//! registration (and its tokens) lives in [`registration`].

mod registration;

pub use registration::{Namespace, Namespaces, Registration, Secret, generate_registration};

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use url::Url;

pub use crate::store::DatabaseKind;

/// Why a configuration (or registration) file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid YAML at all.
    #[error("{path}: invalid YAML: {message}")]
    Yaml { path: PathBuf, message: String },
    /// The YAML does not have the expected shape; `key` is the dotted path.
    #[error("{path}: {key}: {message}")]
    Invalid {
        path: PathBuf,
        key: String,
        message: String,
    },
    #[error("cannot serialize the registration: {0}")]
    Serialize(String),
}

impl ConfigError {
    /// The dotted key path the error is about, when it is about one key.
    pub fn key(&self) -> Option<&str> {
        match self {
            Self::Invalid { key, .. } => Some(key),
            _ => None,
        }
    }
}

/// Placeholder of [`BridgeConfig::username_template`].
pub const USERID_PLACEHOLDER: &str = "{userid}";
/// Placeholder of [`BridgeConfig::displayname_template`].
pub const DISPLAYNAME_PLACEHOLDER: &str = "{displayname}";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub homeserver: HomeserverConfig,
    pub appservice: AppserviceConfig,
    #[serde(default)]
    pub database: DatabaseConfig,
    #[serde(default)]
    pub max: MaxConfig,
    #[serde(default)]
    pub bridge: BridgeConfig,
    #[serde(default)]
    pub logging: LoggingConfig,
    #[serde(default)]
    pub runtime: RuntimeConfig,
    #[serde(default)]
    pub backfill: BackfillConfig,
    #[serde(default)]
    pub metrics: MetricsConfig,
    #[serde(default)]
    pub provisioning: ProvisioningConfig,
    #[serde(default)]
    pub double_puppet: DoublePuppetConfig,
}

/// Double puppeting: what a logged-in user does on MAX from elsewhere (the
/// phone app) appears as their own Matrix account, not a ghost.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DoublePuppetConfig {
    /// Per homeserver domain, `as_token:<token>` of a second appservice
    /// registration (with `url: null`, so it receives nothing) whose user
    /// namespace covers that homeserver's users; the bridge acts as them
    /// with it, as mautrix bridges do. Only the bridge's own homeserver.
    #[serde(default)]
    pub secrets: std::collections::BTreeMap<String, Secret>,
}

impl DoublePuppetConfig {
    /// The appservice token for users of `domain`, if double puppeting is
    /// set up for it.
    pub fn as_token(&self, domain: &str) -> Option<Secret> {
        self.secrets
            .get(domain)
            .and_then(|secret| secret.expose().strip_prefix("as_token:"))
            .filter(|token| !token.is_empty())
            .map(|token| Secret::new(token.to_owned()))
    }
}

/// The provisioning API (`/_matrix/provision/v3/`), for integration
/// managers and apps that log users in without the bot.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProvisioningConfig {
    /// The bearer token callers present (with `?user_id=` naming the user
    /// they act for). Empty or absent: the API is off.
    #[serde(default)]
    pub shared_secret: Option<Secret>,
}

impl ProvisioningConfig {
    /// The secret, when the API is on.
    pub fn secret(&self) -> Option<&Secret> {
        self.shared_secret
            .as_ref()
            .filter(|secret| !secret.expose().is_empty())
    }
}

/// Prometheus metrics.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Serve `GET /metrics` (Prometheus text format) on the appservice
    /// listener. Off by default: that listener is reachable by whatever
    /// reaches the homeserver's side of the bridge.
    #[serde(default)]
    pub enabled: bool,
}

/// History brought into portals from MAX.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackfillConfig {
    /// The newest MAX messages of a chat bridged into its portal when the
    /// portal is created (0: a portal starts empty, with what comes next).
    #[serde(default = "default_max_initial_messages")]
    pub max_initial_messages: u32,
}

impl Default for BackfillConfig {
    fn default() -> Self {
        Self {
            max_initial_messages: default_max_initial_messages(),
        }
    }
}

fn default_max_initial_messages() -> u32 {
    50
}

/// A new portal's history is read in one CHAT_HISTORY page of at most this.
pub const MAX_INITIAL_MESSAGES: u32 = 1000;

/// How the process runs its work.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeConfig {
    /// Threads running the bridge's tasks. One is the default: a message
    /// costs tens of microseconds, so one thread bridges thousands per
    /// second, far beyond what a homeserver accepts, and on a host shared
    /// with the homeserver and the database a second thread mostly adds
    /// wake-ups between threads (measured: 50 instead of 75–90 µs of CPU
    /// per message with 100 busy portals, on 2 cores). Blocking work has
    /// its own threads either way.
    #[serde(default = "default_worker_threads")]
    pub worker_threads: usize,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            worker_threads: default_worker_threads(),
        }
    }
}

fn default_worker_threads() -> usize {
    1
}

/// More threads than this only add contention.
const MAX_WORKER_THREADS: usize = 256;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HomeserverConfig {
    /// Client-server API base URL, e.g. `http://127.0.0.1:8008`.
    #[serde(deserialize_with = "de_url")]
    pub address: Url,
    /// Server name: the part after `:` in user ids.
    pub domain: String,
    /// Seconds the bridge waits at start for a homeserver that does not
    /// answer yet, or cannot reach the bridge yet, before it gives up.
    #[serde(default = "default_start_patience")]
    pub start_patience: u64,
    /// Where each login's state (connected, reconnecting, logged out…) is
    /// posted, as the mautrix bridges do (Beeper's bridge state API), with
    /// the appservice's token. None: not reported.
    #[serde(default, deserialize_with = "de_opt_url")]
    pub status_endpoint: Option<Url>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppserviceConfig {
    /// Where the homeserver reaches the bridge (the registration's `url`).
    #[serde(deserialize_with = "de_url")]
    pub address: Url,
    /// Interface the appservice HTTP server listens on.
    #[serde(default = "default_hostname")]
    pub hostname: String,
    #[serde(default = "default_port")]
    pub port: u16,
    /// Appservice id, unique per homeserver.
    #[serde(default = "default_appservice_id")]
    pub id: String,
    #[serde(default)]
    pub bot: BotConfig,
    /// Path of the registration file that holds `as_token` / `hs_token`.
    #[serde(default = "default_registration_path")]
    pub registration: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BotConfig {
    #[serde(default = "default_bot_username")]
    pub username: String,
    #[serde(default = "default_bot_displayname")]
    pub displayname: String,
    /// `mxc://` URI, or empty for none.
    #[serde(default)]
    pub avatar: String,
}

impl Default for BotConfig {
    fn default() -> Self {
        Self {
            username: default_bot_username(),
            displayname: default_bot_displayname(),
            avatar: String::new(),
        }
    }
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    /// `sqlite` or `postgres`; when absent, what `url` names.
    #[serde(rename = "type", default)]
    pub kind: Option<DatabaseKind>,
    /// `sqlite:path/to/file.db` (or just the path, with `type: sqlite`), or
    /// `postgres://user:password@host:port/dbname`.
    #[serde(default = "default_database_url")]
    pub url: String,
    #[serde(default = "default_max_connections")]
    pub max_connections: u32,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            kind: None,
            url: default_database_url(),
            max_connections: default_max_connections(),
        }
    }
}

impl DatabaseConfig {
    /// The URL to connect to, with its scheme naming the database (a bare
    /// path under `type: sqlite` becomes `sqlite:<path>`).
    pub fn connect_url(&self) -> Result<String, String> {
        let url = self.url.trim();
        if url.is_empty() {
            return Err("must not be empty".to_owned());
        }
        let named = match Url::parse(url) {
            // A one-letter scheme is a Windows drive letter: a path.
            Ok(parsed) if parsed.scheme().len() > 1 => match DatabaseKind::of_url(url) {
                Some(kind) => Some(kind),
                None => {
                    return Err(format!(
                        "scheme {:?} is not supported, use sqlite: or postgres://",
                        parsed.scheme()
                    ));
                }
            },
            _ => None,
        };
        match (self.kind, named) {
            (Some(kind), Some(named)) if kind != named => Err(format!(
                "names a {} database while database.type is {}",
                named.as_str(),
                kind.as_str()
            )),
            (_, Some(_)) => Ok(url.to_owned()),
            (Some(DatabaseKind::Sqlite), None) => Ok(format!("sqlite:{url}")),
            (_, None) => Err(
                "must be a URL (sqlite:path or postgres://…), or a path with database.type: sqlite"
                    .to_owned(),
            ),
        }
    }
}

impl fmt::Debug for DatabaseConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DatabaseConfig")
            .field("type", &self.kind)
            .field("url", &redact_url_password(&self.url))
            .field("max_connections", &self.max_connections)
            .finish()
    }
}

/// The URL with its password (if any) replaced, so it can be logged.
fn redact_url_password(raw: &str) -> String {
    match Url::parse(raw) {
        Ok(mut url) if url.password().is_some() => {
            // Cannot fail: a URL with a password already has a host.
            let _ = url.set_password(Some("redacted"));
            url.to_string()
        }
        Ok(url) => url.to_string(),
        Err(_) => "[unparseable]".to_owned(),
    }
}

/// JSON text frames or binary frames: the protocol crate's own setting.
pub use maxproto::WireFormat;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaxConfig {
    /// WebSocket endpoint of the MAX API.
    #[serde(default = "default_max_endpoint", deserialize_with = "de_url")]
    pub endpoint: Url,
    #[serde(default = "default_wire_format")]
    pub wire_format: WireFormat,
    /// `Origin` header of the WebSocket upgrade; MAX refuses upgrades without it.
    #[serde(default = "default_origin")]
    pub origin: String,
    /// `User-Agent` header; also sent as `headerUserAgent` in the handshake.
    #[serde(default = "default_user_agent")]
    pub user_agent: String,
    #[serde(default)]
    pub device: DeviceConfig,
    #[serde(default)]
    pub media: MediaConfig,
    /// Deepest nesting a received frame may have; deeper ones are dropped.
    #[serde(default = "default_frame_max_depth")]
    pub frame_max_depth: usize,
    /// Most values a received frame may hold; bigger ones are dropped.
    #[serde(default = "default_frame_max_values")]
    pub frame_max_values: usize,
}

impl Default for MaxConfig {
    fn default() -> Self {
        Self {
            endpoint: default_max_endpoint(),
            wire_format: default_wire_format(),
            origin: default_origin(),
            user_agent: default_user_agent(),
            device: DeviceConfig::default(),
            media: MediaConfig::default(),
            frame_max_depth: default_frame_max_depth(),
            frame_max_values: default_frame_max_values(),
        }
    }
}

/// How media behind URLs that MAX hands out are fetched (and uploaded).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MediaConfig {
    /// Networks that may be fetched from although they are not public
    /// (loopback, private, link-local…): none by default. A MAX server on
    /// the same host or network (a simulator) needs its network here.
    pub allow_networks: Vec<ipnet::IpNet>,
    /// Largest media mirrored either way, in bytes.
    pub max_bytes: u64,
    /// Seconds to connect to a media server.
    pub connect_timeout: u64,
    /// Seconds a download may go without receiving a byte.
    pub idle_timeout: u64,
}

impl Default for MediaConfig {
    fn default() -> Self {
        MediaConfig {
            allow_networks: Vec::new(),
            max_bytes: 100 * 1024 * 1024,
            connect_timeout: 10,
            idle_timeout: 30,
        }
    }
}

impl MediaConfig {
    pub fn fetch_policy(&self) -> crate::fetch::FetchPolicy {
        crate::fetch::FetchPolicy {
            allow_networks: self.allow_networks.clone(),
            connect_timeout: Duration::from_secs(self.connect_timeout),
            idle_timeout: Duration::from_secs(self.idle_timeout),
            max_bytes: self.max_bytes,
        }
    }
}

/// The device the bridge claims to be in the MAX handshake (`userAgent` of opcode 6).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeviceConfig {
    pub device_type: String,
    pub locale: String,
    pub device_locale: String,
    pub os_version: String,
    pub device_name: String,
    pub app_version: String,
    pub screen: String,
    pub timezone: String,
}

/// The real web client's device profile (`maxproto`'s defaults).
impl Default for DeviceConfig {
    fn default() -> Self {
        let web = maxproto::types::UserAgent::web_default();
        Self {
            device_type: web.device_type,
            locale: web.locale,
            device_locale: web.device_locale,
            os_version: web.os_version,
            device_name: web.device_name,
            app_version: web.app_version,
            screen: web.screen,
            timezone: web.timezone,
        }
    }
}

/// What a Matrix user may do with the bridge. Ordered: `None < User < Admin`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Permission {
    /// May not use the bridge (useful to block one user of an allowed domain).
    None,
    /// May log in and bridge their own MAX account.
    User,
    /// May also run administrative commands.
    Admin,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BridgeConfig {
    /// Localpart template of ghost users; must contain `{userid}`.
    #[serde(default = "default_username_template")]
    pub username_template: String,
    /// Display name template of ghost users; must contain `{displayname}`.
    #[serde(default = "default_displayname_template")]
    pub displayname_template: String,
    /// Prefix of bot commands in rooms other than the management room.
    #[serde(default = "default_command_prefix")]
    pub command_prefix: String,
    /// Keys: `"*"`, a server name, or a full user id. Values: none, user, admin.
    #[serde(default)]
    pub permissions: BTreeMap<String, Permission>,
    /// Seconds to wait for MAX to acknowledge a message sent from Matrix.
    #[serde(default = "default_message_send_timeout")]
    pub message_send_timeout: u64,
    /// Most MAX messages caught up per chat after the bridge was away;
    /// older ones are skipped with a notice in the portal.
    #[serde(default = "default_max_catchup_messages")]
    pub max_catchup_messages: u32,
    /// Seconds a message waits for a saved login that is being resumed
    /// (bridge start, reconnect) before the user is told it was not sent.
    #[serde(default = "default_login_patience")]
    pub login_patience: u64,
    /// Seconds a portal waits out an unavailable homeserver, database or
    /// MAX connection, retrying, before it gives up on a message and says so.
    #[serde(default = "default_outage_patience")]
    pub outage_patience: u64,
    /// Seconds a login in the management room waits for the user's next
    /// step (phone number, code, password) before it is dropped.
    #[serde(default = "default_login_step_timeout")]
    pub login_step_timeout: u64,
    /// Which changes of a login's connection the bot tells its user about
    /// in the management room: `none`, `errors` (drops, logouts, and the
    /// recovery from a drop) or `all` (also every connect).
    #[serde(default)]
    pub status_notices: StatusNotices,
    /// After each Matrix message, post a `com.beeper.message_send_status`
    /// event relating to it (SUCCESS, or FAIL_* with the reason), as the
    /// mautrix bridges do, so clients that know it can mark failed sends.
    /// One more homeserver request per message; off by default.
    #[serde(default)]
    pub message_status_events: bool,
    /// Gather each user's portals in a space of their own ("MAX"), as the
    /// mautrix bridges' personal filtering spaces do.
    #[serde(default = "default_true")]
    pub personal_space: bool,
    /// Show MAX contacts' online state as their ghosts' presence. Off by
    /// default: on a big homeserver presence is costly, and many turn it off.
    #[serde(default)]
    pub presence: bool,
    /// What a logout does to the user's portals: `nothing` (they stay, and
    /// bridge again after the next login), `kick` (the user is removed from
    /// them) or `delete` (everyone is removed and the bridge forgets them).
    #[serde(default)]
    pub cleanup_on_logout: CleanupOnLogout,
    /// Which MAX chats get portals on their own (at login, `sync`, or with
    /// a first message); `start-chat` and inviting a ghost still open any
    /// direct chat.
    #[serde(default)]
    pub portal_filter: PortalFilter,
    /// Relay mode (as mautrix's bridgev2): in a portal where it is set
    /// (`set-relay`), Matrix users without a MAX login speak through the
    /// portal owner's account, each message carrying their name.
    #[serde(default)]
    pub relay: RelayConfig,
    /// MAX's Saved messages as a room of the user's notes, both ways (made
    /// once it holds something).
    #[serde(default = "default_true")]
    pub saved_messages: bool,
}

/// See [`BridgeConfig::relay`].
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelayConfig {
    /// Off by default: nobody can turn it on in a portal.
    #[serde(default)]
    pub enabled: bool,
    /// Only bridge admins may turn it on (else also the portal's owner).
    #[serde(default = "default_true")]
    pub admin_only: bool,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            admin_only: true,
        }
    }
}

/// See [`BridgeConfig::portal_filter`].
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortalFilter {
    /// `deny`: every chat but those in `chats`; `allow`: only those.
    #[serde(default)]
    pub mode: FilterMode,
    /// MAX chat ids (dialogs positive, groups and channels negative).
    #[serde(default)]
    pub chats: Vec<i64>,
    /// Whether direct chats, groups and channels get portals at all.
    #[serde(default = "default_true")]
    pub dialogs: bool,
    #[serde(default = "default_true")]
    pub groups: bool,
    #[serde(default = "default_true")]
    pub channels: bool,
}

/// See [`PortalFilter::mode`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FilterMode {
    #[default]
    Deny,
    Allow,
}

/// The kinds of MAX chat, as the portal filter tells them apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChatKind {
    Dialog,
    Group,
    Channel,
}

impl Default for PortalFilter {
    fn default() -> Self {
        Self {
            mode: FilterMode::Deny,
            chats: Vec::new(),
            dialogs: true,
            groups: true,
            channels: true,
        }
    }
}

impl PortalFilter {
    /// Whether the chat gets a portal on its own.
    pub fn allows(&self, chat_id: i64, kind: ChatKind) -> bool {
        let kind_allowed = match kind {
            ChatKind::Dialog => self.dialogs,
            ChatKind::Group => self.groups,
            ChatKind::Channel => self.channels,
        };
        let listed = self.chats.contains(&chat_id);
        kind_allowed
            && match self.mode {
                FilterMode::Deny => !listed,
                FilterMode::Allow => listed,
            }
    }

    /// Whether telling a group from a channel matters (it costs a question
    /// to MAX when only the chat id is known).
    pub fn tells_groups_from_channels(&self) -> bool {
        self.groups != self.channels
    }
}

/// See [`BridgeConfig::cleanup_on_logout`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CleanupOnLogout {
    #[default]
    Nothing,
    Kick,
    Delete,
}

/// See [`BridgeConfig::status_notices`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StatusNotices {
    None,
    #[default]
    Errors,
    All,
}

impl Default for BridgeConfig {
    fn default() -> Self {
        Self {
            username_template: default_username_template(),
            displayname_template: default_displayname_template(),
            command_prefix: default_command_prefix(),
            permissions: BTreeMap::new(),
            message_send_timeout: default_message_send_timeout(),
            max_catchup_messages: default_max_catchup_messages(),
            login_patience: default_login_patience(),
            outage_patience: default_outage_patience(),
            login_step_timeout: default_login_step_timeout(),
            status_notices: StatusNotices::default(),
            message_status_events: false,
            personal_space: true,
            presence: false,
            cleanup_on_logout: CleanupOnLogout::default(),
            portal_filter: PortalFilter::default(),
            relay: RelayConfig::default(),
            saved_messages: true,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Pretty,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoggingConfig {
    /// A `tracing_subscriber::EnvFilter` directive string.
    #[serde(default = "default_log_level")]
    pub level: String,
    #[serde(default = "default_log_format")]
    pub format: LogFormat,
}

impl Default for LoggingConfig {
    fn default() -> Self {
        Self {
            level: default_log_level(),
            format: default_log_format(),
        }
    }
}

fn de_url<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Url, D::Error> {
    let raw = String::deserialize(deserializer)?;
    Url::parse(&raw).map_err(|e| serde::de::Error::custom(format!("invalid URL {raw:?}: {e}")))
}

/// A directive of `logging.level`: a level, or `target=level`. (The
/// filter itself would take a bare word as a target to log at every level,
/// which is never what `verbose` meant.)
fn is_log_directive(directive: &str) -> bool {
    let level = directive
        .rsplit_once('=')
        .map_or(directive, |(_, level)| level);
    level.eq_ignore_ascii_case("off") || level.parse::<tracing::Level>().is_ok()
}

fn de_opt_url<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<Url>, D::Error> {
    match Option::<String>::deserialize(deserializer)? {
        None => Ok(None),
        Some(raw) if raw.trim().is_empty() => Ok(None),
        Some(raw) => Url::parse(&raw)
            .map(Some)
            .map_err(|e| serde::de::Error::custom(format!("invalid URL {raw:?}: {e}"))),
    }
}

fn default_true() -> bool {
    true
}

fn default_hostname() -> String {
    "127.0.0.1".to_owned()
}
fn default_port() -> u16 {
    29340
}
fn default_appservice_id() -> String {
    "max".to_owned()
}
fn default_registration_path() -> PathBuf {
    PathBuf::from("registration.yaml")
}
fn default_bot_username() -> String {
    "maxbot".to_owned()
}
fn default_bot_displayname() -> String {
    "MAX bridge bot".to_owned()
}
fn default_database_url() -> String {
    "sqlite:maxbridge.db".to_owned()
}
fn default_max_connections() -> u32 {
    10
}
fn default_max_endpoint() -> Url {
    Url::parse(maxproto::client::JSON_ENDPOINT).expect("constant URL is valid")
}
fn default_frame_max_depth() -> usize {
    maxproto::codec::limits::MAX_DEPTH
}
fn default_frame_max_values() -> usize {
    maxproto::codec::limits::MAX_VALUES
}
fn default_wire_format() -> WireFormat {
    WireFormat::Json
}
fn default_origin() -> String {
    maxproto::client::WEB_ORIGIN.to_owned()
}
fn default_user_agent() -> String {
    maxproto::types::WEB_USER_AGENT.to_owned()
}
fn default_username_template() -> String {
    "max_{userid}".to_owned()
}
fn default_displayname_template() -> String {
    "{displayname} (MAX)".to_owned()
}
fn default_command_prefix() -> String {
    "!max".to_owned()
}
fn default_message_send_timeout() -> u64 {
    30
}
fn default_max_catchup_messages() -> u32 {
    500
}
fn default_login_patience() -> u64 {
    120
}
fn default_start_patience() -> u64 {
    120
}
fn default_login_step_timeout() -> u64 {
    300
}
fn default_outage_patience() -> u64 {
    600
}
fn default_log_level() -> String {
    "info".to_owned()
}
/// Reads a configuration or registration file, naming it on failure.
/// Prefix of the environment variables that override config keys.
const ENV_PREFIX: &str = "MAXBRIDGE_";

/// Sets each key that a `MAXBRIDGE_<SECTION>__<KEY>[_FILE]` variable names.
/// A value replacing a string stays a string (a token of digits is still a
/// token); elsewhere it is read as YAML (numbers, booleans, lists). An
/// error names the key and the variable.
fn apply_env(
    config: &mut serde_json::Value,
    vars: impl IntoIterator<Item = (String, String)>,
) -> Result<(), (String, String)> {
    let mut vars: Vec<(String, String)> = vars
        .into_iter()
        .filter(|(name, _)| name.starts_with(ENV_PREFIX) && name.contains("__"))
        .collect();
    // The same order whatever the environment's: a variable set twice (as
    // `X` and `X_FILE`) is a mistake reported the same way each time.
    vars.sort();
    for (name, raw) in vars {
        let spec = name[ENV_PREFIX.len()..].to_ascii_lowercase();
        let (spec, raw) = match spec.strip_suffix("_file") {
            Some(spec) => {
                let text = std::fs::read_to_string(&raw).map_err(|e| {
                    (
                        spec.replace("__", "."),
                        format!("{name}: cannot read {raw}: {e}"),
                    )
                })?;
                (
                    spec.to_owned(),
                    text.trim_end_matches(['\n', '\r']).to_owned(),
                )
            }
            None => (spec, raw),
        };
        let path: Vec<&str> = spec.split("__").collect();
        let key = path.join(".");
        if path.iter().any(|p| p.is_empty()) {
            return Err((key, format!("{name}: empty key level")));
        }
        let mut node = &mut *config;
        for level in &path[..path.len() - 1] {
            if node.is_null() {
                *node = serde_json::Value::Object(Default::default());
            }
            let object = node
                .as_object_mut()
                .ok_or_else(|| (key.clone(), format!("{name}: {level} is not a section")))?;
            node = object
                .entry((*level).to_owned())
                .or_insert(serde_json::Value::Null);
        }
        if node.is_null() {
            *node = serde_json::Value::Object(Default::default());
        }
        let object = node
            .as_object_mut()
            .ok_or_else(|| (key.clone(), format!("{name}: not inside a section")))?;
        let last = path[path.len() - 1].to_owned();
        let value = match object.get(&last) {
            Some(serde_json::Value::String(_)) => serde_json::Value::String(raw),
            _ => serde_saphyr::from_str(&raw).unwrap_or(serde_json::Value::String(raw)),
        };
        object.insert(last, value);
    }
    Ok(())
}

fn read_file(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })
}

fn default_log_format() -> LogFormat {
    LogFormat::Pretty
}

/// The server name of `config.yaml.example`, which no real config keeps.
pub const EXAMPLE_DOMAIN: &str = "example.org";

/// The documented example configuration (`maxbridge -e`).
pub const EXAMPLE: &str = include_str!("../../config.yaml.example");

impl Config {
    /// Reads, parses and validates the configuration file at `path`.
    pub fn load(path: impl AsRef<Path>) -> Result<Config, ConfigError> {
        let path = path.as_ref();
        Self::parse(&read_file(path)?, path)
    }

    /// Parses and validates configuration text, with the overrides of this
    /// process's environment ([`Config::parse_with_env`]); `origin` only
    /// labels errors.
    pub fn parse(text: &str, origin: impl AsRef<Path>) -> Result<Config, ConfigError> {
        Self::parse_with_env(text, origin, std::env::vars())
    }

    /// Parses and validates configuration text, each key overridable by a
    /// variable `MAXBRIDGE_<SECTION>__<KEY>` (`__` between the levels of the
    /// key, e.g. `MAXBRIDGE_DATABASE__URL`), or by `…_FILE` naming a file
    /// that holds the value (secrets as containers mount them). Variables
    /// without `__` are not config keys and are left alone.
    pub fn parse_with_env(
        text: &str,
        origin: impl AsRef<Path>,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let origin = origin.as_ref();
        // Going through a JSON value lets serde_path_to_error name the failing key.
        let mut value: serde_json::Value =
            serde_saphyr::from_str(text).map_err(|e| ConfigError::Yaml {
                path: origin.to_owned(),
                message: e.to_string(),
            })?;
        apply_env(&mut value, vars).map_err(|(key, message)| ConfigError::Invalid {
            path: origin.to_owned(),
            key,
            message,
        })?;
        let config: Config = serde_path_to_error::deserialize(value).map_err(|e| {
            let key = e.path().to_string();
            ConfigError::Invalid {
                path: origin.to_owned(),
                key,
                message: e.into_inner().to_string(),
            }
        })?;
        config
            .validate()
            .map_err(|(key, message)| ConfigError::Invalid {
                path: origin.to_owned(),
                key: key.to_owned(),
                message,
            })?;
        Ok(config)
    }

    /// The key still holding the example's placeholder, and what to do, if
    /// any: a bridge on the example's domain would claim ghosts that no
    /// homeserver of the admin owns. Checked before running or writing a
    /// registration, not at parse (the example itself must parse).
    pub fn placeholder(&self) -> Option<(&'static str, String)> {
        (self.homeserver.domain == EXAMPLE_DOMAIN).then(|| {
            (
                "homeserver.domain",
                format!(
                    "is still the example's {EXAMPLE_DOMAIN}: set it to your homeserver's server name (the part after \":\" in its user ids)"
                ),
            )
        })
    }

    /// Checks what serde cannot: returns the offending key and why.
    fn validate(&self) -> Result<(), (&'static str, String)> {
        let domain = &self.homeserver.domain;
        if domain.trim().is_empty() {
            return Err(("homeserver.domain", "must not be empty".to_owned()));
        }
        if ruma::ServerName::parse(domain).is_err() {
            return Err((
                "homeserver.domain",
                format!("{domain:?} is not a valid server name"),
            ));
        }
        if let Some(directive) = self
            .logging
            .level
            .split(',')
            .map(str::trim)
            .find(|d| !is_log_directive(d))
        {
            return Err((
                "logging.level",
                format!(
                    "{directive:?} is not a level (trace, debug, info, warn, error, off) nor target=level"
                ),
            ));
        }
        if !(1..=MAX_WORKER_THREADS).contains(&self.runtime.worker_threads) {
            return Err((
                "runtime.worker_threads",
                format!("must be between 1 and {MAX_WORKER_THREADS}"),
            ));
        }
        if self.backfill.max_initial_messages > MAX_INITIAL_MESSAGES {
            return Err((
                "backfill.max_initial_messages",
                format!("must be at most {MAX_INITIAL_MESSAGES}"),
            ));
        }
        // Deeper frames would be walked recursively past what a thread's
        // stack is known to hold.
        let deepest = maxproto::codec::limits::MAX_DEPTH;
        if !(1..=deepest).contains(&self.max.frame_max_depth) {
            return Err((
                "max.frame_max_depth",
                format!("must be between 1 and {deepest}"),
            ));
        }
        require_http("homeserver.address", &self.homeserver.address)?;
        require_http("appservice.address", &self.appservice.address)?;
        if self.appservice.hostname.trim().is_empty() {
            return Err(("appservice.hostname", "must not be empty".to_owned()));
        }
        if self.appservice.id.trim().is_empty() {
            return Err(("appservice.id", "must not be empty".to_owned()));
        }
        if self.appservice.registration.as_os_str().is_empty() {
            return Err(("appservice.registration", "must not be empty".to_owned()));
        }
        if !is_valid_localpart(&self.appservice.bot.username) {
            return Err((
                "appservice.bot.username",
                format!(
                    "{:?} is not a valid Matrix localpart",
                    self.appservice.bot.username
                ),
            ));
        }
        let avatar = &self.appservice.bot.avatar;
        if !avatar.is_empty() && <&ruma::MxcUri>::from(avatar.as_str()).validate().is_err() {
            return Err((
                "appservice.bot.avatar",
                format!("{avatar:?} is not an mxc:// URI"),
            ));
        }
        if let Err(error) = self.database.connect_url() {
            return Err(("database.url", error));
        }
        for server in self.double_puppet.secrets.keys() {
            if server != domain {
                return Err((
                    "double_puppet.secrets",
                    format!(
                        "{server:?} is not this bridge's homeserver ({domain:?}): only its users can be double puppeted"
                    ),
                ));
            }
            if self.double_puppet.as_token(server).is_none() {
                return Err((
                    "double_puppet.secrets",
                    format!("the secret for {server:?} must be as_token:<token>"),
                ));
            }
        }
        if self.database.max_connections == 0 {
            return Err(("database.max_connections", "must be at least 1".to_owned()));
        }
        if !matches!(self.max.endpoint.scheme(), "ws" | "wss") {
            return Err((
                "max.endpoint",
                format!("must be a ws:// or wss:// URL, got {}", self.max.endpoint),
            ));
        }
        if self.max.user_agent.trim().is_empty() {
            return Err(("max.user_agent", "must not be empty".to_owned()));
        }
        self.validate_templates()?;
        if self.bridge.command_prefix.trim().is_empty() {
            return Err(("bridge.command_prefix", "must not be empty".to_owned()));
        }
        for key in self.bridge.permissions.keys() {
            validate_permission_key(key).map_err(|why| ("bridge.permissions", why))?;
        }
        if self.bridge.message_send_timeout == 0 {
            return Err((
                "bridge.message_send_timeout",
                "must be at least 1 second".to_owned(),
            ));
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.logging.level) {
            return Err(("logging.level", format!("invalid filter: {e}")));
        }
        Ok(())
    }

    fn validate_templates(&self) -> Result<(), (&'static str, String)> {
        let template = &self.bridge.username_template;
        if template.matches(USERID_PLACEHOLDER).count() != 1 {
            return Err((
                "bridge.username_template",
                format!("must contain {USERID_PLACEHOLDER} exactly once"),
            ));
        }
        if !is_valid_localpart(&self.ghost_localpart(1234567890))
            || ruma::UserId::parse(self.ghost_user_id(1234567890)).is_err()
        {
            return Err((
                "bridge.username_template",
                format!("{template:?} does not produce valid Matrix localparts"),
            ));
        }
        if self.max_user_id_from_ghost(&self.bot_user_id()).is_some() {
            return Err((
                "bridge.username_template",
                "ghost ids would collide with the bot's user id".to_owned(),
            ));
        }
        if !self
            .bridge
            .displayname_template
            .contains(DISPLAYNAME_PLACEHOLDER)
        {
            return Err((
                "bridge.displayname_template",
                format!("must contain {DISPLAYNAME_PLACEHOLDER}"),
            ));
        }
        Ok(())
    }

    /// Permission of a Matrix user: an exact user id entry wins over the
    /// user's server name, which wins over `"*"`; unlisted users get `None`.
    pub fn permission_for(&self, mxid: &str) -> Permission {
        let permissions = &self.bridge.permissions;
        if let Some(p) = permissions.get(mxid) {
            return *p;
        }
        // The server name is everything after the first ':' (it may hold a port).
        let server = mxid.split_once(':').map(|(_, server)| server);
        if let Some(p) = server
            .filter(|s| !s.is_empty())
            .and_then(|s| permissions.get(s))
        {
            return *p;
        }
        permissions.get("*").copied().unwrap_or(Permission::None)
    }

    /// Localpart of the ghost of a MAX user, from `bridge.username_template`.
    pub fn ghost_localpart(&self, max_user_id: i64) -> String {
        self.bridge
            .username_template
            .replace(USERID_PLACEHOLDER, &max_user_id.to_string())
    }

    /// Full Matrix user id of the ghost of a MAX user.
    pub fn ghost_user_id(&self, max_user_id: i64) -> String {
        format!(
            "@{}:{}",
            self.ghost_localpart(max_user_id),
            self.homeserver.domain
        )
    }

    /// The MAX user id a ghost's Matrix id stands for, or `None` if `mxid`
    /// is not one of our ghosts.
    pub fn max_user_id_from_ghost(&self, mxid: &str) -> Option<i64> {
        let rest = mxid.strip_prefix('@')?;
        let localpart = rest.strip_suffix(self.homeserver.domain.as_str())?;
        let localpart = localpart.strip_suffix(':')?;
        let (prefix, suffix) = self
            .bridge
            .username_template
            .split_once(USERID_PLACEHOLDER)?;
        let digits = localpart.strip_prefix(prefix)?.strip_suffix(suffix)?;
        // Only the canonical decimal form, so each MAX user has one ghost.
        let id: i64 = digits.parse().ok()?;
        (id.to_string() == digits).then_some(id)
    }

    /// Display name of a ghost, from `bridge.displayname_template`.
    pub fn ghost_displayname(&self, name: &str) -> String {
        self.bridge
            .displayname_template
            .replace(DISPLAYNAME_PLACEHOLDER, name)
    }

    /// Full Matrix user id of the bridge bot.
    pub fn bot_user_id(&self) -> String {
        format!(
            "@{}:{}",
            self.appservice.bot.username, self.homeserver.domain
        )
    }

    /// Whether `mxid` is the bot or one of the ghosts (events from them are ours).
    pub fn is_bridge_user(&self, mxid: &str) -> bool {
        mxid == self.bot_user_id() || self.max_user_id_from_ghost(mxid).is_some()
    }

    /// How long to wait for MAX to acknowledge a message sent from Matrix.
    pub fn message_send_timeout(&self) -> Duration {
        Duration::from_secs(self.bridge.message_send_timeout)
    }

    /// How long a message waits for a login that is being resumed.
    pub fn login_patience(&self) -> Duration {
        Duration::from_secs(self.bridge.login_patience)
    }

    /// How long a portal retries through an outage before giving up.
    pub fn login_step_timeout(&self) -> Duration {
        Duration::from_secs(self.bridge.login_step_timeout)
    }

    pub fn outage_patience(&self) -> Duration {
        Duration::from_secs(self.bridge.outage_patience)
    }
}

fn require_http(key: &'static str, url: &Url) -> Result<(), (&'static str, String)> {
    if matches!(url.scheme(), "http" | "https") && url.has_host() {
        Ok(())
    } else {
        Err((key, format!("must be an http(s):// URL, got {url}")))
    }
}

/// Whether `localpart` is allowed for newly registered users (the spec's
/// strict grammar; homeservers refuse anything else at registration).
fn is_valid_localpart(localpart: &str) -> bool {
    !localpart.is_empty()
        && localpart
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._=-/+".contains(&b))
}

fn validate_permission_key(key: &str) -> Result<(), String> {
    if key == "*" {
        return Ok(());
    }
    if key.starts_with('@') {
        return ruma::UserId::parse(key)
            .map(|_| ())
            .map_err(|e| format!("{key:?} is not a valid user id: {e}"));
    }
    ruma::ServerName::parse(key)
        .map(|_| ())
        .map_err(|_| format!("{key:?} is neither \"*\", a server name nor a user id"))
}
