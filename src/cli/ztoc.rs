//! `afterpush ztoc`: build, inspect and use zTOCs (mirrors `soci ztoc ...`).

use crate::format::printable;
use crate::ztoc::{self, Ztoc, ZtocOptions};
use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

/// `afterpush ztoc ...`
#[derive(Debug, Args)]
pub struct ZtocArgs {
    /// The `ztoc` verb to run.
    #[command(subcommand)]
    pub command: ZtocCommand,
}

/// The verbs of `afterpush ztoc`.
#[derive(Debug, Subcommand)]
pub enum ZtocCommand {
    /// Build the zTOC of a layer blob (gzip or tar, detected from its bytes).
    Create {
        /// The layer blob.
        layer: PathBuf,
        /// Where to write the zTOC (written atomically; nothing on error).
        #[arg(short = 'o', long = "output")]
        output: PathBuf,
        /// Uncompressed bytes between checkpoints (`4MiB` also accepted), 64KiB to 1GiB.
        #[arg(long, default_value = "4MiB", value_parser = parse_span_size_arg)]
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

/// `--span-size` of `ztoc create` and `soci create`: a size (`4MiB`, `4194304`) in the
/// range [`ztoc::check_span_size`] accepts.
pub(crate) fn parse_span_size_arg(s: &str) -> Result<u64, String> {
    let size = crate::settings::parse_size("SPAN_SIZE", s).map_err(|e| e.problem)?;
    ztoc::check_span_size(size).map_err(|e| e.to_string())
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
        } => get_file(&ztoc, &layer, &path, output.as_deref()),
    }
}

/// Streams the file to `output` (atomically) or standard output.
fn get_file(ztoc: &Path, layer: &Path, path: &str, output: Option<&Path>) -> anyhow::Result<()> {
    if let Some(output) = output {
        refuse_output_over_input(output, &[("zTOC", ztoc), ("layer", layer)])?;
    }
    let z = read_ztoc(ztoc)?;
    let file =
        std::fs::File::open(layer).with_context(|| format!("opening layer {}", layer.display()))?;
    let extract = |out: &mut dyn Write, destination: &str| -> anyhow::Result<()> {
        ztoc::extract_file_to(&z, &file, path, out).map_err(|e| match e {
            // The I/O error itself, so that `run` sees a broken pipe on standard output.
            ztoc::ZtocError::Output { error } => {
                anyhow::Error::from(error).context(format!("writing {destination}"))
            }
            e => e.in_layer(layer.display().to_string()).into(),
        })?;
        Ok(())
    };
    match output {
        Some(out) => write_atomically(out, |w| extract(w, &out.display().to_string())),
        None => {
            let mut stdout = std::io::stdout().lock();
            extract(&mut stdout, "standard output")?;
            stdout.flush().context("writing standard output")?;
            Ok(())
        }
    }
}

fn create(
    layer: &Path,
    output: &Path,
    span_size: u64,
    build_tool_id: Option<String>,
) -> anyhow::Result<()> {
    refuse_output_over_input(output, &[("layer", layer)])?;
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
    let z = ztoc::encode_from_reader(reader, options, |n| bar.set_position(n))
        .map_err(|e| e.in_layer(layer.display().to_string()))?;
    bar.finish_and_clear();
    let summary = format!(
        "{}: {} entries, {} spans, {} bytes uncompressed",
        output.display(),
        z.entries,
        z.spans,
        z.uncompressed_archive_size
    );
    write_atomically(output, |out| {
        out.write_all(&z.bytes)
            .with_context(|| format!("writing {}", output.display()))
    })?;
    eprintln!("{summary}");
    Ok(())
}

fn read_ztoc(path: &Path) -> anyhow::Result<Ztoc> {
    let bytes = std::fs::read(path).with_context(|| format!("reading zTOC {}", path.display()))?;
    Ztoc::from_bytes(&bytes).with_context(|| format!("zTOC {}", path.display()))
}

/// Refuses an output that is one of the inputs, by its path, through a symlink or as a
/// hard link: renaming the new file over it would lose the input.
fn refuse_output_over_input(output: &Path, inputs: &[(&str, &Path)]) -> anyhow::Result<()> {
    for (what, input) in inputs {
        if same_file(output, input) {
            bail!(
                "the output {} is the {what} {}: refusing to replace it (choose another output path)",
                output.display(),
                input.display()
            );
        }
    }
    Ok(())
}

/// Whether both paths exist and name the same file.
fn same_file(a: &Path, b: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        matches!(
            (std::fs::metadata(a), std::fs::metadata(b)),
            (Ok(x), Ok(y)) if (x.dev(), x.ino()) == (y.dev(), y.ino())
        )
    }
    #[cfg(not(unix))]
    {
        matches!(
            (std::fs::canonicalize(a), std::fs::canonicalize(b)),
            (Ok(x), Ok(y)) if x == y
        )
    }
}

/// Writes through a temporary file in the same directory, then renames: readers never
/// see a partial file, and an error leaves nothing behind.
fn write_atomically(
    path: &Path,
    write: impl FnOnce(&mut dyn Write) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    crate::files::write_atomically_with(path, |out| {
        let mut out = std::io::BufWriter::new(out);
        write(&mut out)?;
        out.flush()?;
        Ok::<(), anyhow::Error>(())
    })
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
        writeln!(out, "version:                   {}", printable(&z.version))?;
        writeln!(
            out,
            "build tool identifier:     {}",
            printable(&z.build_tool_identifier)
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
            writeln!(out, "span {i:>5}: {}", printable(d))?;
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
        let mut name = printable(&f.name).into_owned();
        if !f.linkname.is_empty() {
            name.push_str(" -> ");
            name.push_str(&printable(&f.linkname));
        }
        writeln!(
            out,
            "{:<9} {:>12} {:>12} {:<26} {}",
            printable(&f.file_type),
            f.uncompressed_offset,
            f.uncompressed_size,
            printable(&f.mod_time),
            name
        )?;
    }
    Ok(())
}
