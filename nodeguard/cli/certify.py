"""`nodeguard certify`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from nodeguard.cli._options import DataDirOption, DeviceOption, JsonOption, ModelOption, ThreadsOption, plot_option
from nodeguard.cli._output import Output, Picture
from nodeguard.cli._parsing import parse_list
from nodeguard.intervals import INTERVAL_LABEL, format_optional_rate
from nodeguard.reporting.security_plots import plot_certify
from nodeguard.stages.certify import CertifyReport, CertifySettings, run_certify
from nodeguard.storage.registry import Registry

CERTIFY = CertifySettings(sigma=0.25)
RADII_DEFAULT = ",".join(f"{radius:g}" for radius in CERTIFY.radii)


def certify(
    sigma: Annotated[
        float, typer.Option("--sigma", help="Gaussian noise, pixels in [0, 1] (train with --noise-sigma).")
    ],
    model: ModelOption = None,
    count: Annotated[int, typer.Option("--count", help="The first N test images are certified.")] = CERTIFY.count,
    n0: Annotated[int, typer.Option("--n0", help="Noisy samples that choose the class.")] = CERTIFY.n0,
    n: Annotated[int, typer.Option("--n", help="Noisy samples that bound its probability.")] = CERTIFY.n,
    alpha: Annotated[float, typer.Option("--alpha", help="Probability of a wrong certificate.")] = CERTIFY.alpha,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the noise.")] = CERTIFY.seed,
    radii: Annotated[str, typer.Option("--radii", help="L2 radii of the table.")] = RADII_DEFAULT,
    predict: Annotated[bool, typer.Option("--predict", help="Also classify with PREDICT (abstains).")] = False,
    plot: Annotated[Path | None, plot_option("the certified-accuracy picture")] = None,
    batch_size: Annotated[
        int, typer.Option("--batch-size", help="Noisy samples solved together.")
    ] = CERTIFY.batch_size,
    data_dir: DataDirOption = None,
    device: DeviceOption = "auto",
    threads: ThreadsOption = None,
    json_output: JsonOption = False,
) -> None:
    """Randomized smoothing (Cohen, Rosenfeld & Kolter 2019): certified accuracy against
    the L2 radius, each noisy copy classified alone at the model's tau_train.

    CERTIFY picks the class from n0 noisy copies, bounds its probability from n more
    (Clopper-Pearson at alpha) and certifies radius sigma * Phi^-1(bound), or abstains.
    Certificates are cached; an interrupted run continues.
    """
    settings = CertifySettings(
        sigma=sigma,
        count=count,
        n0=n0,
        n=n,
        alpha=alpha,
        seed=seed,
        batch_size=batch_size,
        radii=parse_list(radii, float, "--radii", "0.25,0.5,1"),
        predict=predict,
    )
    Output(json_output).run(
        run_certify,
        render,
        Picture(lambda report, path: plot_certify([report], path), plot),
        settings=settings,
        model=model,
        registry=Registry(),
        device=device,
        data_dir=str(data_dir) if data_dir else None,
    )


def render(console: Console, report: CertifyReport) -> None:
    tol = f", tau {report.tol:g}" if report.tol is not None else ""
    table = Table(
        title=f"{report.model}: sigma = {report.sigma:g}, {report.count} test images, n0 = {report.n0}, "
        f"n = {report.n}, alpha = {report.alpha:g}{tol}"
    )
    for column in ("L2 radius", "certified accuracy", "images"):
        table.add_column(column, justify="right", no_wrap=True)
    for point in report.curve:
        table.add_row(
            f"{point.radius:g}",
            point.certified_accuracy.format(),
            f"{point.certified_accuracy.count}/{point.certified_accuracy.total}",
        )
    console.print(table)
    console.print(
        f"abstained {report.abstained.format()}; the largest radius "
        f"{report.n} samples can certify at alpha = {report.alpha:g}: {report.max_radius:.3f}"
    )
    if report.predict_accuracy is not None:
        console.print(
            f"PREDICT: accuracy {report.predict_accuracy.format()}, "
            f"abstained {format_optional_rate(report.predict_abstained)}"
        )
    reused = " (certificates reused from the cache)" if report.reused else ""
    console.print(f"intervals: {INTERVAL_LABEL} over the images; {report.seconds:.0f} s certifying{reused}")
    if report.plot:
        console.print(f"certified-accuracy picture: {report.plot}")
