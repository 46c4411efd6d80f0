"""The focal-al command line: thin wrappers over the public API (heavy imports inside commands)."""
from __future__ import annotations

import click

from focal_al import __version__


@click.group()
@click.version_option(__version__, "--version", package_name="focal-al", prog_name="focal-al")
def main():
    """focal-al: patch-wise active learning for cell and gland image segmentation (FocAnnot)."""


@main.command()
@click.option("--pattern", default="*", show_default=True, help="Glob pattern on the names to list.")
def plugins(pattern):
    """List the registered criteria and strategies, their source packages, and plugins that failed."""
    from focal_al import registry

    rows = [("name", "kind", "source", "summary")]
    for name in registry.list_criteria(pattern):
        info = registry.criterion_info(name)
        rows.append((name, f"criterion/{info.kind}", f"{info.source} {info.version}".strip(), info.summary))
    for name in registry.list_strategies(pattern):
        info = registry.strategy_info(name)
        rows.append((name, f"strategy/{info.kind}", f"{info.source} {info.version}".strip(), info.summary))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    for row in rows:
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(row[:3], widths)) + "  " + row[3])
    failed = registry.failed_plugins()
    if failed:
        click.echo("\nPlugins that failed to load:")
        for f in failed:
            click.echo(f"  {f.source} {f.version} ({f.group}: {f.entry_point} = {f.value}): {f.error}")


def _clean_warnings():
    """Print warnings as one line each ("Warning: ..."), once, without Python's source line (above any
    progress bar on the terminal)."""
    import sys
    import warnings

    def show(message, category, filename, lineno, file=None, line=None):
        from tqdm import tqdm

        with tqdm.external_write_mode(file=sys.stderr):
            click.echo(f"Warning: {message}", err=True)

    warnings.showwarning = show
    warnings.simplefilter("once", UserWarning)


def _csv(kind):
    def parse(ctx, param, value):
        from focal_al.bench.config import split_top_level

        if value is None:
            return None
        try:
            # Commas inside parentheses separate a strategy's parameters: focannot(k=5,lam=0.3),4
            return tuple(kind(v) for v in split_top_level(value))
        except ValueError as err:
            raise click.BadParameter(f"expected a comma-separated list of {kind.__name__}; got {value!r} ({err})")
    return parse


@main.command()
@click.option("--preset", type=click.Choice(["quick", "glas-cpu", "paper"]), default="quick", show_default=True,
              help="quick: built-in synthetic data, small net (~5 min on 2 CPU cores); glas-cpu: GlaS at half "
                   "resolution (about 11 min per strategy and seed on one thread); paper: full resolution, width 64 (GPU).")
@click.option("--dataset", type=click.Choice(["synthetic", "glas", "folder"]), help="Data source.")
@click.option("--data-dir", type=click.Path(file_okay=False), help="GlaS release folder (default: $FOCAL_AL_GLAS_DIR, else ../shared/data/glas).")
@click.option("--split", type=click.Choice(["mixed", "testA", "testB"]),
              help="GlaS train/test pair: Mixed (seeded 80/20 of all 165), or train vs testA / testB.")
@click.option("--images-dir", type=click.Path(exists=True, file_okay=False),
              help="Your images (--dataset folder): .png, .bmp, .tif or .jpg. The image <stem>.<ext> pairs with "
                   "the mask <stem><mask-suffix>.<ext2> in --masks-dir.")
@click.option("--masks-dir", type=click.Path(exists=True, file_okay=False),
              help="Your masks (--dataset folder): lossless label images (instance ids, or 0/1 or 0/255 binary "
                   "masks, split into connected components). Default with --mask-suffix: --images-dir.")
@click.option("--mask-suffix", help="What a mask's file stem adds to its image's, e.g. _label for "
                                    "image01.png / image01_label.png (default: none, same stems).")
@click.option("--n-images", type=int, help="Number of synthetic images (--dataset synthetic).")
@click.option("--image-size", type=int, help="Side of the synthetic images in pixels (--dataset synthetic).")
@click.option("--scale", type=float, help="Resolution factor applied to the images (0.5 = half).")
@click.option("--strategies", callback=_csv(str),
              help="Comma-separated: Table 1 numbers (1-7), random-image, random-patch, or any registered strategy, "
                   "optionally with parameters and criteria by name: 'focannot(uncertainty=margin,k=5),4'.")
