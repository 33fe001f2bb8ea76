//! A microVM's inputs and outputs, as disks (a VM cannot share the provider's directories:
//! no 9p or virtio-fs here):
//!
//! - each input, once staged like a container's (`objects.rs`, `handoff.rs`), becomes an
//!   ext4 image made from the staged directory (`mkfs.ext4 -d`), attached read-only;
//! - each output gets a blank ext4 image (sparse, the allocation's disk in size), attached
//!   read-write; when the task exits 0 its files are taken out of the image into the
//!   output's directory, from where they are published and shared as a container's are.
//!
//! The guest's init mounts each disk where `nunet.volume=<serial>:<path>:<ro|rw>` on the
//! kernel command line says. Taking files out of an image the guest wrote never lets the
//! host kernel parse it (no loop mount): `debugfs` (e2fsprogs, in user space, as `nobody`
//! with no new privileges, given the image as an open file) lists the directories and
//! dumps each regular file by inode number into a name this code chose;
//! the names are checked here, the tree is rebuilt here, and symlinks, devices and the like
//! are left out. At most [`MAX_ENTRIES`] entries and the allocation's disk in bytes.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use nunet_actor::ActorError;
use nunet_ensemble::volumes::vm_destination_ok;
use nunet_executor::VmDisk;
use nunet_protocol::transfer::{FetchInput, MAX_ENTRIES};

use super::objects::output_dir;
use super::{AllocRecord, Provider, failed};

/// Room an input image has beyond its files (ext4's own structures, the journal).
const IMAGE_SLACK: u64 = 16 << 20;
/// Smallest output image (ext4 with a journal needs a few MiB).
const MIN_OUTPUT_IMAGE: u64 = 16 << 20;
/// Debugfs's directory for the files it dumps, beside the output directory (removed after).
const DUMP_DIR: &str = ".nunet-dump";

fn tool(cmd: &mut Command, what: &str) -> Result<String, String> {
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run {what}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{what} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Bytes the files under `dir` take, in 4 KiB blocks, plus a block per entry.
fn footprint(dir: &Path) -> Result<u64, String> {
    let mut total = 0u64;
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).map_err(|e| format!("{}: {e}", d.display()))? {
            let e = e.map_err(|e| format!("{}: {e}", d.display()))?;
            let md = e
                .metadata()
                .map_err(|err| format!("{}: {err}", e.path().display()))?;
            total += md.len().div_ceil(4096) * 4096 + 4096;
            if md.is_dir() {
                todo.push(e.path());
            }
        }
    }
    Ok(total)
}

/// The image of the input staged at `at` (`<staging>/in/<digest>`), under staging
/// directory `dir`.
pub(super) fn input_image(dir: &Path, at: &Path) -> PathBuf {
    let name = at
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    dir.join("vm").join(format!("in-{name}.img"))
}

/// An ext4 image holding what is under `dir`, at `img` (made aside and renamed; kept once
/// made, as the staged input is).
fn make_input_image(dir: &Path, img: &Path) -> Result<(), String> {
    if img.exists() {
        return Ok(());
    }
    let size = (footprint(dir)? * 5 / 4 + IMAGE_SLACK).div_ceil(1 << 20) * (1 << 20);
    let tmp = img.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    make_image(&tmp, size, Some(dir))?;
    std::fs::rename(&tmp, img).map_err(|e| format!("{}: {e}", img.display()))
}

/// A sparse file of `size` bytes at `at` with an ext4 filesystem, filled from `from`.
fn make_image(at: &Path, size: u64, from: Option<&Path>) -> Result<(), String> {
    std::fs::File::create(at)
        .and_then(|f| f.set_len(size))
        .map_err(|e| format!("{}: {e}", at.display()))?;
    let mut cmd = Command::new("mkfs.ext4");
    cmd.args(["-q", "-F", "-m", "0"]).stdin(Stdio::null());
    if let Some(d) = from {
        cmd.arg("-d").arg(d);
    }
    cmd.arg(at);
    tool(&mut cmd, "mkfs.ext4").map(|_| ())
}

