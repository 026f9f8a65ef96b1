"""`ledger sim`: serve the simulator on a socket until Ctrl-C.

A plain function with typer `Annotated` options, registered by the CLI as
`app.command("sim")(sim_command)`. A fault option left out takes the `--profile` value; one
given overrides it, so `--profile chaos --hang-rate 0` is chaos without hangs.

It prints the base URL on its first line, then how to refresh a token against it (the OAuth
client the simulator accepts), so that a client can be pointed at both.
"""

from __future__ import annotations

import threading
from typing import Annotated

import typer

from ledger.simulator.core import Simulator
from ledger.simulator.faults import PROFILES, FaultConfig
from ledger.simulator.server import SimServer
from ledger.simulator.tokens import TOKEN_PATH, OAuthClient

_FAULTS = "Faults"
_OAUTH = "Token refresh"
_DEFAULT_OAUTH = OAuthClient()


def sim_command(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port to listen on (0 picks a free one).")] = 8900,
    token: Annotated[
        str | None,
        typer.Option(
            help="The only bearer token accepted besides refreshed ones; by default any "
            "non-empty token is."
        ),
    ] = None,
    client_id: Annotated[
        str,
        typer.Option(help="Client id accepted by POST /v1/access_token.", rich_help_panel=_OAUTH),
    ] = _DEFAULT_OAUTH.client_id,
    client_secret: Annotated[
        str,
        typer.Option(
            help="Client secret accepted by POST /v1/access_token.", rich_help_panel=_OAUTH
        ),
    ] = _DEFAULT_OAUTH.client_secret,
    refresh_token: Annotated[
        str,
        typer.Option(
            help="Refresh token accepted by POST /v1/access_token.", rich_help_panel=_OAUTH
        ),
    ] = _DEFAULT_OAUTH.refresh_token,
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
    token_ttl_s: Annotated[
        float | None,
        typer.Option(
            help="Seconds a bearer token lives after it is first seen or issued; 0 = for ever.",
            rich_help_panel=_FAULTS,
        ),
    ] = None,
    token_refresh_faults: Annotated[
        bool | None,
        typer.Option(
            help="Let rate limit, hangs and random 5xx reach the token refresh too.",
            rich_help_panel=_FAULTS,
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
            ("token_ttl_s", token_ttl_s),
            ("token_refresh_faults", token_refresh_faults),
        )
        if value is not None
    }
    try:
        faults = FaultConfig.model_validate({**PROFILES[profile].model_dump(), **overrides})
    except ValueError as error:
        raise typer.BadParameter(str(error).splitlines()[-1]) from None
    oauth = OAuthClient(client_id, client_secret, refresh_token)
    try:
        server = SimServer(Simulator(faults=faults, token=token, oauth=oauth), host, port)
    except OSError as error:
        raise typer.BadParameter(f"cannot listen on {host}:{port}: {error}") from None
    typer.echo(server.base_url)
    typer.echo(refresh_usage(server.origin, oauth))
    server.start()
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


def refresh_usage(origin: str, oauth: OAuthClient) -> str:
    """How to get a new access token from this simulator, as a line an operator can copy."""
    return (
        f"token refresh: POST {origin}{TOKEN_PATH} (form-encoded) grant_type=refresh_token "
        f"client_id={oauth.client_id} client_secret={oauth.client_secret} "
        f"refresh_token={oauth.refresh_token}"
    )
