//! Fetching URLs that the other side hands out (MAX media URLs): only
//! `http` and `https`, only public addresses — checked after DNS resolution
//! and again on every redirect — unless the admin allows a network, no
//! proxy from the environment (it would resolve names itself), a connect
//! timeout, an idle timeout per chunk instead of one total timeout, and a
//! size cap. Knows nothing of MAX or Matrix.

use ipnet::IpNet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

/// Redirects followed at most.
const MAX_REDIRECTS: usize = 5;

/// Why a URL was not fetched.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("not an http(s) URL")]
    Scheme,
    #[error("refused: {0} is not a public address")]
    NotPublic(IpAddr),
    #[error("download failed: {0}")]
    Http(String),
    #[error("download refused ({0})")]
    Status(reqwest::StatusCode),
    #[error("no data for {0:?}")]
    Idle(Duration),
    #[error("larger than {} MiB", .0 >> 20)]
    TooLarge(u64),
}

/// Where fetches may go and how long they may stall.
#[derive(Debug, Clone)]
pub struct FetchPolicy {
    /// Networks allowed although not public (e.g. a simulator on loopback).
    pub allow_networks: Vec<IpNet>,
    pub connect_timeout: Duration,
    /// The longest wait for the next chunk of a body.
    pub idle_timeout: Duration,
    pub max_bytes: u64,
}

/// An HTTP client that keeps to a [`FetchPolicy`].
#[derive(Clone)]
pub struct GuardedClient {
    client: reqwest::Client,
    policy: Arc<FetchPolicy>,
}

/// A response whose status was a success, its body not read yet.
pub struct Download {
    response: reqwest::Response,
    policy: Arc<FetchPolicy>,
    read: u64,
}

impl GuardedClient {
    pub fn new(policy: FetchPolicy) -> Result<GuardedClient, FetchError> {
        let policy = Arc::new(policy);
        let resolver = PublicResolver {
            policy: Arc::clone(&policy),
        };
        let redirects = Arc::clone(&policy);
        let client = reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(policy.connect_timeout)
            .read_timeout(policy.idle_timeout)
            .dns_resolver(resolver)
            .redirect(reqwest::redirect::Policy::custom(move |attempt| {
                if attempt.previous().len() >= MAX_REDIRECTS {
                    return attempt.error("too many redirects");
                }
                match check_url(attempt.url(), &redirects) {
                    Ok(()) => attempt.follow(),
                    Err(error) => attempt.error(error),
                }
            }))
            .build()
            .map_err(|e| FetchError::Http(e.to_string()))?;
        Ok(GuardedClient { client, policy })
    }

    /// Starts a GET; the body is read with [`Download::chunk`].
    pub async fn get(&self, url: &str) -> Result<Download, FetchError> {
        let parsed = reqwest::Url::parse(url).map_err(|_| FetchError::Scheme)?;
        check_url(&parsed, &self.policy)?;
        let response = self
            .client
            .get(parsed)
            .send()
            .await
            .map_err(|e| refusal_in(&e).unwrap_or_else(|| FetchError::Http(e.to_string())))?;
        if !response.status().is_success() {
            return Err(FetchError::Status(response.status()));
        }
        if let Some(length) = response.content_length()
            && length > self.policy.max_bytes
        {
            return Err(FetchError::TooLarge(self.policy.max_bytes));
        }
        Ok(Download {
            response,
            policy: Arc::clone(&self.policy),
            read: 0,
        })
    }
}

impl GuardedClient {
    /// A request to a URL the policy permits (an upload URL handed out by
    /// the other side), for the caller to complete and send.
    pub fn post(&self, url: &str) -> Result<reqwest::RequestBuilder, FetchError> {
        let parsed = reqwest::Url::parse(url).map_err(|_| FetchError::Scheme)?;
        check_url(&parsed, &self.policy)?;
        Ok(self.client.post(parsed))
    }

