//! One bucket of an S3-compatible store: list, get to a file, put from a file, create.
//! Requests are presigned with SigV4 by `rusty-s3` (path-style URLs, so any endpoint works)
//! and sent with `ureq`; error responses are read for S3's `Code` and `Message`.

use std::io::{Read, Write};
use std::path::Path;
use std::time::Duration;

use nunet_ensemble::data::S3Credentials;
use nunet_ensemble::spec::ObjectLocation;
use rusty_s3::{Bucket, Credentials, S3Action, UrlStyle};

use crate::egress;

/// How long a presigned request stays valid (it is sent at once).
const SIGNED_FOR: Duration = Duration::from_secs(15 * 60);
/// Most bytes of an error response read for its `Code` and `Message`.
const MAX_ERROR_BODY: u64 = 64 << 10;
/// Most bytes of one listing page.
pub const MAX_LIST_PAGE: u64 = 8 << 20;

/// What went wrong talking to a store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The endpoint is not a URL this client can use.
    #[error("endpoint {endpoint:?}: {reason}")]
    Endpoint {
        /// As given.
        endpoint: String,
        /// Why not.
        reason: String,
    },
    /// The credentials were refused (HTTP 403: unknown key, bad signature, no permission).
    #[error("{what}: access denied by the store ({code}: {message})")]
    Denied {
        /// The object or bucket.
        what: String,
        /// S3 error code (`InvalidAccessKeyId`, `SignatureDoesNotMatch`, `AccessDenied`).
        code: String,
        /// The store's message.
        message: String,
    },
    /// No such object or bucket (HTTP 404).
    #[error("{what}: not found ({code}: {message})")]
    NotFound {
        /// The object or bucket.
        what: String,
        /// `NoSuchKey`, `NoSuchBucket`.
        code: String,
        /// The store's message.
        message: String,
    },
    /// Any other error response.
    #[error("{what}: HTTP {status} ({code}: {message})")]
    Status {
        /// The object or bucket.
        what: String,
        /// HTTP status.
        status: u16,
        /// S3 error code, if the body had one.
        code: String,
        /// The store's message.
        message: String,
    },
    /// The store could not be reached (refused, timed out, not allowed by the egress rule).
    #[error("{what}: cannot reach {endpoint}: {reason}")]
    Unreachable {
        /// The object or bucket.
        what: String,
        /// The endpoint.
        endpoint: String,
        /// The transport's error.
        reason: String,
    },
    /// A response that is not what S3 answers.
    #[error("{what}: unexpected response: {reason}")]
    Protocol {
        /// The object or bucket.
        what: String,
        /// What was wrong.
        reason: String,
    },
    /// Reading or writing a local file.
    #[error("{what}: {source}")]
    Io {
        /// The file and the object.
        what: String,
        /// The error.
        source: std::io::Error,
    },
    /// More than allowed.
    #[error("{what}: {reason}")]
    Limit {
        /// The object, prefix or directory.
        what: String,
        /// Which limit.
        reason: String,
    },
}

/// One object of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    /// Its key.
    pub key: String,
    /// Its size in bytes.
    pub size: u64,
}

/// One page of a `ListObjectsV2` answer, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListingPage {
    /// The objects it lists.
    pub objects: Vec<ObjectInfo>,
    /// The continuation token, when the store has more.
    pub next: Option<String>,
}

impl ListingPage {
    /// Parses a page (XML from the store, at most [`MAX_LIST_PAGE`] bytes read) and refuses
    /// keys longer than [`nunet_ensemble::data::MAX_KEY`]; the error says why.
    pub fn parse(body: &str) -> Result<Self, String> {
        let page = rusty_s3::actions::ListObjectsV2::parse_response(body)
            .map_err(|e| format!("listing: {e}"))?;
        let mut objects = Vec::with_capacity(page.contents.len());
        for c in page.contents {
            if c.key.len() > nunet_ensemble::data::MAX_KEY {
                return Err(format!(
                    "the listing holds a key longer than {} bytes",
                    nunet_ensemble::data::MAX_KEY
                ));
            }
            objects.push(ObjectInfo {
                key: c.key,
                size: c.size.unwrap_or(0),
            });
        }
        Ok(Self {
            objects,
            next: page.next_continuation_token,
        })
    }
}

