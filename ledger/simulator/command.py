"""`ledger sim`: serve the simulator on a socket until Ctrl-C.

A plain function with typer `Annotated` options, registered by the CLI as
`app.command("sim")(sim_command)`. A fault option left out takes the `--profile` value; one
given overrides it, so `--profile chaos --hang-rate 0` is chaos without hangs.
"""

from __future__ import annotations

import threading
from typing import Annotated

import typer

from ledger.simulator.core import Simulator
from ledger.simulator.faults import PROFILES, FaultConfig
from ledger.simulator.server import SimServer

_FAULTS = "Faults"


def sim_command(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port to listen on (0 picks a free one).")] = 8900,
    token: Annotated[
        str | None,
        typer.Option(help="The only bearer token accepted; by default any non-empty token is."),
    ] = None,
    profile: Annotated[
        str,
        typer.Option(help=f"Fault preset: {', '.join(PROFILES)}.", rich_help_panel=_FAULTS),
    ] = "none",
    seed: Annotated[
        int | None,
        typer.Option(
            help="Seed of ids and fault decisions (replayable runs).", rich_help_panel=_FAULTS
        ),
    ] = None,
    latency_ms: Annotated[
        float | None,
        typer.Option(help="Latency added to every answer, in ms.", rich_help_panel=_FAULTS),
    ] = None,
    latency_jitter_ms: Annotated[
        float | None,
        typer.Option(help="Random extra latency, 0 to this many ms.", rich_help_panel=_FAULTS),
    ] = None,
    rate_limit_rps: Annotated[
        float | None,
        typer.Option(
            help="Requests per second before 429s; 0 = unlimited.", rich_help_panel=_FAULTS
        ),
    ] = None,
    rate_limit_burst: Annotated[
        float | None,
        typer.Option(
            help="Burst size of the rate limit; 0 = one second's worth.", rich_help_panel=_FAULTS
        ),
    ] = None,
    retry_after_garbage_rate: Annotated[
        float | None,
        typer.Option(
            help="Share of 429s whose Retry-After is unparseable.", rich_help_panel=_FAULTS
        ),
    ] = None,
    error_rate: Annotated[
        float | None,
        typer.Option(
            help="Probability of a 5xx answer (request not applied).", rich_help_panel=_FAULTS
        ),
    ] = None,
    hang_rate: Annotated[
        float | None,
        typer.Option(help="Probability that a request is never answered.", rich_help_panel=_FAULTS),
    ] = None,
    hang_s: Annotated[
        float | None,
        typer.Option(
            help="How long a hung request holds the connection, in s.", rich_help_panel=_FAULTS
        ),
    ] = None,
    write_error_rate: Annotated[
        float | None,
        typer.Option(
            help="Probability that a write is applied, then answered 5xx.", rich_help_panel=_FAULTS
        ),
    ] = None,
    write_drop_rate: Annotated[
        float | None,
        typer.Option(
            help="Probability that a write is applied, then the connection dropped.",
            rich_help_panel=_FAULTS,
        ),
    ] = None,
    people_create_400_rate: Annotated[
        float | None,
        typer.Option(
            help="Probability that POST /people creates the person yet answers 400.",
            rich_help_panel=_FAULTS,
        ),
    ] = None,
    people_create_400_without_calling_share: Annotated[
        float | None,
        typer.Option(
            help="Share of those 400s whose person is created without location, number, "
            "extension or calling license.",
            rich_help_panel=_FAULTS,
        ),
    ] = None,
    lookup_delay_s: Annotated[
        float | None,
        typer.Option(
            help="Seconds before a new person shows in GET /people lists (email lookup too).",
            rich_help_panel=_FAULTS,
        ),
    ] = None,
    auth_failure: Annotated[
        int | None,
        typer.Option(
            help="Answer every request with this status: 401 or 403.", rich_help_panel=_FAULTS
        ),
    ] = None,
) -> None:
    """Serve a local Webex-compatible API (with optional faults) for rehearsals and tests."""
    if profile not in PROFILES:
        raise typer.BadParameter(f"choose one of {', '.join(PROFILES)}", param_hint="--profile")
    overrides = {
        name: value
        for name, value in (
            ("seed", seed),
            ("latency_ms", latency_ms),
            ("latency_jitter_ms", latency_jitter_ms),
            ("rate_limit_rps", rate_limit_rps),
            ("rate_limit_burst", rate_limit_burst),
            ("retry_after_garbage_rate", retry_after_garbage_rate),
            ("error_rate", error_rate),
            ("hang_rate", hang_rate),
            ("hang_s", hang_s),
            ("write_error_rate", write_error_rate),
            ("write_drop_rate", write_drop_rate),
            ("people_create_400_rate", people_create_400_rate),
            ("people_create_400_without_calling_share", people_create_400_without_calling_share),
            ("lookup_delay_s", lookup_delay_s),
            ("auth_failure", auth_failure),
        )
        if value is not None
    }
    try:
        faults = FaultConfig.model_validate({**PROFILES[profile].model_dump(), **overrides})
    except ValueError as error:
        raise typer.BadParameter(str(error).splitlines()[-1]) from None
    try:
        server = SimServer(Simulator(faults=faults, token=token), host, port)
    except OSError as error:
        raise typer.BadParameter(f"cannot listen on {host}:{port}: {error}") from None
    typer.echo(server.base_url)
    server.start()
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
