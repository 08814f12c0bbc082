"""Command line: `oligocds serve | evaluate FILE… | rules check | rules test`."""

from __future__ import annotations

import gc
import sys
from datetime import date
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer
from rich.console import Console
from rich.table import Table

from service.config import Settings, get_settings

app = typer.Typer(help="OligoCDS: decision support for skeletal metastases and oligometastatic disease.")
rules_app = typer.Typer(help="Check and test the rule files.")
app.add_typer(rules_app, name="rules")


@app.command()
def serve() -> None:
    """Run the HTTP service (and the Kafka worker when OLIGOCDS_KAFKA_BOOTSTRAP is set)."""
    import uvicorn

    from service.api import logs
    from service.api.app import create_app

    settings = get_settings()
    logs.configure(settings.log_level)
    app_ = create_app(settings)
    _settle_heap()
    # uvicorn's own access log would print raw paths; ours logs route templates with a request id instead
    uvicorn.run(app_, host=settings.host, port=settings.port, http="httptools", log_level="warning", access_log=False)


def _settle_heap() -> None:
    """Everything imported so far (the FHIR models too) moved out of the garbage collector's reach: a full
    collection then scans what requests leave behind, not the libraries' objects (a ~70 ms pause each time
    otherwise, under load every few hundred requests; docs/performance.md)."""
    from service.fhir.parse import load_models

    load_models()
    gc.collect()
    gc.freeze()


@app.command()
def worker() -> None:
    """Run the Kafka worker alone (needs OLIGOCDS_KAFKA_BOOTSTRAP); serves /healthz, /readyz and /metrics only."""
    import uvicorn

    from service.api import logs
    from service.api.app import create_app

    settings = get_settings()
    logs.configure(settings.log_level)
    if not settings.kafka_bootstrap:
        typer.echo("oligocds worker needs OLIGOCDS_KAFKA_BOOTSTRAP (the Kafka bootstrap servers)", err=True)
        raise typer.Exit(2)
    app_ = create_app(settings, worker_only=True)
    _settle_heap()
    uvicorn.run(app_, host=settings.host, port=settings.port, http="httptools", log_level="warning", access_log=False)


@app.command()
def evaluate(
    files: Annotated[list[Path], typer.Argument(help="FHIR Bundle JSON files", exists=True, dir_okay=False)],
    as_of: Annotated[str | None, typer.Option("--as-of", help="evaluation date YYYY-MM-DD")] = None,
    fmt: Annotated[str, typer.Option("--format", help="json or table")] = "json",
) -> None:
    """Evaluate bundles and print {"results": [...]}."""
    from service.bootstrap import bootstrap
    from service.fhir.parse import BundleError

    day = date.fromisoformat(as_of) if as_of else None
    container = bootstrap(get_settings())
    results = []
    try:
        for path in files:
            try:
                results.extend(container.evaluator.evaluate_bytes(path.read_bytes(), day))
            except BundleError as exc:
                typer.echo(f"{path}: {exc.status} {exc.diagnostics}", err=True)
                raise typer.Exit(2) from exc
    finally:
        container.close()
    if fmt == "table":
        _print_table(results)
    else:
        sys.stdout.write(orjson.dumps({"results": results}, option=orjson.OPT_INDENT_2).decode() + "\n")


def _print_table(results: list[dict[str, Any]]) -> None:
    console = Console()
    for result in results:
        a = result["assessment"]
        console.print(f"[bold]{result['patient']}[/bold]  OMD {a['omdState']}  class {a['omdClass']}")
        table = Table("indicator", "rule", "code", "summary")
        for rec in result["recommendations"]:
            table.add_row(rec["indicator"], rec["rule"], rec["code"], rec["summary"])
        console.print(table)
        for issue in result["issues"]:
            console.print(f"  {issue['code']}: {issue['input']} {issue['rules']}")


@rules_app.command("check")
def rules_check(directory: Annotated[Path | None, typer.Argument()] = None) -> None:
    """Validate the rule files against the schema; print name, version and digest."""
    from service.rules.compile import compile_ruleset
    from service.rules.engine import EngineError, RulesEngine
    from service.rules.loader import RuleFileError, default_rules_dir, load_ruleset

    settings: Settings = get_settings()
    engine = RulesEngine()
    try:
        rs = load_ruleset(directory or settings.rules_dir or default_rules_dir(), settings.rule_settings())
        engine.register(compile_ruleset(rs))  # durable-rules has limits of its own (e.g. nesting depth)
    except (RuleFileError, EngineError) as exc:
        typer.echo(f"invalid rules: {exc}", err=True)
        raise typer.Exit(1) from exc
    finally:
        engine.close()
    typer.echo(f"{rs.name} {rs.version} {rs.digest}: {len(rs.rules)} rules in {len(rs.stages)} stages")


@rules_app.command("test")
def rules_test(cases: Annotated[Path, typer.Argument()] = Path("tests/fixtures")) -> None:
    """Run rule test cases (folders with bundle.json + expected.json)."""
    from service.bootstrap import bootstrap
    from service.cases import find_cases, run_case

    container = bootstrap(get_settings())
    failed = 0
    try:
        folders = find_cases(cases)
        for folder in folders:
            result = run_case(folder, container.evaluator)
            typer.echo(f"{'ok  ' if result.ok else 'FAIL'} {result.name}")
            for failure in result.failures:
                typer.echo(f"     {failure}")
            failed += not result.ok
    finally:
        container.close()
    typer.echo(f"{len(folders) - failed} passed, {failed} failed")
    if failed or not folders:
        raise typer.Exit(1)


def main() -> None:
    app()