/// One entry of `debugfs -R "ls -p"`: inode, mode, name, size.
fn entry(line: &str) -> Option<Result<(u64, u32, String, u64), String>> {
    let inner = line.strip_prefix('/')?.strip_suffix('/')?;
    let f: Vec<&str> = inner.split('/').collect();
    if f.len() != 6 {
        // A name with a `/` in it (a forged image) splits into more fields.
        return Some(Err(format!("the image lists an impossible entry {line:?}")));
    }
    let (Ok(ino), Ok(mode)) = (f[0].parse::<u64>(), u32::from_str_radix(f[1], 8)) else {
        return Some(Err(format!("the image lists an impossible entry {line:?}")));
    };
    let size = f[5].parse::<u64>().unwrap_or(0);
    Some(Ok((ino, mode, f[4].to_string(), size)))
}

/// The user debugfs runs as when this daemon is root (`nobody`): a forged image that
/// exploits it gets no more than that user's rights, and no path to anything but its own
/// directory (the image comes as an open file, the commands from that directory).
const UNPRIVILEGED: u32 = 65534;
/// The commands file in the dump directory.
const CMDS: &str = ".nunet-debugfs-cmds";

/// Whether this process runs as root (`/proc/self` belongs to its effective user).
fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// Runs debugfs on `img` with `cmds` (one per line) in directory `cwd` (where it writes what
/// it dumps); its output.
fn debugfs(img: &Path, cmds: &[String], cwd: &Path) -> Result<String, String> {
    let file = cwd.join(CMDS);
    std::fs::write(&file, cmds.join("\n") + "\n").map_err(|e| format!("{e}"))?;
    let image = std::fs::File::open(img).map_err(|e| format!("{}: {e}", img.display()))?;
    let mut cmd = if is_root() {
        let mut c = Command::new("setpriv");
        c.arg(format!("--reuid={UNPRIVILEGED}"))
            .arg(format!("--regid={UNPRIVILEGED}"))
            .args(["--clear-groups", "--no-new-privs", "--", "debugfs"]);
        c
    } else {
        Command::new("debugfs")
    };
    cmd.args(["-f", CMDS, "/proc/self/fd/0"])
        .stdin(Stdio::from(image))
        .current_dir(cwd);
    let out = tool(&mut cmd, "debugfs");
    let _ = std::fs::remove_file(&file);
    out
}

/// Takes the directories and regular files of ext4 image `img` out into directory `dest`
/// (which exists); at most `budget` bytes. The files and bytes taken.
pub(super) fn extract(img: &Path, dest: &Path, budget: u64) -> Result<(usize, u64), String> {
    // Beside `dest` (same filesystem for the renames), never inside it: the guest names
    // what is inside.
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let dump = dest.with_file_name(format!("{DUMP_DIR}-{name}"));
    let _ = std::fs::remove_dir_all(&dump);
    std::fs::create_dir_all(&dump).map_err(|e| format!("{}: {e}", dump.display()))?;
    if is_root() {
        std::os::unix::fs::chown(&dump, Some(UNPRIVILEGED), Some(UNPRIVILEGED))
            .map_err(|e| format!("{}: {e}", dump.display()))?;
    }
    let r = extract_into(img, dest, &dump, budget);
    let _ = std::fs::remove_dir_all(&dump);
    r
}

