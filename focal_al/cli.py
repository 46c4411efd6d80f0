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


def _csv(kind):
    def parse(ctx, param, value):
        if value is None:
            return None
        try:
            return tuple(kind(v.strip()) for v in value.split(",") if v.strip())
        except ValueError:
            raise click.BadParameter(f"expected a comma-separated list of {kind.__name__}; got {value!r}")
    return parse


@main.command()
@click.option("--preset", type=click.Choice(["quick", "glas-cpu", "paper"]), default="quick", show_default=True,
              help="quick: built-in synthetic data, small net (~5 min on 2 CPU cores); glas-cpu: GlaS at half "
                   "resolution (~15 min per strategy and seed); paper: full resolution, width 64 (GPU).")
@click.option("--dataset", type=click.Choice(["synthetic", "glas", "folder"]), help="Data source.")
@click.option("--data-dir", type=click.Path(file_okay=False), help="GlaS release folder (default: ../shared/data/glas).")
@click.option("--split", type=click.Choice(["mixed", "testA", "testB"]),
              help="GlaS train/test pair: Mixed (seeded 80/20 of all 165), or train vs testA / testB.")
@click.option("--images-dir", type=click.Path(exists=True, file_okay=False), help="Your images (--dataset folder).")
@click.option("--masks-dir", type=click.Path(exists=True, file_okay=False), help="Your masks (--dataset folder).")
@click.option("--n-images", type=int, help="Number of synthetic images (--dataset synthetic).")
@click.option("--image-size", type=int, help="Side of the synthetic images in pixels (--dataset synthetic).")
@click.option("--scale", type=float, help="Resolution factor applied to the images (0.5 = half).")
@click.option("--strategies", callback=_csv(str),
              help="Comma-separated: Table 1 numbers (1-7), random-image, random-patch, or any registered strategy.")
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
@click.option("--threads", type=int, help="torch CPU threads (default: torch's choice).")
@click.option("--width", type=int, help="Network width w (descriptor dimension 8w).")
@click.option("--depth", type=int, help="Network depth (number of 2x2 poolings; patch sides must be multiples of 2**depth).")
@click.option("--lr", type=float, help="Adam learning rate.")
@click.option("--candidate-ratio", type=float, help="Q / T: IU candidates kept per patch queried (paper: 5 % / 2.5 % = 2).")
@click.option("--sa-ensemble", type=int, help="Networks in the Suggestive Annotation ensemble.")
@click.option("--test-fraction", type=float, help="Test share of a synthetic or folder dataset.")
@click.option("--train-steps", type=int, help="Gradient steps per round.")
@click.option("--initial-train-steps", type=int, help="Gradient steps on the initial labelled set.")
@click.option("--batch-size", type=int, help="Patches per gradient step.")
@click.option("--device", help="auto, cpu or cuda.")
@click.option("--out-dir", type=click.Path(file_okay=False), default=None, help="Output folder [default: bench-out/<preset>].")
@click.option("--resume", is_flag=True, help="Continue the runs found in --out-dir from their last completed round.")
@click.option("--grid", is_flag=True, help="Table 2 sweep of FocAnnot over patch size x overlap x clusters.")
@click.option("--full-supervision/--no-full-supervision", default=True, show_default=True,
              help="Also train on every training pixel, the ceiling the curves are compared with.")
@click.option("--quiet", is_flag=True, help="No progress lines.")
def bench(preset, resume, grid, full_supervision, quiet, out_dir, threads, **options):
    """Reproduce the paper's experiment: learning curves of query strategies against annotation cost."""
    from focal_al.bench.config import preset_config
    from focal_al.bench.runner import run_bench, run_grid

    if threads is not None:
        import torch

        torch.set_num_threads(max(1, threads))

    try:
        config = preset_config(preset, out_dir=out_dir or f"bench-out/{preset}", **options).validate()
        if grid:
            for path in run_grid(config.replace(strategies=("7-focannot",)), resume=resume, quiet=quiet):
                click.echo(path)
        else:
            click.echo(run_bench(config, resume=resume, quiet=quiet, with_full_supervision=full_supervision))
    except (ValueError, FileExistsError, FileNotFoundError, KeyError) as err:
        raise click.ClickException(str(err)) from err


@main.command()
@click.argument("slides", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--out", "store_path", required=True, type=click.Path(dir_okay=False), help="PatchStore file to write.")
@click.option("--patch-size", type=int, required=True, help="Patch side in pixels of the level read.")
@click.option("--overlap", type=float, default=0.0, show_default=True, help="Overlap rate rho in [0, 1).")
@click.option("--level", type=int, help="Pyramid level to read (0 = full resolution); exclusive with --mpp.")
@click.option("--mpp", type=float, help="Resolution to read in micrometres per pixel (nearest level of each slide).")
@click.option("--min-tissue", type=float, default=0.5, show_default=True, help="Smallest tissue share of a kept patch.")
@click.option("--overwrite", is_flag=True, help="Replace an existing store.")
def slides(slides, store_path, patch_size, overlap, level, mpp, min_tissue, overwrite):
    """Cut the tissue of whole-slide images (pyramidal TIFF, SVS) into a PatchStore."""
    from focal_al.slides import load_slides

    try:
        store = load_slides(slides, store_path, patch_size=patch_size, overlap=overlap, level=level, mpp=mpp,
                            min_tissue=min_tissue, overwrite=overwrite)
    except (ValueError, FileExistsError, FileNotFoundError) as err:
        raise click.ClickException(str(err)) from err
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
    import sys

    from focal_al.distributed import load_safetensors_weights, score_pool_distributed
    from focal_al.estimator import SegmentationNet
    from focal_al.store import PatchStore
    from focal_al.streaming import streaming_focannot

    try:
        pool = PatchStore(store)
        net = load_safetensors_weights(
            SegmentationNet(module__width=width, module__depth=depth, batch_size=batch_size), weights)
        scores = score_pool_distributed(net, pool, scores_path, client=scheduler, n_workers=workers,
                                        chunk_size=chunk_size, overwrite=overwrite)
        click.echo(f"{scores.path}: {scores.n_patches} patches scored, descriptors of dimension {scores.d}", err=True)
        if n_query is not None:
            picked = streaming_focannot(scores, n_query, k=clusters, random_state=seed)
            writer = csv.writer(sys.stdout)
            writer.writerow(["index", "image", "y_level0", "x_level0", "side_level0"])
            for i in picked:
                image = int(pool.image_index[i])
                y, x = pool.coords_level0[i]
                side = round(pool.patch_size * float(pool.image_downsamples[image]))
                writer.writerow([int(i), pool.image_names[image], int(y), int(x), side])
    except (ValueError, FileExistsError, FileNotFoundError, ConnectionError) as err:
        raise click.ClickException(str(err)) from err