/// A bucket on an endpoint, with the credentials (if any) requests are signed with.
pub struct Store {
    agent: ureq::Agent,
    bucket: Bucket,
    credentials: Option<Credentials>,
    endpoint: String,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("endpoint", &self.endpoint)
            .field("bucket", &self.bucket.name())
            .finish_non_exhaustive()
    }
}

impl Store {
    /// The bucket of `loc`. Unless `private_ok`, connections go only to public addresses.
    pub fn new(
        loc: &ObjectLocation,
        credentials: Option<&S3Credentials>,
        private_ok: bool,
        timeout: Duration,
    ) -> Result<Self, StoreError> {
        let bad = |reason: String| StoreError::Endpoint {
            endpoint: loc.endpoint.clone(),
            reason,
        };
        nunet_ensemble::data::check_endpoint(&loc.endpoint).map_err(bad)?;
        if credentials.is_some() && !private_ok && loc.endpoint.starts_with("http://") {
            return Err(bad(
                "signed requests go to stores on the internet over https only (they carry the key's signature and any session token)".into(),
            ));
        }
        let url: url::Url = loc.endpoint.parse().map_err(|e| bad(format!("{e}")))?;
        let bucket = Bucket::new(url, UrlStyle::Path, loc.bucket.clone(), loc.region.clone())
            .map_err(|e| bad(format!("{e}")))?;
        let credentials = credentials.map(|c| match &c.session_token {
            Some(t) => Credentials::new_with_token(
                c.access_key_id.clone(),
                c.secret_access_key.expose(),
                t.expose(),
            ),
            None => Credentials::new(c.access_key_id.clone(), c.secret_access_key.expose()),
        });
        Ok(Self {
            agent: egress::agent(
                egress::Deadline::Response(timeout),
                !private_ok,
                "this provider reaches object stores on other addresses only when its operator lists them in job.s3_private_endpoints",
            ),
            bucket,
            credentials,
            endpoint: loc.endpoint.clone(),
        })
    }

    /// The bucket's name.
    pub fn bucket_name(&self) -> &str {
        self.bucket.name()
    }

    fn what(&self, key: &str) -> String {
        format!("s3://{}/{key}", self.bucket.name())
    }

    fn unreachable(&self, key: &str, e: ureq::Error) -> StoreError {
        StoreError::Unreachable {
            what: self.what(key),
            endpoint: self.endpoint.clone(),
            reason: e.to_string(),
        }
    }

    /// The error an unsuccessful response stands for.
    fn failure(&self, key: &str, r: ureq::http::Response<ureq::Body>) -> StoreError {
        let status = r.status().as_u16();
        let mut body = String::new();
        let _ = r
            .into_body()
            .into_reader()
            .take(MAX_ERROR_BODY)
            .read_to_string(&mut body);
        let tag = |t: &str| {
            let open = format!("<{t}>");
            let start = body.find(&open)? + open.len();
            let end = body[start..].find(&format!("</{t}>"))?;
            Some(body[start..start + end].to_string())
        };
        let code = clip(&tag("Code").unwrap_or_else(|| "-".into()), 64);
        let message = clip(&tag("Message").unwrap_or_else(|| "no message".into()), 256);
        let what = self.what(key);
        match status {
            403 | 401 => StoreError::Denied {
                what,
                code,
                message,
            },
            404 => StoreError::NotFound {
                what,
                code,
                message,
            },
            _ => StoreError::Status {
                what,
                status,
                code,
                message,
            },
        }
    }