fn extract_into(img: &Path, dest: &Path, dump: &Path, budget: u64) -> Result<(usize, u64), String> {
    // Breadth first: one debugfs run lists every directory of a level.
    let mut level: Vec<(u64, PathBuf)> = vec![(2, dest.to_path_buf())];
    let mut files: Vec<(u64, PathBuf, u64, u32)> = Vec::new();
    let (mut entries, mut bytes) = (0usize, 0u64);
    while !level.is_empty() {
        let cmds: Vec<String> = level
            .iter()
            .map(|(ino, _)| format!("ls -p <{ino}>"))
            .collect();
        let out = debugfs(img, &cmds, dump)?;
        // Each listing follows the command it answers (`debugfs: ls -p <N>`).
        let mut sections = out.split("debugfs: ls -p ").skip(1);
        let mut next = Vec::new();
        for (ino, at) in &level {
            let section = sections
                .next()
                .ok_or_else(|| format!("debugfs listed no directory <{ino}>"))?;
            for line in section.lines().skip(1) {
                let Some(e) = entry(line.trim()) else {
                    continue;
                };
                let (child, mode, name, size) = e?;
                if name == "." || name == ".." || (*ino == 2 && name == "lost+found") {
                    continue;
                }
                if name.is_empty() || name.len() > 255 || name.contains('\0') {
                    return Err(format!("the image lists an impossible name {name:?}"));
                }
                entries += 1;
                if entries > MAX_ENTRIES {
                    return Err(format!(
                        "the output holds more than {MAX_ENTRIES} files and directories"
                    ));
                }
                let path = at.join(&name);
                match mode >> 12 {
                    0o04 => {
                        std::fs::create_dir(&path)
                            .map_err(|e| format!("{}: {e}", path.display()))?;
                        next.push((child, path));
                    }
                    0o10 => {
                        bytes += size;
                        if bytes > budget {
                            return Err(format!(
                                "the output holds more than the allocation's disk ({budget} bytes)"
                            ));
                        }
                        files.push((child, path, size, mode & 0o755));
                    }
                    _ => {} // symlinks, devices, sockets, FIFOs stay in the image
                }
            }
        }
        level = next;
    }
    // Dumped by inode into names chosen here, then moved into place.
    for chunk in files.chunks(256) {
        let cmds: Vec<String> = chunk
            .iter()
            .enumerate()
            .map(|(k, (ino, ..))| format!("dump <{ino}> f{k}"))
            .collect();
        debugfs(img, &cmds, dump)?;
        for (k, (_, path, size, mode)) in chunk.iter().enumerate() {
            use std::os::unix::fs::PermissionsExt;
            let got = dump.join(format!("f{k}"));
            let len = std::fs::metadata(&got)
                .map_err(|e| format!("{}: not taken out of the image: {e}", path.display()))?
                .len();
            if len != *size {
                return Err(format!(
                    "{}: {len} bytes taken out of the image, {size} listed",
                    path.display()
                ));
            }
            std::fs::set_permissions(&got, std::fs::Permissions::from_mode(*mode | 0o600))
                .and_then(|()| std::fs::rename(&got, path))
                .map_err(|e| format!("{}: {e}", path.display()))?;
        }
    }
    Ok((files.len(), bytes))
}

/// The image of output `i` of start `generation` under staging directory `dir`.
fn output_image(dir: &Path, generation: u64, i: usize) -> PathBuf {
    dir.join("vm").join(format!("out-{generation}-{i}.img"))
}

