//! Layers made by other tools at run time: GNU tar (`--format=gnu|posix|ustar`) of a temp
//! tree, compressed by Debian's `gzip`, `pigz` and `pigz -i`. The zTOC must list what
//! `tar -t` lists and restore every regular file byte for byte.

use crate::ztoc_util;

use std::path::Path;
use std::process::{Command, Stdio};

fn need(tool: &str) {
    let ok = Command::new(tool)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    assert!(
        ok,
        "{tool} is required by this test: apt-get install -y tar gzip pigz"
    );
}

fn run(cmd: &mut Command, stdin: Option<&[u8]>) -> Vec<u8> {
    use std::io::Write;
    let mut child = cmd
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    if let Some(data) = stdin {
        let mut sin = child.stdin.take().unwrap();
        let data = data.to_vec();
        std::thread::spawn(move || sin.write_all(&data).unwrap());
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{cmd:?} failed");
    out.stdout
}

/// A tree with the cases tar formats disagree on.
fn make_tree(root: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files = Vec::new();
    let mut put = |rel: &str, data: Vec<u8>| {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, &data).unwrap();
        files.push((format!("./{rel}"), data));
    };
    put("empty", Vec::new());
    put("small.txt", b"hello, zTOC\n".to_vec());
    let mut big = Vec::new();
    let mut x: u32 = 1;
    while big.len() < 700_000 {
        x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        if x % 4 == 0 {
            big.extend_from_slice(&x.to_le_bytes());
        } else {
            big.extend_from_slice(format!("record {} {}\n", x % 977, x % 13).as_bytes());
        }
    }
    put("data/big.bin", big);
    // 150-byte path: GNU long name, PAX path, or ustar prefix split.
    let long_dir = "a-rather-long-directory-name-for-the-prefix-field".repeat(2);
    put(
        &format!("{long_dir}/and-a-long-enough-file-name.txt"),
        b"long".to_vec(),
    );
    put(
        "n\u{e4}me-\u{65e5}\u{672c}.txt",
        "non-ASCII \u{2713}".as_bytes().to_vec(),
    );
    std::os::unix::fs::symlink("small.txt", root.join("link-to-small")).unwrap();
    std::fs::hard_link(root.join("small.txt"), root.join("hard-to-small")).unwrap();
    files.push(("./hard-to-small".into(), b"hello, zTOC\n".to_vec()));
    std::fs::create_dir_all(root.join("empty-dir")).unwrap();
    files
}

#[test]
fn gnu_tar_gzip_and_pigz_layers() {
    for tool in ["tar", "gzip", "pigz"] {
        need(tool);
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("tree");
    std::fs::create_dir(&root).unwrap();
    let files = make_tree(&root);
    let span = 64 * 1024;
    for format in ["gnu", "posix", "ustar"] {
        let tar = run(
            Command::new("tar")
                .args(["--format", format, "--sort=name", "-cf", "-", "-C"])
                .arg(&root)
                .arg("."),
            None,
        );
        let listed = run(
            Command::new("tar").args(["--quoting-style=literal", "-tf", "-"]),
            Some(&tar),
        );
        let listed: Vec<String> = String::from_utf8(listed)
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect();
        for (compressor, args) in [
            ("gzip", vec!["-c", "-6"]),
            ("pigz", vec!["-c", "-b", "128"]),
            ("pigz", vec!["-c", "-i", "-b", "128"]),
        ] {
            let what = format!("tar --format={format} | {compressor} {}", args.join(" "));
            let blob = run(Command::new(compressor).args(&args), Some(&tar));
            let z =
                ztoc_util::build(&blob, span, &[100_000]).unwrap_or_else(|e| panic!("{what}: {e}"));
            let names: Vec<String> = z.files.iter().map(|f| f.name.clone()).collect();
            assert_eq!(names, listed, "{what}: TOC names differ from tar -t");
            assert_eq!(
                z.uncompressed_archive_size as usize,
                end_of_archive(&tar),
                "{what}"
            );
            ztoc_util::check_gzip_ztoc(&z, &blob, span);
            ztoc_util::check_files(&z, &blob, &files);
            let link = z.find("./link-to-small").unwrap();
            assert_eq!(
                (link.file_type.as_str(), link.linkname.as_str()),
                ("symlink", "small.txt")
            );
            // Whichever of the two names tar meets second is stored as the hard link.
            let types = [
                z.find("./hard-to-small").unwrap().file_type.as_str(),
                z.find("./small.txt").unwrap().file_type.as_str(),
            ];
            assert_eq!(types, ["reg", "hardlink"], "{what}");
            assert_eq!(z.find("./empty-dir/").unwrap().file_type, "dir", "{what}");
        }
        // The plain tar itself, as an uncompressed layer.
        let z = ztoc_util::build(&tar, span, &[4096]).unwrap();
        ztoc_util::check_files(&z, &tar, &files);
    }
}

/// Offset after the two zero blocks: scan headers independently of our parser by asking
/// GNU tar for block numbers (`-R`): the last line is `block N: ** Block of NULs **`.
fn end_of_archive(tar: &[u8]) -> usize {
    let out = run(Command::new("tar").args(["-tRf", "-"]), Some(tar));
    let out = String::from_utf8(out).unwrap();
    let last = out.lines().last().unwrap();
    let n: usize = last
        .trim_start_matches("block ")
        .split(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(last.contains("Block of NULs"), "{last}");
    (n + 2) * 512
}
