//! The metadata service on etcd (v3 API through `etcd-client`): keys,
//! leases kept alive by a background task, and etcd's election service.

use super::{Lease, MetaError, Metadata};
use etcd_client::{Client, GetOptions, PutOptions};
use std::time::Duration;
use tokio::sync::watch;

/// A connection to an etcd cluster.
#[derive(Clone)]
pub struct Etcd {
    client: Client,
}

fn err(what: &str) -> impl Fn(etcd_client::Error) -> MetaError + '_ {
    move |e| MetaError(format!("etcd {what}: {e}"))
}

/// How long one metadata call (other than a campaign) may take.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);

async fn bounded<T>(
    what: &str,
    f: impl std::future::Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, MetaError> {
    match tokio::time::timeout(CALL_TIMEOUT, f).await {
        Ok(r) => r.map_err(err(what)),
        Err(_) => Err(MetaError(format!(
            "etcd {what}: no answer within {CALL_TIMEOUT:?}"
        ))),
    }
}

impl Etcd {
    /// Connects to `endpoints` (`host:port[,host:port…]`).
    pub async fn connect(endpoints: &str) -> Result<Etcd, MetaError> {
        let eps: Vec<String> = endpoints
            .split(',')
            .map(|e| e.trim())
            .filter(|e| !e.is_empty())
            .map(|e| format!("http://{e}"))
            .collect();
        if eps.is_empty() {
            return Err(MetaError("etcd: no endpoints".into()));
        }
        // No per-request timeout on the connection: a campaign waits as long
        // as another master leads. Other calls are bounded by [`bounded`].
        let opts = etcd_client::ConnectOptions::new().with_connect_timeout(Duration::from_secs(5));
        let client = Client::connect(eps, Some(opts))
            .await
            .map_err(err("connect"))?;
        Ok(Etcd { client })
    }
}

#[tonic::async_trait]
impl Metadata for Etcd {
    async fn put(&self, key: &str, value: &str, lease: Option<&Lease>) -> Result<(), MetaError> {
        let opts = lease.map(|l| PutOptions::new().with_lease(l.id));
        self.client
            .kv_client()
            .put(key, value, opts)
            .await
            .map_err(err("put"))?;
        Ok(())
    }

    async fn get(&self, key: &str) -> Result<Option<String>, MetaError> {
        let r = self
            .client
            .kv_client()
            .get(key, None)
            .await
            .map_err(err("get"))?;
        Ok(r.kvs()
            .first()
            .map(|kv| String::from_utf8_lossy(kv.value()).into_owned()))
    }

    async fn delete(&self, key: &str) -> Result<(), MetaError> {
        self.client
            .kv_client()
            .delete(key, None)
            .await
            .map_err(err("delete"))?;
        Ok(())
    }

    async fn list(&self, prefix: &str) -> Result<Vec<(String, String)>, MetaError> {
        let r = bounded(
            "list",
            self.client
                .kv_client()
                .get(prefix, Some(GetOptions::new().with_prefix())),
        )
        .await?;
        let mut out: Vec<(String, String)> = r
            .kvs()
            .iter()
            .map(|kv| {
                (
                    String::from_utf8_lossy(kv.key()).into_owned(),
                    String::from_utf8_lossy(kv.value()).into_owned(),
                )
            })
            .collect();
        out.sort();
        Ok(out)
    }

    async fn lease(&self, ttl: Duration) -> Result<Lease, MetaError> {
        let secs = ttl.as_secs().max(1) as i64;
        let mut lc = self.client.lease_client();
        let id = bounded("lease grant", lc.grant(secs, None)).await?.id();
        let (mut keeper, mut stream) = bounded("lease keep-alive", lc.keep_alive(id)).await?;
        let (tx, rx) = watch::channel(false);
        // Renew at a third of the TTL; a renewal that fails or finds the
        // lease gone (TTL 0) marks it lost.
        let task = tokio::spawn(async move {
            let period = Duration::from_millis((secs as u64 * 1000 / 3).max(200));
            loop {
                let ok = matches!(
                    tokio::time::timeout(period, keeper.keep_alive()).await,
                    Ok(Ok(()))
                ) && matches!(
                    tokio::time::timeout(period, stream.message()).await,
                    Ok(Ok(Some(r))) if r.ttl() > 0
                );
                if !ok {
                    let _ = tx.send(true);
                    return;
                }
                tokio::time::sleep(period).await;
            }
        });
        let mut revoker = self.client.lease_client();
        Ok(Lease::new(
            id,
            rx,
            Box::new(move || {
                task.abort();
                // Give the lease back now rather than at its TTL.
                if let Ok(h) = tokio::runtime::Handle::try_current() {
                    h.spawn(async move {
                        let _ = revoker.revoke(id).await;
                    });
                }
            }),
        ))
    }

    async fn campaign(&self, election: &str, value: &str, lease: &Lease) -> Result<(), MetaError> {
        self.client
            .election_client()
            .campaign(election, value, lease.id)
            .await
            .map_err(err("campaign"))?;
        Ok(())
    }

    async fn leader(&self, election: &str) -> Result<Option<String>, MetaError> {
        match self.client.election_client().leader(election).await {
            Ok(r) => Ok(r
                .kv()
                .map(|kv| String::from_utf8_lossy(kv.value()).into_owned())),
            // No leader: etcd answers "election: no leader".
            Err(e) if e.to_string().contains("no leader") => Ok(None),
            Err(e) => Err(err("leader")(e)),
        }
    }
}
