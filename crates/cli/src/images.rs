//! Image verbs: `pull`, `images`, `inspecti`, `rmi`, `imagefsinfo`.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use base64::Engine;
use berth_cri::berth::v1 as ext;
use berth_cri::runtime::v1 as cri;
use clap::Args;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

use crate::output::{human_size, print_structured, print_table, short_id, table, Format};
use crate::{req, rpc, CliError, Clients, Global};

/// Whether the runtime has `image`.
pub async fn present(
    c: &mut Clients,
    g: &Global,
    image: Option<cri::ImageSpec>,
) -> Result<bool, CliError> {
    Ok(c.image
        .image_status(req(
            cri::ImageStatusRequest {
                image,
                verbose: false,
            },
            g,
        ))
        .await
        .map_err(rpc("ImageStatus"))?
        .into_inner()
        .image
        .is_some())
}

fn spec(image: &str) -> Option<cri::ImageSpec> {
    Some(cri::ImageSpec {
        image: image.to_string(),
        ..Default::default()
    })
}

#[derive(Debug, Args)]
pub struct PullArgs {
    /// The image to pull (`busybox`, `registry.k8s.io/pause:3.10`, `name@sha256:…`).
    image: String,
    /// Registry credentials, `user[:password]` (asks for nothing: give both).
    #[arg(long)]
    creds: Option<String>,
    /// Registry credentials as base64 of `user:password`.
    #[arg(long, conflicts_with = "creds")]
    auth: Option<String>,
    /// Print only the image id.
    #[arg(long, short = 'q')]
    quiet: bool,
}

fn auth_config(a: &PullArgs) -> Result<Option<cri::AuthConfig>, CliError> {
    if let Some(c) = &a.creds {
        let (u, p) = c.split_once(':').unwrap_or((c.as_str(), ""));
        if u.is_empty() {
            return Err(CliError::Usage("--creds needs user:password".into()));
        }
        return Ok(Some(cri::AuthConfig {
            username: u.into(),
            password: p.into(),
            ..Default::default()
        }));
    }
    if let Some(auth) = &a.auth {
        base64::engine::general_purpose::STANDARD
            .decode(auth)
            .map_err(|_| CliError::Usage("--auth must be base64 of user:password".into()))?;
        return Ok(Some(cri::AuthConfig {
            auth: auth.clone(),
            ..Default::default()
        }));
    }
    Ok(None)
}

pub async fn pull(c: &mut Clients, a: PullArgs) -> Result<(), CliError> {
    let request = cri::PullImageRequest {
        image: spec(&a.image),
        auth: auth_config(&a)?,
        sandbox_config: None,
    };
    let show = !a.quiet && std::io::IsTerminal::is_terminal(&std::io::stderr());
    let id = match c.berth.pull_image_with_progress(request.clone()).await {
        Ok(stream) => follow_progress(stream.into_inner(), show).await?,
        Err(s) if s.code() == tonic::Code::Unimplemented => {
            // Another runtime: plain CRI, with a spinner.
            let spinner = show.then(|| {
                let s = ProgressBar::new_spinner().with_message(format!("pulling {}", a.image));
                s.enable_steady_tick(Duration::from_millis(120));
                s
            });
            let r = c.image.pull_image(request).await.map_err(rpc("PullImage"));
            if let Some(s) = spinner {
                s.finish_and_clear();
            }
            r?.into_inner().image_ref
        }
        Err(s) => return Err(rpc("PullImage")(s)),
    };
    if a.quiet {
        println!("{id}");
    } else {
        println!("Image is up to date for {id}");
    }
    Ok(())
}