impl Provider {
    /// The disks of a microVM's inputs (staged first) and outputs, each with its kernel
    /// command-line argument.
    pub(super) async fn vm_data_disks(
        &self,
        rec: &AllocRecord,
        fetch: &[FetchInput],
    ) -> Result<Vec<(VmDisk, String)>, ActorError> {
        if rec.inputs.is_empty() && rec.outputs.is_empty() {
            return Ok(Vec::new());
        }
        let mounts = self.data_mounts(rec, fetch).await?;
        let dir = self.volumes.staging_dir(&rec.ensemble_id, &rec.name)?;
        let (generation, disk) = (rec.generation, rec.resources.disk.size);
        let n_in = rec.inputs.len();
        tokio::task::spawn_blocking(move || {
            let vm = dir.join("vm");
            std::fs::create_dir_all(&vm).map_err(|e| format!("{}: {e}", vm.display()))?;
            // Output images of earlier starts go (their files were taken out, or the start failed).
            for e in std::fs::read_dir(&vm).map_err(|e| format!("{}: {e}", vm.display()))? {
                let e = e.map_err(|e| e.to_string())?;
                let n = e.file_name().to_string_lossy().to_string();
                if n.starts_with("out-") && !n.starts_with(&format!("out-{generation}-")) {
                    let _ = std::fs::remove_file(e.path());
                }
            }
            let mut out = Vec::new();
            for (k, m) in mounts.iter().enumerate() {
                if !vm_destination_ok(&m.target) {
                    return Err(format!(
                        "{:?} cannot go on a microVM's kernel command line (letters, digits and / . _ - only)",
                        m.target
                    ));
                }
                let (path, serial) = if k < n_in {
                    let img = m
                        .source
                        .parent()
                        .map(|at| input_image(&dir, at))
                        .ok_or_else(|| format!("inputs[{k}]: no staging directory"))?;
                    make_input_image(&m.source, &img).map_err(|e| format!("inputs[{k}]: {e}"))?;
                    (img, format!("nunet-in-{k}"))
                } else {
                    let i = k - n_in;
                    let img = output_image(&dir, generation, i);
                    let _ = std::fs::remove_file(&img);
                    make_image(&img, disk.max(MIN_OUTPUT_IMAGE), None)
                        .map_err(|e| format!("outputs[{i}]: {e}"))?;
                    (img, format!("nunet-out-{i}"))
                };
                let mode = if m.read_only { "ro" } else { "rw" };
                let arg = format!("nunet.volume={serial}:{}:{mode}", m.target);
                out.push((
                    VmDisk {
                        path,
                        read_only: m.read_only,
                        serial,
                    },
                    arg,
                ));
            }
            Ok(out)
        })
        .await
        .map_err(|e| failed(format!("preparing the microVM's inputs and outputs: {e}")))?
        .map_err(failed)
    }
}

/// Takes a finished microVM's outputs out of their images into their directories under
/// staging directory `dir`, so they are published and shared as a container's are.
pub(super) fn take_outputs(rec: &AllocRecord, dir: &Path) -> Result<(), String> {
    for i in 0..rec.outputs.len() {
        let img = output_image(dir, rec.generation, i);
        let dest = output_dir(dir, rec.generation, i);
        let (files, bytes) = extract(&img, &dest, rec.resources.disk.size)
            .map_err(|e| format!("outputs[{i}]: taking the files out of the VM's disk: {e}"))?;
        tracing::info!(allocation = %rec.id, output = i, files, bytes, "output taken out of the microVM's disk");
        let _ = std::fs::remove_file(&img);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn have(tool: &str) -> bool {
        Command::new(tool).arg("-V").output().is_ok()
    }

    #[test]
    fn an_image_made_from_a_directory_gives_back_its_files_and_nothing_else() {
        if !have("mkfs.ext4") || !have("debugfs") {
            panic!("e2fsprogs (mkfs.ext4, debugfs) is needed");
        }
        let t = tempfile::tempdir().unwrap();
        let src = t.path().join("src");
        std::fs::create_dir_all(src.join("sub/deeper")).unwrap();
        std::fs::write(src.join("a.txt"), "alpha").unwrap();
        std::fs::write(src.join("sub/deeper/b.bin"), vec![7u8; 300_000]).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", src.join("link")).unwrap();
        let img = t.path().join("in.img");
        make_input_image(&src, &img).unwrap();
        let dest = t.path().join("out");
        std::fs::create_dir(&dest).unwrap();
        let (files, bytes) = extract(&img, &dest, 1 << 20).unwrap();
        assert_eq!((files, bytes), (2, 300_005));
        assert_eq!(
            std::fs::read_to_string(dest.join("a.txt")).unwrap(),
            "alpha"
        );
        assert_eq!(
            std::fs::read(dest.join("sub/deeper/b.bin")).unwrap(),
            vec![7u8; 300_000]
        );
        // No symlink, no lost+found, no leftovers of the dump.
        let mut names: Vec<String> = std::fs::read_dir(&dest)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .collect();
        names.sort();
        assert_eq!(names, ["a.txt", "sub"]);
        // More than the budget is refused.
        let again = t.path().join("again");
        std::fs::create_dir(&again).unwrap();
        let e = extract(&img, &again, 1000).unwrap_err();
        assert!(e.contains("more than the allocation's disk"), "{e}");
    }
}