    /// The whole body (at most `limit` bytes, and the policy's cap) and the
    /// content type the server gave, without its parameters.
    pub async fn get_all(
        &self,
        url: &str,
        limit: u64,
    ) -> Result<(Vec<u8>, Option<String>), FetchError> {
        let limit = limit.min(self.policy.max_bytes);
        let mut download = self.get(url).await?;
        if download.content_length().is_some_and(|n| n > limit) {
            return Err(FetchError::TooLarge(limit));
        }
        let content_type = download.content_type();
        Ok((download.bytes(limit).await?, content_type))
    }
}

impl Download {
    /// `Content-Type` without parameters, if the server sent one.
    pub fn content_type(&self) -> Option<String> {
        self.response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(';').next().unwrap_or(v).trim().to_owned())
            .filter(|v| !v.is_empty())
    }

    /// The announced length of what is left to read: ask before the
    /// first chunk for the whole body's.
    pub fn content_length(&self) -> Option<u64> {
        self.response.content_length()
    }

    /// The rest of the body, at most `limit` bytes (and the policy's cap).
    pub async fn bytes(&mut self, limit: u64) -> Result<Vec<u8>, FetchError> {
        let mut bytes = Vec::new();
        while let Some(chunk) = self.chunk().await? {
            if (bytes.len() + chunk.len()) as u64 > limit {
                return Err(FetchError::TooLarge(limit));
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok(bytes)
    }

    /// The next chunk of the body, `None` at its end; an error past the
    /// size cap or when no byte came for the idle timeout.
    pub async fn chunk(&mut self) -> Result<Option<bytes::Bytes>, FetchError> {
        let next = tokio::time::timeout(self.policy.idle_timeout, self.response.chunk())
            .await
            .map_err(|_| FetchError::Idle(self.policy.idle_timeout))?
            .map_err(|e| FetchError::Http(e.to_string()))?;
        if let Some(chunk) = &next {
            self.read += chunk.len() as u64;
            if self.read > self.policy.max_bytes {
                return Err(FetchError::TooLarge(self.policy.max_bytes));
            }
        }
        Ok(next)
    }
}

fn check_url(url: &reqwest::Url, policy: &FetchPolicy) -> Result<(), FetchError> {
    if !matches!(url.scheme(), "http" | "https") {
        return Err(FetchError::Scheme);
    }
    // A name is checked when it resolves; an address literal never does.
    let literal = match url.host() {
        Some(url::Host::Ipv4(ip)) => Some(IpAddr::V4(ip)),
        Some(url::Host::Ipv6(ip)) => Some(IpAddr::V6(ip)),
        Some(url::Host::Domain(_)) => None,
        None => return Err(FetchError::Scheme),
    };
    match literal {
        Some(ip) if !permitted(ip, policy) => Err(FetchError::NotPublic(ip)),
        _ => Ok(()),
    }
}

/// The refusal behind a request error (a redirect or a resolution the
/// policy refused), so the user hears why.
fn refusal_in(error: &reqwest::Error) -> Option<FetchError> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(current) = source {
        if let Some(refused) = current.downcast_ref::<Refused>() {
            return Some(FetchError::NotPublic(refused.0));
        }
        if let Some(FetchError::NotPublic(ip)) = current.downcast_ref::<FetchError>() {
            return Some(FetchError::NotPublic(*ip));
        }
        source = current.source();
    }
    None
}

#[derive(Debug, thiserror::Error)]
#[error("{0} is not a public address")]
struct Refused(IpAddr);

/// Resolves names with the system resolver and keeps only the addresses
/// the policy permits; none left is an error naming the first refused.
struct PublicResolver {
    policy: Arc<FetchPolicy>,
}

impl reqwest::dns::Resolve for PublicResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = Arc::clone(&self.policy);
        Box::pin(async move {
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((name.as_str(), 0)).await?.collect();
            let allowed: Vec<SocketAddr> = found
                .iter()
                .copied()
                .filter(|addr| permitted(addr.ip(), &policy))
                .collect();
            match (allowed.is_empty(), found.first()) {
                (false, _) => Ok(Box::new(allowed.into_iter()) as reqwest::dns::Addrs),
                (true, Some(refused)) => Err(Box::new(Refused(refused.ip())) as _),
                (true, None) => Err(format!("{} has no address", name.as_str()).into()),
            }
        })
    }
}