async fn follow_progress(
    mut stream: tonic::Streaming<ext::PullProgress>,
    show: bool,
) -> Result<String, CliError> {
    let multi = MultiProgress::new();
    if !show {
        multi.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let style = ProgressStyle::with_template(
        "{prefix:.bold} {bar:30.cyan/blue} {bytes:>10}/{total_bytes:<10} {msg}",
    )
    .expect("the template is valid")
    .progress_chars("=> ");
    let mut bars: HashMap<String, ProgressBar> = HashMap::new();
    loop {
        let msg = stream.message().await.map_err(rpc("PullImage"))?;
        let Some(msg) = msg else {
            return Err(CliError::Rpc {
                method: "PullImage",
                code: tonic::Code::Unknown,
                message: "the pull stream ended without a result".into(),
            });
        };
        match msg.event {
            Some(ext::pull_progress::Event::Resolved(d)) => {
                let _ = multi.println(format!("resolved to {d}"));
            }
            Some(ext::pull_progress::Event::Layer(l)) => {
                let bar = bars.entry(l.digest.clone()).or_insert_with(|| {
                    let b = multi.add(ProgressBar::new(l.total.max(0) as u64));
                    b.set_style(style.clone());
                    b.set_prefix(short_id(&l.digest));
                    b
                });
                bar.set_position(l.current.max(0) as u64);
                let phase = ext::LayerPhase::try_from(l.phase).unwrap_or(ext::LayerPhase::Waiting);
                match phase {
                    ext::LayerPhase::Waiting => bar.set_message("waiting"),
                    ext::LayerPhase::Downloading => bar.set_message("downloading"),
                    ext::LayerPhase::Unpacking => bar.set_message("unpacking"),
                    ext::LayerPhase::Done => bar.finish_with_message("done"),
                    ext::LayerPhase::AlreadyExists => bar.finish_with_message("already exists"),
                }
            }
            Some(ext::pull_progress::Event::Done(r)) => {
                for b in bars.values() {
                    if !b.is_finished() {
                        b.finish();
                    }
                }
                return Ok(r.image_ref);
            }
            None => {}
        }
    }
}

#[derive(Debug, Args)]
pub struct ImagesArgs {
    /// Only the image this names.
    image: Option<String>,
    /// Print only image ids.
    #[arg(long, short = 'q')]
    quiet: bool,
    /// Output format.
    #[arg(long, short = 'o', value_enum, default_value = "table")]
    output: Format,
    /// Show digests.
    #[arg(long)]
    digests: bool,
    /// Show full image ids.
    #[arg(long)]
    no_trunc: bool,
}

/// `registry/repo:tag` → (`registry/repo`, `tag`).
fn split_tag(t: &str) -> (&str, &str) {
    match t.rfind(':') {
        Some(i) if !t[i..].contains('/') => (&t[..i], &t[i + 1..]),
        _ => (t, "<none>"),
    }
}

pub async fn images(c: &mut Clients, g: &Global, a: ImagesArgs) -> Result<(), CliError> {
    let filter = a
        .image
        .as_deref()
        .map(|i| cri::ImageFilter { image: spec(i) });
    let list = c
        .image
        .list_images(req(cri::ListImagesRequest { filter }, g))
        .await
        .map_err(rpc("ListImages"))?
        .into_inner();
    let mut images = list.images;
    images.sort_by(|x, y| {
        x.repo_tags
            .first()
            .cmp(&y.repo_tags.first())
            .then(x.id.cmp(&y.id))
    });
    if a.quiet {
        for i in &images {
            println!("{}", i.id);
        }
        return Ok(());
    }
    if a.output != Format::Table {
        return print_structured(&serde_json::json!({ "images": images }), a.output);
    }
    let mut header = vec!["IMAGE", "TAG"];
    if a.digests {
        header.push("DIGEST");
    }
    header.extend(["IMAGE ID", "SIZE", "PINNED"]);
    let mut t = table(&header);
    for i in &images {
        let id = if a.no_trunc {
            i.id.clone()
        } else {
            short_id(&i.id)
        };
        let digest = i
            .repo_digests
            .first()
            .and_then(|d| d.split_once('@'))
            .map(|(_, d)| {
                if a.no_trunc {
                    d.to_string()
                } else {
                    short_id(d)
                }
            })
            .unwrap_or_else(|| "<none>".into());
        let mut rows: Vec<(String, String)> = i
            .repo_tags
            .iter()
            .map(|t| split_tag(t))
            .map(|(r, t)| (r.into(), t.into()))
            .collect();
        if rows.is_empty() {
            let repo = i
                .repo_digests
                .first()
                .and_then(|d| d.split_once('@'))
                .map(|(r, _)| r.to_string())
                .unwrap_or_else(|| "<none>".into());
            rows.push((repo, "<none>".into()));
        }
        for (repo, tag) in rows {
            let mut row = vec![repo, tag];
            if a.digests {
                row.push(digest.clone());
            }
            row.extend([
                id.clone(),
                human_size(i.size),
                if i.pinned { "true" } else { "false" }.to_string(),
            ]);
            t.add_row(row);
        }
    }
    print_table(&mut t);
    Ok(())
}

/// Success, or one error naming every image that was not found.
fn missing_images(missing: Vec<String>) -> Result<(), CliError> {
    if missing.is_empty() {
        Ok(())
    } else {
        Err(CliError::NotFound(format!(
            "no such image: {}",
            missing.join(", ")
        )))
    }
}

#[derive(Debug, Args)]
pub struct InspectiArgs {
    /// Images by id, tag or digest.
    #[arg(required = true)]
    images: Vec<String>,
    /// Output format.
    #[arg(long, short = 'o', value_enum, default_value = "json")]
    output: Format,
}

pub async fn inspecti(c: &mut Clients, g: &Global, a: InspectiArgs) -> Result<(), CliError> {
    let mut missing = Vec::new();
    for name in &a.images {
        let r = c
            .image
            .image_status(req(
                cri::ImageStatusRequest {
                    image: spec(name),
                    verbose: true,
                },
                g,
            ))
            .await
            .map_err(rpc("ImageStatus"))?
            .into_inner();
        let Some(image) = r.image else {
            missing.push(name.clone());
            continue;
        };
        let mut out = BTreeMap::new();
        out.insert(
            "status".to_string(),
            serde_json::to_value(&image).map_err(|e| CliError::Output(e.to_string()))?,
        );
        for (k, v) in r.info {
            let v = serde_json::from_str(&v).unwrap_or(serde_json::Value::String(v));
            out.insert(k, v);
        }
        print_structured(
            &out,
            if a.output == Format::Table {
                Format::Json
            } else {
                a.output
            },
        )?;
    }
    missing_images(missing)
}

#[derive(Debug, Args)]
pub struct RmiArgs {
    /// Images by id, tag or digest.
    images: Vec<String>,
    /// Remove every image.
    #[arg(long, short = 'a')]
    all: bool,
}

pub async fn rmi(c: &mut Clients, g: &Global, a: RmiArgs) -> Result<(), CliError> {
    let names: Vec<String> = if a.all {
        c.image
            .list_images(req(cri::ListImagesRequest { filter: None }, g))
            .await
            .map_err(rpc("ListImages"))?
            .into_inner()
            .images
            .into_iter()
            .map(|i| i.id)
            .collect()
    } else if a.images.is_empty() {
        return Err(CliError::Usage(
            "name at least one image, or pass --all".into(),
        ));
    } else {
        a.images.clone()
    };
    let mut missing = Vec::new();
    for name in names {
        let before = c
            .image
            .image_status(req(
                cri::ImageStatusRequest {
                    image: spec(&name),
                    verbose: false,
                },
                g,
            ))
            .await
            .map_err(rpc("ImageStatus"))?
            .into_inner()
            .image;
        let Some(before) = before else {
            missing.push(name);
            continue;
        };
        c.image
            .remove_image(req(cri::RemoveImageRequest { image: spec(&name) }, g))
            .await
            .map_err(rpc("RemoveImage"))?;
        if present(c, g, spec(&before.id)).await? {
            println!("Untagged: {name}");
        } else {
            println!("Deleted: {}", before.id);
        }
    }
    missing_images(missing)
}

#[derive(Debug, Args)]
pub struct FsInfoArgs {
    /// Output format.
    #[arg(long, short = 'o', value_enum, default_value = "json")]
    output: Format,
}

pub async fn fsinfo(c: &mut Clients, g: &Global, a: FsInfoArgs) -> Result<(), CliError> {
    let r = c
        .image
        .image_fs_info(req(cri::ImageFsInfoRequest {}, g))
        .await
        .map_err(rpc("ImageFsInfo"))?
        .into_inner();
    print_structured(
        &serde_json::json!({ "status": r }),
        if a.output == Format::Table {
            Format::Json
        } else {
            a.output
        },
    )
}