@click.option("--seeds", callback=_csv(int), help="Comma-separated seeds, e.g. 0,1.")
@click.option("--patch-size", type=int, help="Patch side l in pixels.")
@click.option("--overlap", type=float, help="Overlap rate rho in [0, 1).")
@click.option("--clusters", type=int, help="Number of clusters k.")
@click.option("--lam", type=float, help="Weight of cluster uncertainty in Eq. 8 (lambda).")
@click.option("--budget", type=float, help="Stop at this fraction of the training pixels.")
@click.option("--step", type=float, help="Query size per round: a fraction of the training pixels (see --step-unit); images for image-level strategies.")
@click.option("--step-unit", type=click.Choice(["pixels", "patches"]),
              help="pixels: a round queries patches covering --step of the training pixels; patches: "
                   "--step of the patches (the paper's T; with overlap that reveals several times more pixels).")
@click.option("--scoring", type=click.Choice(["patches", "images"]),
              help="patches: score every candidate patch exactly (default); images: pool patch scores "
                   "from whole-image maps (faster, approximate).")
@click.option("--fast-path/--eager-path", "fast_path", default=None,
              help="Run the network in channels_last with BatchNorm folded for inference (default; 2.0x faster "
                   "scoring, 1.3x faster training on one CPU thread), or the plain NCHW path that runs made before "
                   "it used. Part of the protocol: a folder's runs all use one.")
@click.option("--budget-cap/--budget-overshoot", "budget_cap", default=None,
              help="The last query keeps only the patches that reach --budget (a run ends less than one patch above "
                   "it; the default for a new folder), or queries a whole step (up to a step above; folders made "
                   "before the cap). Default: what the folder's runs used.")
@click.option("--semi-supervised", type=click.Choice(["none", "fixmatch", "self-training"]),
              help="Also learn from the unlabelled pixels of the pool every round: fixmatch (weak-view "
                   "pseudo-labels train a strong view) or self-training (the last round's network labels "
                   "them); default none. Full supervision stays supervised.")
@click.option("--threads", type=int,
              help="torch CPU threads of this process (default: OMP_NUM_THREADS, else half the CPU cores, at least 1: two threads "
                   "per process thrash on a busy 2-core machine; recorded with every round).")
@click.option("--jobs", type=int, default=1, show_default=True,
              help="Runs (strategy x seed) at once, each in its own process with --threads torch threads; "
                   "their records are those of one-by-one runs. E.g. --jobs 8 --threads 1 on 8 free cores or a GPU.")
@click.option("--width", type=int, help="Network width w (descriptor dimension 8w).")
@click.option("--depth", type=int, help="Network depth (number of 2x2 poolings; patch sides must be multiples of 2**depth).")
@click.option("--lr", type=float, help="Adam learning rate.")
@click.option("--candidate-ratio", type=float, help="Q / T: IU candidates kept per patch queried (paper: 5 % / 2.5 % = 2).")
@click.option("--sa-ensemble", type=int, help="Networks in the Suggestive Annotation ensemble.")
@click.option("--test-fraction", type=float, help="Test share of a synthetic or folder dataset.")
@click.option("--train-steps", type=int,
              help="Gradient steps per round: the floor when --epochs is set, else exactly this many.")
@click.option("--initial-train-steps", type=int, help="The same for round 0 (the initial labelled set).")
@click.option("--epochs", type=float,
              help="Passes over the labelled patches per round (steps grow with the labelled set).")
@click.option("--max-train-steps", type=int, help="Cap on the gradient steps of one round (with --epochs).")
@click.option("--tta", is_flag=True, default=None,
              help="Score every patch under the 8 dihedral views too (8x scoring time), for the 'tta' criterion, "
                   "e.g. --strategies 'iu(uncertainty=tta)'.")
@click.option("--gradients", is_flag=True, default=None,
              help="Score gradient embeddings of the last layer too (for --strategies badge).")
@click.option("--dropout", type=float, help="Channel dropout on the ED-ConvNet's bottleneck (default 0: none).")
@click.option("--mc-samples", type=int,
              help="MC-dropout passes per patch when scoring (needs --dropout > 0), for the 'bald' criterion, "
                   "e.g. --strategies 'iu(uncertainty=bald)'.")
@click.option("--full-supervision-epochs", type=float,
              help="Passes over every training patch for the full-supervision ceiling (default: --epochs).")