    /// GETs the presigned `url` for `key`; an error response becomes its [`StoreError`].
    fn get(
        &self,
        url: &url::Url,
        key: &str,
    ) -> Result<ureq::http::Response<ureq::Body>, StoreError> {
        let r = self
            .agent
            .get(url.as_str())
            .call()
            .map_err(|e| self.unreachable(key, e))?;
        if !r.status().is_success() {
            return Err(self.failure(key, r));
        }
        Ok(r)
    }

    /// The response of GetObject for `key`.
    fn get_object(&self, key: &str) -> Result<ureq::http::Response<ureq::Body>, StoreError> {
        let url = self
            .bucket
            .get_object(self.credentials.as_ref(), key)
            .sign(SIGNED_FOR);
        self.get(&url, key)
    }

    /// Every object under `prefix` (all pages), at most `max` of them.
    pub fn list(&self, prefix: &str, max: usize) -> Result<Vec<ObjectInfo>, StoreError> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut action = self.bucket.list_objects_v2(self.credentials.as_ref());
            action.with_prefix(prefix);
            if let Some(t) = &token {
                action.with_continuation_token(t.clone());
            }
            let r = self.get(&action.sign(SIGNED_FOR), prefix)?;
            let mut body = String::new();
            r.into_body()
                .into_reader()
                .take(MAX_LIST_PAGE)
                .read_to_string(&mut body)
                .map_err(|e| StoreError::Protocol {
                    what: self.what(prefix),
                    reason: e.to_string(),
                })?;
            let page = ListingPage::parse(&body).map_err(|reason| StoreError::Protocol {
                what: self.what(prefix),
                reason,
            })?;
            let got_any = !page.objects.is_empty();
            out.extend(page.objects);
            if out.len() > max {
                return Err(StoreError::Limit {
                    what: self.what(prefix),
                    reason: format!("more than {max} objects"),
                });
            }
            match page.next {
                // A page without objects that asks for more, or the same token again, is a
                // store that would keep this loop going forever.
                Some(t) if !got_any || token.as_deref() == Some(t.as_str()) => {
                    return Err(StoreError::Protocol {
                        what: self.what(prefix),
                        reason: "the listing asks to continue without progressing".into(),
                    });
                }
                Some(t) => token = Some(t),
                None => return Ok(out),
            }
        }
    }

    /// Downloads `key` into `dest` (written aside, then renamed into place), refusing more
    /// than `max_bytes`; returns its size.
    pub fn get_to(&self, key: &str, dest: &Path, max_bytes: u64) -> Result<u64, StoreError> {
        let r = self.get_object(key)?;
        let io = |e: std::io::Error| StoreError::Io {
            what: format!("{} → {}", self.what(key), dest.display()),
            source: e,
        };
        // Written aside under a fresh name (never one a staged object has), then renamed.
        let parent = dest.parent().unwrap_or(Path::new("."));
        let mut part = tempfile::Builder::new()
            .prefix(".nunet-part-")
            .tempfile_in(parent)
            .map_err(io)?;
        let mut reader = r.into_body().into_reader();
        let mut buf = vec![0u8; 256 << 10];
        let mut n: u64 = 0;
        loop {
            let got = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(got) => got,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    return Err(StoreError::Unreachable {
                        what: self.what(key),
                        endpoint: self.endpoint.clone(),
                        reason: format!("download broke off: {e}"),
                    });
                }
            };
            n = n.saturating_add(got as u64);
            if n > max_bytes {
                break;
            }
            part.as_file_mut().write_all(&buf[..got]).map_err(io)?;
        }
        if n > max_bytes {
            return Err(StoreError::Limit {
                what: self.what(key),
                reason: format!("larger than the {max_bytes} bytes left of the allocation's disk"),
            });
        }
        part.as_file_mut()
            .flush()
            .and_then(|()| part.as_file().sync_all())
            .map_err(io)?;
        part.persist(dest).map_err(|e| io(e.error))?;
        Ok(n)
    }

    /// Uploads the regular file `src` (opened without following a symlink) as `key`.
    pub fn put_from(&self, key: &str, src: &Path) -> Result<u64, StoreError> {
        use std::os::unix::fs::OpenOptionsExt;
        let io = |e: std::io::Error| StoreError::Io {
            what: format!("{} → {}", src.display(), self.what(key)),
            source: e,
        };
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits())
            .open(src)
            .map_err(io)?;
        let size = file.metadata().map_err(io)?.len();
        let url = self
            .bucket
            .put_object(self.credentials.as_ref(), key)
            .sign(SIGNED_FOR);
        let r = self
            .agent
            .put(url.as_str())
            .send(file)
            .map_err(|e| self.unreachable(key, e))?;
        if !r.status().is_success() {
            return Err(self.failure(key, r));
        }
        Ok(size)
    }

    /// Creates the bucket (the credentials need that permission).
    pub fn create_bucket(&self) -> Result<(), StoreError> {
        let Some(credentials) = &self.credentials else {
            return Err(StoreError::Limit {
                what: self.what(""),
                reason: "creating a bucket needs credentials".into(),
            });
        };
        let action = self.bucket.create_bucket(credentials);
        let body = action.body();
        let url = action.sign(SIGNED_FOR);
        let r = self
            .agent
            .put(url.as_str())
            .send(body.as_bytes())
            .map_err(|e| self.unreachable("", e))?;
        if !r.status().is_success() {
            return Err(self.failure("", r));
        }
        Ok(())
    }

    /// The bytes of `key` (at most `max_bytes`).
    pub fn get_bytes(&self, key: &str, max_bytes: u64) -> Result<Vec<u8>, StoreError> {
        let r = self.get_object(key)?;
        let mut out = Vec::new();
        r.into_body()
            .into_reader()
            .take(max_bytes)
            .read_to_end(&mut out)
            .map_err(|e| self.unreachable(key, ureq::Error::Io(e)))?;
        Ok(out)
    }
}

