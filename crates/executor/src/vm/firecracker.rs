//! Firecracker's HTTP API over its Unix socket: machine config, boot source, drives, network
//! interfaces, instance start and shutdown. Hand-written HTTP/1.1, one request per connection.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

use crate::{ExecutorError, Result, with_deadline};

/// Largest response accepted (Firecracker's answers are small JSON documents).
const MAX_RESPONSE: usize = 1 << 20;

/// A client for one Firecracker process's API socket.
#[derive(Debug, Clone)]
pub struct FirecrackerClient {
    socket: PathBuf,
    timeout: Duration,
}

/// The VM to configure before `InstanceStart`.
#[derive(Debug, Clone, PartialEq)]
pub struct MachineSetup {
    /// vCPUs.
    pub vcpus: u32,
    /// Memory in MiB.
    pub mem_mib: u64,
    /// Uncompressed ELF kernel.
    pub kernel: PathBuf,
    /// Kernel command line.
    pub boot_args: String,
    /// Initial ram disk.
    pub initrd: Option<PathBuf>,
    /// Root drive.
    pub rootfs: Option<PathBuf>,
    /// TAP device and guest MAC.
    pub tap: Option<(String, String)>,
}

impl FirecrackerClient {
    /// A client for `socket`, with `timeout` on every request.
    pub fn new(socket: impl Into<PathBuf>, timeout: Duration) -> Self {
        Self {
            socket: socket.into(),
            timeout,
        }
    }