@click.option("--lr-schedule", type=click.Choice(["cosine", "constant"]),
              help="Learning rate within each round: warm-up + cosine decay to 1 percent of --lr (default), or constant.")
@click.option("--warm-start/--from-scratch", default=None,
              help="Continue each round from the last round's weights (default), or retrain from scratch.")
@click.option("--reset-every", type=int,
              help="With warm start, retrain from fresh weights every that many rounds (a periodic reset).")
@click.option("--batch-size", type=int, help="Patches per gradient step.")
@click.option("--device", help="auto, cpu or cuda.")
@click.option("--out-dir", type=click.Path(file_okay=False), default=None, help="Output folder [default: bench-out/<preset>].")
@click.option("--resume", is_flag=True, help="Continue the runs found in --out-dir from their last completed round.")
@click.option("--accept-replay-drift", is_flag=True,
              help="With --resume: continue a run committed without its weights even where replaying its rounds on "
                   "this machine does not give the recorded Dice (another CPU computes otherwise), from the replayed "
                   "weights; the run's record notes it and the report marks its pairs. Without it such a run is refused.")
@click.option("--grid", is_flag=True, help="Table 2 sweep of FocAnnot over patch size x overlap x clusters.")
@click.option("--full-supervision/--no-full-supervision", default=True, show_default=True,
              help="Also train on every training pixel, the ceiling the curves are compared with.")
@click.option("--quiet", is_flag=True, help="No progress lines, no progress bar.")
@click.option("--progress/--no-progress", default=None,
              help="A progress bar above the per-round lines, over all rounds of all runs (its total re-estimated "
                   "after each round; ETA from the first round), over the jobs with --jobs. Default: only where "
                   "stdout is a terminal, so a log gets the lines alone.")
def bench(preset, resume, accept_replay_drift, grid, full_supervision, quiet, progress, out_dir, threads, jobs,
          **options):
    """Reproduce the paper's experiment: learning curves of query strategies against annotation cost."""
    from focal_al.bench.config import preset_config
    from focal_al.bench.runner import run_bench, run_grid

    try:
        if accept_replay_drift and not resume:
            raise ValueError("--accept-replay-drift continues runs: it needs --resume.")
        from focal_al.threads import set_process_threads

        threads = set_process_threads(threads)
        _clean_warnings()
        if options.get("semi_supervised") == "none":
            options["semi_supervised"] = None
        if options.get("images_dir") and not options.get("masks_dir") and options.get("mask_suffix"):
            options["masks_dir"] = options["images_dir"]  # masks beside their images, told apart by the suffix
        config = preset_config(preset, out_dir=out_dir or f"bench-out/{preset}", threads=threads, **options).validate()
        if config.dataset != "synthetic" and preset == "quick" and options.get("width") is None \
                and options.get("epochs") is None:
            import warnings

            warnings.warn("--preset quick trains a tiny network (width 8, 30-50 steps a round) sized for the built-in "
                          "synthetic images; on your own images its curves can fall round after round. Use --preset "
                          "glas-cpu (width 16, 250-500 steps a round) or set --width and --epochs.", UserWarning)
        if grid:
            for path in run_grid(config.replace(strategies=("7-focannot",)), resume=resume, quiet=quiet, jobs=jobs,
                                 accept_drift=accept_replay_drift, progress=progress):
                click.echo(path)
        else:
            click.echo(run_bench(config, resume=resume, quiet=quiet, with_full_supervision=full_supervision, jobs=jobs,
                                 accept_drift=accept_replay_drift, progress=progress))
    except (ValueError, FileExistsError, FileNotFoundError, KeyError) as err:
        raise click.ClickException(_in_cli_words(str(err))) from err


@main.command()
@click.argument("out_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--complete-only", is_flag=True,
              help="Leave out the runs short of their budget (still running, or stopped): a report of the "
                   "finished runs while others go on. The report names the runs left out.")
@click.option("--query-figures/--no-query-figures", default=True, show_default=True,
              help="Draw Fig. 6 (the areas queried), which reads the training images that the folder's "
                   "config.json names.")
@click.option("--data-dir", type=click.Path(exists=True, file_okay=False),
              help="Where the GlaS release is now, if not where config.json says (for Fig. 6).")
@click.option("--also-against", "also_against", multiple=True, metavar="STRATEGY",
              help="Also compare every strategy with this one, paired by seed, beside random patches "
                   "(the run folders' key, e.g. 7-focannot); repeatable.")
