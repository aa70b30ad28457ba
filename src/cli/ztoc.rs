//! `afterpush ztoc`: build, inspect and use zTOCs (mirrors `soci ztoc ...`).

use crate::ztoc::{self, Ztoc, ZtocOptions};
use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

/// `afterpush ztoc ...`
#[derive(Debug, Args)]
pub struct ZtocArgs {
    #[command(subcommand)]
    pub command: ZtocCommand,
}

#[derive(Debug, Subcommand)]
pub enum ZtocCommand {
    /// Build the zTOC of a layer blob (gzip or tar, detected from its bytes).
    Create {
        /// The layer blob.
        layer: PathBuf,
        /// Where to write the zTOC (written atomically; nothing on error).
        #[arg(short = 'o', long = "output")]
        output: PathBuf,
        /// Uncompressed bytes between checkpoints.
        #[arg(long, default_value_t = ztoc::DEFAULT_SPAN_SIZE)]
        span_size: u64,
        /// Build tool identifier written into the zTOC.
        #[arg(long = "build-tool-id")]
        build_tool_id: Option<String>,
    },
    /// Print a zTOC's header fields and checkpoints.
    Info {
        /// The zTOC file.
        ztoc: PathBuf,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// List the entries of a zTOC.
    List {
        /// The zTOC file.
        ztoc: PathBuf,
    },
    /// Extract one file from a layer through its zTOC.
    GetFile {
        /// The zTOC file.
        ztoc: PathBuf,
        /// The layer blob the zTOC describes.
        layer: PathBuf,
        /// Path of the file inside the layer.
        path: String,
        /// Write here (atomically) instead of standard output.
        #[arg(short = 'o', long = "output")]
        output: Option<PathBuf>,
    },
}

/// Runs a `ztoc` verb.
pub fn run(args: ZtocArgs) -> anyhow::Result<()> {
    match run_verb(args) {
        // `afterpush ztoc list x | head` is not an error.
        Err(e)
            if e.chain().any(|c| {
                c.downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            }) =>
        {
            Ok(())
        }
        other => other,
    }
}

fn run_verb(args: ZtocArgs) -> anyhow::Result<()> {
    match args.command {
        ZtocCommand::Create {
            layer,
            output,
            span_size,
            build_tool_id,
        } => create(&layer, &output, span_size, build_tool_id),
        ZtocCommand::Info { ztoc, json } => info(&read_ztoc(&ztoc)?, json),
        ZtocCommand::List { ztoc } => list(&read_ztoc(&ztoc)?),
        ZtocCommand::GetFile {
            ztoc,
            layer,
            path,
            output,
        } => {
            let z = read_ztoc(&ztoc)?;
            let file = std::fs::File::open(&layer)
                .with_context(|| format!("opening layer {}", layer.display()))?;
            let data = ztoc::extract_file(&z, &file, &path)
                .map_err(|e| e.in_layer(layer.display().to_string()))?;
            match output {
                Some(out) => write_atomically(&out, &data),
                None => {
                    std::io::stdout().lock().write_all(&data)?;
                    Ok(())
                }
            }
        }
    }
}

fn create(
    layer: &Path,
    output: &Path,
    span_size: u64,
    build_tool_id: Option<String>,
) -> anyhow::Result<()> {
    if span_size == 0 {
        bail!("--span-size must be at least 1");
    }
    let file =
        std::fs::File::open(layer).with_context(|| format!("opening layer {}", layer.display()))?;
    let total = file.metadata().map(|m| m.len()).unwrap_or(0);
    let mut options = ZtocOptions {
        span_size,
        ..ZtocOptions::default()
    };
    if let Some(id) = build_tool_id {
        options.build_tool_identifier = id;
    }
    let bar = if std::io::stderr().is_terminal() {
        let bar = ProgressBar::new(total);
        bar.set_style(
            ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {bytes_per_sec} {eta}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar
    } else {
        ProgressBar::hidden()
    };
    let reader = std::io::BufReader::with_capacity(1 << 20, file);
    let z = ztoc::build_from_reader(reader, options, |n| bar.set_position(n))
        .map_err(|e| e.in_layer(layer.display().to_string()))?;
    bar.finish_and_clear();
    let summary = format!(
        "{}: {} entries, {} spans, {} bytes uncompressed",
        output.display(),
        z.files.len(),
        z.max_span_id + 1,
        z.uncompressed_archive_size
    );
    write_atomically(output, &z.into_bytes())?;
    eprintln!("{summary}");
    Ok(())
}

fn read_ztoc(path: &Path) -> anyhow::Result<Ztoc> {
    let bytes = std::fs::read(path).with_context(|| format!("reading zTOC {}", path.display()))?;
    Ztoc::from_bytes(&bytes).with_context(|| format!("zTOC {}", path.display()))
}

/// Writes through a temporary file in the same directory, then renames: readers never
/// see a partial file, and an error leaves nothing behind.
fn write_atomically(path: &Path, data: &[u8]) -> anyhow::Result<()> {
    crate::files::write_atomically(path, data)
        .with_context(|| format!("writing {}", path.display()))
}

fn info(z: &Ztoc, json: bool) -> anyhow::Result<()> {
    let mut checkpoints = Vec::new();
    if let Ok(cps) = z.gzip_checkpoints() {
        for (i, c) in cps.iter().enumerate() {
            checkpoints.push(serde_json::json!({
                "span": i,
                "compressed_offset": c.compressed_offset,
                "uncompressed_offset": c.uncompressed_offset,
                "bits": c.bits,
                "digest": z.span_digests.get(i),
            }));
        }
    }
    let span_size = match z.compression_algorithm {
        ztoc::LayerCompression::Gzip => z.gzip_checkpoints().map(|c| c.span_size).ok(),
        ztoc::LayerCompression::Uncompressed => z.tar_zinfo().map(|t| t.1).ok(),
    };
    let doc = serde_json::json!({
        "version": z.version,
        "build_tool_identifier": z.build_tool_identifier,
        "compression_algorithm": z.compression_algorithm.as_str(),
        "compressed_archive_size": z.compressed_archive_size,
        "uncompressed_archive_size": z.uncompressed_archive_size,
        "span_size": span_size,
        "max_span_id": z.max_span_id,
        "entries": z.files.len(),
        "uses_xattrs": z.uses_xattrs(),
        "span_digests": z.span_digests,
        "checkpoints": checkpoints,
    });
    let mut out = std::io::stdout().lock();
    if json {
        writeln!(out, "{}", serde_json::to_string_pretty(&doc)?)?;
    } else {
        writeln!(out, "version:                   {}", z.version)?;
        writeln!(
            out,
            "build tool identifier:     {}",
            z.build_tool_identifier
        )?;
        writeln!(
            out,
            "compression:               {}",
            z.compression_algorithm.as_str()
        )?;
        writeln!(
            out,
            "compressed archive size:   {}",
            z.compressed_archive_size
        )?;
        writeln!(
            out,
            "uncompressed archive size: {}",
            z.uncompressed_archive_size
        )?;
        if let Some(s) = span_size {
            writeln!(out, "span size:                 {s}")?;
        }
        writeln!(out, "max span id:               {}", z.max_span_id)?;
        writeln!(out, "entries:                   {}", z.files.len())?;
        writeln!(out, "uses xattrs:               {}", z.uses_xattrs())?;
        for (i, d) in z.span_digests.iter().enumerate() {
            writeln!(out, "span {i:>5}: {d}")?;
        }
    }
    Ok(())
}

fn list(z: &Ztoc) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{:<9} {:>12} {:>12} {:<26} NAME",
        "TYPE", "OFFSET", "SIZE", "MTIME"
    )?;
    for f in &z.files {
        let mut name = f.name.clone();
        if !f.linkname.is_empty() {
            name.push_str(" -> ");
            name.push_str(&f.linkname);
        }
        writeln!(
            out,
            "{:<9} {:>12} {:>12} {:<26} {}",
            f.file_type, f.uncompressed_offset, f.uncompressed_size, f.mod_time, name
        )?;
    }
    Ok(())
}