    /// The API socket path.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Sends one request; returns the status code and body. Non-2xx answers become
    /// [`ExecutorError::Runtime`] carrying Firecracker's `fault_message`.
    pub async fn request(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value> {
        let what = format!("firecracker {method} {path}");
        let (status, text) =
            with_deadline(&what, self.timeout, self.exchange(method, path, body)).await?;
        let value: Value = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        if (200..300).contains(&status) {
            Ok(value)
        } else {
            let fault = value
                .get("fault_message")
                .and_then(Value::as_str)
                .map(str::to_string)
                .unwrap_or_else(|| value.to_string());
            Err(ExecutorError::Runtime(format!(
                "{what}: HTTP {status}: {fault}"
            )))
        }
    }

    async fn exchange(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(u16, String)> {
        let mut stream = UnixStream::connect(&self.socket).await?;
        let body = body.map(Value::to_string).unwrap_or_default();
        let mut req =
            format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nAccept: application/json\r\n");
        if !body.is_empty() {
            req.push_str("Content-Type: application/json\r\n");
        }
        req.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
        stream.write_all(req.as_bytes()).await?;
        read_response(&mut stream).await
    }

    /// Configures the machine, boot source, drives and network in Firecracker's order.
    pub async fn configure(&self, m: &MachineSetup) -> Result<()> {
        self.request(
            "PUT",
            "/machine-config",
            Some(&json!({"vcpu_count": m.vcpus, "mem_size_mib": m.mem_mib, "smt": false})),
        )
        .await?;
        let mut boot = json!({
            "kernel_image_path": m.kernel.to_string_lossy(),
            "boot_args": m.boot_args,
        });
        if let Some(initrd) = &m.initrd {
            boot["initrd_path"] = json!(initrd.to_string_lossy());
        }
        self.request("PUT", "/boot-source", Some(&boot)).await?;
        if let Some(rootfs) = &m.rootfs {
            let drive = json!({
                "drive_id": "rootfs",
                "path_on_host": rootfs.to_string_lossy(),
                "is_root_device": true,
                "is_read_only": false,
            });
            self.request("PUT", "/drives/rootfs", Some(&drive)).await?;
        }
        if let Some((tap, mac)) = &m.tap {
            let net = json!({"iface_id": "eth0", "host_dev_name": tap, "guest_mac": mac});
            self.request("PUT", "/network-interfaces/eth0", Some(&net))
                .await?;
        }
        Ok(())
    }

    /// Boots the configured VM.
    pub async fn start(&self) -> Result<()> {
        self.action("InstanceStart").await
    }

    /// Asks the guest to shut down (Ctrl+Alt+Del; Firecracker exits when the guest reboots).
    pub async fn shutdown(&self) -> Result<()> {
        self.action("SendCtrlAltDel").await
    }

    async fn action(&self, action: &str) -> Result<()> {
        self.request("PUT", "/actions", Some(&json!({"action_type": action})))
            .await
            .map(|_| ())
    }
}

/// Reads one HTTP/1.1 response: status line, headers, `Content-Length` body.
pub(crate) async fn read_response(stream: &mut UnixStream) -> Result<(u16, String)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let header_end = loop {
        if let Some(i) = find(&buf, b"\r\n\r\n") {
            break i + 4;
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 || buf.len() > MAX_RESPONSE {
            return Err(ExecutorError::Runtime(
                "firecracker closed the API connection mid-response".into(),
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..header_end]).into_owned();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| ExecutorError::Runtime(format!("bad HTTP status line: {head:?}")))?;
    let length = head
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse::<usize>().ok())
        .unwrap_or(0)
        .min(MAX_RESPONSE);
    while buf.len() < header_end + length {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let end = (header_end + length).min(buf.len());
    Ok((
        status,
        String::from_utf8_lossy(&buf[header_end..end]).into_owned(),
    ))
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use tokio::net::UnixListener;

    /// A boot conversation in Firecracker 1.x's wire format (its API server answers `204`
    /// with an empty body, errors as `{"fault_message": …}`): each request as the client must
    /// send it (method, path, JSON body) and the server's raw answer. Written from the API
    /// specification, not captured from a live process (none is installable here).
    const RECORDED: &[(&str, &str, &str, &str)] = &[
        (
            "PUT",
            "/machine-config",
            r#"{"vcpu_count":2,"mem_size_mib":256,"smt":false}"#,
            "HTTP/1.1 204 \r\nServer: Firecracker API\r\nConnection: keep-alive\r\n\r\n",
        ),
        (
            "PUT",
            "/boot-source",
            r#"{"kernel_image_path":"/k/vmlinux","boot_args":"console=ttyS0 reboot=k panic=1 pci=off","initrd_path":"/k/initrd.gz"}"#,
            "HTTP/1.1 204 \r\nServer: Firecracker API\r\nConnection: keep-alive\r\n\r\n",
        ),
        (
            "PUT",
            "/drives/rootfs",
            r#"{"drive_id":"rootfs","path_on_host":"/k/rootfs.ext4","is_root_device":true,"is_read_only":false}"#,
            "HTTP/1.1 204 \r\nServer: Firecracker API\r\nConnection: keep-alive\r\n\r\n",
        ),
        (
            "PUT",
            "/network-interfaces/eth0",
            r#"{"iface_id":"eth0","host_dev_name":"tap0","guest_mac":"06:00:ac:10:00:02"}"#,
            "HTTP/1.1 204 \r\nServer: Firecracker API\r\nConnection: keep-alive\r\n\r\n",
        ),
        (
            "PUT",
            "/actions",
            r#"{"action_type":"InstanceStart"}"#,
            "HTTP/1.1 204 \r\nServer: Firecracker API\r\nConnection: keep-alive\r\n\r\n",
        ),
        (
            "PUT",
            "/actions",
            r#"{"action_type":"SendCtrlAltDel"}"#,
            "HTTP/1.1 400 \r\nServer: Firecracker API\r\nConnection: keep-alive\r\nContent-Type: application/json\r\nContent-Length: 86\r\n\r\n{\"fault_message\":\"The requested operation is not supported after starting the microVM.\"}",
        ),
    ];

    async fn read_request(s: &mut UnixStream) -> (String, String, Value) {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        let end = loop {
            if let Some(i) = find(&buf, b"\r\n\r\n") {
                break i + 4;
            }
            let n = s.read(&mut chunk).await.unwrap();
            assert!(n > 0, "client closed early");
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8(buf[..end].to_vec()).unwrap();
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("Content-Length: "))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        while buf.len() < end + len {
            let n = s.read(&mut chunk).await.unwrap();
            buf.extend_from_slice(&chunk[..n]);
        }
        let mut words = head.split_whitespace();
        let method = words.next().unwrap().to_string();
        let path = words.next().unwrap().to_string();
        assert!(head.contains("Content-Type: application/json\r\n"));
        (
            method,
            path,
            serde_json::from_slice(&buf[end..end + len]).unwrap(),
        )
    }

    #[tokio::test]
    async fn replays_the_recorded_conversation() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("api.sock");
        let listener = UnixListener::bind(&sock).unwrap();
        let server = tokio::spawn(async move {
            for (method, path, body, answer) in RECORDED {
                let (mut s, _) = listener.accept().await.unwrap();
                let (m, p, b) = read_request(&mut s).await;
                assert_eq!((m.as_str(), p.as_str()), (*method, *path));
                assert_eq!(b, serde_json::from_str::<Value>(body).unwrap(), "{path}");
                s.write_all(answer.as_bytes()).await.unwrap();
            }
        });
        let client = FirecrackerClient::new(&sock, Duration::from_secs(5));
        client
            .configure(&MachineSetup {
                vcpus: 2,
                mem_mib: 256,
                kernel: "/k/vmlinux".into(),
                boot_args: "console=ttyS0 reboot=k panic=1 pci=off".into(),
                initrd: Some("/k/initrd.gz".into()),
                rootfs: Some("/k/rootfs.ext4".into()),
                tap: Some(("tap0".into(), "06:00:ac:10:00:02".into())),
            })
            .await
            .unwrap();
        client.start().await.unwrap();
        let err = client.shutdown().await.unwrap_err().to_string();
        assert!(
            err.contains("HTTP 400") && err.contains("not supported after starting"),
            "{err}"
        );
        server.await.unwrap();
    }

    #[tokio::test]
    async fn a_silent_server_times_out() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("api.sock");
        let listener = UnixListener::bind(&sock).unwrap();
        let _server = tokio::spawn(async move {
            let (_s, _) = listener.accept().await.unwrap();
            tokio::time::sleep(Duration::from_secs(30)).await;
        });
        let client = FirecrackerClient::new(&sock, Duration::from_millis(200));
        let err = client.start().await.unwrap_err();
        assert!(matches!(err, ExecutorError::Timeout { .. }), "{err}");
    }
}