def report(out_dir, complete_only, query_figures, data_dir, also_against):
    """Rewrite the report, records and figures of a bench folder OUT_DIR from its runs, without running any."""
    from focal_al.bench.runner import rewrite_report

    try:
        click.echo(rewrite_report(out_dir, complete_only=complete_only, query_figures=query_figures, data_dir=data_dir,
                                  also_against=also_against))
    except (ValueError, FileNotFoundError, NotADirectoryError) as err:
        raise click.ClickException(_in_cli_words(str(err))) from err


@main.group()
def project():
    """Annotate your own images: rounds of regions to label in QuPath or napari, import, train, predict."""


#: The library's words for what a user types on the command line.
_CLI_WORDS = (("pass overwrite=True", "pass --overwrite"), ("overwrite=True", "--overwrite"),
              ("or pass client=None", "or leave out --scheduler"), ("pass level=", "pass --level"),
              ("or pass image=", "or pass --image"), ("Got level=", "Got --level "), (", mpp=", ", --mpp "),
              ("so mpp=", "so --mpp "), ("provides mpp=", "provides --mpp "),
              ("n_instances", "--n"), ("'images_dir'", "--images-dir"), ("'masks_dir'", "--masks-dir"))


def _in_cli_words(message: str) -> str:
    for api, cli in _CLI_WORDS:
        message = message.replace(api, cli)
    return message


def _user_errors(func):
    """Report bad input and a refused request as a one-line error in the CLI's words, never a traceback."""
    import functools

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except (ValueError, FileExistsError, FileNotFoundError, KeyError, OSError) as err:
            raise click.ClickException(_in_cli_words(str(err).strip("'\""))) from err
    return wrapper


def _threads(threads):
    from focal_al.threads import set_process_threads

    set_process_threads(threads)


_threads_option = click.option("--threads", type=int,
                               help="torch CPU threads (default: OMP_NUM_THREADS, else half the CPU cores, at least 1).")
_progress_option = click.option("--progress/--no-progress", default=None,
                                help="Progress bars on stderr: training steps, patches scored, images predicted. "
                                     "Default: where stderr is a terminal.")


@project.command("init")
@click.argument("directory", type=click.Path(file_okay=False))
@click.option("--images", multiple=True, required=True, type=click.Path(exists=True),
              help="An image file or a folder of images (repeatable); names are the file stems.")
@click.option("--masks", type=click.Path(exists=True, file_okay=False),
              help="Complete label masks of some images (<name><suffix>.png, original size): they start labelled.")
@click.option("--validation-masks", type=click.Path(exists=True, file_okay=False),
              help="Complete masks of images kept out of the pool; status reports Dice on them.")
@click.option("--mask-suffix", default="", show_default=True, help="Suffix of the mask file stems, e.g. _anno.")
@click.option("--patch-size", default=64, show_default=True, help="Region side at the network's scale (pixels).")
@click.option("--overlap", default=0.5, show_default=True, help="Overlap of neighbouring patches in [0, 1).")
@click.option("--scale", default=1.0, show_default=True, help="Resolution the network works at (0.5 = half).")
@click.option("--mpp", type=float,
              help="Whole-slide images (SVS, pyramidal TIFF): the resolution to work at, in micrometres per pixel "
                   "(the nearest pyramid level). Exports and imports stay in level-0 pixels.")
@click.option("--level", type=int, help="Whole-slide images: the pyramid level to work at (0 = full resolution).")
@click.option("--min-tissue", type=float, default=0.5, show_default=True,
              help="Whole-slide images: the smallest tissue share of a patch in the pool.")
@click.option("--strategy", default="focannot", show_default=True, help="A registered patch-level strategy.")
@click.option("--clusters", type=int, help="Number of clusters k of focannot / cluster-equal.")
@click.option("--width", default=16, show_default=True, help="Network width w.")
@click.option("--depth", default=4, show_default=True,
              help="Network depth (patch size must be a multiple of 2**depth).")
@click.option("--lr", default=1e-3, show_default=True, help="Adam learning rate.")
@click.option("--batch-size", default=16, show_default=True, help="Patches per gradient step.")
@click.option("--train-steps", default=300, show_default=True, help="Gradient steps per training.")
@click.option("--seed", default=0, show_default=True, help="Seeds the network, training batches and queries.")
@_user_errors
def project_init(directory, images, clusters, **options):
    """Create a project in DIRECTORY: partition the images, record the configuration and checksums."""
    from focal_al.project import AnnotationProject

    params = {} if clusters is None else {"k": clusters}
    p = AnnotationProject.create(directory, list(images), strategy_params=params, **options)
    click.echo(f"{p.path}: {len(p.pool_names)} pool images ({len(p.store)} patches), "
               f"{len(p.validation_names)} validation images, {p.labelled().size} patches labelled.")