fn permitted(ip: IpAddr, policy: &FetchPolicy) -> bool {
    is_public(ip) || policy.allow_networks.iter().any(|net| net.contains(&ip))
}

/// Whether an address is on the public internet: not loopback, private,
/// link-local, shared (CGNAT), multicast, documentation, benchmarking,
/// reserved or unspecified; IPv4 inside IPv6 is judged as IPv4.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => is_public_v4(v4),
            None => is_public_v6(v6),
        },
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_broadcast()
        || ip.is_documentation()
        || ip.is_multicast()
        || a == 0
        || (a == 100 && (64..128).contains(&b))
        || (a == 192 && b == 0 && c == 0)
        || (a == 198 && (18..20).contains(&b))
        || a >= 240)
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let first = ip.segments()[0];
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        || (first & 0xfe00) == 0xfc00
        || (first & 0xffc0) == 0xfe80
        || (first == 0x2001 && ip.segments()[1] == 0x0db8)
        || (first == 0x0064 && ip.segments()[1] == 0xff9b)
        || ip.to_ipv4().is_some_and(|v4| !is_public_v4(v4)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_and_internal_addresses() {
        for public in ["93.184.216.34", "2606:4700::1111", "8.8.8.8"] {
            assert!(is_public(public.parse().unwrap()), "{public}");
        }
        for internal in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "::1",
            "::",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "2001:db8::1",
        ] {
            assert!(!is_public(internal.parse().unwrap()), "{internal}");
        }
    }

    fn policy(allow: &[&str]) -> FetchPolicy {
        FetchPolicy {
            allow_networks: allow.iter().map(|n| n.parse().unwrap()).collect(),
            connect_timeout: Duration::from_secs(2),
            idle_timeout: Duration::from_secs(2),
            max_bytes: 1024,
        }
    }

    #[tokio::test]
    async fn internal_urls_are_refused_before_any_request() {
        let client = GuardedClient::new(policy(&[])).unwrap();
        for url in [
            "http://127.0.0.1:9/x",
            "http://[::1]:9/x",
            "http://169.254.169.254/latest/meta-data",
            "http://localhost:9/x",
        ] {
            match client.get(url).await {
                Err(FetchError::NotPublic(_)) => {}
                Err(other) => panic!("{url}: {other}"),
                Ok(_) => panic!("{url} was fetched"),
            }
        }
        for url in ["file:///etc/passwd", "ftp://example.org/x", "not a url"] {
            assert!(
                matches!(client.get(url).await, Err(FetchError::Scheme)),
                "{url}"
            );
        }
    }

    #[tokio::test]
    async fn allowed_networks_redirects_and_size_cap() {
        // A server on loopback: allowed here, and it redirects to a refused
        // network when asked.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new()
            .route("/small", axum::routing::get(|| async { "hello" }))
            .route("/big", axum::routing::get(|| async { "x".repeat(4096) }))
            .route(
                "/away",
                axum::routing::get(|| async {
                    axum::response::Redirect::temporary("http://169.254.169.254/secret")
                }),
            );
        tokio::spawn(async move { axum::serve(listener, app).await });
        let refused = GuardedClient::new(policy(&[])).unwrap();
        assert!(matches!(
            refused.get(&format!("http://{addr}/small")).await,
            Err(FetchError::NotPublic(_))
        ));
        let client = GuardedClient::new(policy(&["127.0.0.0/8"])).unwrap();
        let mut small = client.get(&format!("http://{addr}/small")).await.unwrap();
        assert_eq!(small.chunk().await.unwrap().unwrap(), "hello");
        assert!(small.chunk().await.unwrap().is_none());
        assert!(matches!(
            client.get(&format!("http://{addr}/away")).await,
            Err(FetchError::NotPublic(_))
        ));
        assert!(matches!(
            client.get(&format!("http://{addr}/big")).await,
            Err(FetchError::TooLarge(_))
        ));
    }
}