/// `s` without control characters, at most `max` characters (store text goes into records).
pub(crate) fn clip(s: &str, max: usize) -> String {
    let mut out: String = s.chars().filter(|c| !c.is_control()).take(max).collect();
    if s.chars().count() > max {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(keys: &[&str], next: Option<&str>) -> String {
        let contents: String = keys
            .iter()
            .map(|k| format!("<Contents><Key>{k}</Key><Size>3</Size></Contents>"))
            .collect();
        let next = next
            .map(|t| format!("<NextContinuationToken>{t}</NextContinuationToken>"))
            .unwrap_or_default();
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><ListBucketResult \
             xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Name>b</Name>\
             <Prefix></Prefix><KeyCount>{}</KeyCount><MaxKeys>1000</MaxKeys>\
             <IsTruncated>{}</IsTruncated>{contents}{next}</ListBucketResult>",
            keys.len(),
            !next.is_empty()
        )
    }

    #[test]
    fn a_listing_page_is_parsed_and_an_overlong_key_or_garbage_is_refused() {
        let p = ListingPage::parse(&page(&["in/a.txt", "in/b"], Some("t1"))).expect("page");
        assert_eq!(
            p.objects,
            vec![
                ObjectInfo {
                    key: "in/a.txt".into(),
                    size: 3
                },
                ObjectInfo {
                    key: "in/b".into(),
                    size: 3
                }
            ]
        );
        assert_eq!(p.next.as_deref(), Some("t1"));
        let long = "k".repeat(nunet_ensemble::data::MAX_KEY + 1);
        let e = ListingPage::parse(&page(&[&long], None)).expect_err("long key");
        assert!(e.contains("longer than 1024 bytes"), "{e}");
        let e = ListingPage::parse("<ListBucketResult><Contents>").expect_err("garbage");
        assert!(e.starts_with("listing: "), "{e}");
    }
}