@project.command("query")
@click.argument("directory", type=click.Path(exists=True, file_okay=False))
@click.option("--n", "n", type=int, required=True, help="Number of regions to ask for.")
@click.option("--strategy",
              help="Strategy for this round (default: the project's; random-patch while nothing is labelled).")
@click.option("--crops", is_flag=True, help="Also write a picture of each region with some context.")
@click.option("--context", default=32, show_default=True, help="Context pixels around each crop.")
@click.option("--scheduler", help="Dask scheduler address (tcp://host:8786): score the pool on its workers and select "
                                  "with the streaming FocAnnot (large pools).")
@click.option("--workers", type=int, help="The same on a local cluster of this many worker processes.")
@_threads_option
@_progress_option
@_user_errors
def project_query(directory, n, strategy, crops, context, scheduler, workers, threads, progress):
    """Train if needed, score the pool once and write the next round's regions to annotate."""
    from focal_al.project import AnnotationProject

    _threads(threads)
    if workers is not None and workers < 1:
        raise click.BadParameter(f"must be >= 1; got {workers}.", param_hint="--workers")
    p = AnnotationProject(directory)
    folder = p.query(n, strategy=strategy, crops=crops, context=context, scheduler=scheduler, workers=workers,
                     progress=progress)
    regions = p.regions(p.state["rounds"][-1]["round"])
    click.echo(f"{folder}: {len(regions)} regions in {len({g.image for g in regions})} images "
               f"(regions.csv, geojson/, napari/, overview/{', crops/' if crops else ''}).")


@project.command("import")
@click.argument("directory", type=click.Path(exists=True, file_okay=False))
@click.option("--masks", type=click.Path(exists=True, file_okay=False),
              help="Folder of label masks (<image><suffix>.png, original size); answers the images' open regions.")
@click.option("--mask-suffix", help="Suffix of the mask file stems (default: the project's).")
@click.option("--geojson", multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="QuPath GeoJSON export named <image>.geojson; more files may follow (--geojson exports/*.geojson).")
@click.option("--image", help="The image the --geojson files annotate (default: each file's stem).")
@click.argument("more_geojson", nargs=-1, type=click.Path(exists=True, dir_okay=False))
@_user_errors
def project_import(directory, masks, mask_suffix, geojson, image, more_geojson):
    """Read annotations of the asked regions (label masks or QuPath GeoJSON); partial imports are fine."""
    from focal_al.project import AnnotationProject

    if bool(masks) == bool(geojson):
        raise click.UsageError("Give either --masks or --geojson.")
    if more_geojson and not geojson:
        raise click.UsageError(f"Files {list(more_geojson)[:3]} follow no --geojson.")
    geojson = geojson + more_geojson
    p = AnnotationProject(directory)
    report = p.import_masks(masks, mask_suffix=mask_suffix) if masks else p.import_geojson(list(geojson), image=image)
    click.echo(f"{len(report.answered)} region(s) answered; {len(report.missing)} still missing"
               + (f": {', '.join(report.missing)}" if report.missing else "."))
    for line in report.not_asked:
        click.echo(f"not used: {line}")


@project.command("relocate")
@click.argument("directory", type=click.Path(exists=True, file_okay=False))
@click.option("--images", multiple=True, required=True, type=click.Path(exists=True),
              help="Where the project's images are now: files or folders (repeatable); matched by name, checked by checksum.")
@_user_errors
def project_relocate(directory, images):
    """Re-point a project at its images after they moved (checksums must match)."""
    from focal_al.project import AnnotationProject

    p = AnnotationProject.relocate(directory, list(images))
    click.echo(f"{p.path}: {len(p.config['images'])} images found and checked; the project reads them there now.")


@project.command("reopen")
@click.argument("directory", type=click.Path(exists=True, file_okay=False))
@click.argument("regions", nargs=-1, required=True)
@_user_errors
def project_reopen(directory, regions):
    """Re-open answered regions (e.g. R1-002) that were answered wrongly: they are asked again."""
    from focal_al.project import AnnotationProject

    names = AnnotationProject(directory).reopen(regions)
    click.echo(f"{len(names)} region(s) re-opened: {', '.join(names)}; answer them again with `focal-al project import`.")


