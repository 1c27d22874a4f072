"""``stego data``: list, check, download and describe the registered datasets.

Kept out of flows/cli.py, which only registers this sub-app; each command parses, calls one
function of :mod:`stego_core.data` and prints.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional

import typer

data_app = typer.Typer(no_args_is_help=True, help="List, check, download and describe the registered datasets.")

ROOT_HELP = "data root (default: $STEGO_DATA_ROOT)"
SHOW_VALUES = 12  # label values a check lists per split (unknown ones always)


def _bar(desc: str):
    from tqdm import tqdm

    return lambda items: tqdm(items, desc=desc, unit="image", file=sys.stderr, leave=False,
                              disable=not sys.stderr.isatty())


@data_app.command("list")
def data_list(root: Optional[Path] = typer.Option(None, "--root", help=ROOT_HELP)) -> None:
    """The registered datasets, where each is expected, which splits are found and how to get it."""
    import os

    from stego_core.data import DATA_ROOT_ENV, DATASETS
    from stego_core.data.sources import SOURCES

    base = root or (Path(os.environ[DATA_ROOT_ENV]) if os.environ.get(DATA_ROOT_ENV) else None)
    if base is None:
        typer.echo(f"(no data root: pass --root or set ${DATA_ROOT_ENV}; showing folder names only)")
    typer.echo(f"{'dataset':<14} {'classes':>7}  {'found':<40} {'expected at':<40} get it")
    for name, spec in sorted(DATASETS.items()):
        folder = (base / spec.folder) if base else Path("<root>") / spec.folder
        subset = spec.layout.resolve_subset(None, name)
        found = [s for s in spec.splits if base and all((folder / m).exists() for m in spec.layout.markers(s, subset))]
        shown = ", ".join(found) if found else "no"
        how = "stego data download" if SOURCES[name].url else f"{SOURCES[name].manual} (see `stego data download`)"
        typer.echo(f"{name:<14} {spec.num_classes:>7}  {shown:<40} {str(folder):<40} {how}")


def histogram_lines(spec, histogram) -> list[str]:
    """``raw id -> share (class)`` for the label values read, largest first."""
    import numpy as np

    from stego_core.data import apply_label_map

    total = sum(histogram.values()) or 1
    lines = []
    ordered = sorted(histogram.items(), key=lambda kv: -kv[1])
    shown = [kv for i, kv in enumerate(ordered) if i < SHOW_VALUES or kv[0] not in spec.raw_ids]
    for value, count in shown:
        cls = int(apply_label_map(np.array([value]), spec.label_map)[0])
        name = spec.class_names[cls] if 0 <= cls < spec.num_classes else ("void" if cls == spec.ignore_index else "?")
        unknown = "" if value in spec.raw_ids else "  UNKNOWN"
        lines.append(f"    {value:>5} {100 * count / total:6.2f}%  -> {name}{unknown}")
    if len(shown) < len(ordered):
        lines.append(f"    ({len(ordered) - len(shown)} rarer values)")
    return lines


@data_app.command("check")
def data_check(
    name: str = typer.Argument(..., help="registered dataset (see `stego data list`)"),
    split: List[str] = typer.Option([], "--split", help="only this split (repeatable; default: all)"),
    root: Optional[Path] = typer.Option(None, "--root", help=ROOT_HELP),
    subset: Optional[str] = typer.Option(None, help="cocostuff27: curated (default) or full"),
    sample: Optional[int] = typer.Option(None, help="read only this many images (and labels) per split, drawn at random "
                                         "(every file's presence is still checked); default: all"),
    strict: bool = typer.Option(False, "--strict", help="also fail when a split's count differs from the paper's"),
) -> None:
    """Find the dataset's layout, count each split against the paper, read its files; exit 0 only if usable.

    Usable: every split found, every listed image and label present and readable, every label value
    one the dataset's labels hold. A count different from the paper's (a partial copy) is reported,
    and fails only with --strict.
    """
    from stego_core.data import get_dataset
    from stego_core.data.check import check_dataset

    spec = get_dataset(name)
    report = check_dataset(name, root, splits=split, subset=subset, sample=sample, strict=strict,
                           progress=lambda s: _bar(f"check {s}"))
    typer.echo(f"{name} at {report.folder}")
    typer.echo(f"{'split':<17} {'subset':<8} {'images':>8} {'paper':>8} {'read':>6} {'problems':>8}  listed by")
    for s in report.splits:
        expected = "-" if s.expected is None else f"{s.expected:,}"
        typer.echo(f"{s.split:<17} {s.subset or '-':<8} {s.found:>8,} {expected:>8} {s.checked:>6} "
                   f"{len(s.problems):>8}  {s.listed_by}")
    for s in report.splits:
        if s.not_found:
            typer.secho(f"{s.split}: {s.not_found}", fg=typer.colors.RED)
        elif not s.complete:
            typer.secho(f"{s.split}: {s.found:,} images, the paper's split has {s.expected:,}: a partial copy; its numbers "
                        "will not be comparable with the paper's", fg=typer.colors.YELLOW)
        if s.histogram:
            typer.echo(f"  {s.split} label values (raw id, pixel share, class):")
            for line in histogram_lines(spec, s.histogram):
                typer.echo(line)
    problems = [p for s in report.splits for p in s.problems]
    for p in problems:
        typer.secho(f"{p.kind}: {p.file}", fg=typer.colors.RED)
        typer.echo(f"    {p.reason}")
    if report.usable:
        typer.secho(f"{name} is usable: run `stego run --preset ...` with --data-root {report.folder.parent}",
                    fg=typer.colors.GREEN)
        return
    what = f"{len(problems)} bad file{'s' if len(problems) != 1 else ''}" if problems else "splits missing or incomplete"
    typer.secho(f"{name} is not usable: {what}. Fix or re-download them (`stego data download {name}`), or let a run "
                "leave bad files out with --set data.bad_files=skip", fg=typer.colors.RED)
    raise typer.Exit(1)


def _byte_bar(desc: str):
    from tqdm import tqdm

    def start(total, have):
        bar = tqdm(total=total, initial=have, desc=desc, unit="B", unit_scale=True, unit_divisor=1024,
                   file=sys.stderr, leave=False, disable=not sys.stderr.isatty())
        return bar.update
    return start


@data_app.command("download")
def data_download(
    name: str = typer.Argument(..., help="registered dataset (see `stego data list`)"),
    to: Optional[Path] = typer.Option(None, "--to", help="data root to unpack it under (default: $STEGO_DATA_ROOT)"),
    url: Optional[str] = typer.Option(None, help="fetch from this URL instead (a mirror)"),
    sha256: Optional[str] = typer.Option(None, help="expected sha256 of the archive (checked before extracting)"),
    keep_archive: bool = typer.Option(False, "--keep-archive", help="keep the zip after unpacking it"),
    retries: int = typer.Option(3, min=0, help="resume an interrupted transfer this many times before giving up"),
) -> None:
    """Fetch the dataset's archive (resumable; checksummed when a checksum is known) and unpack it into the
    layout the registry reads; for data behind a registration (Cityscapes), print how to get it."""
    import os

    from stego_core.data import DATA_ROOT_ENV
    from stego_core.data.download import install_dataset

    root = to or (Path(os.environ[DATA_ROOT_ENV]) if os.environ.get(DATA_ROOT_ENV) else None)
    if root is None:
        raise ValueError(f"where to? pass --to ROOT or set ${DATA_ROOT_ENV}")
    result = install_dataset(name, root, url=url, sha256=sha256, keep_archive=keep_archive, retries=retries,
                             progress=_byte_bar(f"download {name}"))
    if not result.downloaded:
        typer.echo(f"{name} is already at {result.folder}: nothing to download (`stego data check {name}` checks it)")
        return
    typer.echo(f"unpacked {name} into {result.folder} (archive sha256 {result.sha256})")
    typer.echo(f"next: stego data check {name} --root {root}")


@data_app.command("describe")
def data_describe(
    name: str = typer.Argument(..., help="registered dataset (see `stego data list`)"),
    split: str = typer.Option("train", help="split whose pixels are counted"),
    root: Optional[Path] = typer.Option(None, "--root", help=ROOT_HELP),
    subset: Optional[str] = typer.Option(None, help="cocostuff27: curated (default) or full"),
    limit: Optional[int] = typer.Option(None, min=1, help="count only the first N images"),
    plot: Optional[Path] = typer.Option(None, help="bar chart PNG (default: next to the cached table, "
                                        "$STEGO_HOME/data/describe/)"),
) -> None:
    """Class names, colours and each class's share of a split's labelled pixels (a table and a bar chart), cached."""
    from stego_core.data import get_dataset
    from stego_core.data.describe import class_shares
    from stego_core.home import stego_home
    from tasks.figures import class_share_figure, save_png

    cache = stego_home() / "data" / "describe"
    spec = get_dataset(name)
    shares = class_shares(name, split, root, subset=subset, limit=limit, cache_dir=cache, progress=_bar(f"count {split}"))
    where = f"{name} {split}" + (f" ({shares.subset})" if shares.subset else "")
    typer.echo(f"{where}: {shares.images:,} labelled images, {shares.pixels:,} pixels, {100 * shares.void_share:.1f}% void"
               f"{' (cached)' if shares.from_cache else ''}")
    typer.echo(f"{'id':>3}  {'class':<24} {'colour':<8} {'share':>7}")
    for i, (cls, colour, share) in enumerate(zip(spec.class_names, spec.colors, shares.shares)):
        typer.echo(f"{i:>3}  {cls:<24} #{colour[0]:02x}{colour[1]:02x}{colour[2]:02x}  {100 * share:>6.2f}%")
    import numpy as np

    path = plot or cache / f"{name}-{split}{'-' + shares.subset if shares.subset else ''}.png"
    save_png(class_share_figure(spec.class_names, shares.shares, np.asarray(spec.colors), f"{where}: class shares"), path)
    typer.echo(f"wrote {path}")