@project.command("train")
@click.argument("directory", type=click.Path(exists=True, file_okay=False))
@click.option("--steps", type=int, help="Gradient steps (default: the project's --train-steps).")
@_threads_option
@_progress_option
@_user_errors
def project_train(directory, steps, threads, progress):
    """Train the network on every labelled pixel, continuing from the saved weights."""
    from focal_al.project import AnnotationProject

    _threads(threads)
    weights = AnnotationProject(directory).train(steps=steps, progress=progress)
    click.echo(f"trained: {weights['steps']} steps in all; weights {weights['file']}")


@project.command("status")
@click.argument("directory", type=click.Path(exists=True, file_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
@_user_errors
def project_status(directory, as_json):
    """Rounds, regions asked / answered, annotation cost, and Dice on the validation images."""
    import json

    from focal_al.project import AnnotationProject

    s = AnnotationProject(directory).status()
    if as_json:
        click.echo(json.dumps(s, indent=2))
        return
    for r in s["rounds"]:
        click.echo(f"round {r['round']} ({r['strategy']}): {r['asked']} asked, {r['answered']} answered, "
                   f"{r['missing']} missing")
    click.echo(f"regions: {s['regions_asked']} asked, {s['regions_answered']} answered "
               f"({s['regions_with_foreground']} with glands); {s['labelled_patches']} of {s['pool_patches']} "
               f"patches labelled")
    click.echo(f"cost: {s['revealed_pixels']} of {s['total_pixels']} pixels ({s['cost']:.1%}), "
               f"{s['foreground_pixels']} foreground")
    if not s["labelled_patches"]:
        click.echo("network: untrained, nothing labelled yet (the first query asks for random regions)")
    else:
        weights = "up to date" if s["weights_current"] else "older than the labels (`focal-al project train`)"
        click.echo(f"network: {s['trained_steps']} steps, {weights}")
    if s["validation_dice"] is not None:
        n = len(s["validation"])
        thin = " (one image: a rough guide, not a measure)" if n == 1 else ""
        click.echo(f"validation Dice: {s['validation_dice']:.3f} over {n} image{'s' if n != 1 else ''}{thin}")


@project.command("predict")
@click.argument("directory", type=click.Path(exists=True, file_okay=False))
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Output folder.")
@_threads_option
@_progress_option
@_user_errors
def project_predict(directory, out, threads, progress):
    """Segment every image: <name>_mask.png (instance ids) and <name>.geojson (objects) in --out."""
    from focal_al.project import AnnotationProject

    _threads(threads)
    files = AnnotationProject(directory).predict(out, progress=progress)
    click.echo(f"{len(files) // 2} images segmented into {out}")


@main.command()
@click.argument("slides", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--out", "store_path", required=True, type=click.Path(dir_okay=False), help="PatchStore file to write.")
@click.option("--patch-size", type=int, required=True, help="Patch side in pixels of the level read.")
@click.option("--overlap", type=float, default=0.0, show_default=True, help="Overlap rate rho in [0, 1).")
@click.option("--level", type=int, help="Pyramid level to read (0 = full resolution); exclusive with --mpp.")
@click.option("--mpp", type=float, help="Resolution to read in micrometres per pixel (nearest level of each slide).")
@click.option("--min-tissue", type=float, default=0.5, show_default=True, help="Smallest tissue share of a kept patch.")
@click.option("--tissue-channel", type=click.Choice(["auto", "saturation", "grey"]), default="auto", show_default=True,
              help="What marks tissue on the overview: saturation (stained tissue on glass), grey (darker than "
                   "the glass); auto: grey for one-channel slides, else saturation.")
@click.option("--overwrite", is_flag=True, help="Replace an existing store.")
def slides(slides, store_path, patch_size, overlap, level, mpp, min_tissue, tissue_channel, overwrite):
    """Cut the tissue of whole-slide images (pyramidal TIFF, SVS) into a PatchStore."""
    from focal_al.slides import load_slides

    try:
        store = load_slides(slides, store_path, patch_size=patch_size, overlap=overlap, level=level, mpp=mpp,
                            min_tissue=min_tissue, tissue_channel=tissue_channel, overwrite=overwrite)
    except (ValueError, FileExistsError, FileNotFoundError) as err:
        raise click.ClickException(_in_cli_words(str(err))) from err
    click.echo(f"{store.path}: {len(store)} patches of {store.patch_size} px from {store.n_images} slides")


@main.command()
@click.argument("store", type=click.Path(exists=True, dir_okay=False))
@click.argument("weights", type=click.Path(exists=True, dir_okay=False))
@click.option("--out", "scores_path", required=True, type=click.Path(dir_okay=False),
              help="Scores file to write (HDF5); the weights are copied next to it as .safetensors.")
@click.option("--scheduler", help="Dask scheduler address (tcp://host:8786); default: a local cluster.")
@click.option("--workers", type=int, default=2, show_default=True, help="Worker processes of the local cluster.")
@click.option("--width", type=int, default=16, show_default=True, help="Network width w the weights were trained with.")
@click.option("--depth", type=int, default=4, show_default=True, help="Network depth the weights were trained with.")
@click.option("--batch-size", type=int, default=64, show_default=True, help="Patches per forward pass.")
@click.option("--chunk-size", type=int, default=8192, show_default=True, help="Patches per Dask task.")
@click.option("--query", "n_query", type=int, help="Also select this many patches (FocAnnot, streaming).")
@click.option("--clusters", type=int, default=3, show_default=True, help="Number of clusters k of the query.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the query.")
@click.option("--overwrite", is_flag=True, help="Replace existing output files.")
def score(store, weights, scores_path, scheduler, workers, width, depth, batch_size, chunk_size, n_query, clusters,
          seed, overwrite):
    """Score a PatchStore with safetensors weights on Dask workers; optionally query patches (CSV to stdout)."""
    import csv
    import logging
    import sys

    # Dask logs connection errors of its own shutdown as tracebacks; a failed task raises here anyway.
    for name in ("distributed", "tornado"):
        logging.getLogger(name).setLevel(logging.CRITICAL)

    from focal_al.distributed import load_safetensors_weights, score_pool_distributed
    from focal_al.estimator import SegmentationNet
    from focal_al.store import PatchStore

    try:
        from pathlib import Path

        out = Path(scores_path).resolve()
        if out in (Path(store).resolve(), Path(weights).resolve()) or out.with_suffix(".safetensors") in (
                Path(store).resolve(), Path(weights).resolve()):
            raise ValueError(f"--out {scores_path} (and its weights copy {Path(scores_path).with_suffix('.safetensors')}) "
                             f"must not name the input store or weights; choose another name.")
        pool = PatchStore(store)
        if n_query is not None and not 1 <= n_query <= len(pool):
            raise ValueError(f"--query must be in [1, {len(pool)}] (the store's patches). Got {n_query} instead.")
        if n_query is not None and not 1 <= clusters <= n_query * 1000:
            raise ValueError(f"--clusters must be >= 1. Got {clusters} instead.")
        net = load_safetensors_weights(
            SegmentationNet(module__width=width, module__depth=depth, batch_size=batch_size), weights)
        scores = score_pool_distributed(net, pool, scores_path, client=scheduler, n_workers=workers,
                                        chunk_size=chunk_size, overwrite=overwrite)
        click.echo(f"{scores.path}: {scores.n_patches} patches scored, descriptors of dimension {scores.d}", err=True)
        if n_query is not None:
            # The registered streaming FocAnnot, among the patches with no revealed pixel only.
            import numpy as np

            from focal_al.registry import get_strategy
            from focal_al.streaming import FileScores

            unlabelled = pool.unlabelled_rows()
            if n_query > len(unlabelled):
                raise ValueError(f"--query {n_query} asks for more patches than the {len(unlabelled)} unlabelled ones.")
            view = FileScores(scores, unlabelled)
            positions = get_strategy("focannot-streaming")(view, n_query, np.arange(len(unlabelled)),
                                                           np.random.default_rng(seed), k=clusters)
            picked = unlabelled[positions]
            writer = csv.writer(sys.stdout)
            writer.writerow(["index", "image", "y_level0", "x_level0", "side_level0"])
            for i in picked:
                image = int(pool.image_index[i])
                y, x = pool.coords_level0[i]
                side = round(pool.patch_size * float(pool.image_downsamples[image]))
                writer.writerow([int(i), pool.image_names[image], int(y), int(x), side])
    except (ValueError, FileExistsError, FileNotFoundError, ConnectionError) as err:
        raise click.ClickException(_in_cli_words(str(err))) from err
